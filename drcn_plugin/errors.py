"""Every exception the library raises for a user's problem, and the one line a front end shows.

Library messages describe the problem in the library's words (an option's name, a path, a size);
each front end adds its own wording at its boundary (the CLI names its flags, ComfyUI and GIMP
prefix ``DRCN:``), always through :func:`one_line`.
"""

from __future__ import annotations

import os
from pathlib import Path

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


class DatasetError(DRCNError):
    """A folder of images (dataset, training data) that is missing, unreadable or unusable."""


class ModelLoadError(DRCNError):
    """A model spec or weights file that does not resolve to DRCN weights."""


class CheckpointError(DRCNError):
    """A training checkpoint that cannot be resumed (missing, unreadable, another model)."""


class TrainingError(DRCNError):
    """A training run that cannot go on (its loss stopped being a finite number)."""


class DistributedError(DRCNError):
    """A torchrun job this process cannot join (its environment is incomplete), or whose other
    processes stopped or cannot be reached."""


class OutputExistsError(DRCNError):
    """The output file exists and replacing it was not asked for; ``path`` is that file."""

    def __init__(self, message: str, path: object = None) -> None:
        super().__init__(message)
        self.path = path

    def __reduce__(self) -> tuple:
        return type(self), (str(self), self.path)


class InputConflictError(DRCNError):
    """An output that would land on an input or a folder, or a name that would leave the output
    folder."""


class WriteError(DRCNError):
    """An output that could not be written (disk full, no permission); nothing was left behind."""


class DiskFullError(WriteError):
    """An output that did not fit on its disk; a batch stops there, as every next one would
    spend its upscale and fail the same way."""


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


def single_line(text: str) -> str:
    """``text`` with its line breaks shown as ``\\r`` and ``\\n``: a file name may hold them, and
    a message must stay one line."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def path_name(path: str | os.PathLike) -> str:
    """A path's last name as labels and titles show it; ``.`` and ``..`` are named by the folder
    they are, not left blank."""
    return Path(os.path.abspath(path)).name or str(path)


def reason(error: BaseException) -> str:
    """Why something failed, in the system's words (``Permission denied``) without the path an
    OSError's text repeats; else the error's one line."""
    return error.strerror if isinstance(error, OSError) and error.strerror else one_line(error)


def one_line(error: BaseException) -> str:
    """The first non-empty line of an exception's text (its type name when it has none); our own
    messages are one line already, so a line break in them (from a file name) is shown as ``\\n``.

    The one place any exception (ours or a library's) becomes text for a user.
    """
    if isinstance(error, DRCNError) and str(error).strip():
        return single_line(str(error).strip())
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    return lines[0] if lines else type(error).__name__
