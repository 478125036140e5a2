"""16-bit colour TIFF, which Pillow holds only at 8 bits: which files :mod:`.deep` can read at 16
bits by decoding them twice (Pillow's unpacker of each sample's other byte), and a 16-bit
colour (or grey with alpha) result written as TIFF by giving the tags of the file Pillow writes
for a 1x1 image of its mode (ICC profile, resolution, EXIF, XMP, IPTC) the result's size, 16
bits and pixels, Deflate-compressed with the horizontal predictor a strip at a time; a float
one so, as 32-bit floats with the floating-point predictor; and so 8-bit pixels, or 16-bit grey,
whose EXIF sub-IFDs libtiff, Pillow's compressing writer, cannot write."""

from __future__ import annotations

import io
import struct
import sys
import zlib
from functools import partial
from itertools import accumulate
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile, TiffImagePlugin, TiffTags

from .cpus import in_order

# The TIFF compressions whose strips libtiff (or Pillow, uncompressed) unpacks with the raw mode
# it is given, and how a note names the others
_TWICE_DECODED = frozenset({"raw", "tiff_lzw", "tiff_adobe_deflate", "tiff_deflate", "packbits"})
_NAMES = {"jpeg": "JPEG", "lzma": "LZMA", "zstd": "Zstandard", "webp": "WebP"}
_PLANAR, _SEPARATE = 284, 2  # PlanarConfiguration: each channel stored as its own plane
# Pillow's raw modes of 16-bit TIFF colour (libtiff's in the machine's byte order, "N") and
# those that unpack the other byte of each sample; RGBX is colour and a channel not marked alpha
_OTHER = "B" if sys.byteorder == "little" else "L"
_LOW_BYTES = {f"{mode};16{order}": f"{mode};16{low}" for mode in ("RGB", "RGBA", "RGBX")
              for order, low in (("B", "L"), ("L", "B"), ("N", _OTHER))}

_STRIP_SIZE = 1 << 18  # bytes of pixels in each strip written
# zlib's level of a 16-bit PNG's or TIFF's pixels. A result's low bytes are close to noise, so
# searching harder finds little: Set14's monarch upscaled to 4000x3000 in float, written as PNG
# on one thread, took 4.1 s at level 6 (55.44 MB), 2.7 s at 3 (55.55 MB), 1.8 s at 1 (55.80 MB);
# over Set14 at 2000x1500 level 1 was 0.6-1.3 % larger than 6 for photos, 5 % for a slide (ppt3).
DEFLATE_LEVEL = 1
_ADOBE_DEFLATE, _HORIZONTAL, _FLOATING_POINT = 8, 2, 3  # the Compression and Predictors written
_IEEE_FLOAT = 3  # the SampleFormat of float samples
_LAYOUT = (TiffImagePlugin.IMAGEWIDTH, TiffImagePlugin.IMAGELENGTH,
           TiffImagePlugin.BITSPERSAMPLE, TiffImagePlugin.COMPRESSION,
           TiffImagePlugin.STRIPOFFSETS, TiffImagePlugin.ROWSPERSTRIP,
           TiffImagePlugin.STRIPBYTECOUNTS, TiffImagePlugin.PREDICTOR,
           TiffImagePlugin.SAMPLEFORMAT)
# the most bytes of pixels written as a TIFF, whose offsets are 32-bit: Deflate's worst
# case adds about 0.03 %, and the tags (ICC profile, XMP) take room too
TIFF16_MAX_BYTES = 2**32 - 2**26


def low_byte_tiles(im: Image.Image, stored: str, tiles: list[ImageFile._Tile]) -> \
        list[ImageFile._Tile] | None:
    """``tiles``, those of a second opening of the file of ``im`` (a TIFF Pillow decoded from
    16-bit colour stored as ``stored``) by Pillow's own reader, made to unpack the other byte of
    each sample; None where a second decode would not give it (see :func:`why_8_bits`)."""
    if why_8_bits(im, stored) or stored not in _LOW_BYTES or not tiles:
        return None
    if im.tag_v2.get(_PLANAR) != _SEPARATE:
        if any(tile.args[0] not in _LOW_BYTES for tile in tiles):
            return None
        return [tile._replace(args=(_LOW_BYTES[tile.args[0]], *tile.args[1:])) for tile in tiles]
    # Pillow's reader gives each plane's strips in turn (naming their band wrongly past the
    # fourth plane): those of the image's bands are read as 16-bit samples of their band
    per, left = divmod(len(tiles), im.tag_v2.get(TiffImagePlugin.SAMPLESPERPIXEL, 1))
    if left or not per or any(tile.codec_name != "raw" for tile in tiles):
        return None
    other = "L" if im.tag_v2.prefix == b"MM" else "B"
    return [tile._replace(args=(f"{im.mode[i // per]};16{other}", *tile.args[1:]))
            for i, tile in enumerate(tiles[:per * len(im.mode)])]


def why_8_bits(im: Image.Image, stored: str) -> str:
    """Why ``im``, a TIFF of 16-bit colour stored as ``stored``, is read at 8 bits, for a note;
    empty when it need not be, or is not RGB. libtiff unpacks separate planes its own way,
    whatever raw mode it is given; premultiplied alpha would have to be undone at 16 bits; other
    compressions are not known to unpack with the raw mode given."""
    if im.format != "TIFF" or stored.partition(";")[0] not in ("RGB", "RGBA", "RGBX", "RGBa"):
        return ""
    compression = getattr(im, "_compression", "raw")
    if stored.startswith("RGBa"):
        return "16-bit TIFF colour is read only with unpremultiplied alpha"
    if compression not in _TWICE_DECODED:
        return ("16-bit TIFF colour is read only uncompressed or LZW, Deflate or PackBits "
                f"compressed, not {_NAMES.get(compression, compression)}")
    if im.tag_v2.get(_PLANAR) == _SEPARATE and compression != "raw":
        return "16-bit TIFF colour stored as separate planes is read only uncompressed"
    return ""


def write_tiff_deep(f: BinaryIO, data: bytes, pixels: np.ndarray, *,
                    level: int = DEFLATE_LEVEL, threads: int | None = None) -> None:
    """Write to ``f`` (which must be seekable) the TIFF file ``data`` (Pillow's, of any size:
    only its tags are kept) holding the 8- or 16-bit ``pixels`` (``H x W [x C]``) instead, or
    float ones as 32-bit floats. The strips are differenced (TIFF's horizontal or
    floating-point predictor) and compressed at zlib ``level`` on ``threads`` threads
    (default: every usable CPU), a few at a time, so that writing takes little memory beside
    the pixels; the directory, written first, gets the strips' sizes last."""
    pixels = pixels.reshape(*pixels.shape[:2], -1)  # grey as one channel
    height, width, channels = pixels.shape
    floats = pixels.dtype.kind == "f"
    size = 4 if floats else pixels.dtype.itemsize  # bytes a sample
    rows = max(1, _STRIP_SIZE // (size * width * channels))  # rows a strip
    ifd = _tags(data)
    ifd[TiffImagePlugin.IMAGEWIDTH], ifd[TiffImagePlugin.IMAGELENGTH] = width, height
    ifd[TiffImagePlugin.BITSPERSAMPLE] = (8 * size,) * channels
    ifd[TiffImagePlugin.COMPRESSION] = _ADOBE_DEFLATE
    ifd[TiffImagePlugin.PREDICTOR] = _FLOATING_POINT if floats else _HORIZONTAL
    if floats:
        ifd[TiffImagePlugin.SAMPLEFORMAT] = (_IEEE_FLOAT,) * channels
    ifd[TiffImagePlugin.ROWSPERSTRIP] = rows
    sizes = [0] * -(-height // rows)
    start = f.tell()
    f.write(_directory(ifd, sizes))
    strips = (pixels[y:y + rows] for y in range(0, height, rows))
    deflated = _float_deflated if floats else _deflated
    for i, strip in enumerate(in_order(partial(deflated, level), strips, threads)):
        sizes[i] = len(strip)
        f.write(strip)
    end = f.tell()
    f.seek(start)
    f.write(_directory(ifd, sizes))  # as long as the first: only the strips' values differ
    f.seek(end)


def _tags(data: bytes) -> TiffImagePlugin.ImageFileDirectory_v2:
    """The first directory of the TIFF file ``data`` without its pixels' layout: its tags with
    their types, and its EXIF and GPS directories as directories of their own."""
    ifd = TiffImagePlugin.ImageFileDirectory_v2(prefix=b"II")
    with Image.open(io.BytesIO(data)) as stand_in:
        exif = stand_in.getexif()
        for tag, value in stand_in.tag_v2.items():
            if tag in TiffTags.TAGS_V2_GROUPS:  # an offset in the old file: its tags instead
                ifd[tag] = exif.get_ifd(tag)
            elif tag not in _LAYOUT:
                ifd[tag] = value
                ifd.tagtype[tag] = stand_in.tag_v2.tagtype[tag]
    return ifd


def _directory(ifd: TiffImagePlugin.ImageFileDirectory_v2, sizes: list[int]) -> bytes:
    """The file's header and ``ifd`` with strips of ``sizes`` bytes following it."""
    ifd.tagtype[TiffImagePlugin.STRIPOFFSETS] = TiffTags.LONG
    ifd.tagtype[TiffImagePlugin.STRIPBYTECOUNTS] = TiffTags.LONG
    ifd[TiffImagePlugin.STRIPOFFSETS] = (0, *accumulate(sizes[:-1]))  # from the IFD's end
    ifd[TiffImagePlugin.STRIPBYTECOUNTS] = tuple(sizes)
    return b"II*\0" + struct.pack("<I", 8) + ifd.tobytes(8)


def _deflated(level: int, rows: np.ndarray) -> bytes:
    """8- or 16-bit ``rows`` as TIFF's horizontal predictor stores them (each sample less the
    one a pixel before, wrapping; little-endian), compressed at zlib ``level``."""
    out = np.empty(rows.shape, rows.dtype.newbyteorder("<"))
    out[:, 0] = rows[:, 0]
    np.subtract(rows[:, 1:], rows[:, :-1], out=out[:, 1:])
    return zlib.compress(out, level)


def _float_deflated(level: int, rows: np.ndarray) -> bytes:
    """Float ``rows`` as 32-bit floats stored with TIFF's floating-point predictor (each row's
    bytes put in planes from most to least significant, then each byte less the one a pixel
    before, wrapping), compressed at zlib ``level``."""
    height, width, channels = rows.shape
    planes = np.ascontiguousarray(rows, ">f4").view(np.uint8).reshape(height, width * channels, 4)
    planes = np.ascontiguousarray(planes.swapaxes(1, 2)).reshape(height, -1)
    out = planes.copy()
    np.subtract(planes[:, channels:], planes[:, :-channels], out=out[:, channels:])
    return zlib.compress(out, level)
