"""How a decoded Pillow image becomes an engine array: each Pillow mode (1-bit, grey, 16-bit
grey, 32-bit integer, float, palette, CMYK and other colour spaces) as ``H x W`` or ``H x W x C``
uint8, uint16 or float32, with what Pillow reads past or gets wrong put right from the file (a
BMP's alpha, PNG's transparent colour, 16-bit samples Pillow holds at 8 bits) or found for
:mod:`.imagefile` to act on (a TIFF's white-is-zero grey, which it inverts; signed bytes
holding negatives, which it refuses; unmarked extra channels, which it notes). :mod:`.imagefile`
opens and decodes the file; what a conversion changes or drops becomes one of the image's notes.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
from PIL import Image, ImageFile

from .errors import BadImageError, one_line
from .opening import as_tuple
from .profiles import srgb_profile, to_srgb
from .tiff16 import why_8_bits

if TYPE_CHECKING:
    from .imagefile import ImageInfo

# Pillow's raw modes for BMP pixels whose alpha it reads past, and the same pixels with it.
_BMP_WITH_ALPHA = {"BGRX": "BGRA", "BGR;15": "BGRA;15"}
_BMP_ALPHA_BIT = 0x8000  # a 16-bit BMP's alpha mask (ARGB1555)


def bmp_alpha(f: BinaryIO, im: Image.Image) -> Image.Image | None:
    """A 32-bit BMP's fourth byte (Pillow reads it as padding), or a 16-bit one's top bit where
    the header masks it as alpha (Pillow drops it), as alpha when it is not all zero; Pillow
    itself writes RGBA the first way. Read from ``f``, the open file, whose position is kept."""
    if (tile := _bmp_alpha_tile(im)) is None:
        return None
    raw, stride, orient = tile.args
    where = f.tell()
    try:
        if raw == "BGR;15" and _bmp_alpha_mask(f) != _BMP_ALPHA_BIT:
            return None
        f.seek(tile.offset)
        data = f.read(stride * im.height)
    finally:
        f.seek(where)
    if len(data) < stride * im.height:
        return None
    rgba = Image.frombuffer("RGBA", im.size, data, "raw", _BMP_WITH_ALPHA[raw], stride, orient)
    return rgba if rgba.getextrema()[3] != (0, 0) else None


def _bmp_alpha_tile(im: Image.Image) -> ImageFile._Tile | None:
    """A BMP's one raw tile whose pixels may hold an alpha Pillow reads past (:func:`bmp_alpha`);
    None for other images."""
    tile = im.tile[0] if im.format == "BMP" and len(im.tile) == 1 else None
    if tile is None or tile.codec_name != "raw" or tile.args[0] not in _BMP_WITH_ALPHA:
        return None
    return tile


def _bmp_alpha_mask(f: BinaryIO) -> int:
    """The alpha mask a BMP's header declares, 0 when none: a BI_BITFIELDS header of 56 bytes
    or more (V4, V5) holds it after the colour masks."""
    f.seek(14)  # past the file header
    head = f.read(56)
    if len(head) < 56:
        return 0
    size, compression = struct.unpack_from("<I", head)[0], struct.unpack_from("<I", head, 16)[0]
    return struct.unpack_from("<I", head, 52)[0] if compression == 3 and size >= 56 else 0


_PHOTOMETRIC = 262  # the TIFF tag saying how samples map to colours (0: grey, 0 is white)
_EXTRA_SAMPLES = 338  # the TIFF tag saying what each channel past the colours is (0: unknown)
_EIGHT_BITS = "16-bit {0} read and written as 8 bits: Pillow has no 16-bit {0}"
_SIXTEEN_BITS = (";16B", ";16L", ";16N")  # raw modes of 16-bit samples (not BMP's 5-6-5 BGR;16)
_GREY16 = ("I;16", "I;16L", "I;16B", "I;16N")
_LOW_GREY_DEPTHS = {"L;2": 2, "L;4": 4}
GREY_MODES = ("1", "L", "LA", "La", "I", "F", *_GREY16)  # decoded as one plane (and alpha)


def white_is_zero(im: Image.Image) -> bool:
    """Whether ``im`` is 16-bit grey a TIFF stores with 0 as white (PhotometricInterpretation 0),
    which Pillow reads as if 0 were black (it inverts only 1- to 8-bit grey). Float grey so
    stored is refused rather than shown as its negative."""
    if im.format != "TIFF" or im.tag_v2.get(_PHOTOMETRIC) != 0 or im.mode not in (*_GREY16, "F"):
        return False
    if im.mode == "F":
        raise BadImageError("float grey stored white-is-zero (TIFF PhotometricInterpretation 0) "
                            "is not supported")
    return True


_SAMPLE_FORMAT, _SIGNED = 339, 2  # the TIFF tag saying how samples are numbers; signed integers
NEGATIVE = "samples below zero (signed integers) are not supported"


def signed_bytes(im: Image.Image) -> bool:
    """Whether ``im`` is a TIFF of signed 8-bit samples, which Pillow reads as unsigned: -1 as
    255, a shadow as a highlight. (Deeper signed samples Pillow reads with their sign.)"""
    if im.format != "TIFF" or im.mode != "L":
        return False
    kinds = im.tag_v2.get(_SAMPLE_FORMAT, ())
    return _SIGNED in as_tuple(kinds)


def unmarked_channels(im: Image.Image) -> int:
    """How many extra channels a TIFF does not mark as alpha (ExtraSamples 0: a mask, depth, a
    spot colour), which Pillow reads past."""
    extra = im.tag_v2.get(_EXTRA_SAMPLES, ()) if im.format == "TIFF" else ()
    return as_tuple(extra).count(0)


def stored_mode(im: Image.Image) -> str:
    """How the file stores its pixels (Pillow's raw mode of the first tile, e.g. ``RGB;16B``, and
    so for a PPM whose maxval over 255 makes its samples 16-bit); empty when unknown."""
    tile = im.tile[0] if im.tile else None
    args = tile.args if tile else None
    raw = args[0] if isinstance(args, tuple) and args else args
    if not isinstance(raw, str):
        return ""
    deep_ppm = tile.codec_name.startswith("ppm") and isinstance(args, tuple) and len(args) > 1 \
        and isinstance(args[1], int) and args[1] > 255  # (raw mode, maxval)
    return f"{raw};16B" if deep_ppm else raw


def held_at_8_bits(im: Image.Image, stored: str, notes: list[str]) -> Image.Image:
    """``im`` where the file stores 16-bit colour that Pillow decoded at 8 bits: noted, and grey
    with alpha (which Pillow reads as RGBA) put back to LA; else ``im`` as it is."""
    if not stored.endswith(_SIXTEEN_BITS) or im.mode not in ("RGB", "RGBA", "CMYK"):
        return im
    grey = stored.startswith("LA")  # Pillow reads 16-bit grey with alpha as RGBA
    why = why_8_bits(im, stored)  # a TIFF whose 16-bit colour drcn could not read
    notes.append(f"16-bit colour read and written as 8 bits: {why}" if why else
                 _EIGHT_BITS.format("grey with alpha" if grey else "colour"))
    return im.convert("LA") if grey else im


def _has_key(im: Image.Image) -> bool:
    """Whether ``im`` has a transparent colour (PNG's tRNS on grey or RGB), which makes an alpha
    plane where some pixel has it."""
    return im.info.get("transparency") is not None and im.mode in ("1", "L", "RGB", *_GREY16)


def _palette_alpha(im: Image.Image) -> bool:
    """Whether the palette image ``im`` has a transparent index, or an alpha in the palette
    itself (TGA's): it is read as RGBA, else as RGB."""
    return "transparency" in im.info or getattr(im.palette, "mode", "") == "RGBA"


def _keyed(im: Image.Image, stored: str) -> np.ndarray | None:
    """``im``'s pixels with PNG's transparent colour (tRNS on grey or RGB) as alpha (see
    :func:`with_key_alpha`); None when it has no transparent colour. 16-bit grey is keyed in 16
    bits."""
    trns = im.info.get("transparency")
    if not _has_key(im):
        return None
    depth = _LOW_GREY_DEPTHS.get(stored)
    if depth and isinstance(trns, int) and trns < 1 << depth:  # Pillow leaves the stored level
        trns *= 255 // ((1 << depth) - 1)
    return with_key_alpha(_as_array(im.convert("L") if im.mode == "1" else im,
                                    np.uint16 if im.mode in _GREY16 else np.uint8), trns)


def with_key_alpha(pixels: np.ndarray, key: int | tuple[int, ...]) -> np.ndarray:
    """Grey or RGB ``pixels`` (uint8 or uint16) with an alpha channel made from PNG's
    transparent colour ``key`` (a level, or one per channel, at the pixels' depth): 0 where a
    pixel is the key, the full level elsewhere; ``pixels`` as they are where none is."""
    hit = pixels == key if pixels.ndim == 2 else (pixels == np.asarray(key)).all(axis=-1)
    if not hit.any():
        return pixels
    channels = pixels.reshape(*hit.shape, -1)  # grey as one channel
    out = np.empty((*hit.shape, channels.shape[2] + 1), pixels.dtype)
    out[..., :-1] = channels
    out[..., -1] = np.iinfo(pixels.dtype).max
    out[..., -1][hit] = 0
    return out


def to_array(im: Image.Image, info: ImageInfo, stored: str) -> np.ndarray:
    """``im``, decoded from pixels the file stores as ``stored``, as an engine array; what the
    conversion changes or drops is added to ``info``'s notes (and its ICC profile follows)."""
    mode = im.mode
    if mode == "RGB" and "transparency" in im.info and stored.endswith(_SIXTEEN_BITS):
        # the key is in 16-bit samples, the decoded pixels in 8: no match can be told exactly
        info.notes.append("transparent colour dropped: Pillow reads 16-bit colour as 8 bits")
        return np.asarray(im)
    keyed = _keyed(im, stored)
    if keyed is not None:
        return keyed
    if mode in _GREY16:
        return _as_array(im, np.uint16)
    if mode == "I":
        a = _as_array(im)
        if a.min() < 0:
            raise BadImageError(NEGATIVE)
        if a.max() > 65535:
            raise BadImageError("32-bit integer images are not supported")
        return a.astype(np.uint16)
    if mode == "F":
        return _as_array(im, np.float32)
    if mode in ("1", "La"):  # 1-bit as levels, premultiplied alpha undone
        im = im.convert("LA" if mode == "La" else "L")
    elif mode == "P":
        im = im.convert("RGBA" if _palette_alpha(im) else "RGB")
    elif mode in ("RGBa", "PA"):
        im = im.convert("RGBA")
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        im = _to_rgb(im, info)
    return _as_array(im)


_COPY_SAMPLES = 1 << 18  # samples copied from a Pillow image to its array at a time


def _as_array(im: Image.Image, dtype: type | None = None) -> np.ndarray:
    """``np.asarray(im, dtype)`` made a block of rows at a time: Pillow's whole-image
    ``tobytes``, which ``np.asarray`` reads, joins a copy of the pixels into another (twice the
    result beside the image's own pixels)."""
    first = np.asarray(im.crop((0, 0, im.width, 1)), dtype=dtype)
    out = np.empty((im.height, *first.shape[1:]), first.dtype)
    step = max(1, _COPY_SAMPLES // max(1, first.size))  # rows a block
    for y in range(0, im.height, step):
        box = (0, y, im.width, min(y + step, im.height))
        out[y:y + step] = np.asarray(im.crop(box), dtype=dtype)
    return out


def _to_rgb(im: Image.Image, info: ImageInfo) -> Image.Image:
    """CMYK and other colour spaces as RGB: through the embedded ICC profile to sRGB (the result
    is tagged sRGB), else Pillow's plain conversion, which ignores how the inks look."""
    why = ""
    if info.icc_profile:
        try:
            rgb = to_srgb(im, info.icc_profile)
            info.icc_profile = srgb_profile()
            info.notes.append(f"{im.mode} converted to sRGB through its ICC profile")
            return rgb
        except Exception as e:  # noqa: BLE001 - an unusable profile: the plain conversion
            why = f" without its ICC profile, which cannot be used ({one_line(e)})"
    info.notes.append(f"{im.mode} converted to RGB{why}")
    info.icc_profile = None  # the profile described the old colour space
    return im.convert("RGB")


_CHANNELS = {"1": 1, "L": 1, "LA": 2, "La": 2, "RGBA": 4, "RGBa": 4, "PA": 4}  # others: RGB


def decoded_planes(im: Image.Image) -> tuple[int, int] | None:
    """The channels and bytes a sample of the array reading ``im`` (opened, not decoded) gives,
    as :func:`to_array` and the readers before it make it, for refusing an impossible result
    from the header; None where the pixels decide (a transparent colour, a BMP's or TGA's alpha)
    or the reading of deeper samples may (16-bit colour, a 10-bit HEIF)."""
    mode = im.mode
    if _has_key(im) or _bmp_alpha_tile(im) is not None or \
            (im.format == "TGA" and mode in ("RGBA", "P")) or \
            (im.format == "HEIF" and im.info.get("bit_depth", 8) != 8):
        return None
    if mode in (*_GREY16, "I"):  # 32-bit integers are read as 16-bit, or refused
        return 1, 2
    if mode == "F":
        return 1, 4
    if stored_mode(im).endswith(_SIXTEEN_BITS):
        return None
    return (3 + _palette_alpha(im) if mode == "P" else _CHANNELS.get(mode, 3)), 1
