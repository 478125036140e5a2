"""The ``drcn`` command (also ``python -m drcn_plugin`` and ``python -m drcn_plugin.cli``): the
CLI is imported inside the Ctrl-C guard, since loading torch takes seconds and an interrupt then
must not print a traceback, nor be lost where a library clears it."""

from __future__ import annotations

import sys


def main() -> None:
    """Entry point of the ``drcn`` console script."""
    from .stops import stop_taken, stopped_status, take_stops

    take_stops()
    try:
        from .cli import main as run
    except KeyboardInterrupt:
        sys.exit(stopped_status())
    if stop_taken():  # its KeyboardInterrupt was cleared inside an import
        sys.exit(stopped_status())
    try:
        run()
    finally:  # the command has ended: only the interpreter's exit handlers are left
        from .stops import end_on_stop

        end_on_stop()


if __name__ == "__main__":
    main()
