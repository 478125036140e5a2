"""Every exception the library raises for a user's problem, and the one line a front end shows.

Library messages describe the problem in the library's words (an option's name, a path, a size);
each front end adds its own wording at its boundary (the CLI names its flags, ComfyUI and GIMP
prefix ``DRCN:``), always through :func:`one_line`.
"""

from __future__ import annotations

import dis
import os
import re
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import numpy as np

EMPTY_PATH = "an empty path (an unset variable?)"  # "" must never mean the current folder


class DRCNError(Exception):
    """A problem the user can fix: a bad option, an unreadable file, missing weights, ..."""


class BadOptionError(DRCNError, ValueError):
    """An option value that cannot work; ``option`` names it (``"scale"``, ``"patch"``, ...)."""

    def __init__(self, message: str, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option

    def __reduce__(self) -> tuple:
        return type(self), (str(self), self.option)


class DeviceError(DRCNError):
    """The device or precision asked for is not available here."""


class BadImageError(DRCNError):
    """An input image (file or array) that cannot be decoded or upscaled."""


class DamagedImageError(BadImageError):
    """An image file its decoder fails on part way (damaged or cut short), not one refused for
    what it holds (too many pixels, too large a text chunk, a mode drcn cannot upscale)."""


class DatasetError(DRCNError):
    """A folder of images (dataset, training data) that is missing, unreadable or unusable."""


class ModelLoadError(DRCNError):
    """A model spec or weights file that does not resolve to DRCN weights."""


class CheckpointError(DRCNError):
    """A training checkpoint that cannot be resumed (missing, unreadable, another model)."""


class TrainingError(DRCNError):
    """A training run that cannot go on (its loss, weights or optimizer state went non-finite)."""


class DivergedError(TrainingError):
    """A run whose loss or state went non-finite; ``rate`` is a lower peak learning rate to try,
    and ``resumable`` says whether a checkpoint of the run is kept to go on from with it."""

    def __init__(self, message: str, rate: float = 0.0, resumable: bool = False) -> None:
        super().__init__(message)
        self.rate, self.resumable = rate, resumable

    def __reduce__(self) -> tuple:
        return type(self), (str(self), self.rate, self.resumable)


class InputGoneError(DRCNError):
    """An input of a run being resumed (its data folders, baseline or teacher) that is gone from
    where the run read it: ``missing`` says what is not found, ``role`` what it is to the run,
    ``option`` which option takes its new place, and ``advice`` how (a front end's own words)."""

    def __init__(self, missing: str, role: str, option: str, advice: str = "") -> None:
        advice = advice or f"resume with {option} set to their new place"
        super().__init__(f"{missing} (the run's {role}; {advice})")
        self.missing, self.role, self.option, self.advice = missing, role, option, advice

    def __reduce__(self) -> tuple:
        return type(self), (self.missing, self.role, self.option, self.advice)


class DistributedError(DRCNError):
    """A torchrun job this process cannot join (its environment is incomplete), or whose other
    processes stopped or cannot be reached."""


class PeerLostError(DistributedError):
    """Another process of this torchrun job died or stopped answering: each process that is
    left says so in its own words (what its work left)."""


class OutputExistsError(DRCNError):
    """The output file exists and replacing it was not asked for; ``path`` is that file."""

    def __init__(self, message: str, path: object = None) -> None:
        super().__init__(message)
        self.path = path

    def __reduce__(self) -> tuple:
        return type(self), (str(self), self.path)


class AmbiguousOutputError(DRCNError):
    """An existing file at a result's name that may be another input's result (two inputs of
    the batch can have that name), so it is not taken for this one's: nothing is skipped."""


class InputConflictError(DRCNError):
    """An output that would land on an input or a folder, or a name that would leave the output
    folder."""


class WriteError(DRCNError):
    """An output that could not be written (disk full, no permission); nothing was left behind."""


class OutputBlockedError(WriteError):
    """An output whose place takes no more files: its disk full, over quota, read-only or gone,
    its folder no longer writable. A batch upscales no more files bound there, as each would
    spend its upscale and fail the same way; ``state`` says what the place is ("the disk is full"),
    ``remedy`` what to do before going on ("free space")."""

    def __init__(self, message: str, state: str, remedy: str) -> None:
        super().__init__(message)
        self.state, self.remedy = state, remedy

    def __reduce__(self) -> tuple:
        return type(self), (str(self), self.state, self.remedy)


class FolderBlockedError(OutputBlockedError):
    """An output folder refusing new files (its permissions): its disk's other folders may still
    take them, so a batch goes on with those."""


class DiskFullError(OutputBlockedError):
    """An output that did not fit on its disk, or in its owner's quota there."""

    def __init__(self, message: str, state: str = "the disk is full",
                 remedy: str = "free space") -> None:
        super().__init__(message, state, remedy)


class OutOfMemoryError(DRCNError, MemoryError):
    """The work does not fit in the device's memory, even in its smallest pieces."""


class ProtocolError(DRCNError):
    """A malformed request from a front end talking to the worker process."""


class InstallError(DRCNError):
    """A host application (GIMP, ComfyUI) into which the integration cannot be installed."""


class MissingDependencyError(DRCNError):
    """An optional extra (matplotlib for charts) is not installed; the message says what to
    install."""


class Cancelled(Exception):  # noqa: N818 (a request, not an error)
    """The caller asked the engine to stop; not a failure, so not a :class:`DRCNError`."""


# Characters a message shows escaped: control characters (line breaks; ESC, which starts the
# sequences a terminal obeys), line and paragraph separators, the bidirectional overrides and
# isolates that reorder what is shown, and surrogates (a name's bytes that are not text).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def single_line(text: str) -> str:
    """``text`` as one line of characters shown as they are: a file name may hold line breaks
    (``\\n``), terminal escapes (``\\x1b``) or bytes that are not text (``\\xe9``, as
    surrogate escapes decode them), and no name may break a message or forge a terminal's output."""
    return _UNSAFE.sub(lambda m: _escaped(m.group()), text)


def _escaped(ch: str) -> str:
    code = ord(ch)
    if ch in _NAMED:
        return _NAMED[ch]
    if 0xDC80 <= code <= 0xDCFF and os.name == "posix":  # os.fsdecode's stand-in for a byte
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def path_name(path: str | os.PathLike) -> str:
    """A path's last name as labels and titles show it; ``.`` and ``..`` are named by the folder
    they are, not left blank."""
    return Path(os.path.abspath(path)).name or str(path)


def counted(count: int, noun: str, plural: str = "") -> str:
    """``count`` and its noun as a message reads them: ``1 image``, ``0 images``, ``2 images``
    (``plural`` for a noun whose plural is not ``noun + "s"``)."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


def memory_size(n: float) -> str:
    """Bytes as a message reads them, in the largest of GiB, MiB and KiB they make one of
    (``0.0 GiB is available`` tells nothing)."""
    unit, power = next((u, p) for u, p in (("GiB", 30), ("MiB", 20), ("KiB", 10))
                       if n >= 2**p or p == 10)
    return f"{n / 2**power:.1f} {unit}"


def reason(error: BaseException) -> str:
    """Why something failed, in the system's words (``Permission denied``) without the path an
    OSError's text repeats; else the error's one line."""
    return error.strerror if isinstance(error, OSError) and error.strerror else one_line(error)


def one_line(error: BaseException) -> str:
    """The first non-empty line of an exception's text (its type name when it has none); our own
    messages are one line already, so a line break in them (from a file name) is shown as ``\\n``.

    The one place any exception (ours or a library's) becomes text for a user.
    """
    try:
        text = str(error)
    except Exception:  # a __str__ that fails itself: the type's name is all there is to show
        text = ""
    if isinstance(error, DRCNError) and text.strip():
        return single_line(text.strip())
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return single_line(lines[0]) if lines else type(error).__name__


_RAISE = dis.opmap["RAISE_VARARGS"]  # the instruction of a raise statement


def pillow_internal(error: BaseException) -> bool:
    """Whether ``error`` is Python's own, met inside Pillow on the values a damaged file gave it
    (a comparison of bytes with a number, a struct unpack of bytes cut off, int() of a header's
    garbage, a lookup of an unknown code), or Pillow's raise without a sentence (an assert, the
    file's own bytes): its text ("'>' not supported between instances of 'bytes' and 'int'")
    tells a user nothing. Not an OSError (the system's words, or a decoder's), nor a sentence
    of Pillow's own raise ("Missing dimensions") or a reader's SyntaxError, which Python raises
    none of while running ("cannot handle 12-bit layers", libavif's "BMFF parsing failed")."""
    if isinstance(error, OSError | MemoryError):
        return False
    if len(error.args) == 1 and isinstance(error.args[0], BaseException):
        error = error.args[0]  # restated: Pillow's SyntaxError(e) of its readers' errors
    tbs, tb = [], error.__traceback__
    while tb is not None:
        tbs.append(tb)
        tb = tb.tb_next
    if not any(_in_pillow(t.tb_frame) for t in tbs):
        return False
    words, last = error.args[0] if len(error.args) == 1 else None, tbs[-1]
    if not isinstance(words, str) or not words.strip():
        return True
    code = last.tb_frame.f_code.co_code  # tb_lasti: the byte offset of the failing instruction
    raised = 0 <= last.tb_lasti < len(code) and code[last.tb_lasti] == _RAISE
    return not isinstance(error, SyntaxError) and not (_in_pillow(last.tb_frame) and raised)


def _in_pillow(frame: FrameType) -> bool:
    """Whether ``frame`` runs Pillow's code."""
    return str(frame.f_globals.get("__name__", "")).split(".")[0] == "PIL"


def require_callable(**callbacks: object) -> None:
    """Refuse an API callback that is neither a function nor None (it would fail mid-job)."""
    for name, fn in callbacks.items():
        if fn is not None and not callable(fn):
            raise BadOptionError(f"{name} must be a function or None, got {type(fn).__name__}",
                                 option=name)


def bool_answers(cancel: Callable[[], object] | None) -> Callable[[], bool] | None:
    """``cancel`` answering a plain bool, or None: an answer with no single truth value (a
    numpy array or tensor of several values) is a typed error naming the callback, not the
    ValueError numpy raises in the engine's own line."""
    if cancel is None:
        return None

    def asked() -> bool:
        answer = cancel()
        try:
            return bool(answer)
        except (ValueError, RuntimeError) as e:  # numpy's and torch's "ambiguous" truth
            raise BadOptionError(f"cancel must return True or False; its {type(answer).__name__}"
                                 " answer has no single truth value", option="cancel") from e

    return asked


def require_flag(**flags: object) -> None:
    """Refuse an API switch that is not True or False: "no" or "false" would turn it on."""
    for name, value in flags.items():
        if not isinstance(value, bool | np.bool_):
            raise BadOptionError(f"{name} must be True or False, got {value!r}", option=name)
