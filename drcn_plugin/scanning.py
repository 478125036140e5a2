"""Which files the folders and globs of a batch name: folders walked (each real folder once, so
links cannot loop), hidden files passed over, a subfolder that cannot be read named while the
rest of the walk goes on, and the folders a glob matches taken as a shell would give them."""

from __future__ import annotations

import fnmatch
import glob
import os
from pathlib import Path

from .errors import reason
from .sizing import RESULT_FOLDER


def broken_link(path: str | Path) -> bool:
    """A symbolic link to nothing, or one in a loop of links: listed as an input so that its job
    says so, where a folder scan would otherwise pass over a picture the user sees in the
    folder."""
    return os.path.islink(path) and not os.path.exists(path)


def walk(root: Path, recursive: bool, unread: list[str]) -> list[Path]:
    """Files in ``root`` (and below it when ``recursive``, but for the folders of earlier
    results: ``drcn-x2``, ``photos-drcn-w1000``). Symlinked folders are followed, but each real
    folder is visited once, so links into a parent cannot loop. ``root`` itself that
    cannot be read raises OSError; a subfolder that cannot be read (a drive's ``lost+found``,
    ``System Volume Information``) is added to ``unread`` as one line and the walk goes on. A
    pipe, device or socket (or a link to one) is listed, as a broken link is, so that its job
    says what it is: skipped, it would vanish from the counts without a word."""
    files: list[Path] = []
    visited: set[str] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        real = os.path.realpath(folder)
        if real in visited:
            continue
        visited.add(real)
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            if folder == root:
                raise
            unread.append(f"{folder}: cannot read this folder ({reason(e)}); its images are "
                          "not upscaled")
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue  # hidden files, and temporary files of an interrupted write
            try:
                if broken_link(entry.path):  # first: is_dir() raises for a loop; fails as a job
                    files.append(Path(entry.path))
                elif entry.is_dir():
                    if recursive and not RESULT_FOLDER.fullmatch(entry.name):
                        stack.append(Path(entry.path))
                else:  # a file; a pipe, device or socket too, whose job says it is none
                    files.append(Path(entry.path))
            except OSError:
                continue
    return files


def absolute_pattern(spec: str) -> str:
    """The glob ``spec`` as an absolute pattern whose added part (the current folder, a home
    folder for ``~``) is taken literally: a folder named ``Trip [2020]`` holds no glob syntax."""
    head, sep, rest = spec.partition(os.sep) if spec.startswith("~") else ("", "", spec)
    home = os.path.expanduser(head) if head else ""
    if home == head:  # no ~, or a ~user that names nobody: as written
        head, sep, rest, home = "", "", spec, ""
    base = glob.escape(home) + sep if home else \
        "" if os.path.isabs(rest) else glob.escape(os.getcwd()) + os.sep
    return os.path.normpath(base + rest)


def glob_files(pattern: str, recursive: bool, unread: list[str]) -> list[Path]:
    """Files matching ``pattern``; ``**`` (with ``recursive``) walks each real folder once
    instead of following symlinks in circles as :func:`glob.glob` does."""
    if not (recursive and "**" in pattern):
        return [Path(p) for p in glob.glob(pattern) if not os.path.isdir(p)]  # as walk() lists
    parts = Path(pattern).parts
    fixed = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    base, rest = Path(*parts[:fixed]), parts[fixed:]
    if not base.is_dir():
        return []
    return [f for f in walk(base, True, unread) if _match(f.relative_to(base).parts, rest)]


def matched_folders(pattern: str) -> list[Path]:
    """The folders ``pattern`` matches, to be upscaled as folders named alone are: bash expands
    a glob to its folders and files alike, where Windows' cmd passes it on as written. A ``**``
    glob walks the folders itself. Where an earlier run of the glob wrote its results is not an
    input: a ``drcn-x2``-style folder beside files it matches, or a ``NAME-drcn-x2`` one beside a
    folder ``NAME`` it matches."""
    if "**" in pattern:
        return []
    matches = [Path(p) for p in glob.glob(pattern)]
    beside_files = {p.parent for p in matches if not p.is_dir()}
    folders = [p for p in matches if p.is_dir() and not (
        p.parent in beside_files and p.name.startswith("drcn-")
        and RESULT_FOLDER.fullmatch(p.name))]
    return sorted(p for p in folders if not (
        RESULT_FOLDER.fullmatch(p.name)
        and any(p.name.startswith(f"{o.name}-drcn-") for o in folders)))


def _match(parts: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    """Path components against glob components, ``**`` matching any number of folders."""
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_match(parts[i:], pattern[1:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], pattern[0]) \
        and _match(parts[1:], pattern[1:])
