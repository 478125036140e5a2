"""What a source file's compression did to it: whether a lossy codec touched it and, for a JPEG,
about which quality. The photo models' default rests on both.

Read from the container or codestream headers and quantisation tables, never by decoding pixels.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import BinaryIO

from PIL import Image


def is_lossy(f: BinaryIO, im: Image.Image) -> bool:
    """Whether the file went through a lossy codec: JPEG, AVIF, JPEG-compressed TIFF, WebP whose
    first image chunk is ``VP8 `` (not ``VP8L``), JPEG 2000 with the irreversible 9/7 wavelet
    (a 5/3 file is taken as lossless, as it usually is, though rate limits can make it lossy).
    ``f`` is the file ``im`` was opened from; its position is kept."""
    fmt = im.format
    if fmt in ("JPEG", "MPO", "AVIF"):
        return True
    if fmt == "TIFF":
        return im.info.get("compression") in ("jpeg", "tiff_jpeg")
    if fmt not in ("WEBP", "JPEG2000"):
        return False
    where = f.tell()
    try:
        f.seek(0)
        if fmt == "WEBP":
            return _webp_image_chunk(f) == b"VP8 "
        head = f.read(1 << 16)
    except OSError:
        return False
    finally:
        f.seek(where)
    return _j2k_transform(head) == 0


def _webp_image_chunk(f: BinaryIO) -> bytes | None:
    """The first image chunk's name (``VP8 `` lossy, ``VP8L`` lossless) of a WebP file, found by
    walking the RIFF chunks by their sizes (into the first animation frame if there is one)."""
    f.seek(12)  # RIFF, size, WEBP
    while len(header := f.read(8)) == 8:
        name, size = header[:4], int.from_bytes(header[4:], "little")
        if name in (b"VP8 ", b"VP8L"):
            return name
        # a frame holds 16 bytes of its own, then its chunks; any other chunk is skipped whole
        f.seek(16 if name == b"ANMF" else size + (size & 1), 1)
    return None


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


def jpeg_quality(quantization: Mapping[int, Sequence[int]] | None, table: int = 0) -> int | None:
    """Estimate a JPEG's quality (1..100) from its quantisation tables, as Pillow reports them.

    The nearest IJG-scaled luminance table wins; files from cameras with their own tables get the
    IJG quality that quantises about as coarsely. ``table``: the one the first (Y) component
    uses. ``None`` when the file has no such table.
    """
    if not quantization or table not in quantization or len(quantization[table]) != 64:
        return None
    luma = quantization[table]
    return min(_ijg_luma_tables().items(),
               key=lambda kv: sum(abs(a - b) for a, b in zip(kv[1], luma, strict=False)))[0]
