"""Why a write failed, as the user reads it: a full disk or quota, a disk gone read-only or
failing, a folder that takes no new files (:class:`.errors.OutputBlockedError`: a batch upscales
no more files bound there, as each would spend its upscale and fail the same way), or a failure
of the one file alone (:class:`.errors.WriteError`)."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from .errors import DiskFullError, FolderBlockedError, OutputBlockedError, WriteError, reason

# What a write's error number says of the place it writes to, which then takes no more files
# (:class:`OutputBlockedError`): the place's state, and what to do before going on
_BLOCKED = {
    errno.EROFS: ("the output disk is read-only", "make it writable"),
    errno.EIO: ("the output disk fails to write (an input/output error: was it unplugged?)",
                "reconnect it"),
}
_QUOTA = getattr(errno, "EDQUOT", None)  # not on every system
_DENIED = (errno.EACCES, errno.EPERM)


def write_failure(e: Exception, path: Path, why: str, folder: Path,
                  creating: bool) -> WriteError:
    """What a write of ``path`` into ``folder`` that failed with ``e`` (``why``) raises:
    :class:`DiskFullError` for a full disk or quota, :class:`OutputBlockedError` for a disk gone
    read-only or failing, or a refusal to make a file or folder there (``creating``); else
    :class:`WriteError`, of this file alone."""
    code = e.errno if isinstance(e, OSError) else None
    message = f"cannot write {path}: {why}"
    # Encoders that report a full disk only as a generic error (no errno, or EIO) are told apart
    # by the free space.
    if code == errno.ENOSPC or (code in (None, errno.EIO) and _disk_full(folder)):
        return DiskFullError(f"disk full while writing {path}; nothing was written")
    if code is not None and code == _QUOTA:
        return DiskFullError(f"quota exceeded while writing {path}; nothing was written",
                             state="the disk quota is exceeded")
    if code in _BLOCKED:
        return OutputBlockedError(f"{message}; nothing was written", *_BLOCKED[code])
    if creating and code in _DENIED:
        return FolderBlockedError(f"{message}; nothing was written",
                                  f"{folder} takes no new files ({reason(e)})",
                                  "make it writable")
    return WriteError(message)


def blocked_with(error: OutputBlockedError, target: Path) -> Callable[[Path], bool]:
    """Which later outputs the block ``error``, met writing ``target``, holds too: those into
    the same folder when the folder alone refuses files, else those on the same disk (every one
    when the disk cannot be told), so that a batch goes on with the others."""
    if isinstance(error, FolderBlockedError):
        folder = Path(os.path.abspath(target.parent))
        return lambda other: Path(os.path.abspath(other.parent)) == folder
    disk = file_system(target.parent)
    return lambda other: disk is None or file_system(other.parent) in (disk, None)


def file_system(folder: Path) -> int | None:
    """The device of the file system ``folder`` is on, or is made on when it does not exist yet
    (its nearest existing parent's); None when that cannot be told (a disk failing to answer)."""
    for place in (folder, *folder.parents):
        try:
            return os.stat(place).st_dev
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError:
            return None
    return None


def _disk_full(folder: Path) -> bool:
    """True when ``folder``'s file system has (almost) no space left: encoders such as libtiff
    report a full disk only as a generic error."""
    try:
        return shutil.disk_usage(folder).free < (1 << 20)
    except OSError:
        return False
