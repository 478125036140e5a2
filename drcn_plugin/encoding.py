"""Engine results back to Pillow images in a mode each output format stores, and the save
options that carry the source's metadata (ICC, EXIF, DPI scaled to keep the print size, XMP,
comments). Refuses, before any upscaling, what a format cannot hold."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
from PIL import Image

from .colourspace import refuse_unstated_hdr, unsaid_colour
from .errors import BadImageError, BadOptionError, DRCNError, one_line
from .imagefile import ImageInfo
from .metadata import EXIF_IFD, GPS_IFD, exif_for, scaled_dpi
from .planes import quantised, to_8bit
from .profiles import acts_as_srgb, srgb_profile, to_srgb
from .tiff16 import TIFF16_MAX_BYTES
from .writing import Encoded


def to_pil(array: np.ndarray, within: tuple[float, float] | None = None) -> Image.Image:
    """An engine array back to a Pillow image (16-bit grey as I;16, float grey as F), float
    values first clipped to ``within`` where given."""
    a = array[:, :, 0] if array.ndim == 3 and array.shape[2] == 1 else array
    if a.ndim == 2 and a.dtype == np.uint16:
        return Image.fromarray(a)  # I;16
    if a.ndim == 2 and np.issubdtype(a.dtype, np.floating):
        if within is not None:  # clipping makes the copy that the F image may share
            return Image.fromarray(np.clip(a, *within).astype(np.float32, copy=False))
        return Image.fromarray(a.astype(np.float32))
    return Image.fromarray(to_8bit(a, within))  # Pillow has no 16-bit or float colour


DEFAULT_QUALITY = 95  # JPEG, WebP and AVIF quality when none is given
_JPEG_ICC_LIMIT = 255 * (65533 - 14)  # APP2 segments numbered in one byte, less their header
# What each output format can store; other modes are converted (or refused) by ``encode``.
_STORES = {"JPEG": {"L", "RGB"}, "BMP": {"L", "RGB", "RGBA"}, "AVIF": {"L", "RGB", "RGBA"},
           "WEBP": {"L", "LA", "RGB", "RGBA"}, "PNG": {"L", "LA", "I;16", "RGB", "RGBA"},
           "TIFF": {"L", "LA", "I;16", "F", "RGB", "RGBA"}}


def require_encoder(fmt: str) -> None:
    """Refuse, before any work, an output format this Pillow cannot write (its codecs are
    optional at build time, and older versions have no AVIF): a 1x1 image is encoded."""
    try:
        Image.new("RGB", (1, 1)).save(io.BytesIO(), format=fmt)
    except (KeyError, OSError, ValueError) as e:
        raise BadOptionError(f"this Pillow cannot write {fmt} (its build or version has no "
                             "encoder for it): use PNG or TIFF", option="format") from e


def encode(array: np.ndarray, fmt: str, info: ImageInfo, scale: float | tuple[float, float],
           quality: int | None = None) -> Encoded:
    """The result as a ``fmt`` file to write: in a mode ``fmt`` stores, with the save options of
    :func:`save_options`; refuses combinations that would lose data (an HDR image where ``fmt``
    cannot say so). An ICC profile for another colour space than the file will hold is dropped
    (noted); a PNG's colour chunks become an ICC profile where ``fmt`` has no place for them.
    16-bit colour (or grey with alpha) for PNG and TIFF (up to what a TIFF holds) is kept at 16
    bits, float colour for TIFF as 32-bit float: no 8-bit image of it is made. A TIFF whose EXIF
    has sub-IFDs, which libtiff cannot write, is compressed by :func:`.tiff16.write_tiff_deep`
    too (integer pixels, up to what a TIFF holds), not written uncompressed by Pillow."""
    bands = _bands(array)
    if bands and np.issubdtype(array.dtype, np.floating) and fmt != "TIFF":
        array = _float_as_levels(array, fmt, info)  # a format of integers: 16 bits or 8, noted
    colour16 = bands and array.dtype == np.uint16
    floats = bands and np.issubdtype(array.dtype, np.floating)  # for TIFF: written as 32-bit
    pixels = array.shape[0] * array.shape[1]
    sub_ifds = array.dtype in (np.uint8, np.uint16) and _sub_ifds(info.exif)
    deep = (colour16 or floats) if fmt == "PNG" else fmt == "TIFF" and \
        (colour16 or floats or sub_ifds) and not _over_tiff_offsets(array, pixels)
    if floats and not deep:  # a TIFF too large for float samples: 8 bits, 0..1, in its place
        _require_unit_range(fmt, info)
    # whose image is a 1x1 stand-in in its mode: Pillow's chunks and tags depend on the mode,
    # info and options, not on the pixels, and write_png16 and write_tiff_deep give the file it
    # writes the pixels
    im = _in_stored_mode(array[:1, :1] if deep else array, fmt, info)
    if (colour16 or floats) and not deep:
        why = "a TIFF holds 4 GB" if fmt == "TIFF" else f"Pillow writes {fmt} colour at 8 bits"
        info.notes.append(f"{why}: result reduced to 8 bits")
    space = (info.icc_profile or b"")[16:20]  # the profile's colour space, from its header
    grey = im.mode in ("L", "LA", "I;16", "F") and fmt != "WEBP"  # WebP stores grey as RGB
    grey_pixels = array.ndim == 2 or array.shape[2] <= 2
    if space in (b"GRAY", b"RGB ") and (space == b"GRAY") == grey_pixels and \
            (fmt == "BMP" or space == b"GRAY" and not grey):
        im = _as_srgb(im, fmt, info, grey_pixels)
    elif space in (b"GRAY", b"RGB ") and (space == b"GRAY") != grey:
        info.notes.append(f"{'grey' if space == b'GRAY' else 'RGB'} ICC profile dropped: {fmt} "
                          f"stores this image as {'grey' if grey else 'RGB'}")
        info.icc_profile = None
    if fmt != "PNG" and info.about.png_colour:
        refuse_unstated_hdr(info.about.png_colour, fmt)
        info.icc_profile, unsaid = unsaid_colour(info.about.png_colour, fmt, info.icc_profile,
                                                 grey)
        info.about = replace(info.about, png_colour=unsaid)
    return Encoded(im, fmt, save_options(fmt, info, scale, quality, deep),
                   info.about.added_chunks(fmt), array if deep else None)


def _as_srgb(im: Image.Image, fmt: str, info: ImageInfo, grey_pixels: bool) -> Image.Image:
    """``im`` taken through its ICC profile to sRGB where ``fmt`` cannot carry the profile with
    it (a grey one where the file stores grey as RGB, any in a BMP), so its colours look as they
    did; tagged sRGB after (a BMP untagged, which its readers take as sRGB). A profile
    that acts as sRGB's needs no conversion; one littlecms cannot use is dropped (noted)."""
    why = "has no place for it" if fmt == "BMP" else "stores grey as RGB"
    try:
        if not acts_as_srgb(info.icc_profile, grey_pixels):
            mode = im.mode  # grey that _in_stored_mode made RGB(A) goes through the grey profile
            shown = im.convert("LA" if "A" in mode else "L") if grey_pixels else im
            im = to_srgb(shown, info.icc_profile).convert(mode)
            info.notes.append(f"{'grey' if grey_pixels else 'RGB'} converted to sRGB through "
                              f"its ICC profile: {fmt} {why}")
        info.icc_profile = None if fmt == "BMP" else srgb_profile()
    except Exception as e:  # noqa: BLE001 - an unusable profile (or no littlecms): dropped
        info.notes.append(f"ICC profile dropped: {fmt} {why}, and it cannot be used to convert "
                          f"the colours ({one_line(e)})")
        info.icc_profile = None
    return im


def _bands(array: np.ndarray) -> bool:
    """Whether ``array`` is colour or grey with alpha: what Pillow holds at 8 bits only."""
    return array.ndim == 3 and array.shape[2] in (2, 3, 4)


def _in_stored_mode(array: np.ndarray, fmt: str, info: ImageInfo) -> Image.Image:
    im = to_pil(array, info.value_range if np.issubdtype(array.dtype, np.floating) else None)
    if im.mode in _STORES[fmt]:
        return im
    if fmt == "JPEG" and im.mode in ("LA", "RGBA"):
        if im.getextrema()[-1][0] == 255:  # all opaque: the alpha holds nothing to lose
            return im.convert(im.mode[:-1])
        raise BadOptionError("JPEG cannot store the alpha channel: use PNG, WebP or TIFF",
                             option="format")
    if im.mode == "LA":  # BMP and AVIF: grey with alpha as RGBA
        return im.convert("RGBA")
    if im.mode == "F":
        _require_unit_range(fmt, info)
    if im.mode == "F" and fmt == "PNG":
        info.notes.append("PNG stores integers: float result stored as 16-bit")
        return Image.fromarray(quantised(np.asarray(im), np.dtype(np.uint16)))
    if im.mode in ("I;16", "F"):
        info.notes.append(f"{fmt} stores 8 bits: result reduced to 8 bits")
        return Image.fromarray(to_8bit(np.asarray(im)))
    raise BadImageError(f"{fmt} cannot store {im.mode} images")


def _float_as_levels(array: np.ndarray, fmt: str, info: ImageInfo) -> np.ndarray:
    """Float colour (or grey with alpha) as the levels ``fmt``, a format of integers, stores:
    16-bit for PNG, 8-bit for others, noted as float grey is; refused where it would clip."""
    _require_unit_range(fmt, info)
    if fmt == "PNG":
        info.notes.append("PNG stores integers: float result stored as 16-bit")
        return quantised(array, np.dtype(np.uint16))
    info.notes.append(f"{fmt} stores 8 bits: result reduced to 8 bits")
    return to_8bit(array)


def _require_unit_range(fmt: str, info: ImageInfo) -> None:
    """Refuse a float result whose values leave 0..1 for ``fmt``, which would clip them: a
    format of integers, or a TIFF (only where too large for float samples: see
    :func:`_over_tiff_offsets`)."""
    low, high = info.value_range or (0.0, 1.0)
    if not (low < 0 or high > 1):
        return
    if fmt == "TIFF":
        raise BadOptionError(f"the float values span {low:g}..{high:g}; a TIFF this large is "
                             "written at 8 bits, 0..1, which would clip them (a TIFF holds 4 GB):"
                             " upscale it less", option="scale")
    raise BadOptionError(f"the float values span {low:g}..{high:g}; {fmt} stores 0..1 and would "
                         "clip them: write TIFF instead", option="format")


def _over_tiff_offsets(array: np.ndarray, pixels: int) -> bool:
    """Whether ``pixels`` pixels of ``array``'s samples (floats as 32-bit) pass what a TIFF's
    32-bit offsets reach (:data:`.tiff16.TIFF16_MAX_BYTES`): its 16-bit or float colour (or grey
    with alpha) is then held at 8 bits, and written, as other pixels are, by Pillow."""
    size = 4 if array.dtype.kind == "f" else array.dtype.itemsize
    return pixels * (array.shape[2] if array.ndim == 3 else 1) * size > TIFF16_MAX_BYTES


def _sub_ifds(exif: Image.Exif | None) -> bool:
    """Whether ``exif`` has an Exif or GPS sub-IFD, which libtiff cannot write to a TIFF."""
    return exif is not None and (EXIF_IFD in exif or GPS_IFD in exif)


# The longest side of each format (WebP's 14-bit sizes, libjpeg's JPEG_MAX_DIMENSION), and for
# AVIF the most libavif reads back (side and pixels): it writes larger files that none then opens.
MAX_SIDE = {"WEBP": 16383, "JPEG": 65500, "AVIF": 32768}
MAX_PIXELS = {"AVIF": 16384 * 16384}


BMP_MAX_BYTES = 2**32 - 1  # a BMP states its file size in 32 bits


def _bmp_bytes(channels: int, size: tuple[int, int]) -> int:
    """The size of a BMP of ``channels`` at ``size``: grey as 8-bit palette entries, colour as
    24 bits, alpha as 32, each row padded to 4 bytes, after the largest header."""
    depth = 4 if channels in (2, 4) else channels
    return 14 + 108 + 1024 + size[0] * ((size[1] * depth + 3) // 4 * 4)


def check_size(fmt: str, size: tuple[int, int], channels: int | None) -> None:
    """Refuse a result of ``size`` (height, width) past the format's largest side or pixel
    count, or for BMP (given the result's ``channels``) past 4 GiB: known from a file's header
    (:mod:`.headercheck`) as from its pixels."""
    side, pixels = MAX_SIDE.get(fmt), MAX_PIXELS.get(fmt)
    if side is not None and max(size) > side:
        raise BadOptionError(f"{fmt} images are at most {side} pixels a side, the result would "
                             f"be {size[1]}x{size[0]}: use PNG or TIFF", option="format")
    if pixels is not None and size[0] * size[1] > pixels:
        raise BadOptionError(f"{fmt} images hold at most {pixels / 1e6:.0f} MP, the result would "
                             f"be {size[1]}x{size[0]}: use PNG or TIFF", option="format")
    if channels is not None and fmt == "BMP" and \
            (need := _bmp_bytes(channels, size)) > BMP_MAX_BYTES:
        raise BadOptionError(f"BMP files hold at most 4 GiB, the result would be {size[1]}x"
                             f"{size[0]} ({need / 2**30:.1f} GiB): use PNG or TIFF",
                             option="format")


def check_writable(array: np.ndarray, fmt: str, info: ImageInfo,
                   scale: float | tuple[float, float], quality: int | None = None,
                   size: tuple[int, int] | None = None) -> None:
    """Encode a 2x2 corner with the real options, and hold the result's ``size`` (height,
    width) against the format's limits (:func:`check_size`), so an impossible mode, format,
    metadata or size combination is refused before any upscaling is spent on it."""
    if size is not None:
        check_size(fmt, size, array.shape[2] if array.ndim == 3 else 1)
    floats = _bands(array) and np.issubdtype(array.dtype, np.floating)
    if size is not None and fmt == "TIFF" and floats and \
            _over_tiff_offsets(array, size[0] * size[1]):
        _require_unit_range(fmt, info)  # the corner encoded below fits a TIFF at 32 bits
    probe = replace(info, notes=[])
    corner = array[:2, :2].copy()
    if corner.ndim == 3 and corner.shape[2] in (2, 4):
        corner[..., -1] = array[..., -1].min()  # whether any pixel is see-through matters
    try:
        encode(corner, fmt, probe, scale, quality).write(io.BytesIO())
    except DRCNError:
        raise
    except Exception as e:  # Pillow's many ways to say "cannot write this"
        raise BadImageError(f"cannot write this image as {fmt}: {one_line(e)}") from e


def save_options(fmt: str, info: ImageInfo, scale: float | tuple[float, float],
                 quality: int | None = None, deep: bool = False) -> dict:
    """Pillow save options carrying ICC, EXIF and DPI, resolutions scaled so the print size
    stays the same; ``scale`` is one factor or (horizontal, vertical). ``quality`` is the one
    the user gave (None: :data:`DEFAULT_QUALITY`, and a lossless WebP source stays lossless).
    ``deep``: for the stand-in of pixels :func:`.tiff16.write_tiff_deep` or
    :func:`.deep.write_png16` writes, whose TIFF Pillow then writes itself (every tag kept)."""
    opts: dict = {}
    sx, sy = scale if isinstance(scale, tuple) else (scale, scale)
    if fmt == "BMP":  # BMP has no place for either
        lost = [name for name, value in (("ICC profile", info.icc_profile), ("EXIF", info.exif))
                if value]
        exif, sub_ifds = None, False
    else:
        lost = []
        if fmt == "JPEG" and len(info.icc_profile or b"") > _JPEG_ICC_LIMIT:
            lost.append("ICC profile (over JPEG's 255 segments)")
        elif info.icc_profile:
            opts["icc_profile"] = info.icc_profile
        exif_tags = info.about.exif_tags(info.exif, fmt, (sx, sy))
        exif, sub_ifds = exif_for(exif_tags, fmt, (sx, sy), info.notes, info.dpi)
    if exif:
        opts["exif"] = exif
    opts.update(info.about.save_options(fmt, (sx, sy), info.notes, lost))
    dpi = scaled_dpi(info.dpi, fmt, (sx, sy), info.notes)
    if dpi:
        opts["dpi"] = dpi
    if fmt == "WEBP" and info.format == "WEBP" and not info.lossy and quality is None:
        opts["lossless"] = True  # a lossless source stays lossless, unless a quality was given
    elif fmt in ("JPEG", "WEBP", "AVIF"):
        opts["quality"] = DEFAULT_QUALITY if quality is None else quality
    # JPEG keeps full colour resolution at high qualities; AVIF keeps Pillow's 4:2:0 (4:0:0 for
    # grey): only Y goes through the network, the colour planes are bicubic-smooth
    if fmt == "JPEG":
        opts["subsampling"] = 0 if opts["quality"] >= 90 else 2
        opts["progressive"] = info.progressive  # a progressive source stays progressive
    if fmt == "TIFF" and not deep:
        if sub_ifds:  # libtiff cannot write EXIF sub-IFDs; Pillow's own writer can
            info.notes.append("TIFF written uncompressed to keep the EXIF sub-IFDs")
        else:
            opts["compression"] = "tiff_adobe_deflate"
            if exif:
                opts["exif"] = _libtiff_settable(exif, info.notes)
    return opts


def _libtiff_settable(exif: bytes, notes: list[str]) -> bytes:
    """``exif`` (without sub-IFDs) less the tags libtiff, Pillow's writer of compressed TIFF,
    refuses to set (noted): values TIFF does not allow, as a resolution unit of 7, which Pillow
    reads and would write back as they are; libtiff's refusal lost the whole image."""
    if _libtiff_takes(exif):
        return exif
    tags, kept = Image.Exif(), Image.Exif()
    tags.load(exif)
    for tag, value in tags.items():
        one = Image.Exif()
        one[tag] = value
        if _libtiff_takes(one.tobytes()):
            kept[tag] = value
    notes.append(f"{len(tags) - len(kept)} EXIF tag(s) libtiff cannot write to TIFF dropped")
    return kept.tobytes()


def _libtiff_takes(exif: bytes) -> bool:
    """Whether libtiff writes a compressed TIFF with these tags (a 1x1 one, in memory)."""
    try:
        Image.new("L", (1, 1)).save(io.BytesIO(), "TIFF", compression="tiff_adobe_deflate",
                                    exif=exif)
    except Exception:  # noqa: BLE001 - Pillow's RuntimeError, or another way to say no
        return False
    return True
