"""Colour at more than 8 bits, which Pillow holds only at 8: a 10- or 12-bit HEIF's pixels read
through pillow-heif at 16 bits, and a 16-bit colour result written as PNG by giving the file
Pillow wrote at 8 bits (with every chunk it keeps) a 16-bit header and pixel data. An HDR (PQ,
HLG) photo's gradients band at 8 bits."""

from __future__ import annotations

import struct
import zlib
from typing import BinaryIO

import numpy as np
from PIL import Image

from .colourspace import png_chunk

DEEP_PIXELS = "drcn.pixels16"  # the info key of an encoded image's 16-bit colour, for PNG
_IDAT_SIZE = 1 << 20  # bytes of pixel data in each IDAT chunk
_SUB = 1  # PNG's filter type that stores each byte less the one a pixel before


def heif_pixels16(f: BinaryIO, im: Image.Image, notes: list[str],
                  turns: bool = False) -> np.ndarray | None:
    """A 10- or 12-bit colour HEIF's pixels as uint16 (0..65535), turned as pillow-heif's
    Pillow plugin turns them; None for other images. A deep HEIF read at 8 bits after all
    (grey, pillow-heif failing, or pixels the caller still ``turns``) is noted. ``f`` is the
    open file, whose position is kept."""
    depth = im.info.get("bit_depth", 8) if im.format == "HEIF" else 8
    if not (isinstance(depth, int) and depth > 8 and im.mode in ("L", "LA", "RGB", "RGBA")):
        return None
    pixels = None
    if not turns and im.mode in ("RGB", "RGBA"):
        where = f.tell()
        try:
            from pillow_heif import open_heif

            f.seek(0)
            pixels = np.asarray(open_heif(f, convert_hdr_to_8bit=False))
        except Exception:  # noqa: BLE001 - the 8-bit decode stands, noted
            pixels = None
        finally:
            f.seek(where)
    shape = (im.height, im.width, len(im.mode))  # RGB or RGBA
    if pixels is None or pixels.dtype != np.uint16 or pixels.shape != shape:
        notes.append(f"{depth}-bit HEIF read and written as 8 bits")
        return None
    return pixels


def png_pixels16(data: bytes, pixels: np.ndarray) -> bytes:
    """The RGB or RGBA PNG file ``data`` (8 bits a sample, as Pillow writes it) holding the
    16-bit ``pixels`` of the same size instead, each row Sub-filtered; other chunks stay."""
    height = pixels.shape[0]
    raw = pixels.astype(">u2").view(np.uint8).reshape(height, -1)
    step = 2 * pixels.shape[2]  # bytes a pixel
    rows = np.empty((height, raw.shape[1] + 1), np.uint8)
    rows[:, 0] = _SUB
    rows[:, 1:step + 1] = raw[:, :step]
    np.subtract(raw[:, step:], raw[:, :-step], out=rows[:, step + 1:])  # wraps, as PNG's does
    compressed = zlib.compress(rows.tobytes(), 6)
    out, pos, idat = [data[:8]], 8, True
    while pos + 12 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        if kind == b"IHDR":
            head = data[pos + 8:pos + 8 + length]
            out.append(png_chunk(kind, head[:8] + b"\x10" + head[9:]))
        elif kind != b"IDAT":
            out.append(data[pos:pos + 12 + length])
        elif idat:  # the new pixel data where the old began
            out += [png_chunk(kind, compressed[i:i + _IDAT_SIZE])
                    for i in range(0, len(compressed), _IDAT_SIZE)]
            idat = False
        pos += 12 + length
    return b"".join(out)
