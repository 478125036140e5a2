"""Colour at more than 8 bits, which Pillow holds only at 8: a 10- or 12-bit HEIF's pixels read
through pillow-heif at 16 bits, a 16-bit PNG's or TIFF's (:mod:`.tiff16` says which) by decoding
it twice (high bytes, low bytes), and a 16-bit colour result written as PNG by giving the file
Pillow writes at 8 bits for a 1x1 image of its mode (with every chunk it keeps) the result's
size, 16 bits and pixel data. An HDR (PQ, HLG) image's gradients band at 8 bits."""

from __future__ import annotations

import io
import struct
import zlib
from functools import partial
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from .colourspace import png_chunk
from .cpus import in_order
from .misreads import png_chunks
from .opening import load_pixels
from .pixelmodes import with_key_alpha
from .tiff16 import DEFLATE_LEVEL, low_byte_tiles
from .tiffdeep import StandIn, deep_layout, deep_pixels

_IDAT_SIZE = 1 << 20  # bytes of pixel data in each IDAT chunk
_PIECE_SIZE = 1 << 18  # bytes of 16-bit pixels filtered and deflated on one thread (as a
# TIFF strip): a dictionary lost each piece made a 12 MP PNG 0.06 % larger
_JOIN_SAMPLES = 1 << 18  # samples of a 16-bit PNG's two 8-bit decodes joined at a time
_SUB = 1  # PNG's filter type that stores each byte less the one a pixel before


# Pillow's raw modes of 16-bit PNG colour, and those that unpack the other byte of each sample;
# 16-bit grey with alpha, which Pillow reads as RGBA from the high bytes, is unpacked as the RGBA
# of its four bytes (grey's high and low, alpha's)
_LOW_BYTES = {"RGB;16B": "RGB;16L", "RGBA;16B": "RGBA;16L", "LA;16B": "RGBA"}


def read_deep(f: BinaryIO, im: Image.Image, stored: str, notes: list[str]) -> np.ndarray | None:
    """A loaded deep colour image's pixels as uint16 (a 10/12-bit HEIF's, a 16-bit PNG's or
    TIFF's colour or grey with alpha, turned as Pillow turns them: see :func:`transpose16`; a
    16-bit RGB PNG's transparent colour as alpha), or a float TIFF's as float32; None for other
    images. ``stored`` is Pillow's raw mode of the file's pixels; ``f`` the open file, whose
    position is kept."""
    if im.format == "HEIF":
        return _heif_pixels16(f, im, notes)
    if isinstance(im, StandIn):  # samples Pillow has no mode for
        return deep_pixels(f, im, deep_layout(im.tag_v2))
    key = None  # a 16-bit RGB PNG's transparent colour (tRNS), which Pillow gives in 16 bits
    if im.format == "TIFF":
        low_tiles = partial(low_byte_tiles, im, stored)
    elif im.format == "PNG" and stored in _LOW_BYTES and getattr(im, "n_frames", 1) == 1:
        low_tiles = partial(_png_low_tiles, stored)
        key = im.info.get("transparency") if stored == "RGB;16B" else None
    else:
        return None
    where = f.tell()
    try:
        f.seek(0)
        try:  # Pillow's own reader, whose tiles are a PNG's pixels, a TIFF's strips
            low = Image.open(f)
        except UnidentifiedImageError:  # a TIFF only libtiff reads: its 8-bit reading stands
            return None
        with low:
            tiles = low_tiles(low.tile)
            if tiles is None or low.mode != im.mode:
                return None
            low.tile = tiles
            load_pixels(low)  # turned upright as ``im`` was
            if low.size != im.size:
                return None
            pixels = _joined(im, low, stored)
    finally:
        f.seek(where)
    return pixels if key is None else with_key_alpha(pixels, key)


def _png_low_tiles(stored: str, tiles: list[ImageFile._Tile]) -> list[ImageFile._Tile] | None:
    """A 16-bit PNG's one tile made to unpack the low byte of each sample; None for others."""
    if len(tiles) != 1 or tiles[0].args != stored:
        return None
    return [tiles[0]._replace(args=_LOW_BYTES[stored])]


def _joined(im: Image.Image, low: Image.Image, stored: str) -> np.ndarray:
    """The uint16 samples whose high and low bytes ``im`` and ``low`` hold (``low`` alone for
    16-bit grey with alpha, ``stored`` as ``LA;16B``: the RGBA of grey's high and low bytes,
    alpha's), made a block of rows at a time: no whole-image copy is made beside the result."""
    split = stored == "LA;16B"
    out = np.empty((im.height, im.width, 2 if split else len(im.getbands())), np.uint16)
    step = max(1, _JOIN_SAMPLES // out[:1].size)  # rows a block
    for y in range(0, im.height, step):
        box = (0, y, im.width, min(y + step, im.height))
        lows = np.asarray(low.crop(box))
        highs, lows = (lows[..., 0::2], lows[..., 1::2]) if split else \
            (np.asarray(im.crop(box)), lows)
        rows = out[y:y + step]
        rows[...] = highs
        rows <<= 8
        rows |= lows
    return out


def _heif_pixels16(f: BinaryIO, im: Image.Image, notes: list[str]) -> np.ndarray | None:
    """A 10- or 12-bit colour HEIF's pixels as uint16 (0..65535), turned as pillow-heif's
    Pillow plugin turns them; None for other images. A deep HEIF read at 8 bits after all
    (grey, pillow-heif failing) is noted. ``f`` is the open file, whose position is kept."""
    depth = im.info.get("bit_depth", 8) if im.format == "HEIF" else 8
    if not (isinstance(depth, int) and depth > 8 and im.mode in ("L", "LA", "RGB", "RGBA")):
        return None
    pixels = None
    if im.mode in ("RGB", "RGBA"):
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


# Pillow's transpositions as views of an H x W x C array: its axes swapped, then rows or columns
# reversed
_TURNS = {Image.Transpose.FLIP_LEFT_RIGHT: (False, np.s_[:, ::-1]),
          Image.Transpose.FLIP_TOP_BOTTOM: (False, np.s_[::-1]),
          Image.Transpose.ROTATE_90: (True, np.s_[::-1]),
          Image.Transpose.ROTATE_180: (False, np.s_[::-1, ::-1]),
          Image.Transpose.ROTATE_270: (True, np.s_[:, ::-1]),
          Image.Transpose.TRANSPOSE: (True, np.s_[:]),
          Image.Transpose.TRANSVERSE: (True, np.s_[::-1, ::-1])}


def transpose16(pixels: np.ndarray, method: Image.Transpose) -> np.ndarray:
    """16-bit colour ``pixels`` turned as Pillow's ``transpose(method)`` turns an image, in one
    copy: Pillow holds 16 bits in one channel (I;16), not in colour."""
    swap, flip = _TURNS[method]
    return np.ascontiguousarray((pixels.swapaxes(0, 1) if swap else pixels)[flip])


def write_png16(f: BinaryIO, data: bytes, pixels: np.ndarray, *, level: int = DEFLATE_LEVEL,
                threads: int | None = None) -> None:
    """Write to ``f`` the RGB or RGBA PNG file ``data`` (8 bits a sample, as Pillow writes it,
    of any size: only its chunks are kept) holding the 16-bit ``pixels`` instead, each row
    Sub-filtered, compressed at zlib ``level`` on ``threads`` threads (default: every usable
    CPU; see :func:`_write_idat16`)."""
    encoded, idat = io.BytesIO(data), True
    height, width = pixels.shape[:2]
    f.write(data[:8])  # the signature
    for kind, length in png_chunks(encoded):
        start = encoded.tell() - 8  # the chunk's start, before its length and type
        if kind == b"IHDR":
            head = encoded.read(length)
            f.write(png_chunk(kind, struct.pack(">IIB", width, height, 16) + head[9:]))
        elif kind != b"IDAT":
            f.write(data[start:start + 12 + length])
        elif idat:  # the new pixel data where the old began
            _write_idat16(f, pixels, level, threads)
            idat = False


def _write_idat16(f: BinaryIO, pixels: np.ndarray, level: int, threads: int | None) -> None:
    """16-bit ``pixels`` as PNG's IDAT chunks of at most ``_IDAT_SIZE`` bytes: one zlib stream
    made as pigz makes it, of blocks of rows filtered and deflated each on its own on threads
    (all but the last ending in a sync flush, so that they join), the Adler-32 of the whole
    taken as they come back. Only a few blocks are in memory at a time."""
    height, width, channels = pixels.shape
    block = max(1, _PIECE_SIZE // (width * 2 * channels))  # rows a piece
    pieces = ((pixels[y:y + block], y + block >= height) for y in range(0, height, block))
    pending, adler = bytearray(zlib.compress(b"", level)[:2]), 1  # the zlib header
    for rows, deflated in in_order(partial(_deflated, level), pieces, threads):
        adler = zlib.adler32(rows, adler)
        pending += deflated
        while len(pending) >= _IDAT_SIZE:
            f.write(png_chunk(b"IDAT", bytes(pending[:_IDAT_SIZE])))
            del pending[:_IDAT_SIZE]
    f.write(png_chunk(b"IDAT", bytes(pending + struct.pack(">I", adler))))


def _deflated(level: int, piece: tuple[np.ndarray, bool]) -> tuple[np.ndarray, bytes]:
    """A block of 16-bit rows Sub-filtered as PNG's rows, and them as raw Deflate at ``level``
    ending in a sync flush (a final block, for the image's last rows)."""
    pixels, last = piece
    step = 2 * pixels.shape[2]  # bytes a pixel
    raw = pixels.astype(">u2").view(np.uint8).reshape(len(pixels), -1)
    rows = np.empty((len(raw), raw.shape[1] + 1), np.uint8)
    rows[:, 0] = _SUB
    rows[:, 1:step + 1] = raw[:, :step]
    np.subtract(raw[:, step:], raw[:, :-step], out=rows[:, step + 1:])  # wraps, as PNG's does
    deflate = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    return rows, deflate.compress(rows) + deflate.flush(zlib.Z_FINISH if last else
                                                         zlib.Z_SYNC_FLUSH)
