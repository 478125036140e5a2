"""The ``drcn`` command (also ``python -m drcn_plugin`` and ``python -m drcn_plugin.cli``): the
CLI is imported inside the Ctrl-C guard, since loading torch takes seconds and an interrupt then
must not print a traceback, nor be lost where a library clears it."""

from __future__ import annotations

import os
import sys


def main() -> None:
    """Entry point of the ``drcn`` console script."""
    from .stops import end_on_stop, end_stopped, stop_taken, stopped_status, take_stops

    take_stops()
    try:
        os.getcwd()
    except FileNotFoundError:  # torch would die loading (MKL's "Cannot load libtorch_cpu.so")
        from .terminal import print_error

        print_error("the current folder no longer exists (it was deleted or moved away): "
                    "cd into one that does")
        sys.exit(2)
    try:
        from .cli import main as run
    except KeyboardInterrupt:
        if not stop_taken():  # not through a stop handler (SIGINT not ours to take): Ctrl-C's
            sys.exit(stopped_status())
    except Exception:
        if not stop_taken():
            raise
    if stop_taken():  # even one cleared inside an import, or what that broke raised (numpy, cut
        end_stopped()  # short inside torch's start-up, cannot load again)
    try:
        run()
    finally:  # the command has ended: only the interpreter's exit handlers are left
        end_on_stop()


if __name__ == "__main__":
    main()
