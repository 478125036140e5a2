"""EXIF and DPI carried from an input file to its upscaled result, robust to odd metadata.

Orientation is applied to the pixels (and the tag reset), so a transposing orientation (5-8)
swaps the horizontal and vertical resolutions. Tags Pillow cannot write back (a wrongly typed
value, a damaged sub-IFD) are dropped one by one instead of losing the whole image; resolutions
are scaled with the image so the print size stays; JPEG's 64 KB limit drops the largest tags
first, then the EXIF block, with a note each time.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from PIL import ExifTags, Image
from PIL.PngImagePlugin import PngInfo

from .colourspace import GAIN_MAP_NOTE, PILLOW_WRITES, without_gain_map
from .iptc import app13, jpeg_iptc
from .jpegmeta import JPEG_EXIF_LIMIT, joined_xmp, shrink_exif, split_xmp
from .xmp import XMP_ORIENTATION, XMP_RESOLUTION, XMP_SIZE, derived_xmp, upright_xmp, vertical

ORIENTATION, X_RES, Y_RES, RES_UNIT, XMP, IPTC = 0x0112, 0x011A, 0x011B, 0x0128, 700, 33723
EXIF_IFD, GPS_IFD, INTEROP_IFD = 0x8769, 0x8825, 0xA005
PIXEL_X, PIXEL_Y = 0xA002, 0xA003  # the Exif IFD's PixelXDimension, PixelYDimension
_SUB_IFDS = (EXIF_IFD, GPS_IFD)
# Tags that describe a TIFF file's own layout (sizes, strips, ICC), never the photograph.
_LAYOUT = {254, 255, 256, 257, 258, 259, 262, 266, 273, 277, 278, 279, 284, 317, 320, 322, 323,
           324, 325, 330, 338, 339, 340, 341, 347, 513, 514, 532, 34675, INTEROP_IFD}
# Photoshop's image resources and layers (ImageSourceData) in a TIFF: they describe the image
# before the upscale (its size, thumbnail, layers); IPTC describes the photograph and stays.
_PHOTOSHOP_TAGS = {34377, 37724}
DESCRIPTION = 270
# What turns the pixels of each EXIF orientation upright
TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
             4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
             6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
             8: Image.Transpose.ROTATE_90}


def _writable(tag: int, value, ifd: int | None = None) -> bool:
    """Whether Pillow can serialise this one tag (type matches what the tag must hold)."""
    probe = Image.Exif()
    try:
        if ifd is None:
            probe[tag] = value
        else:
            probe[ifd] = {tag: value}
        probe.tobytes()
        return True
    except Exception:  # noqa: BLE001 - any failure means this tag cannot be written back
        return False


def read_exif(im: Image.Image, notes: list[str]) -> Image.Exif | None:
    """The file's EXIF with only tags that can be written back; None when there is none."""
    try:
        source = im.getexif()
        base = dict(source.items())
        subs = {p: dict(source.get_ifd(p).items()) for p in _SUB_IFDS if p in base}
        # the interoperability index (R03: Adobe RGB) says how a camera's colours look
        interop = dict(source.get_ifd(INTEROP_IFD).items()) if EXIF_IFD in subs else {}
        # a TIFF's next IFD is its next page, not a thumbnail
        thumbnail = im.format != "TIFF" and bool(source.get_ifd(ExifTags.IFD.IFD1))
    except Exception:  # noqa: BLE001 - damaged EXIF must not cost the image
        notes.append("EXIF unreadable: dropped")
        return None
    if thumbnail:  # Pillow writes no IFD1; its preview would also be stale once turned upright
        notes.append("EXIF thumbnail dropped: it shows the image before the upscale")
    out = Image.Exif()
    dropped = 0
    if _PHOTOSHOP_TAGS & base.keys():
        notes.append("Photoshop resources and layers dropped: they describe the image before "
                     "the upscale")
    # tifffile's JSON description ({"shape": ...}) states the size it reads the pixels in
    if str(base.get(DESCRIPTION)).startswith('{"shape":'):
        notes.append("tifffile's shape description dropped: it states the size before the "
                     "upscale")
        del base[DESCRIPTION]
    for tag, value in base.items():
        if tag in _LAYOUT or tag in _PHOTOSHOP_TAGS or tag in _SUB_IFDS or tag == XMP:
            continue  # XMP: see Descriptive
        if _writable(tag, value):
            out[tag] = value
        else:
            dropped += 1
    for ifd, tags in subs.items():
        good = {t: v for t, v in tags.items() if t != INTEROP_IFD and _writable(t, v, ifd)}
        dropped += len(tags) - len(good) - (INTEROP_IFD in tags)
        if ifd == EXIF_IFD and interop:
            index = {t: v for t, v in interop.items() if _writable(INTEROP_IFD, {t: v}, ifd)}
            dropped += len(interop) - len(index)
            if index:
                good[INTEROP_IFD] = index
        if good:
            out[ifd] = good
    if dropped:
        notes.append(f"{dropped} malformed EXIF tag(s) dropped")
    return out if len(out) else None


def orientation(im: Image.Image, xmp: bool = True) -> int:
    """The image's EXIF orientation (1-8), 1 when absent, unreadable or not a valid value; with
    ``xmp``, also XMP's in the forms Pillow's own reading (and its turn in load()) misses."""
    decodes = im.format == "PNG" and "exif" not in im.info  # getexif() loads such a PNG first
    try:
        value = im.getexif().get(ORIENTATION)
        if value is None and xmp:
            packet = im.info.get("xmp")  # bytes; Pillow reads a PNG's there too
            found = XMP_ORIENTATION.search(packet) if isinstance(packet, bytes) else None
            value = int(found[2]) if found else 1
    except Exception:  # noqa: BLE001 - damaged EXIF reads as upright; read_exif notes it
        if decodes and im.tile:  # the pixels failed, not the EXIF: their reason, now (Pillow's
            raise  # second try at an interlaced PNG fails on its own arguments, hiding it)
        return 1
    return value if isinstance(value, int) and value in range(1, 9) else 1


def apply_orientation(im: Image.Image, exif: Image.Exif | None, dpi: tuple[float, float] | None,
                      o: int, turned: bool = False) -> tuple[Image.Image,
                                                             tuple[float, float] | None]:
    """Turn the pixels upright for orientation ``o`` unless the decoder already ``turned`` them
    (Pillow does for TIFF); reset the tag, swap the resolutions for orientations 5-8, and set
    the EXIF pixel dimensions to the upright size (an editor's crop may have left them stale)."""
    if exif is not None and ORIENTATION in exif:
        del exif[ORIENTATION]
    if o != 1 and not turned:
        im = im.transpose(TRANSPOSE[o])
    if o >= 5:
        dpi = (dpi[1], dpi[0]) if dpi else None
        if exif is not None and X_RES in exif and Y_RES in exif:
            exif[X_RES], exif[Y_RES] = exif[Y_RES], exif[X_RES]
    sizes = exif.get(EXIF_IFD) if exif is not None else None
    if isinstance(sizes, dict) and (PIXEL_X in sizes or PIXEL_Y in sizes):
        exif[EXIF_IFD] = {**sizes, **{t: v for t, v in ((PIXEL_X, im.width), (PIXEL_Y, im.height))
                                      if t in sizes}}
    return im, dpi


def declared_dpi(im: Image.Image) -> tuple[float, float] | None:
    """The resolution the file states, or None: Pillow reports defaults for files that state
    none (1 dpi for a TIFF without resolution tags, 72 for a JPEG with EXIF but no density)."""
    if im.format == "TIFF" and X_RES not in getattr(im, "tag_v2", {}):
        return None
    if im.format in ("JPEG", "MPO") and im.info.get("jfif_unit", 0) == 0:
        try:
            if X_RES not in im.getexif():
                return None
        except Exception:  # noqa: BLE001 - damaged EXIF states nothing
            return None
    if im.format in _EXIF_ONLY:
        return _exif_dpi(im)
    return _dpi(im.info.get("dpi"))


def _exif_dpi(im: Image.Image) -> tuple[float, float] | None:
    """The resolution the EXIF states in dots per inch (unit 2, the default) or per centimetre
    (unit 3); None without one."""
    try:
        exif = im.getexif()
        unit = {2: 1.0, 3: 2.54}.get(exif.get(RES_UNIT, 2))
        return _dpi((float(exif[X_RES]) * unit, float(exif.get(Y_RES, exif[X_RES])) * unit))
    except Exception:  # noqa: BLE001 - absent, damaged or odd tags state nothing
        return None


def _dpi(value: object) -> tuple[float, float] | None:
    try:
        dpi = (float(value[0]), float(value[1])) if value else None
    except (TypeError, ValueError, IndexError):
        return None
    return dpi if dpi and all(math.isfinite(v) for v in dpi) and min(dpi) > 0 else None


RATIONAL_MAX = 2**32 - 1  # an EXIF or TIFF rational's numerator and denominator
# The resolutions (dpi) each format's field holds: JPEG's JFIF density is a 16-bit count of dots
# per inch, PNG's and BMP's pixels per metre 32 bits (BMP's signed), TIFF's a 32-bit rational.
# Pillow wraps (JPEG) or overflows (PNG, BMP: the image is not written) or writes NaN (TIFF)
# beyond them.
_DPI_RANGE = {"JPEG": (1.0, 65535.0), "PNG": (0.0127, 1.09e8), "BMP": (0.0127, 5.45e7),
              "TIFF": (1 / RATIONAL_MAX, RATIONAL_MAX)}
_EXIF_ONLY = ("WEBP", "AVIF", "HEIF")  # formats whose only place for a resolution is EXIF


def scaled_dpi(dpi: tuple[float, float] | None, fmt: str, scale: tuple[float, float],
               notes: list[str]) -> tuple[float, float] | None:
    """The resolution for a ``fmt`` file's own field, scaled by (horizontal, vertical) so the
    print size stays; None where ``fmt`` has no such field, or (noted) where it cannot hold it."""
    if dpi is None or fmt not in _DPI_RANGE:
        return None
    out = (dpi[0] * scale[0], dpi[1] * scale[1])
    low, high = _DPI_RANGE[fmt]
    if all(low <= v <= high for v in out):
        return out
    notes.append(f"resolution {out[0]:.4g}x{out[1]:.4g} dpi dropped: {fmt} cannot store it")
    return None


def _scaled(value, scale: float) -> Fraction | None:
    """A resolution tag's value scaled, as a rational; None when it is not a number >= 0 (0, as
    some cameras write for "unknown", stays 0)."""
    try:
        scaled = Fraction(float(value) * scale).limit_denominator(10000)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        return None
    return scaled if scaled >= 0 else None


def exif_for(exif: Image.Exif | None, fmt: str, scale: float | tuple[float, float],
             notes: list[str], dpi: tuple[float, float] | None = None) -> tuple[bytes | None, bool]:
    """EXIF bytes for a ``fmt`` output and whether it holds sub-IFDs (which libtiff cannot
    write); resolutions and pixel dimensions scaled (one factor, or horizontal and vertical),
    shrunk or dropped to fit JPEG's limit. For a format whose only place for the resolution is
    EXIF, the file's ``dpi`` is added where the EXIF states none."""
    keep_dpi = dpi is not None and fmt in _EXIF_ONLY and (exif is None or X_RES not in exif)
    if exif is None and not keep_dpi:
        return None, False
    out = Image.Exif()
    for tag, value in (exif or {}).items():
        out[tag] = value
    if keep_dpi:
        out[X_RES], out[Y_RES], out[RES_UNIT] = dpi[0], dpi[1], 2
    sx, sy = scale if isinstance(scale, tuple) else (scale, scale)
    for tag, factor in ((X_RES, sx), (Y_RES, sy)):
        if tag in out:
            value = _scaled(out[tag], factor)
            if value is not None and value > RATIONAL_MAX:
                notes.append("EXIF resolution dropped: scaled with the image, it does not fit EXIF")
                value = None
            if value is None:
                del out[tag]
            else:
                out[tag] = value
    sizes = out.get(EXIF_IFD)
    if isinstance(sizes, dict):  # the image's size as EXIF states it, enlarged with it
        out[EXIF_IFD] = {t: max(1, round(v * (sx if t == PIXEL_X else sy)))
                         if t in (PIXEL_X, PIXEL_Y) and isinstance(v, int) else v
                         for t, v in sizes.items() if t != INTEROP_IFD or fmt != "TIFF"}
        if fmt == "TIFF" and INTEROP_IFD in sizes:  # Pillow's TIFF writer would leave it dangling
            notes.append("EXIF interoperability index (R03: Adobe RGB) dropped: Pillow cannot "
                         "write it to TIFF")
    data = out.tobytes()
    if fmt == "JPEG" and len(data) > JPEG_EXIF_LIMIT:
        data = shrink_exif(out, notes, _SUB_IFDS)
    return data, any(p in out for p in _SUB_IFDS)


XMP_KEY = "XML:com.adobe.xmp"  # where PNG keeps XMP (an iTXt chunk)
_JPEG_SEGMENT = 65533  # the most bytes one JPEG segment (a comment) holds
_RAW_PROFILE = "Raw profile type "  # ImageMagick's EXIF/XMP/ICC copies, stale after the upscale
# PNG's standard text keywords that EXIF has a tag for: Copyright, Artist, ImageDescription
_TEXT_TAGS = {"Copyright": 0x8298, "Author": 0x013B, "Description": 0x010E}


@dataclass
class Descriptive:
    """What a file says about its picture beside EXIF: XMP (ratings, keywords, edits), text
    (PNG text chunks; a JPEG comment is the text ``Comment``, and goes back to JPEG byte for
    byte, as it states no encoding), PNG colour chunks (gamma, chromaticities, sRGB intent,
    cICP, mDCv, cLLi; a HEIF's or AVIF's code points as cICP; see :mod:`.colourspace`) and
    IPTC records (captions, keywords, credits: a JPEG's Photoshop block, a TIFF's IPTC tag),
    written back wherever the output format has a place."""

    xmp: bytes | None = None
    text: dict[str, str] = field(default_factory=dict)
    png_colour: dict[bytes, bytes] = field(default_factory=dict)  # by chunk type
    iptc: bytes | None = None  # as stored; a TIFF's is set by imagefile, from its tag
    comment: bytes | None = None  # a JPEG's comment as stored (UTF-8, Latin-1, ...)

    @classmethod
    def read(cls, im: Image.Image, notes: list[str], turn: int = 1,
             turned: bool = False) -> Descriptive:
        """From an opened file whose orientation was ``turn`` (its pixels already ``turned`` by
        Pillow); XMP's is reset, as the pixels are turned upright. What cannot be carried
        (damaged IPTC, a gain map) is in ``notes``."""
        xmp = im.info.get("xmp")
        xmp = xmp.encode() if isinstance(xmp, str) else xmp if isinstance(xmp, bytes) else None
        if xmp is not None:
            xmp = joined_xmp(xmp, getattr(im, "applist", []), notes)  # a JPEG's extended XMP
            if (kept := without_gain_map(xmp)) != xmp:
                xmp = kept
                notes.append(GAIN_MAP_NOTE)
            size = im.size[::-1] if turn >= 5 and not turned else im.size  # the upright size
            xmp = upright_xmp(xmp, size, turn >= 5)
        text = {k: v for k, v in _text_chunks(im, notes).items()
                if isinstance(k, str) and isinstance(v, str) and k != XMP_KEY
                and not k.startswith(_RAW_PROFILE)}
        comment = im.info.get("comment") if im.format in ("JPEG", "MPO") else None
        if not (isinstance(comment, bytes) and comment.strip(b"\x00")):
            comment = None
        else:  # not UTF-8: Latin-1, which reads any bytes, is what older software wrote
            try:
                text["Comment"] = comment.decode("utf-8")
            except UnicodeDecodeError:
                text["Comment"] = comment.decode("latin-1")
        colour = {}
        if isinstance(im.info.get("gamma"), float):
            colour[b"gAMA"] = struct.pack(">I", round(im.info["gamma"] * 100000))
        if len(im.info.get("chromaticity") or ()) == 8:
            colour[b"cHRM"] = struct.pack(">8I", *(round(v * 100000)
                                                   for v in im.info["chromaticity"]))
        if im.info.get("srgb") in range(4):
            colour[b"sRGB"] = bytes([im.info["srgb"]])
        iptc = None
        if im.format in ("JPEG", "MPO"):
            iptc = jpeg_iptc(getattr(im, "applist", []))
            if iptc is False:
                notes.append("IPTC dropped: its Photoshop block is damaged")
        return cls(xmp, text, colour, iptc or None, comment)

    def scaled_xmp(self, scale: tuple[float, float]) -> bytes | None:
        """The XMP with its resolutions and pixel size scaled by (horizontal, vertical), like
        the DPI and the EXIF's pixel size, as a new file derived from the source's (see
        :func:`.xmp.derived_xmp`)."""
        def scaled(m: re.Match) -> bytes:
            try:
                value = Fraction(float(m[3])) / int(m[4] or 1) * Fraction(scale[m[2] == b"Y"])
            except (ValueError, OverflowError, ZeroDivisionError):
                return m[0]  # left as written: nothing to scale
            value = value.limit_denominator(10000)
            return m[1] + f"{value.numerator}/{value.denominator}".encode()

        def enlarged(m: re.Match) -> bytes:
            pixels = int(m[0][len(m[1]):]) * scale[vertical(m)]
            return m[1] + str(max(1, round(pixels))).encode()

        if self.xmp is None:
            return None
        return derived_xmp(XMP_SIZE.sub(enlarged, XMP_RESOLUTION.sub(scaled, self.xmp)))

    def text_tags(self) -> dict[str, tuple[int, str]]:
        """PNG text under a standard keyword that has an EXIF tag (keyword: tag, value), where
        the value is ASCII, which is all Pillow writes there (a copyright sign as ``(c)``)."""
        tags = {}
        for key, tag in _TEXT_TAGS.items():
            value = self.text.get(key, "").replace("\u00a9", "(c)")
            if value and value.isascii():
                tags[key] = (tag, value)
        return tags

    def exif_tags(self, exif: Image.Exif | None, fmt: str,
                  scale: tuple[float, float]) -> Image.Exif | None:
        """``exif`` for a ``fmt`` file other than PNG: with the PNG text that has EXIF tags
        (those it states itself kept), and for TIFF the (scaled) XMP packet and the IPTC
        records as tags, which is how TIFF stores them."""
        text = self.text_tags() if fmt != "PNG" else {}
        tiff = fmt == "TIFF" and (self.xmp is not None or self.iptc is not None)
        if not text and not tiff:
            return exif
        out = Image.Exif()
        for tag, value in (exif or {}).items():
            out[tag] = value
        for tag, value in text.values():
            out.setdefault(tag, value)
        if fmt == "TIFF" and self.xmp is not None:
            out[XMP] = self.scaled_xmp(scale)
        if fmt == "TIFF" and self.iptc is not None:
            out[IPTC] = self.iptc
        return out

    def added_chunks(self, fmt: str) -> dict[bytes, bytes]:
        """The colour chunks Pillow does not write for ``fmt``, which the written file gets
        beside what Pillow writes (:func:`.colourspace.with_chunks`): a PNG's mDCv and cLLi, an
        AVIF's cICP (into its nclx box)."""
        if fmt == "PNG":
            return {c: d for c, d in self.png_colour.items() if c not in PILLOW_WRITES}
        return {b"cICP": self.png_colour[b"cICP"]} \
            if fmt == "AVIF" and b"cICP" in self.png_colour else {}

    def save_options(self, fmt: str, scale: tuple[float, float], notes: list[str],
                     lost: Sequence[str] = ()) -> dict:
        """Pillow save options for ``fmt`` (TIFF's XMP and IPTC, and text that has EXIF tags, go
        with the EXIF, see :meth:`exif_tags`); what ``fmt`` cannot hold is noted in one note,
        ``lost`` named first."""
        opts: dict = {}
        dropped = list(lost)
        xmp = self.scaled_xmp(scale)
        if fmt == "PNG":
            info = PngInfo()
            for key, value in self.text.items():
                if 0 < len(key) < 80 and key.isprintable():
                    info.add_itxt(key, value)
            if xmp is not None:
                info.add_itxt(XMP_KEY, xmp.decode("utf-8", "replace"))
            for chunk, data in self.png_colour.items():
                if chunk in PILLOW_WRITES:
                    info.add(chunk, data)
            if info.chunks:
                opts["pnginfo"] = info
        else:
            added = self.added_chunks(fmt)
            unsaid = [chunk for chunk in self.png_colour if chunk not in added]
            if unsaid:
                names = ", ".join(chunk.decode() for chunk in unsaid)
                dropped.append(f"colour signalling ({names})")
            if xmp is not None and fmt in ("JPEG", "WEBP", "AVIF"):
                split = split_xmp(xmp) if fmt == "JPEG" else (xmp, b"")
                if split is None:
                    dropped.append("XMP (over JPEG's 64 KB)")
                else:  # over one JPEG segment: as extended XMP
                    opts["xmp"], extension = split
                    if extension:
                        opts["extra"] = extension
            elif xmp is not None and fmt != "TIFF":
                dropped.append("XMP")
            carried = {"Comment"} if fmt == "JPEG" else set()
            carried |= set(self.text_tags()) if fmt != "BMP" else set()
            if "Comment" in carried and self.text.get("Comment"):
                comment = self.comment or self.text["Comment"].encode("utf-8")
                if len(comment) > _JPEG_SEGMENT:
                    dropped.append("comment (over JPEG's 64 KB)")
                else:
                    opts["comment"] = comment
            if set(self.text) - carried:
                dropped.append("text")
        if self.iptc is not None and fmt == "JPEG":
            opts["extra"] = opts.get("extra", b"") + app13(self.iptc)
        elif self.iptc is not None and fmt != "TIFF":
            dropped.append("IPTC")
        if dropped:
            them = "them" if len(dropped) > 1 else "it"
            notes.append(f"{', '.join(dropped)} dropped: {fmt} has no place for {them}")
        return opts


def _text_chunks(im: Image.Image, notes: list[str]) -> dict:
    """A PNG's text chunks; those after a still's pixel data are lost (noted) where the file is
    cut short or damaged there: Pillow then fails reading them, once the pixels are whole. An
    animation's are read by decoding its frames: a failure there is the animation's own."""
    try:
        return getattr(im, "text", {})
    except Exception:  # noqa: BLE001 - Pillow's many ways (AssertionError too) to say so
        if getattr(im, "is_animated", False):
            raise
        notes.append("PNG cut short or damaged after its pixel data: its chunks there (text, "
                     "EXIF) dropped")
        return {}
