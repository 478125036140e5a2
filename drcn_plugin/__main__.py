"""The ``drcn`` command (also ``python -m drcn_plugin`` and ``python -m drcn_plugin.cli``): the
CLI is imported inside the Ctrl-C guard, since loading torch takes seconds and an interrupt then
must not print a traceback."""

from __future__ import annotations

import sys


def main() -> None:
    """Entry point of the ``drcn`` console script."""
    try:
        from .cli import main as run
    except KeyboardInterrupt:
        sys.exit(130)
    try:
        run()
    finally:  # the command has ended: only the interpreter's exit handlers are left
        from .stops import end_on_stop

        end_on_stop()


if __name__ == "__main__":
    main()
