"""What a source file's compression did to it: whether a lossy codec touched it and, for a JPEG,
about which quality. The photo models' default rests on both.

Read from the container or codestream headers and quantisation tables; the pixels are looked
at only for the 8x8 grid of a JPEG they went through (:func:`jpeg_history`).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import BinaryIO

import numpy as np
from PIL import Image
from PIL.JpegImagePlugin import zigzag_index

from .jpegparts import marker_segments


def is_lossy(f: BinaryIO, im: Image.Image) -> bool:
    """Whether the file went through a lossy codec: JPEG, AVIF, HEIF, JPEG-compressed TIFF, WebP
    whose first image chunk is ``VP8 `` (not ``VP8L``), JPEG 2000 with the irreversible 9/7
    wavelet (a 5/3 file is taken as lossless, as it usually is, though rate limits can make it
    lossy).
    ``f`` is the file ``im`` was opened from; its position is kept."""
    fmt = im.format
    if fmt in ("JPEG", "MPO", "AVIF", "HEIF"):
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
    walking the RIFF chunks by their sizes (into the first animation frame if there is one);
    ``f`` is left at the chunk's data."""
    f.seek(12)  # RIFF, size, WEBP
    while len(header := f.read(8)) == 8:
        name, size = header[:4], int.from_bytes(header[4:], "little")
        if name in (b"VP8 ", b"VP8L"):
            return name
        # a frame holds 16 bytes of its own, then its chunks; any other chunk is skipped whole
        f.seek(16 if name == b"ANMF" else size + (size & 1), 1)
    return None


def webp_quantizer(f: BinaryIO) -> float | None:
    """The mean luma AC quantiser index (0 finest .. 127 coarsest) of a lossy WebP's first frame,
    over its segments: how coarsely the encoder quantised, whatever quality setting asked for it.
    None for a lossless or unreadable file. ``f``'s position is kept."""
    where = f.tell()
    try:
        f.seek(0)
        if _webp_image_chunk(f) != b"VP8 ":
            return None
        frame = f.read(1 << 12)  # the frame header fits in the first partition's start
    except OSError:
        return None
    finally:
        f.seek(where)
    if len(frame) < 12 or frame[0] & 1 or frame[3:6] != b"\x9d\x01\x2a":  # a key frame's start
        return None
    return _vp8_quantizer(_BoolDecoder(frame[10:]))


class _BoolDecoder:
    """VP8's boolean entropy decoder (RFC 6386, section 7) for the frame header's fields."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos, self.range, self.shift = data, 2, 255, 0
        self.value = int.from_bytes(data[:2], "big")

    def bit(self) -> int:
        split = 1 + ((self.range - 1) * 128 >> 8)  # the header's fields use probability 1/2
        one = self.value >= split << 8
        self.range = self.range - split if one else split
        self.value -= (split << 8) if one else 0
        while self.range < 128:
            self.value, self.range, self.shift = self.value << 1, self.range << 1, self.shift + 1
            if self.shift == 8:
                self.shift = 0
                self.value |= self.data[self.pos] if self.pos < len(self.data) else 0
                self.pos += 1
        return int(one)

    def number(self, bits: int, signed: bool = False) -> int:
        value = 0
        for _ in range(bits):
            value = value << 1 | self.bit()
        return -value if signed and self.bit() else value


def _vp8_quantizer(d: _BoolDecoder) -> float:
    """The mean luma AC quantiser of a VP8 key frame's header (RFC 6386, section 9.2-9.6),
    read up to it field by field."""
    d.number(2)  # colour space, clamping
    segments, absolute = None, False
    if d.bit():  # segmentation
        update_map, update_data = d.bit(), d.bit()
        if update_data:
            absolute = d.bit()
            segments = [d.number(7, signed=True) if d.bit() else 0 for _ in range(4)]
            for _ in range(4):  # loop filter levels
                if d.bit():
                    d.number(6, signed=True)
        if update_map:
            for _ in range(3):
                if d.bit():
                    d.number(8)
    d.number(10)  # filter type, level, sharpness
    if d.bit() and d.bit():  # loop filter deltas
        for _ in range(8):
            if d.bit():
                d.number(6, signed=True)
    d.number(2)  # DCT partitions
    base = d.number(7)
    if segments is None:
        return float(base)
    # the decoder clamps each segment's index, set absolutely (-127..127) or as a delta
    return sum(min(max(q if absolute else base + q, 0), 127) for q in segments) / 4


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


@lru_cache(maxsize=1)
def _ijg_coarseness() -> dict[int, float]:
    """Each IJG quality's coarseness: the mean log step of its luma table."""
    return {q: _coarseness(t) for q, t in _ijg_luma_tables().items()}


def _coarseness(table: Sequence[int]) -> float:
    """How coarsely a table quantises: the mean of its steps' logs (a geometric mean), which
    weighs a table that is finer at high frequencies and coarser at low ones (Photoshop's, a
    flat one) as a whole rather than by its largest steps."""
    return float(np.log(np.maximum(np.asarray(table, dtype=np.float64), 1)).mean())


def jpeg_quality(quantization: Mapping[int, Sequence[int]] | None, table: int = 0) -> int | None:
    """Estimate a JPEG's quality (1..100) from its quantisation tables, as Pillow reports them.

    An IJG-scaled luminance table (libjpeg's, Pillow's, GIMP's, ImageMagick's) gives its own
    quality. Any other (mozjpeg's, Photoshop's, a camera's, a flat one) gives the IJG quality
    whose table has the same geometric-mean step: the strength that quality gets is the best
    one for such tables (benchmarks/foreign_jpeg.py); the nearest IJG table by summed
    differences would be decided by the high-frequency steps, where encoders differ most.
    ``table``: the one the first (Y) component uses. ``None`` when the file has no such table.
    """
    if not quantization or table not in quantization or len(quantization[table]) != 64:
        return None
    luma = tuple(quantization[table])
    exact = next((q for q, t in _ijg_luma_tables().items() if t == luma), None)
    if exact is not None:
        return exact
    coarse = _coarseness(luma)
    return min(_ijg_coarseness().items(), key=lambda kv: abs(kv[1] - coarse))[0]


def file_jpeg_quality(im: Image.Image) -> int | None:
    """The estimated quality of a JPEG file's, or a JPEG-compressed TIFF's, luma table (a TIFF
    keeps its tables in the JPEGTables tag); None for other files or when no table is read."""
    if im.format in ("JPEG", "MPO"):
        layers = getattr(im, "layer", None)  # (component, h, v, quantisation table)
        return jpeg_quality(getattr(im, "quantization", None), layers[0][3] if layers else 0)
    tags = getattr(im, "tag_v2", None)
    if im.format != "TIFF" or im.info.get("compression") != "jpeg" or tags is None:
        return None
    tables = tags.get(347)  # JPEGTables: an abbreviated JPEG stream of DQT and DHT segments
    return jpeg_quality(_dqt_tables(tables)) if isinstance(tables, bytes) else None


def _dqt_tables(stream: bytes) -> dict[int, list[int]]:
    """The quantisation tables of a JPEG stream's DQT segments before its scan, in natural order
    as Pillow reports a JPEG's."""
    tables = {}
    for marker, segment, _ in marker_segments(stream, 2 if stream[:2] == b"\xff\xd8" else 0):
        at = 0
        while marker == 0xDB and at < len(segment):
            wide = segment[at] >> 4  # 1: 16-bit entries
            data = segment[at + 1: at + 1 + 64 * (1 + wide)]
            if wide > 1 or len(data) < 64 * (1 + wide):
                break
            values = [int.from_bytes(data[i: i + 1 + wide], "big")
                      for i in range(0, len(data), 1 + wide)]
            tables[segment[at] & 15] = [values[i] for i in zigzag_index]
            at += 1 + len(data)
    return tables


# jpeg_history: blocks sampled per grid offset, the low-frequency coefficients whose steps are
# tested (AC, row-major (i, j)), the high frequencies a JPEG grid leaves weakest, and the fit a
# quality's steps need (a mean cosine: 0 for clean pixels, 0.45 at most over Set14/T91/BSD200)
# and that a flat table's need (see _history_tables).
_HISTORY_BLOCKS = 2048
_PROBES = ((0, 1), (1, 0), (1, 1), (0, 2), (2, 0), (1, 2), (2, 1), (2, 2), (0, 3), (3, 0))
_HIGH = np.add.outer(np.arange(8), np.arange(8)) >= 6
_FIT, _FLAT_FIT = 0.5, 0.7
_DCT = np.array([[np.sqrt((1 if k == 0 else 2) / 8) * np.cos((2 * n + 1) * k * np.pi / 16)
                  for n in range(8)] for k in range(8)])


def jpeg_history(levels: np.ndarray) -> int | None:
    """The quality of a JPEG that 8-bit pixels went through (a photo kept as PNG, a screenshot
    of one, a JPEG re-saved from a stronger one), or None when they show none.

    On the 8x8 grid where the DCT's high frequencies are weakest, a JPEG's coefficients sit on
    multiples of its quantisation steps: the quality is the IJG table whose steps they fit best.
    Under a re-save at quality 85 or more, the first JPEG's coarser steps still fit best. A
    resize or a filter after the JPEG wipes the grid out, and the pixels count as clean.
    """
    if levels.dtype != np.uint8 or min(levels.shape[:2]) < 16:
        return None
    rows, cols = (levels.shape[0] - 8) // 8, (levels.shape[1] - 8) // 8
    picked = np.random.default_rng(0).permutation(rows * cols)[:_HISTORY_BLOCKS]
    top = (picked // cols * 8)[:, None, None] + np.arange(8)[:, None]
    left = (picked % cols * 8)[:, None, None] + np.arange(8)

    def dct(dy: int, dx: int) -> np.ndarray:  # of the sampled blocks' Y, moved by (dy, dx)
        block = levels[top + dy, left + dx].astype(np.float32)
        if block.ndim == 4:  # JPEG's luma from RGB; grey (and grey + alpha) as it is
            block = block[..., :3] @ np.float32([0.299, 0.587, 0.114]) if block.shape[3] >= 3 \
                else block[..., 0]
        return _DCT @ (block - 128) @ _DCT.T

    blocks = [dct(dy, dx) for dy in range(8) for dx in range(8)]
    coeffs = min(blocks, key=lambda b: float(np.abs(b[:, _HIGH]).mean()))
    # Each block counts once: a pattern repeating every 8 or 16 pixels (a tiled background)
    # gives a few blocks again and again, whose few values can fit some quality's steps.
    coeffs = np.unique(coeffs.reshape(-1, 64), axis=0).reshape(-1, 8, 8)
    # A turn by 90 degrees (a portrait photo turned upright by its EXIF orientation, then kept)
    # transposes the blocks; flips only change signs, which the fit ignores.
    fits = max((_lattice_fits(c) for c in (coeffs, coeffs.transpose(0, 2, 1))),
               key=lambda f: max(f.values(), default=0.0))
    best = max(fits.values(), default=0.0)
    return max(q for q, f in fits.items() if f >= best - 0.02) if best > _FIT else None


@lru_cache(maxsize=1)
def _history_tables() -> tuple[tuple[int, np.ndarray, float], ...]:
    """The tables a JPEG grid is fitted to, with the quality each stands for and the fit it
    needs: IJG's, and flat ones (every step 3..32, as some cameras write) at the quality
    :func:`jpeg_quality` reads from them, so that a flat table's grid does not pass for the
    IJG table of the same low-frequency steps. One step everywhere is a lattice that stripes
    can fit by chance (Set14's zebra fits step 6 at 0.51), so a flat table needs
    :data:`_FLAT_FIT` (the JPEGs of flat tables 5 and 8 fit at 0.9 and more)."""
    ijg = [(q, np.reshape(t, (8, 8)), 0.0) for q, t in _ijg_luma_tables().items()]
    flat = [(jpeg_quality({0: [s] * 64}), np.full((8, 8), s), _FLAT_FIT) for s in range(3, 33)]
    return tuple(ijg + flat)


def _lattice_fits(coeffs: np.ndarray) -> dict[int, float]:
    """How well blocks' DCT coefficients sit on each table's steps: the mean cosine over the
    probed frequencies with enough nonzero coefficients, by the quality the table stands for."""
    fits: dict[int, float] = {}
    for quality, steps, least in _history_tables():
        fit = []
        for i, j in _PROBES:
            c = coeffs[:, i, j]
            c = c[np.abs(c) > steps[i, j] / 2]  # zeros fit any step
            if steps[i, j] >= 2 and len(c) >= 32:
                fit.append(float(np.cos(2 * np.pi * c / steps[i, j]).mean()))
        if len(fit) >= 3 and sum(fit) / len(fit) >= least:
            fits[quality] = max(fits.get(quality, -1.0), sum(fit) / len(fit))
    return fits
