"""Which file a result replaces or makes, and with what mode: links are written through to the
file they lead to, as cp, ImageMagick and GIMP do; a link to nothing, a folder and a
write-protected file are refused; a replaced file keeps its mode (see :mod:`.writing`)."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from .errors import WriteError
from .names import collision_key


def link_target(path: Path) -> Path:
    """The file a write to ``path`` makes or replaces: ``path``, or the file its links lead to,
    written through as cp, ImageMagick and GIMP do. A link to nothing is refused, as GNU cp
    does: its target's disk may be unmounted or its folder moved (:class:`WriteError`)."""
    if not os.path.islink(path):
        return Path(path)
    try:
        return Path(os.path.realpath(path, strict=True))
    except OSError as e:
        what = "a link in a loop" if e.errno == errno.ELOOP else \
            f"a link to {os.readlink(path)}, which does not exist"
        raise WriteError(f"{path} is {what}: remove it or name another file") from e


def shared_ends(targets: Iterable[Path]) -> dict[Path, Path]:
    """The ``targets`` that are links leading to a file another target names or leads to, each
    with that file: written through, one result would replace another's."""
    ends: dict[str, list[Path]] = {}
    for target in targets:
        ends.setdefault(collision_key(Path(os.path.realpath(target))), []).append(target)
    return {t: Path(os.path.realpath(t)) for same in ends.values() if len(same) > 1
            for t in same if os.path.islink(t)}


def check_replaceable(path: Path) -> None:
    """Refuse (:class:`WriteError`) to replace a write-protected file: one without write bits
    (for root too) or that this user may not write. cp, ImageMagick and GIMP stop there; the
    rename that replaces a file would not, its folder being writable."""
    try:
        protected = not os.stat(path).st_mode & 0o222 or not os.access(path, os.W_OK)
    except OSError:
        return  # no such file: nothing is replaced
    if protected and os.path.isfile(path):
        raise WriteError(f"{path} is read-only: make it writable to replace it, or name "
                         "another file")


def output_problem(path: Path) -> str:
    """Why no result can be written at ``path`` whatever the options ('' when one can): a folder,
    which --overwrite must not replace nor --skip-existing skip, or a link to nothing."""
    if os.path.isdir(path):
        kind = "a link to a folder" if os.path.islink(path) else "an existing folder"
        return f"{path} is {kind}"
    try:
        link_target(path)
    except WriteError as e:
        return str(e)
    return ""


def permission_bits(path: Path) -> int | None:
    """The read/write bits a result may take from its source, ``path`` (None if it is gone): a
    new result gets them as far as the umask lets it (:func:`keep_mode`)."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode) & 0o666
    except OSError:
        return None


def keep_mode(tmp: str, replaced: Path | None, bits: int | None) -> None:
    """Give the part its result's mode, as cp does: the ``replaced`` file's (and its owner and
    group where this process may set them), else the new file's from the umask, limited to
    ``bits``."""
    try:
        old = os.stat(replaced) if replaced is not None else None
    except FileNotFoundError:
        old = None
    if old is not None:
        mode = old.st_mode & 0o777  # set-ID bits are not carried to a new owner
        for owner in (old.st_uid, -1):  # another user's file keeps at least its group
            with contextlib.suppress(AttributeError, OSError):  # Windows has no chown
                os.chown(tmp, owner, old.st_gid)
                break
    elif bits is not None:
        mode = stat.S_IMODE(os.stat(tmp).st_mode) & bits
    else:
        return
    with contextlib.suppress(OSError):  # a file system without modes (FAT) may refuse some
        os.chmod(tmp, mode)
