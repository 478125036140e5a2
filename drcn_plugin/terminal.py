"""The command line's boundary: its console, and the one place library errors become red lines.

Library errors describe problems in the library's words; here they gain the CLI's: an option
error names its flag, and a command may add a hint for a type of error (``--overwrite`` for an
existing output). Every message goes through :func:`drcn_plugin.errors.one_line`.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.markup import escape

from .errors import BadOptionError, DRCNError, OutputExistsError, one_line, single_line

console = Console(stderr=True)
Hints = Mapping[type[DRCNError], str]
OVERWRITE_HINT: Hints = {OutputExistsError: "use --overwrite to replace it"}
# Library option names whose flag is not ``--name``.
_FLAGS = {"downscales": "--downscale", "lr_drops": "--lr-drop", "size": "--scale"}


def flag_for(option: str) -> str:
    """The command-line flag of a library option name."""
    return _FLAGS.get(option, "--" + option.replace("_", "-"))


def cli_message(error: BaseException, hints: Hints | None = None) -> str:
    """One line for the terminal: the library's message, its flag and the command's hint."""
    text = one_line(error)
    if isinstance(error, BadOptionError) and error.option:
        text = f"invalid value for {flag_for(error.option)}: {text}"
    return text + hint(error, hints)


def hint(error: BaseException | None, hints: Hints | None) -> str:
    """`` (hint)`` for the first matching error type in ``hints``, else ``""``."""
    for kind, text in (hints or {}).items():
        if isinstance(error, kind):
            return f" ({text})"
    return ""


def print_error(message: str) -> None:
    """``error: MESSAGE`` in red on stderr, on one line (a line break in a file name shows as
    ``\\n``), never wrapped or highlighted."""
    console.print(f"[bold red]error:[/] {escape(single_line(message))}", highlight=False,
                  soft_wrap=True)


def signals_interrupt() -> None:
    """SIGTERM (a scheduler's stop, ``kill``) and SIGHUP (the terminal closed) take Ctrl-C's
    clean path: the write in progress is removed and nothing half-written stays."""
    import signal
    import threading

    from .devices import stop_signals

    if threading.current_thread() is threading.main_thread():
        for sig in stop_signals():
            signal.signal(sig, signal.default_int_handler)


@contextmanager
def user_errors(hints: Hints | None = None) -> Iterator[None]:
    """Turn a DRCNError, or an OSError that a path or the system raised (a name too long, a
    permission), into one red line and exit code 2 (never a traceback)."""
    try:
        yield
    except DRCNError as e:
        print_error(cli_message(e, hints))
        raise typer.Exit(2) from None
    except OSError as e:
        if e.errno == errno.EPIPE:  # the reader of our output went away: typer's to handle
            raise
        where = f": {e.filename}" if e.filename else ""
        print_error(f"{e.strerror or one_line(e)}{where}")
        raise typer.Exit(2) from None
