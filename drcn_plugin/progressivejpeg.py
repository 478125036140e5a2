"""Progressive JPEG saved whatever its size: libjpeg writes such a file's scans only once every
pixel is in, and cannot then pause to hand a full buffer on ("Suspension not allowed here"), so
Pillow's encoder must be given a buffer the whole file fits in. Pillow guesses 2 bytes a pixel
at quality 95 and up, 1 below, which a detailed image at a high quality passes (2.9 for noise
at 100, 4:4:4); the buffer is given libjpeg-turbo's bound instead (``tjBufSize``). Its pages
are taken only as the file fills them; what libjpeg holds meanwhile, every DCT coefficient, is
counted before the upscale (:func:`coefficient_bytes`)."""

from __future__ import annotations

import threading
from typing import BinaryIO

from PIL import Image, ImageFile

_LOCK = threading.Lock()  # ImageFile.MAXBLOCK is Pillow's global: one such save at a time
_CHROMA = {0: 4, 1: 2, 2: 1}  # bytes a pixel of colour adds, by subsampling (4:4:4, 4:2:2, 4:2:0)
_MARKERS = 1 << 16  # the headers, tables and segment markers around the metadata


def save_progressive(im: Image.Image, f: BinaryIO, options: dict) -> None:
    """Save ``im`` to ``f`` as a JPEG with Pillow's ``options`` (``progressive`` among them),
    its encoder given room for the largest file it can make (Pillow's buffer size restored)."""
    chroma = 0 if im.mode == "L" else _CHROMA.get(options.get("subsampling"), 4)
    pixels = _padded(im.height, im.width)
    metadata = sum(len(options.get(key) or b"")
                   for key in ("icc_profile", "exif", "xmp", "extra", "comment"))
    with _LOCK:
        kept = ImageFile.MAXBLOCK
        ImageFile.MAXBLOCK = max(kept, pixels * (2 + chroma) + metadata + _MARKERS)
        try:
            im.save(f, format="JPEG", **options)
        finally:
            ImageFile.MAXBLOCK = kept


def coefficient_bytes(size: tuple[int, int], channels: int) -> int:
    """Bytes libjpeg holds while it writes a progressive JPEG of ``size`` (height, width), beside
    the image (a baseline one is written a few rows at a time): every DCT coefficient, 2 bytes a
    sample, colour counted at 4:4:4 (how quality 90 and up is written)."""
    return 2 * (1 if channels <= 2 else 3) * _padded(*size)


def _padded(height: int, width: int) -> int:
    """The pixels of ``height x width`` padded to whole blocks (16 px: 4:2:0's)."""
    return -(-height // 16) * 16 * -(-width // 16) * 16
