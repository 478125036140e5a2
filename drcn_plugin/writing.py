"""Writing result files so that none is ever half-written or lost.

Every result goes to a temporary ``.NAME.PID.XXXXXXXX.part`` beside its target, is flushed and
fsynced, then renamed into place (or linked, when an existing file must not be replaced). A
link is written through to the file it leads to, the part beside that file (:mod:`.targets`).
A failure removes the temporary file and keeps any earlier file of that name; parts left by
writers that were killed are removed by the next run in that folder. A writer that makes
several files at once (``DRCN.save_pretrained``) does so in a :func:`temporary_folder`, and the
folders of writers that were killed are removed the same way.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import psutil
from PIL import Image

from .bmpalpha import write_bmp_rgba
from .colourspace import with_chunks
from .deep import write_png16
from .errors import (
    BadOptionError,
    DRCNError,
    InputConflictError,
    OutputExistsError,
    WriteError,
    reason,
)
from .names import name_max
from .progressivejpeg import save_progressive
from .targets import check_replaceable, keep_mode, link_target
from .tiff16 import write_tiff_deep
from .writefailures import write_failure

# What writes a format's pixels Pillow cannot (see Encoded) into the file it writes for a stand-in
_WRITE_DEEP = {"PNG": write_png16, "TIFF": write_tiff_deep}


def refuse_input_target(path: Path, inputs: Iterable[Path]) -> None:
    """No command may write over one of its own inputs, even when asked to overwrite: not by
    its name, nor by another name for the same file (case on macOS and Windows, a hard link)."""
    if any(same_file(path, p) for p in inputs):
        raise InputConflictError(f"{path} is an input of this command; choose another file")


def special_file(path: str | Path) -> bool:
    """Whether ``path`` names a pipe, device or socket (``/dev/null``), in whose place an atomic
    write would put a regular file (as root, a new ``/dev/null``)."""
    return os.path.exists(path) and not os.path.isdir(path) and not os.path.isfile(path)


def check_file_target(path: Path, option: str, replace: bool, exists: str = "exists") -> None:
    """Refuse, before any work, an output named by a pipe, device or socket (:func:`special_file`),
    which no write replaces, or a link to nothing (:func:`link_target`); an existing file unless
    ``replace`` (:class:`OutputExistsError`, ``"{path} {exists}"``); then, as it would be
    replaced, a write-protected one (:func:`check_replaceable`)."""
    if special_file(path):
        raise BadOptionError(f"{path} is not a regular file (a pipe, device or socket); give a "
                             "file name", option=option)
    try:
        final = link_target(path)
        if not replace and os.path.lexists(path):
            raise OutputExistsError(f"{path} {exists}", path=path)
        check_replaceable(final)
    except WriteError as e:
        raise BadOptionError(str(e), option=option) from e


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two names are one file or folder: the same path once links are resolved, or the
    same identity (names differing in case on macOS and Windows, hard links)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    ident = file_id(a)
    return ident is not None and ident == file_id(b)


def file_id(path: str | Path) -> tuple[int, int] | None:
    """The file's identity, which names differing only in case share where the file system
    ignores case; None when there is no such file, or the file system gives no file numbers
    (0 on some Windows volumes, where every file would otherwise be one)."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return (st.st_dev, st.st_ino) if st.st_ino else None


@dataclass
class Encoded:
    """A result file ready to write: Pillow's ``image`` in a mode ``format`` stores and its save
    ``options``, with what Pillow cannot write: colour ``chunks`` (see :func:`with_chunks`) and
    a PNG's or TIFF's 16-bit colour (or grey with alpha), a TIFF's float colour, or the 8- or
    16-bit pixels of a TIFF whose EXIF has sub-IFDs (which libtiff cannot write), ``pixels_deep``,
    for which ``image`` is a 1x1 stand-in in its mode."""

    image: Image.Image
    format: str
    options: dict = field(default_factory=dict)
    chunks: dict[bytes, bytes] = field(default_factory=dict)
    pixels_deep: np.ndarray | None = None

    def write(self, f: BinaryIO) -> None:
        """Write the file to ``f``."""
        if self.format == "BMP" and self.image.mode == "RGBA":
            write_bmp_rgba(_WithoutFileno(f), self.image, self.options.get("dpi"))
            return
        if self.format == "JPEG" and self.options.get("progressive"):
            save_progressive(self.image, _WithoutFileno(f), self.options)
            return
        if not self.chunks and self.pixels_deep is None:
            self.image.save(_WithoutFileno(f), format=self.format, **self.options)
            return
        encoded = io.BytesIO()  # Pillow's file, to which the chunks and deep pixels are added
        self.image.save(encoded, format=self.format, **self.options)
        data = encoded.getvalue()
        pieces = with_chunks(data, self.format, self.chunks) if self.chunks else [data]
        if self.pixels_deep is None:
            f.writelines(pieces)
        else:
            _WRITE_DEEP[self.format](f, b"".join(pieces), self.pixels_deep)


def atomic_save(encoded: Encoded, path: Path, overwrite: bool = False,
                mode: int | None = None) -> None:
    """Write ``encoded`` through a temporary file in the same folder, then rename it into place;
    a new file gets the permission bits the umask gives, limited to ``mode`` (an input's, so a
    private photo's result stays private); a replaced one keeps its own."""
    _atomic(path, overwrite, encoded.write, mode)


class _WithoutFileno:
    """The temporary file as Pillow sees it. Given a descriptor, some encoders (JPEG, BMP) write
    to it in C and ignore short writes: a full disk then leaves a cut-off file that looks saved.
    Without one they write through ``write``, which raises."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f

    def __getattr__(self, name: str) -> object:
        if name == "fileno":
            raise AttributeError(name)
        return getattr(self._f, name)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write bytes atomically, replacing any file there (JSON logs, cards)."""
    _atomic(path, True, lambda f: f.write(data))


_PART = re.compile(r"^\..*\.(\d+)\.[a-z0-9_]{8}\.part$", re.DOTALL)


def _part_prefix(path: Path) -> str:
    """``.NAME.PID.`` with NAME cut so the temporary name fits the names of ``path``'s folder."""
    name, tail = path.name, f".{os.getpid()}."
    room = name_max(path.parent) - len(tail) - 1 - 8 - len(".part")
    kept, size = [], 0
    for ch in name:  # whole characters, in the file system's encoding
        size += len(os.fsencode(ch))
        if size > room:
            break
        kept.append(ch)
    return "." + "".join(kept) + tail


@contextlib.contextmanager
def _new_part(path: Path) -> Iterator[tuple[BinaryIO, str]]:
    """A new temporary file beside ``path``, open for writing, and its name, with the mode any
    new file gets (0666 less the umask, which the kernel applies: reading it would change it for
    every thread); closed and removed on leaving, unless renamed away meanwhile. Its name is
    held before the file is made, so that a stop landing anywhere (a signal while ``os.open``
    returns) leaves no part behind."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    tmp = f = None
    try:
        for _ in range(100):
            tmp = str(path.parent / f"{_part_prefix(path)}{secrets.token_hex(4)}.part")
            try:
                f = os.fdopen(os.open(tmp, flags, 0o666), "wb")
                break
            except FileExistsError:
                tmp = None  # another writer's: not ours to remove
        else:
            raise FileExistsError(errno.EEXIST, "no free temporary name", str(path))
        try_lock(f.fileno())  # held until the part is renamed or removed: it marks it as live
        yield f, tmp
    finally:
        try:
            if f is not None:
                f.close()
        finally:
            _remove(tmp)


def probe_folder(folder: Path) -> None:
    """Check that files can be made in ``folder``, or where it would be made (its nearest
    existing parent; nothing is created); :class:`WriteError` if not, so a job learns it before
    any work rather than after it."""
    here = Path(folder)
    # Path.exists raises for a name too long for the file system (one line for the user),
    # where os.path.lexists would only say no
    while not here.exists() and not here.is_symlink() and here != here.parent:
        here = here.parent
    if not here.is_dir():
        kind = "a file" if here.exists() else "a broken link"
        raise WriteError(f"cannot make the folder {folder}: {here} is {kind}")
    try:
        with _new_part(here / "write-check"):
            pass
    except OSError as e:
        raise WriteError(f"cannot write into {folder}: {reason(e)}") from e


def clean_stale_parts(folder: Path) -> int:
    """Remove temporary files left in ``folder`` by writers that no longer run (killed by a
    signal or a crash); returns how many were removed. Live writers' files are left alone: their
    PID runs, or they hold the part's lock (a writer in another container or on another host,
    whose PID means nothing here)."""
    removed = 0
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    for name in names:
        m = _PART.match(name)
        part = os.path.join(folder, name)
        if m and writer_gone(part, int(m.group(1))):
            with contextlib.suppress(OSError):
                os.unlink(part)
                removed += 1
    return removed


def writer_gone(path: str, pid: int) -> bool:
    """True when the writer of ``path`` (a part, a temporary folder's lock file), process
    ``pid``, no longer runs: no process with that PID that started before the file last changed
    runs here, and no process holds the file's lock (a writer in another container or on another
    host, whose PID means nothing here, holds it). Such a process, this one included, counts as
    the writer without a lock test: opening and closing a file whose lock this process holds
    would drop that lock where flock is emulated by POSIX locks (NFS)."""
    if _may_have_written(path, pid):
        return False
    try:
        fd = os.open(path, os.O_RDWR)  # NFS takes a lock only on a file open for writing
    except OSError:
        return False
    try:
        taken = try_lock(fd)
    finally:
        os.close(fd)
    return bool(taken) or (taken is None and os.name == "nt")  # Windows: the PID is all there is


_LOCK = ".lock"  # in a temporary folder, held by its writer
_START_SLACK_S = 2.0  # a process's start time is known to about a second (Linux: boot time)
UNLOCKED_STALE_S = 3600.0  # a temporary folder without a lock file is stale after this long


@contextlib.contextmanager
def temporary_folder(parent: Path, prefix: str) -> Iterator[Path]:
    """A new hidden folder ``PREFIX<pid>-XXXXXXXX`` in ``parent``, removed on exit, holding a
    ``.lock`` file whose lock this process keeps meanwhile, so that
    :func:`clean_stale_folders` removes it only once its writer is gone (killed, crashed)."""
    with tempfile.TemporaryDirectory(prefix=f"{prefix}{os.getpid()}-", dir=parent) as tmp:
        fd = os.open(os.path.join(tmp, _LOCK), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            try_lock(fd)
            yield Path(tmp)
        finally:
            os.close(fd)  # before the removal: Windows removes only closed files


def clean_stale_folders(parent: Path, prefix: str) -> int:
    """Remove the folders :func:`temporary_folder` made in ``parent`` with ``prefix`` whose
    writers no longer run; returns how many. Only real folders (not links) whose name starts
    with ``prefix`` are considered; one without a lock file (from a version that made none, or
    a writer killed between making it and locking) goes once unchanged for an hour."""
    removed = 0
    try:
        names = os.listdir(parent)
    except OSError:
        return 0
    for name in names:
        folder = os.path.join(parent, name)
        if not name.startswith(prefix) or os.path.islink(folder) or not os.path.isdir(folder):
            continue
        pid = re.match(r"(\d+)-", name[len(prefix):])
        lock = os.path.join(folder, _LOCK)
        if pid and os.path.isfile(lock):
            stale = writer_gone(lock, int(pid.group(1)))
        else:
            stale = time.time() - _mtime(folder) > UNLOCKED_STALE_S
        if stale:
            shutil.rmtree(folder, ignore_errors=True)
            removed += not os.path.lexists(folder)
    return removed


@contextlib.contextmanager
def locked_folder(folder: Path, wait_s: float) -> Iterator[None]:
    """Hold ``folder``'s exclusive advisory lock while inside, so that processes that read, merge
    and rewrite a file there take turns instead of dropping each other's changes. Where no lock
    can be taken (Windows, a file system without locks), or after ``wait_s`` seconds of waiting
    (a holder that is stuck never stops a run), the body runs without it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        deadline = time.monotonic() + wait_s
        while try_lock(fd) is False and time.monotonic() < deadline:
            time.sleep(0.01)
        yield
    finally:
        os.close(fd)


def try_lock(fd: int) -> bool | None:
    """Take the exclusive advisory lock of an open file without waiting: True when taken, False
    while another process holds it, None where no such lock can be taken (Windows, a file
    system without locks)."""
    try:
        import fcntl
    except ImportError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        return None
    return True


def _mtime(path: str) -> float:
    """When ``path`` last changed; now (never stale) when that cannot be read."""
    try:
        return os.stat(path).st_mtime
    except OSError:
        return time.time()


def _may_have_written(path: str, pid: int) -> bool:
    """Whether process ``pid`` runs and started before ``path`` last changed. A process that
    started later holds a reused PID and did not write it: a container's PID 1 after a restart,
    this very process included."""
    try:
        started = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return False
    except (psutil.Error, OverflowError, ValueError, OSError):
        return True  # running, but not ours to inspect
    try:
        changed = os.stat(path).st_mtime
    except OSError:
        return True
    return started <= changed + _START_SLACK_S


def _atomic(path: Path, overwrite: bool, write: Callable[[BinaryIO], object],
            mode: int | None = None) -> None:
    """Write ``path`` through ``write`` into a part file beside it, then rename it into place;
    every failure is the library's one-line error naming ``path``."""
    path = Path(path)
    final = link_target(path)  # messages name ``path``, as the user did
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a file where a folder should be included
        raise write_failure(e, path, f"cannot make its folder ({reason(e)})", final.parent,
                             creating=True) from e
    if special_file(final):
        raise WriteError(f"cannot write {path}: a pipe, device or socket, not a regular file")
    if overwrite:
        check_replaceable(final)
    made = False  # whether the part was made: a refusal before then is the folder's
    try:
        with _new_part(final) as (f, tmp):  # beside the final file: a rename across disks fails
            made = True
            keep_mode(tmp, final if overwrite else None, mode)
            write(f)
            f.flush()
            os.fsync(f.fileno())
            if os.name != "posix":  # Windows renames only closed files
                f.close()
            _publish(tmp, final, overwrite)
    except FileExistsError as e:
        raise OutputExistsError(f"{path} exists", path=path) from e
    except Exception as e:
        if isinstance(e, DRCNError):
            raise
        raise write_failure(e, path, reason(e), final.parent, creating=not made) from e


def _publish(tmp: str, path: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, path)
    else:
        _link_new(tmp, path)


def _link_new(tmp: str, path: Path) -> None:
    """Move ``tmp`` to ``path`` only if ``path`` does not exist (hard link where supported)."""
    try:
        os.link(tmp, path)  # atomic and fails if the target appeared meanwhile
    except FileExistsError:
        raise
    except OSError:  # file systems without hard links
        if path.exists():
            raise FileExistsError(path) from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def _remove(path: str | None) -> None:
    if path is not None:
        with contextlib.suppress(OSError):
            os.unlink(path)
