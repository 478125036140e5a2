"""Image files: decode with Pillow to engine arrays with their metadata (:mod:`.encoding` writes
them back).

Reading applies the EXIF orientation (and resets the tag), keeps the ICC profile, DPI and
colour code points, 16-bit grey and a 10/12-bit HEIF at 16 bits; a damaged or hostile file is
one error naming it.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from . import devices
from .av1header import avif_base_q_idx
from .colourspace import read_colour_chunks
from .compression import file_jpeg_quality, is_lossy, webp_quantizer
from .deep import pixels16, transpose16
from .errors import BadImageError, DatasetError, DRCNError, OutOfMemoryError, one_line, reason
from .hevcheader import heif_slice_qp
from .imaging import image_y
from .metadata import (
    TRANSPOSE,
    Descriptive,
    apply_orientation,
    declared_dpi,
    orientation,
    read_exif,
)
from .misreads import require_whole_png, tga_alpha, usable_icc
from .opening import open_regular, reader_refusal
from .planes import PEAKS, require_unit_range, to_8bit

FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "jpe": "JPEG", "jfif": "JPEG",
           "mpo": "JPEG", "webp": "WEBP", "avif": "AVIF", "tiff": "TIFF", "tif": "TIFF",
           "bmp": "BMP"}
SUFFIX = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "AVIF": ".avif", "TIFF": ".tif",
          "BMP": ".bmp"}
# File suffixes taken as images when scanning folders (batches, datasets, training data).
IMAGE_SUFFIXES = frozenset({".png", ".apng", ".jpg", ".jpeg", ".jpe", ".jfif", ".mpo", ".webp",
                            ".tif", ".tiff", ".bmp", ".gif", ".ppm", ".pgm", ".pbm", ".pnm",
                            ".tga", ".jp2", ".j2k", ".j2c", ".jpf", ".jpx", ".ico", ".pcx",
                            ".sgi", ".qoi", ".dds", ".avif", ".heic", ".heif", ".hif"})
HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"})
# Most bytes a decode takes per pixel: Pillow's 4-byte pixels, converted and turned, and a float32
# RGBA array (measured: 10-18, CMYK the most). It stands in for Pillow's fixed pixel limit.
DECODE_BYTES_PER_PIXEL = 32


@dataclass
class ImageInfo:
    """What a file carries besides pixels, to be written back with the result."""

    format: str | None
    icc_profile: bytes | None = None
    exif: Image.Exif | None = None
    dpi: tuple[float, float] | None = None
    value_range: tuple[float, float] | None = None  # float images: outputs stay inside it
    notes: list[str] = field(default_factory=list)
    lossy: bool = False  # a lossy codec (JPEG, lossy WebP, AVIF, HEIF): artefacts are likely
    jpeg_quality: int | None = None  # from a JPEG's (or JPEG TIFF's) quantisation tables
    webp_quantizer: float | None = None  # a lossy WebP's mean quantiser index, 0..127
    av1_q_index: int | None = None  # an AVIF's base_q_idx, 0..255
    hevc_qp: int | None = None  # a HEIF's slice QP, up to 51
    about: Descriptive = field(default_factory=Descriptive)  # XMP, comments, PNG colour chunks
    frames: int = 1  # an animation's or a multi-page file's; the array is the first


def read_image(path: Path) -> tuple[np.ndarray, ImageInfo]:
    """Decode ``path`` to an ``H x W x C`` array (``H x W`` for grey; uint8, uint16 or float32)
    and its metadata.

    Whatever the decoder raises on a damaged or hostile file becomes one BadImageError naming
    the file; decoder warnings become notes. An image whose decoding cannot fit in the memory
    available is refused from its header (OutOfMemoryError), whatever its pixel count.
    """
    with _decoding(path):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # memory is checked
            array, info = _decode(path)
        for w in dict.fromkeys(str(w.message).splitlines()[0] for w in caught if str(w.message)):
            info.notes.append(f"decoder warning: {w}")
        return array, info


def image_shape8(path: Path) -> tuple[int, ...]:
    """The shape :func:`read_image8` gives ``path`` (``(3, H, W)``, or ``(H, W)`` for grey), read
    from the file's header (orientation applied) without decoding its pixels. A PNG whose EXIF
    follows its pixels (Pillow finds it only by decoding) may come back unturned: same sides."""
    with _decoding(path), open_regular(path) as f, Image.open(f) as im:
        w, h = im.size
        known = im.format != "PNG" or "exif" in im.info  # a PNG's getexif() decodes it
        if known and orientation(im) >= 5 and im.format != "TIFF":  # TIFF: the turned size
            h, w = w, h
        return (h, w) if im.mode in _GREY_MODES else (3, h, w)


@lru_cache(maxsize=1)
def _heif_opener() -> bool:
    """Let Pillow open HEIF/HEIC (phone photos) through pillow-heif, when it is installed."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return False
    register_heif_opener()
    return True


def _heif_brand(path: Path) -> bool:
    """Whether ``path`` starts as a HEIF file does (an ISO media ``ftyp`` box with a HEIF brand)."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        return False
    return head[4:8] == b"ftyp" and head[8:12] in HEIF_BRANDS


@contextmanager
def _decoding(path: Path) -> Iterator[None]:
    """Turn whatever reading ``path`` raises into one error naming the file."""
    _heif_opener()
    try:
        yield
    except DRCNError as e:
        if str(path) in str(e):
            raise
        raise type(e)(f"{path}: {e}") from e
    except Image.DecompressionBombError as e:
        raise BadImageError(f"{path}: more pixels than PIL.Image.MAX_IMAGE_PIXELS allows (drcn "
                            f"sets it from the memory available): {one_line(e)}") from e
    except UnidentifiedImageError as e:
        if _heif_brand(path) and not _heif_opener():
            raise BadImageError(f"{path}: a HEIF/HEIC image; Pillow reads those with the "
                                "pillow-heif package (pip install pillow-heif)") from e
        raise BadImageError(f"{path}: not an image Pillow can read{reader_refusal(path)}") from e
    except MemoryError as e:
        raise OutOfMemoryError(f"{path}: too large for this machine's memory") from e
    except IsADirectoryError as e:
        raise BadImageError(f"{path}: a folder, not an image file") from e
    except FileNotFoundError as e:
        what = f"a broken link (to {os.readlink(path)})" if os.path.islink(path) else \
            "file not found"
        raise BadImageError(f"{path}: {what}") from e
    except ValueError as e:
        if "MAX_TEXT_CHUNK" in str(e):
            raise BadImageError(
                f"{path}: an embedded ICC profile or text chunk is larger than Pillow's "
                f"{PngImagePlugin.MAX_TEXT_CHUNK >> 20} MB safety limit") from e
        raise BadImageError(f"{path}: cannot decode image ({one_line(e)})") from e
    except OSError as e:
        if e.errno is None:  # a decoder's complaint (a truncated file), not the system's
            raise BadImageError(f"{path}: cannot decode image ({one_line(e)})") from e
        raise BadImageError(f"{path}: cannot read ({reason(e)})") from e
    except Exception as e:  # a hostile file must not take the caller down with it
        raise BadImageError(f"{path}: cannot decode image ({one_line(e)})") from e


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name; refuses a missing or empty folder.

    Hidden files are skipped, as ``drcn upscale`` skips them: macOS leaves a ``._NAME.png`` of
    metadata beside each image on the drives and shares it copies to."""
    if not os.path.isdir(folder):  # os.path: a name too long is "not found", not an OSError
        raise DatasetError(f"{folder} is a file, not a folder of images"
                           if os.path.exists(folder) else f"dataset folder not found: {folder}")
    try:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
                       and not p.name.startswith(".")
                       and (p.is_file() or p.is_dir() or not p.exists()))  # no FIFO or device
    except OSError as e:
        raise DatasetError(f"cannot read folder {folder}: {reason(e)}") from e
    if not files:
        raise DatasetError(f"no images in {folder}")
    return files


def read_levels8(path: Path, left_out: list[str] | None = None) -> torch.Tensor:
    """An image file as 8-bit levels in uint8: ``[3, H, W]`` RGB, or ``[H, W]`` if grey.

    Decoded by :func:`read_image` (EXIF orientation applied); 16-bit and float files are scaled
    to 8 bits (floats must lie in 0..1) and alpha is dropped. Training holds its images so.
    What the levels leave out of the file (frames past the first, transparency) is added to
    ``left_out`` as one line naming it, so that a caller can say so.
    """
    array, info = read_image(path)
    unread = [f"{info.frames} frames: only the first is read"] * (info.frames > 1)
    if array.ndim == 3 and array.shape[2] in (2, 4) and \
            array[..., -1].min() < PEAKS.get(array.dtype, 1.0):
        unread.append("transparent pixels are read as the colour stored under them")
    if unread and left_out is not None:
        left_out.append(f"{path}: {'; '.join(unread)}")
    try:
        require_unit_range(array, "training, like scoring,")
    except BadImageError as e:
        raise BadImageError(f"{path}: {e}") from None
    a = torch.from_numpy(np.require(to_8bit(array), requirements=["C", "W"]))
    if a.dim() == 2 or a.shape[2] <= 2:
        return a if a.dim() == 2 else a[:, :, 0].contiguous()
    return a[:, :, :3].permute(2, 0, 1).contiguous()


def read_image8(path: Path, left_out: list[str] | None = None) -> torch.Tensor:
    """:func:`read_levels8` as float64 levels (0..255), what evaluation computes with."""
    return read_levels8(path, left_out).double()


def read_y(path: Path, left_out: list[str] | None = None) -> torch.Tensor:
    """Protocol step 1: an image file as its 8-bit Y plane (0..255, float64); grey stays as is."""
    return image_y(read_image8(path, left_out))


def _decode(path: Path) -> tuple[np.ndarray, ImageInfo]:
    # Opened from a file object, not a path: Pillow then reads the pixels instead of memory-mapping
    # them, and its mapping of an uncompressed L, P or 16-bit grey TIFF with orientation 5-8 uses
    # the turned size for the stored pixels, scrambling them.
    with open_regular(path) as f, Image.open(f) as im:
        _check_decode_memory(im)
        alpha_bmp = _bmp_alpha(f, im)
        stored = _stored_mode(im)  # first: loading (PNG's getexif loads) clears the tiles
        turn = orientation(im)  # read before loading: Pillow turns TIFF pixels upright in load()
        white = _white_is_zero(im)
        im.load()
        if im.format == "PNG":
            require_whole_png(f, im)
        turned = turn != 1 and orientation(im) == 1
        icc = im.info.get("icc_profile")
        info = ImageInfo(format=im.format, icc_profile=icc if isinstance(icc, bytes) else None,
                         dpi=declared_dpi(im), lossy=is_lossy(f, im))
        info.icc_profile = usable_icc(info.icc_profile, info.notes)
        info.about = Descriptive.read(im, info.notes)
        info.about.png_colour.update(read_colour_chunks(f, im))
        info.jpeg_quality = file_jpeg_quality(im)
        info.webp_quantizer = webp_quantizer(f) if im.format == "WEBP" else None
        info.av1_q_index = avif_base_q_idx(f) if im.format == "AVIF" else None
        info.hevc_qp = heif_slice_qp(f) if im.format == "HEIF" else None
        try:
            frames = int(getattr(im, "n_frames", 1))
        except Exception:  # noqa: BLE001 - a damaged frame table: the first frame decoded, that is enough
            frames = 1
        info.frames = frames
        if frames > 1:
            info.notes.append(f"{frames} frames: only the first was upscaled")
        if unmarked := _unmarked_channels(im):
            info.notes.append(f"{unmarked} extra channel(s) the TIFF does not mark as alpha "
                              "dropped")
        exif = read_exif(im, info.notes)
        if alpha_bmp is not None:
            im = alpha_bmp
        im = tga_alpha(f, im, stored)
        deep = pixels16(f, im, stored, info.notes)
        if deep is None and stored.endswith(_SIXTEEN_BITS) and im.mode in ("RGB", "RGBA", "CMYK"):
            grey = stored.startswith("LA")  # Pillow reads 16-bit grey with alpha as RGBA
            info.notes.append(_EIGHT_BITS.format("grey with alpha" if grey else "colour"))
            if grey:
                im = im.convert("LA")
        im, info.dpi = apply_orientation(im, exif, info.dpi, turn, turned)
        if deep is not None and turn != 1 and not turned:
            deep = transpose16(deep, TRANSPOSE[turn])
        info.exif = exif
        array = _to_array(im, info, stored) if deep is None else deep
    if white:
        array = np.subtract(65535, array, dtype=np.uint16)
    if array.dtype == np.float32:
        info.value_range = (float(array.min()), float(array.max()))
    return array, info


def _check_decode_memory(im: Image.Image) -> None:
    """Refuse, from the header, an image whose decoding cannot fit in the memory available (a
    small file may claim any size)."""
    w, h = im.size
    need = w * h * DECODE_BYTES_PER_PIXEL
    avail = devices.host_available_memory()
    if need > avail:
        raise OutOfMemoryError(f"a {w}x{h} image needs about {need / 2**30:.1f} GiB of memory "
                               f"to decode; {avail / 2**30:.1f} GiB is available")


def memory_pixel_limit() -> int:
    """A value for ``PIL.Image.MAX_IMAGE_PIXELS`` in a process that is drcn's own: Pillow then
    refuses (at twice it) what the memory available now cannot decode. Pillow also checks the
    images nested in a file with it (an icon's frames, which it decodes on opening), where the
    check from the file's header (:func:`read_image`) sees only the size the file declares."""
    return max(1, devices.host_available_memory() // (2 * DECODE_BYTES_PER_PIXEL))


# Pillow's raw modes for BMP pixels whose alpha it reads past, and the same pixels with it.
_BMP_WITH_ALPHA = {"BGRX": "BGRA", "BGR;15": "BGRA;15"}
_BMP_ALPHA_BIT = 0x8000  # a 16-bit BMP's alpha mask (ARGB1555)


def _bmp_alpha(f: BinaryIO, im: Image.Image) -> Image.Image | None:
    """A 32-bit BMP's fourth byte (Pillow reads it as padding), or a 16-bit one's top bit where
    the header masks it as alpha (Pillow drops it), as alpha when it is not all zero; Pillow
    itself writes RGBA the first way. Read from ``f``, the open file, whose position is kept."""
    tile = im.tile[0] if im.format == "BMP" and len(im.tile) == 1 else None
    if tile is None or tile.codec_name != "raw" or tile.args[0] not in _BMP_WITH_ALPHA:
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
_GREY_MODES = ("1", "L", "LA", "La", "I", "F", *_GREY16)  # decoded as one plane (and alpha)


def _white_is_zero(im: Image.Image) -> bool:
    """Whether ``im`` is 16-bit grey a TIFF stores with 0 as white (PhotometricInterpretation 0),
    which Pillow reads as if 0 were black (it inverts only 1- to 8-bit grey). Float grey so
    stored is refused rather than shown as its negative."""
    if im.format != "TIFF" or im.tag_v2.get(_PHOTOMETRIC) != 0 or im.mode not in (*_GREY16, "F"):
        return False
    if im.mode == "F":
        raise BadImageError("float grey stored white-is-zero (TIFF PhotometricInterpretation 0) "
                            "is not supported")
    return True


def _unmarked_channels(im: Image.Image) -> int:
    """How many extra channels a TIFF does not mark as alpha (ExtraSamples 0: a mask, depth, a
    spot colour), which Pillow reads past."""
    extra = im.tag_v2.get(_EXTRA_SAMPLES, ()) if im.format == "TIFF" else ()
    return (extra if isinstance(extra, tuple) else (extra,)).count(0)


def _stored_mode(im: Image.Image) -> str:
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


def _keyed_alpha(im: Image.Image, stored: str) -> np.ndarray | None:
    """PNG's transparent colour (tRNS on grey or RGB) as an alpha plane; None when the image has
    none or no pixel has that colour (then no alpha is added)."""
    trns = im.info.get("transparency")
    if trns is None or im.mode not in ("1", "L", "RGB", *_GREY16):
        return None
    depth = _LOW_GREY_DEPTHS.get(stored)
    if depth and isinstance(trns, int) and trns < 1 << depth:  # Pillow leaves the stored level
        trns *= 255 // ((1 << depth) - 1)
    pixels = np.asarray(im.convert("L") if im.mode == "1" else im,
                        dtype=np.uint16 if im.mode in _GREY16 else np.uint8)
    key = pixels == trns if pixels.ndim == 2 else (pixels == np.asarray(trns)).all(axis=-1)
    return np.where(key, 0, 255).astype(np.uint8) if key.any() else None


def _to_array(im: Image.Image, info: ImageInfo, stored: str) -> np.ndarray:
    mode = im.mode
    if mode == "RGB" and "transparency" in im.info and stored.endswith(_SIXTEEN_BITS):
        # the key is in 16-bit samples, the decoded pixels in 8: no match can be told exactly
        info.notes.append("transparent colour dropped: Pillow reads 16-bit colour as 8 bits")
        return np.asarray(im)
    alpha = _keyed_alpha(im, stored)
    if alpha is not None:
        if mode in _GREY16:  # Pillow writes grey with alpha at 8 bits only
            info.notes.append(_EIGHT_BITS.format("grey with alpha"))
            return np.dstack([to_8bit(np.asarray(im, dtype=np.uint16)), alpha])
        return np.dstack([np.asarray(im.convert("L") if mode == "1" else im), alpha])
    if mode in _GREY16:
        return np.asarray(im, dtype=np.uint16)
    if mode == "I":
        a = np.asarray(im)
        if a.min() < 0 or a.max() > 65535:
            raise BadImageError("32-bit integer images are not supported")
        return a.astype(np.uint16)
    if mode == "F":
        return np.asarray(im, dtype=np.float32)
    if mode in ("1", "L"):
        return np.asarray(im.convert("L"))
    if mode in ("LA", "La"):
        return np.asarray(im.convert("LA"))
    if mode == "P":  # a transparent index, or an alpha in the palette itself (TGA's)
        alpha = "transparency" in im.info or getattr(im.palette, "mode", "") == "RGBA"
        im = im.convert("RGBA" if alpha else "RGB")
    elif mode in ("RGBa", "PA"):
        im = im.convert("RGBA")
    elif mode not in ("RGB", "RGBA"):
        im = _to_rgb(im, info)
    return np.asarray(im)


def _to_rgb(im: Image.Image, info: ImageInfo) -> Image.Image:
    """CMYK and other colour spaces as RGB: through the embedded ICC profile to sRGB (the result
    is tagged sRGB), else Pillow's plain conversion, which ignores how the inks look."""
    why = ""
    if info.icc_profile:
        try:
            from PIL import ImageCms  # a Pillow built without littlecms lacks it

            srgb = ImageCms.createProfile("sRGB")
            rgb = ImageCms.profileToProfile(
                im, ImageCms.ImageCmsProfile(io.BytesIO(info.icc_profile)), srgb,
                outputMode="RGB")
            info.icc_profile = ImageCms.ImageCmsProfile(srgb).tobytes()
            info.notes.append(f"{im.mode} converted to sRGB through its ICC profile")
            return rgb
        except Exception as e:  # noqa: BLE001 - an unusable profile: the plain conversion
            why = f" without its ICC profile, which cannot be used ({one_line(e)})"
    info.notes.append(f"{im.mode} converted to RGB{why}")
    info.icc_profile = None  # the profile described the old colour space
    return im.convert("RGB")
