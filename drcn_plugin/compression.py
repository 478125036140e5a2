"""What a source file's compression did to it: whether a lossy codec touched it and, for a JPEG,
about which quality. The photo models' default rests on both.

Read from the container or codestream headers and quantisation tables, never by decoding pixels.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

from PIL import Image


def is_lossy(path: Path, im: Image.Image) -> bool:
    """Whether the file went through a lossy codec: JPEG, AVIF, JPEG-compressed TIFF, WebP whose
    first image chunk is ``VP8 `` (not ``VP8L``), JPEG 2000 with the irreversible 9/7 wavelet
    (a 5/3 file is taken as lossless, as it usually is, though rate limits can make it lossy)."""
    fmt = im.format
    if fmt in ("JPEG", "MPO", "AVIF"):
        return True
    if fmt == "TIFF":
        return im.info.get("compression") in ("jpeg", "tiff_jpeg")
    if fmt not in ("WEBP", "JPEG2000"):
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError:
        return False
    if fmt == "WEBP":
        vp8, vp8l = head.find(b"VP8 ", 12), head.find(b"VP8L", 12)
        return vp8 >= 0 and (vp8l < 0 or vp8 < vp8l)
    return _j2k_transform(head) == 0


def _j2k_transform(head: bytes) -> int | None:
    """The wavelet of a JPEG 2000 codestream (0 = 9/7 irreversible, 1 = 5/3 reversible), read
    from its COD segment by walking the main header's marker segments from SOC + SIZ."""
    pos = head.find(b"\xff\x4f\xff\x51")
    if pos < 0:
        return None
    pos += 2
    while pos + 4 <= len(head) and head[pos] == 0xFF and head[pos + 1] not in (0x90, 0x93):
        if head[pos + 1] == 0x52:  # COD: Lcod, Scod, progression, layers (2), MCT, levels,
            # code-block width and height, style, then the transform
            return head[pos + 13] if pos + 13 < len(head) else None
        pos += 2 + int.from_bytes(head[pos + 2: pos + 4], "big")
    return None


@lru_cache(maxsize=1)
def _ijg_luma_tables() -> dict[int, tuple[int, ...]]:
    """The luminance quantisation table Pillow (libjpeg's IJG scaling) writes at each quality."""
    tables = {}
    for q in range(1, 101):
        buf = io.BytesIO()
        Image.new("L", (8, 8)).save(buf, "JPEG", quality=q)
        buf.seek(0)
        with Image.open(buf) as im:
            tables[q] = tuple(im.quantization[0])
    return tables


def jpeg_quality(quantization: Mapping[int, Sequence[int]] | None) -> int | None:
    """Estimate a JPEG's quality (1..100) from its quantisation tables, as Pillow reports them.

    The nearest IJG-scaled luminance table wins; files from cameras with their own tables get the
    IJG quality that quantises about as coarsely. ``None`` when the file has no tables.
    """
    if not quantization or 0 not in quantization or len(quantization[0]) != 64:
        return None
    luma = quantization[0]
    return min(_ijg_luma_tables().items(),
               key=lambda kv: sum(abs(a - b) for a, b in zip(kv[1], luma, strict=False)))[0]
