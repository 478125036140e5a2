"""The folders the installers own in a host's plug-in folder: built beside their place, then
swapped in; an earlier one is replaced only while it holds nothing the installer did not write.

A copied install records the files it wrote in ``.drcn-installed``, so a later install (of
another version, with other files) knows them, and only them; a folder without that record
(written by a version that kept none) may hold only the files this installer writes, or an
earlier version wrote. Python's ``__pycache__`` folders, which the host writes when it loads
the code, are the installer's too.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
from collections.abc import Collection, Iterator
from pathlib import Path

import psutil

from ..errors import InstallError, reason

MANIFEST = ".drcn-installed"


def beside(dest: Path, kind: str) -> Path:
    """A hidden place beside ``dest`` for this process's new (``part``) or earlier (``old``)
    install; named ``*.disabled`` because ComfyUI loads every folder in ``custom_nodes/``, hidden
    ones too, but those."""
    return dest.with_name(f".{dest.name}.{os.getpid()}.{kind}.disabled")


def clear_leftovers(dest: Path) -> None:
    """Remove what installs and uninstalls killed part way (SIGKILL, a power cut) left beside
    ``dest``: the hidden folders of :func:`beside` named by a process that no longer runs (a
    running one, even with a reused PID, may be mid-swap and keeps its own)."""
    leftover = re.compile(rf"\.{re.escape(dest.name)}\.(\d+)\.(?:part|old)\.disabled")
    try:
        names = os.listdir(dest.parent)
    except OSError:  # no folder yet, or one the install itself names the error of
        return
    for name in names:
        found = leftover.fullmatch(name)
        if found and not psutil.pid_exists(int(found[1])):
            with contextlib.suppress(OSError):  # hidden from the host either way
                remove(dest.parent / name)


def files_under(folder: Path, follow_links: bool = False) -> list[str]:
    """Every file below ``folder``, as relative POSIX paths: a link (to a folder too) is one
    file, or with ``follow_links`` what it leads to (InstallError for a link back into a folder
    that holds it, whose copy would never end); a folder that cannot be read raises its OSError
    (``os.walk`` alone skips it, hiding the files in it)."""
    found, real = [], {}
    for top, dirs, files in os.walk(folder, onerror=_raise, followlinks=follow_links):
        here = Path(top).relative_to(folder)
        links = [d for d in dirs if os.path.islink(os.path.join(top, d))]
        if follow_links:
            real[here] = os.path.realpath(top)
            if any(real[up] == real[here] for up in here.parents):
                raise InstallError(f"{top} is a link back into a folder that holds it: its copy "
                                   "would never end")
        found += [(here / name).as_posix() for name in files + ([] if follow_links else links)]
    return sorted(found)


def _raise(error: OSError) -> None:
    """Raise ``error``: the ``onerror`` that makes ``os.walk`` stop at what it cannot read."""
    raise error


def copy_files(source: Path, dest: Path) -> None:
    """Copy ``source``'s files (not Python's caches) into the new folder ``dest``, a linked file
    or folder as what it leads to (a copy is self-contained, as ``copytree(symlinks=False)``
    makes it), stopping at the first failure with its own OSError (``shutil.copytree`` goes on,
    then raises one error listing every failure with the hidden folder's paths)."""
    for name in files_under(source, follow_links=True):
        if "__pycache__" not in name.split("/"):
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / name, dest / name)


def record_files(folder: Path) -> None:
    """Write ``folder``'s manifest: the files an install put there."""
    names = [n for n in files_under(folder) if n != MANIFEST]
    (folder / MANIFEST).write_text("\n".join(names) + "\n", encoding="utf-8")


def check_replaceable(dest: Path, writes: Collection[str]) -> None:
    """Refuse to replace ``dest`` (a real folder) when it holds a file no install wrote there:
    not in its manifest or, in a folder without one, not in ``writes`` (what this install or
    one that kept no manifest writes), nor Python's cache."""
    if dest.is_symlink() or not dest.is_dir():
        return
    try:  # with a record, the files it lists alone are an install's: not a user's of a name
        known = {*(dest / MANIFEST).read_text(encoding="utf-8").splitlines(), MANIFEST}
    except FileNotFoundError:
        known = set(writes)
    except (OSError, UnicodeDecodeError) as e:
        raise InstallError(f"cannot read {dest / MANIFEST}: {reason(e)}") from e
    try:  # a folder not read may hold a user's files, which a removal would take with it
        found = files_under(dest)
    except OSError as e:
        raise InstallError(f"cannot read {e.filename}: {reason(e)}; {dest} may hold files this "
                           "installer did not write: move it away first") from e
    foreign = [n for n in found if n not in known and "__pycache__" not in n.split("/")[:-1]]
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise InstallError(f"{dest} holds files this installer did not write ({foreign[0]}"
                           f"{more}): move it away first")


@contextlib.contextmanager
def building(dest: Path) -> Iterator[Path]:
    """The hidden folder to build ``dest``'s new install in, swapped in when the block ends
    without error, and removed (read-only parts too) whatever happens: a failure or a Ctrl-C
    leaves no half-built folder."""
    new = beside(dest, "part")
    try:
        remove(new)  # left by a process of this PID long gone
        yield new
        swap_in(new, dest)
    finally:
        with contextlib.suppress(OSError):  # hidden from the host either way
            remove(new)


def swap_in(new: Path, dest: Path) -> None:
    """Put the complete folder (or link) ``new`` at ``dest``; an earlier ``dest`` is moved aside
    first, put back if the move fails, then removed (if that fails, it stays hidden beside)."""
    clear_leftovers(dest)
    old = beside(dest, "old")
    had = dest.is_symlink() or dest.exists()
    if had:
        remove(old)  # left by a process of this PID long gone
        dest.rename(old)
    try:
        new.rename(dest)
    except BaseException:  # Ctrl-C too: the earlier install goes back, never left hidden
        if had:
            old.rename(dest)
        raise
    if had:
        with contextlib.suppress(OSError):  # the new install is in place either way
            remove(old)


def remove(path: Path) -> None:
    """Remove a link, file or folder tree at ``path``, if there is one; a read-only folder (or
    file, which Windows will not delete) in the tree is made writable first."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        try:
            shutil.rmtree(path)
        except PermissionError:
            _make_writable(path)
            shutil.rmtree(path)


def _make_writable(path: Path) -> None:
    """Give the owner write (and, for folders, list) rights throughout ``path``'s tree."""
    if path.is_symlink():
        return
    extra = stat.S_IRWXU if path.is_dir() else stat.S_IWUSR
    with contextlib.suppress(OSError):  # rmtree names what still cannot go
        path.chmod(path.stat().st_mode | extra)
    if path.is_dir():
        for child in path.iterdir():
            _make_writable(child)


def uninstall(dest: Path) -> bool:
    """Remove the install at ``dest`` (checked by the caller to be one that holds nothing but
    what installs wrote); False when there is none."""
    clear_leftovers(dest)
    if not (dest.is_symlink() or dest.exists()):
        return False
    aside = beside(dest, "old")
    try:  # moved aside whole first: a removal that fails midway leaves no half install
        remove(aside)
        dest.rename(aside)
    except OSError as e:
        raise InstallError(f"cannot remove {dest}: {reason(e)}") from e
    with contextlib.suppress(OSError):  # gone from its place either way
        remove(aside)
    return True
