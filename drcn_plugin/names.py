"""File names that every common file system takes: results written on Linux to an NTFS or exFAT
disk, a USB stick, or a folder synced to Windows later must open there too, and must fit the
file system they are written to."""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path

from .errors import BadOptionError, single_line

NAME_MAX = 255  # bytes in a file name on common file systems; no name is made longer
# Windows refuses these in names (and "/" everywhere separates folders); control characters,
# and bytes that are not text (surrogate escapes), no file system that Windows reads takes.
_REFUSED = re.compile(r'[<>:"/\\|?*\x00-\x1f\x7f-\x9f\ud800-\udfff]')
# Names Windows keeps for devices, whatever their case or extension (COM¹ is COM1).
_DEVICES = {"CON", "PRN", "AUX", "NUL"} | {f"{port}{n}" for port in ("COM", "LPT")
                                          for n in "0123456789\u00b9\u00b2\u00b3"}


def check_name_part(text: str, option: str) -> None:
    """Refuse a part of file names (``--suffix``) holding a character Windows or its file
    systems refuse, a path separator or a control character (:class:`BadOptionError`)."""
    bad = _REFUSED.search(text)
    if bad is None:
        return
    ch = bad.group()
    shown = single_line(ch)
    what = "a path separator" if ch in "/\\" else \
        f"'{ch}', which Windows refuses in file names" if ch in '<>:"|?*' else \
        f"the control character {shown}" if ch < "\ud800" else \
        f"the byte {shown}, which is not text in this system's encoding"
    raise BadOptionError(f"'{single_line(text)}' holds {what}", option=option)


def refuse_dash(output: Path, option: str, made: str = "a folder", name: str = "a file or "
                "folder") -> None:
    """Refuse ``-``, which reads as standard output, where it would make ``made`` named '-'."""
    if str(output) == "-":
        raise BadOptionError(f"'-' would be {made} named '-': drcn writes results to files, "
                             f"not to standard output (name {name})", option=option)


def check_output_file(output: Path, extensions: Iterable[str]) -> None:
    """Refuse an output that is no file or folder name drcn should make: ``-`` (results are
    files, not standard output) and a name whose image extension is followed by dots or
    spaces (``big.png.``), which Windows drops and Linux keeps, making a folder of it."""
    name = output.name
    refuse_dash(output, "output")
    meant = name.rstrip(". ")
    if meant != name and os.path.splitext(meant)[1].lower() in extensions:
        raise BadOptionError(f"'{single_line(str(output))}' ends in a dot or space after its "
                             f"extension, which Windows drops: name the file {meant}, or a "
                             "folder", option="output")


def windows_device(name: str) -> bool:
    """Whether Windows takes the file name ``name`` for a device (``CON``, ``com1.png``,
    ``aux .tar.gz``): the part before its first dot, spaces at its end ignored."""
    return name.split(".", 1)[0].rstrip(" ").upper() in _DEVICES


def name_max(folder: Path) -> int:
    """The longest file name in bytes that ``folder``'s file system takes (the file system of
    its nearest existing parent when it is still to be made), at most :data:`NAME_MAX`."""
    here = Path(folder)
    while not os.path.isdir(here) and here != here.parent:
        here = here.parent
    try:
        limit = os.pathconf(here, "PC_NAME_MAX")
    except (AttributeError, OSError, ValueError):  # Windows has no pathconf
        return NAME_MAX
    return min(limit, NAME_MAX) if limit > 0 else NAME_MAX


def collision_key(path: Path) -> str:
    """``path`` as a file system compares it: names that differ only in case collide on macOS
    and Windows file systems, and on macOS's also names that differ only in how an accent is
    encoded (é as one character, or e and a combining accent)."""
    return unicodedata.normalize("NFC", str(path)).lower()
