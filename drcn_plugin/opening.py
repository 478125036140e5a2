"""Opening image files: regular files only, and why Pillow refused one it has a reader for."""

from __future__ import annotations

import errno
import os
import stat
import warnings
from pathlib import Path
from typing import BinaryIO

from PIL import Image

from .errors import BadImageError, one_line


def open_regular(path: Path) -> BinaryIO:
    """``path`` opened for reading if it is a regular file: a pipe or device put in its place (an
    input swapped during a batch) would block the read for ever, so it is refused at once."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if not stat.S_ISREG(mode):
            raise BadImageError(f"{path}: not a regular file (a pipe, device or socket)")
        if hasattr(os, "O_NONBLOCK"):  # reads of a regular file block, on every file system
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def reader_refusal(path: Path) -> str:
    """Why the Pillow reader that claims ``path``'s first bytes refused it (a 12-bit JPEG, a
    half-float TIFF), as `` (its JPEG reader: ...)``, which Pillow's own error leaves out; empty
    when no reader claims the file."""
    Image.init()
    try:
        with open_regular(path) as f, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the reader's complaints on the way are not the reason
            head = f.read(16)
            for fmt in Image.ID:
                factory, accept = Image.OPEN[fmt]
                try:  # a reader taking any bytes (no check) says little
                    claimed = accept(head) if accept else False
                except Exception:  # noqa: BLE001 - bytes too few for its check: not its format
                    continue
                if not claimed or isinstance(claimed, str):
                    continue
                f.seek(0)
                try:
                    factory(f, str(path)).close()
                except Exception as e:  # noqa: BLE001 - its reason is what is wanted
                    return f" (its {fmt} reader: {one_line(e)})"
    except (OSError, BadImageError):
        pass
    return ""
