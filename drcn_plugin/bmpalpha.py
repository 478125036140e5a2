"""BMP results with alpha, written with a BITMAPV4HEADER whose masks say where alpha is. Pillow
writes RGBA as 32-bit BI_RGB, whose fourth byte the format leaves unused: Pillow itself, and
other readers that keep to the format, then read the result as opaque."""

from __future__ import annotations

import struct
from typing import BinaryIO

import numpy as np
from PIL import Image

_FILE_HEADER, _V4_HEADER = 14, 108  # BITMAPFILEHEADER, BITMAPV4HEADER
_BI_BITFIELDS = 3
_MASKS = (0x00FF0000, 0x0000FF00, 0x000000FF, 0xFF000000)  # red, green, blue, alpha of a pixel
_SRGB = b"BGRs"  # LCS_sRGB, as V4's colour space field stores it (little-endian)
_ROWS = 256  # rows converted and written at a time
_INCH = 39.3701  # inches in a metre: BMP's resolution is in pixels per metre


def write_bmp_rgba(f: BinaryIO, im: Image.Image, dpi: tuple[float, float] | None) -> None:
    """Write the RGBA ``im`` to ``f`` as a 32-bit BMP with an alpha mask, at ``dpi`` (Pillow's
    96 when None), bottom row first as BMP stores them, a block of rows at a time."""
    width, height = im.size
    image = 4 * width * height
    offset = _FILE_HEADER + _V4_HEADER
    if offset + image > 2**32 - 1:
        raise ValueError("File size is too large for the BMP format")  # as Pillow says it
    ppm = tuple(int(v * _INCH + 0.5) for v in (dpi or (96, 96)))
    f.write(b"BM" + struct.pack("<IHHI", offset + image, 0, 0, offset))
    f.write(struct.pack("<IiiHHIIiiII4I", _V4_HEADER, width, height, 1, 32, _BI_BITFIELDS,
                        image, *ppm, 0, 0, *_MASKS) + _SRGB + bytes(48))  # endpoints, gammas
    for bottom in range(height, 0, -_ROWS):
        rows = np.asarray(im.crop((0, max(0, bottom - _ROWS), width, bottom)))
        f.write(np.ascontiguousarray(rows[::-1, :, [2, 1, 0, 3]]).tobytes())
