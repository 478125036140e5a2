"""TIFF samples Pillow has no mode for, read at their real precision: 16-bit grey with alpha
(GIMP's export of a 16-bit grey layer with transparency) and floating-point grey with alpha,
RGB and RGBA (16, 32 or 64 bits: Photoshop's and GIMP's 32-bit, HDR work). Pillow opens such a
file as a stand-in of an 8-bit mode with the same bands (its tags, ICC profile, EXIF and
orientation read as for any TIFF); its pixels come from a second opening of the file's strips or
tiles as 8-bit grey rows of the bytes they hold, which Pillow (and libtiff, for LZW and
Deflate) decompresses: the samples are then put together, and predictors undone, with numpy."""

from __future__ import annotations

import io
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from PIL import Image, TiffImagePlugin

from .errors import BadImageError
from .opening import first_ifd, load_pixels

# TIFF tags read or written here
_WIDTH, _HEIGHT, _BITS, _COMPRESSION, _PHOTOMETRIC, _FILL_ORDER = 256, 257, 258, 259, 262, 266
_STRIPS, _SAMPLES, _ROWS, _STRIP_SIZES, _PLANAR, _PREDICTOR = 273, 277, 278, 279, 284, 317
_TILE_WIDTH, _TILE_LENGTH, _TILES, _TILE_SIZES, _EXTRA, _KIND = 322, 323, 324, 325, 338, 339
_UNSIGNED, _FLOAT = 1, 3  # SampleFormat
_PREMULTIPLIED, _ALPHA = 1, 2  # ExtraSamples
_NO_PREDICTOR, _HORIZONTAL, _FLOAT_PREDICTOR = 1, 2, 3
# compressions whose strips Pillow's own reader (none, PackBits) or libtiff unpacks byte for byte
_BYTE_CODECS = {1: "uncompressed", 5: "LZW", 8: "Deflate", 32946: "Deflate",
                32773: "PackBits"}
_CODEC_NAMES = {7: "JPEG", 34925: "LZMA", 50000: "Zstandard", 50001: "WebP"}
_STAND_IN_SWITCH = threading.Lock()


@dataclass(frozen=True)
class DeepLayout:
    """How a TIFF's first image stores samples Pillow has no mode for."""

    what: str  # as a note or refusal names it: "16-bit grey with alpha"
    mode: str  # the 8-bit Pillow mode of the stand-in: its bands are the result's
    dtype: np.dtype  # one sample, in the file's byte order
    samples: int  # samples a pixel, extra ones included
    kept: tuple[int, ...]  # the samples read: colour, then alpha
    premultiplied: bool


def deep_layout(tags: TiffImagePlugin.ImageFileDirectory_v2) -> DeepLayout | None:
    """What ``tags`` (a TIFF image's) store, where that is 16-bit grey with alpha or floating
    point samples Pillow has no mode for; None for other images."""
    photometric, samples = tags.get(_PHOTOMETRIC), tags.get(_SAMPLES, 1)
    bits, kinds = _per_sample(tags.get(_BITS, (1,))), _per_sample(tags.get(_KIND, (_UNSIGNED,)))
    extra = _per_sample(tags.get(_EXTRA, ()))
    colours = {0: 1, 1: 1, 2: 3}.get(photometric)  # grey (either way round) or RGB
    if colours is None or not isinstance(samples, int) or samples != colours + len(extra) \
            or len(set(bits)) != 1 or len(set(kinds)) > 1:
        return None
    alpha = [colours + i for i, e in enumerate(extra) if e in (_PREMULTIPLIED, _ALPHA)][:1]
    kind, depth = kinds[0] if kinds else _UNSIGNED, bits[0]
    if kind == _FLOAT and depth in (16, 32, 64):
        if samples == 1 and depth == 32:  # Pillow's own F
            return None
        number = f"{depth}-bit float"
    elif kind == _UNSIGNED and depth == 16 and colours == 1 and alpha:
        number = "16-bit"
    else:
        return None
    order = ">" if tags.prefix == b"MM" else "<"
    mode = {1: "L", 3: "RGB"}[colours] + ("A" if alpha else "")
    what = f"{number} {'grey' if colours == 1 else 'RGB'}" + (" with alpha" if alpha else "")
    return DeepLayout(what, "F" if mode == "L" else mode,
                      np.dtype(f"{order}{'f' if kind == _FLOAT else 'u'}{depth // 8}"),
                      samples, (*range(colours), *alpha),
                      bool(alpha) and extra[alpha[0] - colours] == _PREMULTIPLIED)


def _per_sample(value: object) -> tuple:
    """A tag's value as a tuple (Pillow gives one value of a one-value tag as itself)."""
    return value if isinstance(value, tuple) else (value,)


@contextmanager
def stand_in_modes(layout: DeepLayout) -> Iterator[None]:
    """Pillow's TIFF reader made to open an image it has no mode for as ``layout``'s stand-in
    mode, with a raw mode no decoder has: loaded by anything but :func:`deep_pixels`, it fails
    rather than show the wrong bytes. Only while a file is opened, one file at a time."""
    class Modes(dict):
        def __missing__(self, key: tuple) -> tuple[str, str]:
            if key[1] in (0, 1, 2) and len(key[4]) == layout.samples:
                return layout.mode, "deep samples"
            raise KeyError(key)

    with _STAND_IN_SWITCH:
        before = TiffImagePlugin.OPEN_INFO
        TiffImagePlugin.OPEN_INFO = Modes(before)
        try:
            yield
        finally:
            TiffImagePlugin.OPEN_INFO = before


class StandIn(TiffImagePlugin.TiffImageFile):
    """Pillow's TIFF image of a file whose samples it has no mode for, in a mode with the same
    bands: its tags and metadata read as Pillow reads them, its pixels blank (loading reads
    nothing: :func:`deep_pixels` reads the file's), and not turned upright."""

    def load(self) -> Image.core.PixelAccess | None:
        """Blank pixels, made at the first load, as stored (not turned upright)."""
        if self.tile:
            self.tile = []
            self.im = Image.core.fill(self.mode, self._tile_size, 0)
        return super().load()


def open_stand_in(f: BinaryIO) -> StandIn | None:
    """The TIFF open as ``f`` as a :class:`StandIn`, where its first image holds samples
    :func:`deep_layout` knows; None for others. One that cannot be read (its compression, its
    predictor) is refused in one line."""
    tags = first_ifd(f)
    layout = deep_layout(tags) if tags is not None else None
    if layout is None:
        return None
    if why := refusal(tags, layout):
        raise BadImageError(why)
    f.seek(0)
    try:
        with stand_in_modes(layout):
            im = StandIn(f)
    except SyntaxError:  # laid out in a way Pillow's reader does not take: its refusal stands
        return None
    Image._decompression_bomb_check(im.size)  # noqa: SLF001 - as Image.open checks
    return im


def refusal(tags: TiffImagePlugin.ImageFileDirectory_v2, layout: DeepLayout) -> str:
    """Why ``layout``'s samples cannot be read from a TIFF with ``tags``; empty when they can."""
    compression, predictor = tags.get(_COMPRESSION, 1), tags.get(_PREDICTOR, _NO_PREDICTOR)
    if compression not in _BYTE_CODECS:
        name = _CODEC_NAMES.get(compression, f"compression {compression}")
        return f"{layout.what} is read only uncompressed or LZW, Deflate or PackBits compressed, " \
               f"not {name}"
    if predictor not in (_NO_PREDICTOR, _HORIZONTAL, _FLOAT_PREDICTOR):
        return f"{layout.what} with TIFF predictor {predictor} is not supported"
    if tags.get(_FILL_ORDER, 1) != 1:
        return f"{layout.what} with its bits stored in reverse order (FillOrder 2) is not " \
               "supported"
    if layout.dtype.kind == "f" and _PHOTOMETRIC in tags and tags[_PHOTOMETRIC] == 0:
        return "float grey stored white-is-zero (TIFF PhotometricInterpretation 0) is not " \
               "supported"
    return ""


def deep_pixels(f: BinaryIO, im: Image.Image, layout: DeepLayout) -> np.ndarray:
    """The pixels of the TIFF open as ``f`` (Pillow's stand-in ``im``) as uint16 or float32
    ``H x W x C``, as stored (not yet turned upright): colour, then alpha, unpremultiplied."""
    tags = im.tag_v2
    width, height = tags[_WIDTH], tags[_HEIGHT]  # as stored, before Pillow's orientation
    where = f.tell()
    try:
        f.seek(0)
        data = f.read()
    finally:
        f.seek(where)
    planar = tags.get(_PLANAR, 1) == 2
    groups = layout.samples if planar else 1  # planes, each holding samples of every pixel
    planes = [_plane(data, tags, layout, (width, height), group, groups)
              for group in range(groups)]
    pixels = np.concatenate(planes, axis=2) if planar else planes[0]
    if len(layout.kept) < layout.samples:  # channels not marked as alpha dropped (noted)
        pixels = pixels[..., list(layout.kept)]
    if tags.get(_PHOTOMETRIC) == 0:  # grey with 0 as white: integers only (see refusal)
        pixels[..., 0] = 65535 - pixels[..., 0]
    pixels = np.ascontiguousarray(pixels)  # as the writers of 16-bit and float pixels take them
    return _unpremultiplied(pixels) if layout.premultiplied else pixels


def _plane(data: bytes, tags: TiffImagePlugin.ImageFileDirectory_v2, layout: DeepLayout,
           size: tuple[int, int], group: int, groups: int) -> np.ndarray:
    """The samples one plane of the file ``data`` holds (all of them where the pixels are
    stored whole), as ``H x W x samples`` in native byte order."""
    width, height = size
    samples = layout.samples // groups
    step = layout.dtype.itemsize * samples  # bytes a pixel of this plane
    tiled = _TILES in tags
    if tiled:
        across, down = tags.get(_TILE_WIDTH), tags.get(_TILE_LENGTH)
        if not (isinstance(across, int) and isinstance(down, int) and across > 0 and down > 0):
            raise BadImageError("its tile size is missing or damaged")
        if across * down > max(4 * width * height, 1 << 20):  # each tile is decoded whole
            raise BadImageError(f"its {across}x{down} tiles are far larger than its "
                                f"{width}x{height} image")
        columns, rows = -(-width // across), -(-height // down)
        offsets, sizes, count = _TILES, _TILE_SIZES, columns * rows
        standin = {_WIDTH: columns * across * step, _HEIGHT: rows * down,
                   _TILE_WIDTH: across * step, _TILE_LENGTH: down}
    else:
        down = tags.get(_ROWS, height)
        down = min(down, height) if isinstance(down, int) and down > 0 else height
        columns, across, count = 1, width, -(-height // down)
        offsets, sizes = _STRIPS, _STRIP_SIZES
        standin = {_WIDTH: width * step, _HEIGHT: height, _ROWS: down}
    starts, lengths = _per_sample(tags.get(offsets, ())), _per_sample(tags.get(sizes, ()))
    if len(starts) < count * groups or len(lengths) < count * groups:
        raise BadImageError("its strip or tile table is shorter than its image")
    part = slice(group * count, (group + 1) * count)
    rows = _bytes_rows(data, tags, {**standin, offsets: starts[part], sizes: lengths[part]})
    # each tile's or strip's rows, as the predictor saw them: columns of whole tiles
    pieces = rows.reshape(len(rows), columns, across * step)
    predictor = tags.get(_PREDICTOR, _NO_PREDICTOR)
    if predictor == _FLOAT_PREDICTOR:
        values = _float_predicted(pieces, layout.dtype, samples)
    else:
        values = pieces.view(layout.dtype).astype(layout.dtype.newbyteorder("="))
        values = values.reshape(len(rows), columns, across, samples)
        if predictor == _HORIZONTAL:  # each sample less the one a pixel before, wrapping
            unsigned = values.view(f"u{values.itemsize}")
            np.cumsum(unsigned, axis=2, dtype=unsigned.dtype, out=unsigned)
    values = values.reshape(len(rows), columns * across, samples)[:height, :width]
    return values.astype(np.uint16 if layout.dtype.kind == "u" else np.float32, copy=False)


def _float_predicted(pieces: np.ndarray, dtype: np.dtype, samples: int) -> np.ndarray:
    """Rows stored with TIFF's floating-point predictor (each row's bytes differenced a pixel
    apart, after being put in planes of most to least significant byte) as native floats."""
    height, columns, length = pieces.shape
    size = dtype.itemsize
    summed = pieces.reshape(height, columns, length // samples, samples)
    summed = np.cumsum(summed, axis=2, dtype=np.uint8)
    planes = summed.reshape(height, columns, size, length // size)
    bits = np.zeros((height, columns, length // size), f"u{size}")  # each value's bit pattern
    for plane in range(size):  # most significant first: a pass over each plane as it lies
        bits <<= 8
        bits |= planes[:, :, plane]
    return bits.view(f"f{size}").reshape(height, columns, -1, samples)


def _bytes_rows(data: bytes, tags: TiffImagePlugin.ImageFileDirectory_v2,
                layout: dict[int, object]) -> np.ndarray:
    """The bytes of the strips or tiles ``layout`` names in the file ``data``, decompressed by
    Pillow as the rows of an 8-bit grey image of that layout: a directory saying so is added at
    the file's end and made its first."""
    big, order = data[2:3] == b"+", "<" if data[:2] == b"II" else ">"
    at = len(data) + len(data) % 2  # a directory starts on a word boundary
    if at > 0xFFFFFFFF and not big:
        raise BadImageError("a TIFF over 4 GB is not read at its depth")
    tags = {**layout, _BITS: 8, _COMPRESSION: tags.get(_COMPRESSION, 1), _PHOTOMETRIC: 1,
            _SAMPLES: 1, _PLANAR: 1}
    head = data[:8] + struct.pack(f"{order}Q", at) if big else \
        data[:4] + struct.pack(f"{order}L", at)
    patched = b"".join((head, memoryview(data)[len(head):], b"\0" * (at - len(data)),
                        _directory(tags, at, order, big)))  # one copy of the file
    with Image.open(io.BytesIO(patched)) as rows:
        if rows.mode != "L":
            raise BadImageError("its strips or tiles cannot be read")
        load_pixels(rows)
        return np.asarray(rows)


def _directory(tags: dict[int, object], at: int, order: str, big: bool) -> bytes:
    """A TIFF directory of ``tags`` (integers, or tuples of them) to be written at ``at``: LONG
    values (LONG8 in a BigTIFF), the tables that do not fit an entry after it."""
    kind, wide = ("Q", 16) if big else ("L", 4)  # the type of each value and TIFF's code of it
    slot = struct.calcsize(f"<{kind}")
    count = struct.pack(f"{order}{'Q' if big else 'H'}", len(tags))
    after = at + len(count) + len(tags) * (4 + 2 * slot) + slot  # where the tables go
    entries, tables = [], b""
    for tag, value in sorted(tags.items()):
        values = value if isinstance(value, tuple) else (value,)
        packed = struct.pack(f"{order}{len(values)}{kind}", *values)
        if len(packed) > slot:
            packed, tables = struct.pack(f"{order}{kind}", after + len(tables)), tables + packed
        entries.append(struct.pack(f"{order}HH{kind}", tag, wide, len(values))
                       + packed.ljust(slot, b"\0"))
    return count + b"".join(entries) + bytes(slot) + tables


def _unpremultiplied(pixels: np.ndarray) -> np.ndarray:
    """Colour stored multiplied by its alpha (the last channel) divided by it again, rounded
    and kept within range for 16-bit samples; colour under no alpha is left as stored."""
    if pixels.dtype == np.uint16:
        alpha = pixels[..., -1:].astype(np.uint32)
        colour = (pixels[..., :-1].astype(np.uint32) * 65535 + alpha // 2) // np.maximum(alpha, 1)
        pixels[..., :-1] = np.where(alpha > 0, np.minimum(colour, 65535), pixels[..., :-1])
    else:
        alpha = pixels[..., -1:]
        with np.errstate(divide="ignore", invalid="ignore"):
            pixels[..., :-1] = np.where(alpha > 0, pixels[..., :-1] / alpha, pixels[..., :-1])
    return pixels

