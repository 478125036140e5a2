"""The command line's boundary: its console, and the one place library errors become red lines.

Library errors describe problems in the library's words; here they gain the CLI's: an option
error names its flag, and a command may add a hint for a type of error (``--overwrite`` for an
existing output). Every message goes through :func:`drcn_plugin.errors.one_line`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .errors import (
    EMPTY_PATH,
    BadOptionError,
    DeviceError,
    DRCNError,
    OutOfMemoryError,
    OutputExistsError,
    PeerLostError,
    WriteError,
    one_line,
    reason,
    single_line,
)
from .stops import run_by_torchrun, stop_word, stopped_status

PIPE_EXIT = 128 + 13  # how a shell reports a process that SIGPIPE ended (git, grep): 141


class ReaderGone(Exception):  # noqa: N818 (an event, not an error of the user's)
    """The reader of stdout went away (``drcn eval | head -1``): the command stops without a
    word and exits with :data:`PIPE_EXIT`, as SIGPIPE ends git or grep."""


def silence(stream: TextIO | None) -> None:
    """Point ``stream``'s descriptor at the null device, so that later writes, down to the
    interpreter's last flush, go nowhere instead of failing again (Python's "Note on SIGPIPE")."""
    with contextlib.suppress(AttributeError, OSError, ValueError):
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, stream.fileno())
        finally:
            os.close(null)


class _Console(Console):
    """A rich console whose broken pipe is not rich's ``SystemExit(1)`` (which also silences
    stdout when stderr broke): reports on stderr fall silent and the work goes on, since the
    files it writes are its result; results on stdout end the command with :class:`ReaderGone`.
    Reports whose write fails otherwise (a log file on a full disk) fall silent the same way.
    A width of 0 (``COLUMNS=0``) is an unknown one, as rich takes a terminal's that reports 0:
    taken as given, every line, errors too, would be drawn zero columns wide, that is not at all."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self._width is not None and self._width < 1:  # rich's own, from COLUMNS
            self._width = None

    def on_broken_pipe(self) -> None:
        """The reader of this console's stream went away."""
        self.quiet = True
        silence(self.file)
        if not self.stderr:
            raise ReaderGone

    def _check_buffer(self) -> None:
        """Rich's write of what was printed; on stderr, an error writing it silences the
        reports instead of ending the work (stdout's failures stay the command's errors)."""
        try:
            super()._check_buffer()
        except OSError:
            if not self.stderr:
                raise
            self.on_broken_pipe()


console = _Console(stderr=True)  # reports: progress, notes, errors
result_console = _Console()  # stdout: a command's printed result (eval's tables, the version)
TABLE_WIDTH = 80  # rich's width where none is known: the one the tables are laid out for
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


def path_value(value: str) -> Path:
    """Parser of path options and arguments: an empty one (an unset variable) is a usage error,
    never taken as the current folder; a leading ``~`` is the home folder, as in a shell."""
    if not value:
        raise typer.BadParameter(EMPTY_PATH)
    return Path(os.path.expanduser(value))  # --opt=~/x reaches us as the shell left it


def output_value(value: str) -> str:
    """Parser of an output that names a file or a folder: :func:`path_value`'s, the text kept
    as given (a ``Path`` drops the trailing ``/`` that says ``big.png/`` is a folder)."""
    return os.path.join(path_value(value), "") if value.endswith(("/", os.sep)) \
        else str(path_value(value))


def print_table(out: Console, table: Table, title: str | None = None) -> None:
    """``table`` on ``out``, under ``title`` on a line of its own (a table's own title wraps to
    the table's width); one too wide for ``out`` is given the width it takes at
    :data:`TABLE_WIDTH` columns (``table.width`` is set) and the terminal wraps its lines, where
    rich would squeeze it until its cells read ``16…`` or nothing (``COLUMNS=10``)."""
    from rich.measure import Measurement

    if title is not None:
        out.print(single_line(title), soft_wrap=True, markup=False, highlight=False)

    fits = Measurement.get(out, out.options.update_width(TABLE_WIDTH), table)
    if fits.minimum > out.width:
        table.width = fits.maximum
    out.print(table, crop=table.width is None)


def print_error(message: str) -> None:
    """``error: MESSAGE`` in red on stderr, on one line (a line break in a file name shows as
    ``\\n``), never wrapped or highlighted."""
    console.print(f"[bold red]error:[/] {escape(single_line(message))}", highlight=False,
                  soft_wrap=True)


def print_plain(text: str) -> None:
    """``text`` on stderr as one line, as given but for what :func:`.errors.single_line` shows
    escaped (a line break or terminal escape in a file name cannot begin a line or colour the
    terminal): no markup, highlighting or wrapping, so a path stays whole however narrow the
    terminal."""
    console.print(single_line(text), soft_wrap=True, highlight=False, markup=False)


def note(message: str) -> None:
    """A dim report line on stderr (the engine's notices: tile sizes being measured, ...), a
    name's line break or terminal escape in it shown escaped."""
    console.print(f"[dim]{escape(single_line(message))}[/]", highlight=False)


@contextmanager
def unencodable_escaped(stream: TextIO | None) -> Iterator[None]:
    """While inside, characters ``stream``'s encoding lacks are written as ``\\uXXXX``, as
    Python writes them to stderr, instead of raising: a Windows stdout redirected to a file or a
    pipe is cp1252, and a folder name outside it would end a command after its work."""
    errors = getattr(stream, "errors", None)
    try:
        stream.reconfigure(errors="backslashreplace")
    except (AttributeError, ValueError, OSError):  # not a text stream, or closed
        errors = None
    try:
        yield
    finally:
        if errors is not None:
            with contextlib.suppress(AttributeError, ValueError, OSError):
                stream.reconfigure(errors=errors)


def require_stdout() -> None:
    """Refuse to start a command whose result is printed when stdout is closed (``>&-``): like
    a full disk, a result that went nowhere is an error, and it is found before the work."""
    if sys.stdout is None:
        raise WriteError("stdout is closed, so the results would go nowhere (to discard them, "
                         "send them to /dev/null)")


def reader_gone() -> bool:
    """True when stdout is a pipe whose reader has gone (the poll reports an error or a hang-up
    on it): work done only for what is still to be printed there can stop."""
    import select

    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), 0)  # errors and hang-ups are reported regardless
    except (AttributeError, OSError, ValueError):  # Windows has no poll; a captured stdout no fd
        return False
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poll.poll(0))


# Errors that may befall one process of a torchrun job and not the others (its device, its memory,
# a process of the job lost): each says its own.
_PER_PROCESS = (DeviceError, OutOfMemoryError, PeerLostError)
# Seconds a later process gives its machine's first to say a shared line: torchrun ends the
# others within 0.1 s of one ending from torch 2.4 on, within 5 s before (it polls that often)
_FIRST_GRACE = 10.0


def later_process() -> bool:
    """Whether this is a process of a job torchrun's agent runs other than its machine's first
    (``LOCAL_RANK`` 0), which sees the same files and options."""
    local = os.environ.get("LOCAL_RANK", "0")
    return run_by_torchrun() and local.isdigit() and int(local) > 0


def first_says_it(error: BaseException | None = None) -> bool:
    """Whether this process leaves ``error``'s line (None: a usage mistake's) to its machine's
    first: a later process meeting an error that every process meets alike waits up to
    :data:`_FIRST_GRACE` seconds, as torchrun ends the others once one ends with an error; ended
    so (the first has said it), it says nothing, else (the first did not meet it) it says it."""
    if not later_process() or isinstance(error, _PER_PROCESS):
        return False
    try:
        time.sleep(_FIRST_GRACE)
    except KeyboardInterrupt:  # torchrun's SIGTERM, through the stop handler
        return True
    return False


@contextmanager
def stopped_cleanly(written: list[str]) -> Iterator[None]:
    """Ctrl-C or a stop signal inside ends the command with one line saying which files it had
    written (``written``, named as each is complete; a write in progress leaves nothing) and
    the signal's exit status, instead of typer's silent 130."""
    try:
        yield
    except KeyboardInterrupt:
        more = f" and {len(written) - 3} more" if len(written) > 3 else ""
        print_error(f"{stop_word()}: " + (f"wrote {', '.join(written[:3])}{more} before that"
                                       if written else "nothing written"))
        raise typer.Exit(stopped_status()) from None


@contextmanager
def user_errors(hints: Hints | None = None) -> Iterator[None]:
    """Turn a DRCNError, or an OSError that a path or the system raised (a name too long, a
    permission), into one red line and exit code 2 (never a traceback)."""
    try:
        yield
    except DRCNError as e:
        if not first_says_it(e):
            print_error(cli_message(e, hints))
        raise typer.Exit(2) from None
    except OSError as e:
        if e.errno == errno.EPIPE:  # a write to a pipe whose reader went away
            raise ReaderGone from None
        where = f": {e.filename}" if e.filename else ""
        if not first_says_it(e):
            print_error(f"{reason(e)}{where}")
        raise typer.Exit(2) from None
