"""EXIF and DPI carried from an input file to its upscaled result, robust to odd metadata.

Orientation is applied to the pixels (and the tag reset), so a transposing orientation (5-8)
swaps the horizontal and vertical resolutions. Tags Pillow cannot write back (a wrongly typed
value, a damaged sub-IFD) are dropped one by one instead of losing the whole image; resolutions
are scaled with the image so the print size stays; JPEG's 64 KB limit drops the largest tags
first, then the EXIF block, with a note each time.
"""

from __future__ import annotations

from fractions import Fraction

from PIL import Image

ORIENTATION, X_RES, Y_RES = 0x0112, 0x011A, 0x011B
EXIF_IFD, GPS_IFD, INTEROP_IFD = 0x8769, 0x8825, 0xA005
_SUB_IFDS = (EXIF_IFD, GPS_IFD)
# Tags that describe a TIFF file's own layout (sizes, strips, ICC), never the photograph.
_LAYOUT = {254, 255, 256, 257, 258, 259, 262, 266, 273, 277, 278, 279, 284, 317, 320, 322, 323,
           324, 325, 330, 338, 339, 340, 341, 347, 513, 514, 532, 34675, INTEROP_IFD}
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
              4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
              6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}
JPEG_EXIF_LIMIT = 65533  # an APP1 segment's payload


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
    except Exception:  # noqa: BLE001 - damaged EXIF must not cost the image
        notes.append("EXIF unreadable: dropped")
        return None
    out = Image.Exif()
    dropped = 0
    for tag, value in base.items():
        if tag in _LAYOUT or tag in _SUB_IFDS:
            continue
        if _writable(tag, value):
            out[tag] = value
        else:
            dropped += 1
    for ifd, tags in subs.items():
        good = {t: v for t, v in tags.items() if t != INTEROP_IFD and _writable(t, v, ifd)}
        dropped += len(tags) - len(good)
        if good:
            out[ifd] = good
    if dropped:
        notes.append(f"{dropped} malformed EXIF tag(s) dropped")
    return out if len(out) else None


def orientation(exif: Image.Exif | None) -> int:
    """The EXIF orientation (1-8), 1 when absent or not a valid value."""
    value = exif.get(ORIENTATION, 1) if exif is not None else 1
    return value if isinstance(value, int) and value in range(1, 9) else 1


def apply_orientation(im: Image.Image, exif: Image.Exif | None,
                      dpi: tuple[float, float] | None) -> tuple[Image.Image,
                                                            tuple[float, float] | None]:
    """Turn the pixels upright; swap DPI and EXIF resolutions for transposing orientations."""
    o = orientation(exif)
    if exif is not None and ORIENTATION in exif:
        del exif[ORIENTATION]
    if o == 1:
        return im, dpi
    im = im.transpose(_TRANSPOSE[o])
    if o >= 5:
        dpi = (dpi[1], dpi[0]) if dpi else None
        if exif is not None and X_RES in exif and Y_RES in exif:
            exif[X_RES], exif[Y_RES] = exif[Y_RES], exif[X_RES]
    return im, dpi


def _scaled(value, scale: float):
    try:
        return Fraction(float(value) * scale).limit_denominator(10000)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        return None


def exif_for(exif: Image.Exif | None, fmt: str, scale: float | tuple[float, float],
             notes: list[str]) -> tuple[bytes | None, bool]:
    """EXIF bytes for a ``fmt`` output and whether it holds sub-IFDs (which libtiff cannot
    write); resolutions scaled like the DPI (one factor, or horizontal and vertical), shrunk or
    dropped to fit JPEG's limit."""
    if exif is None:
        return None, False
    out = Image.Exif()
    for tag, value in exif.items():
        out[tag] = value
    sx, sy = scale if isinstance(scale, tuple) else (scale, scale)
    for tag, factor in ((X_RES, sx), (Y_RES, sy)):
        if tag in out:
            value = _scaled(out[tag], factor)
            if value is None:
                del out[tag]
            else:
                out[tag] = value
    data = out.tobytes()
    if fmt == "JPEG" and len(data) > JPEG_EXIF_LIMIT:
        data = _shrink(out, notes)
    return data, any(p in out for p in _SUB_IFDS)


def _shrink(exif: Image.Exif, notes: list[str]) -> bytes | None:
    """Drop the largest tags until the EXIF fits a JPEG segment; None when nothing useful fits."""
    sizes = []
    for tag, value in exif.items():
        if tag in _SUB_IFDS:
            sizes += [(len(repr(v)), tag, t) for t, v in value.items()]
        else:
            sizes.append((len(repr(value)), None, tag))
    for _, ifd, tag in sorted(sizes, reverse=True):
        if ifd is None:
            del exif[tag]
        else:
            sub = {t: v for t, v in exif[ifd].items() if t != tag}
            if sub:
                exif[ifd] = sub
            else:
                del exif[ifd]
        data = exif.tobytes()
        if len(data) <= JPEG_EXIF_LIMIT:
            notes.append("EXIF over JPEG's 64 KB limit: its largest tags were dropped")
            return data
    notes.append("EXIF over JPEG's 64 KB limit: dropped")
    return None
