"""TIFF samples Pillow has no mode for, read at their real precision: 16-bit grey with alpha
(GIMP's export of a 16-bit grey layer with transparency) and floating-point grey with alpha,
RGB and RGBA (16, 32 or 64 bits: Photoshop's and GIMP's 32-bit, HDR work). Pillow opens such a
file as a stand-in of an 8-bit mode with the same bands (its tags, ICC profile, EXIF and
orientation read as for any TIFF); its pixels come from its strips or tiles, a few at a time,
opened as the 8-bit grey rows of the bytes they hold, which Pillow (and libtiff, for LZW and
Deflate) decompresses: the samples are then put together, and predictors undone, with numpy,
into the result, so that reading takes little memory beside it."""

from __future__ import annotations

import io
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import accumulate
from typing import BinaryIO

import numpy as np
from PIL import Image, TiffImagePlugin

from .errors import BadImageError
from .opening import ThroughLibtiff, as_tuple, first_ifd, load_pixels

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
_STAND_IN_SWITCH = threading.Lock()  # held while Pillow's table of modes is made a _Modes
_OPENING = threading.local()  # layout: what this thread's stand_in_modes opens, if it is in one
_PIECE_BYTES = 1 << 22  # bytes of samples decoded at a time: as many whole strips, at least one
# Memory reading a piece takes beside its compressed bytes (twice: as read, and in the file made
# of them): Pillow's rows, numpy's copy, the floating-point predictor's sums and bit patterns
# (3 copies of the samples at once, measured by RSS on one 96 MB strip), and what the allocator
# holds on to between pieces (of 4 MB pieces of a 3000x2000 float RGBA image, 22 MB beside the
# result's 92 MB in strips, 27 MB in 256x256 tiles)
_PIECE_COPIES, _PIECE_SLACK = 4, 16 << 20


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
    bits, kinds = as_tuple(tags.get(_BITS, (1,))), as_tuple(tags.get(_KIND, (_UNSIGNED,)))
    extra = as_tuple(tags.get(_EXTRA, ()))
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


class _Modes(dict):
    """Pillow's table of the modes of TIFF layouts, which also gives a thread opening a stand-in
    (:func:`stand_in_modes`) its mode for a layout Pillow lacks; other threads, ComfyUI's or
    the GIMP worker's, read it as Pillow's own."""

    def __missing__(self, key: tuple) -> tuple[str, str]:
        layout = getattr(_OPENING, "layout", None)
        if layout is not None and key[1] in (0, 1, 2) and len(key[4]) == layout.samples:
            return layout.mode, "deep samples"
        raise KeyError(key)


@contextmanager
def stand_in_modes(layout: DeepLayout) -> Iterator[None]:
    """Pillow's TIFF reader made to open, in this thread, an image it has no mode for as
    ``layout``'s stand-in mode, with a raw mode no decoder has: loaded by anything but
    :func:`deep_pixels`, it fails rather than show the wrong bytes. Pillow's table is made a
    :class:`_Modes` of its entries once, not swapped while other threads open files."""
    with _STAND_IN_SWITCH:
        if not isinstance(TiffImagePlugin.OPEN_INFO, _Modes):
            TiffImagePlugin.OPEN_INFO = _Modes(TiffImagePlugin.OPEN_INFO)
    outer, _OPENING.layout = getattr(_OPENING, "layout", None), layout
    try:
        yield
    finally:
        _OPENING.layout = outer  # a nested use leaves the enclosing one its layout


class StandIn(ThroughLibtiff):
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
    if predictor == _FLOAT_PREDICTOR and layout.dtype.kind != "f":
        return f"{layout.what} with TIFF predictor 3 is not supported: it is the floating-point " \
               "predictor, for float samples"
    if tags.get(_FILL_ORDER, 1) != 1:
        return f"{layout.what} with its bits stored in reverse order (FillOrder 2) is not " \
               "supported"
    if layout.dtype.kind == "f" and _PHOTOMETRIC in tags and tags[_PHOTOMETRIC] == 0:
        return "float grey stored white-is-zero (TIFF PhotometricInterpretation 0) is not " \
               "supported"
    return ""


def deep_pixels(f: BinaryIO, im: Image.Image, layout: DeepLayout) -> np.ndarray:
    """The pixels of the TIFF open as ``f`` (Pillow's stand-in ``im``) as uint16 or float32
    ``H x W x C``, as stored (not yet turned upright): colour, then alpha, unpremultiplied.
    They are decoded a few strips or tiles at a time into the result, which is all the
    memory the reading takes beside them (see :func:`decode_bytes`)."""
    tags = im.tag_v2
    width, height = tags[_WIDTH], tags[_HEIGHT]  # as stored, before Pillow's orientation
    pixels = np.empty((height, width, len(layout.kept)),
                      np.uint16 if layout.dtype.kind == "u" else np.float32)
    where = f.tell()
    try:
        for geometry, channels, kept in _planes(f, tags, layout):
            _read_plane(f, geometry, pixels[..., channels], kept)
    finally:
        f.seek(where)
    if tags.get(_PHOTOMETRIC) == 0:  # grey with 0 as white: integers only (see refusal)
        np.subtract(65535, pixels[..., 0], out=pixels[..., 0])
    return _unpremultiplied(pixels) if layout.premultiplied else pixels


def decode_bytes(im: StandIn, turned: bool) -> int:
    """Bytes of memory reading the stand-in ``im``'s pixels takes at most: its blank pixels
    and the result (each twice where ``turned`` upright, as a copy), and the largest piece read
    at a time (see :data:`_PIECE_COPIES`)."""
    layout = deep_layout(im.tag_v2)
    out = 2 if layout.dtype.kind == "u" else 4  # bytes a sample of the result
    pixels = im.width * im.height * (4 + out * len(layout.kept))  # Pillow's blank: 4 a pixel
    where = im.fp.tell()
    try:
        geometries = [geometry for geometry, _, _ in _planes(im.fp, im.tag_v2, layout)]
    finally:
        im.fp.seek(where)
    largest = max(sum(g.lengths[part]) for g in geometries for part in g.pieces())
    return pixels * (1 + turned) + 2 * largest + _PIECE_COPIES * geometries[0].piece_bytes \
        + _PIECE_SLACK


def _planes(f: BinaryIO, tags: TiffImagePlugin.ImageFileDirectory_v2,
            layout: DeepLayout) -> list[tuple[_Geometry, slice, tuple[int, ...]]]:
    """How each plane read of the TIFF open as ``f`` is stored, the result's channels it
    holds and its samples they are: one plane where the samples are stored whole (channels
    not marked as alpha dropped: noted), each kept sample's where each has its own."""
    file_size = f.seek(0, io.SEEK_END)
    if tags.get(_PLANAR, 1) != 2:
        return [(_Geometry.of(tags, layout, 0, file_size), np.s_[:], layout.kept)]
    return [(_Geometry.of(tags, layout, sample, file_size), np.s_[i:i + 1], (0,))
            for i, sample in enumerate(layout.kept)]


@dataclass(frozen=True)
class _Geometry:
    """How one plane of a TIFF's image (all of it where its samples are stored whole) is cut
    in strips or tiles, and which of them are decoded together."""

    tags: TiffImagePlugin.ImageFileDirectory_v2
    dtype: np.dtype  # one sample, as stored
    samples: int  # in a pixel of this plane
    size: tuple[int, int]  # of the image, as stored
    tile: tuple[int, int]  # a tile's, or the width and rows of a strip
    tiled: bool
    starts: tuple[int, ...]  # this plane's strips or tiles
    lengths: tuple[int, ...]
    row: int  # strips or tiles in a row of them: the tiles across, or all the strips
    together: int  # strips or tiles decoded at a time, of one row

    @classmethod
    def of(cls, tags: TiffImagePlugin.ImageFileDirectory_v2, layout: DeepLayout, plane: int,
           file_size: int) -> _Geometry:
        """The geometry of ``plane`` (0 where the samples are stored whole) of a file of
        ``file_size`` bytes (no strip or tile is longer)."""
        width, height = tags[_WIDTH], tags[_HEIGHT]
        planar = tags.get(_PLANAR, 1) == 2
        samples = 1 if planar else layout.samples
        step = layout.dtype.itemsize * samples  # bytes a pixel of this plane
        tiled = _TILES in tags
        if tiled:
            across, down = tags.get(_TILE_WIDTH), tags.get(_TILE_LENGTH)
            if not (isinstance(across, int) and isinstance(down, int) and across > 0
                    and down > 0):
                raise BadImageError("its tile size is missing or damaged")
            if across * down > max(4 * width * height, 1 << 20):  # each tile is decoded whole
                raise BadImageError(f"its {across}x{down} tiles are far larger than its "
                                    f"{width}x{height} image")
            row = -(-width // across)
            count = row * -(-height // down)
            together = min(row, max(1, _PIECE_BYTES // (across * down * step)))
            offsets, sizes = _TILES, _TILE_SIZES
        else:
            down = tags.get(_ROWS, height)
            across, down = width, min(down, height) if isinstance(down, int) and down > 0 \
                else height
            count = row = -(-height // down)
            together = min(count, max(1, _PIECE_BYTES // (down * width * step)))
            offsets, sizes = _STRIPS, _STRIP_SIZES
        starts, lengths = as_tuple(tags.get(offsets, ())), as_tuple(tags.get(sizes, ()))
        planes = layout.samples if planar else 1
        if len(starts) < count * planes or len(lengths) < count * planes:
            raise BadImageError("its strip or tile table is shorter than its image")
        part = slice(plane * count, (plane + 1) * count)
        return cls(tags, layout.dtype, samples, (width, height), (across, down), tiled,
                   starts[part], tuple(min(n, file_size) for n in lengths[part]), row, together)

    @property
    def piece_bytes(self) -> int:
        """Bytes of the samples of the strips or tiles decoded at a time."""
        return self.together * self.tile[0] * self.tile[1] * self.samples * self.dtype.itemsize

    def pieces(self) -> Iterator[slice]:
        """The strips or tiles decoded together, in turn, as slices of :attr:`starts`: strips
        one below the other, or tiles side by side."""
        return (slice(i, min(i + self.together, first + self.row))
                for first in range(0, len(self.starts), self.row)
                for i in range(first, first + self.row, self.together))


def _read_plane(f: BinaryIO, geometry: _Geometry, out: np.ndarray, kept: tuple[int, ...]) -> None:
    """Decode into ``out`` (``H x W x C``) the samples ``kept`` of the plane of the file open
    as ``f`` that ``geometry`` describes, a few strips or tiles at a time."""
    (width, height), (across, down) = geometry.size, geometry.tile
    step = geometry.dtype.itemsize * geometry.samples  # bytes a pixel of this plane
    predictor = geometry.tags.get(_PREDICTOR, _NO_PREDICTOR)
    for part in geometry.pieces():
        if geometry.tiled:  # tiles side by side, in a row of them
            (down_by, x), columns = divmod(part.start, geometry.row), part.stop - part.start
            y, x, rows = down_by * down, x * across, down
        else:  # whole strips one below the other
            y, x, columns = part.start * down, 0, 1
            rows = min(part.stop * down, height) - y
        stand_in = {_WIDTH: columns * across * step, _HEIGHT: rows}
        stand_in.update({_TILE_WIDTH: across * step, _TILE_LENGTH: down} if geometry.tiled
                        else {_ROWS: down})
        block = _bytes_rows(f, geometry.tags, stand_in, geometry.starts[part],
                            geometry.lengths[part])
        # each tile's or strip's rows, as the predictor saw them: columns of whole tiles
        pieces = block.reshape(rows, columns, across * step)
        if predictor == _FLOAT_PREDICTOR:
            values = _float_predicted(pieces, geometry.dtype, geometry.samples)
        else:
            values = pieces.view(geometry.dtype).reshape(rows, columns, across, geometry.samples)
            if predictor == _HORIZONTAL:  # each sample less the one a pixel before, wrapping
                values = values.astype(values.dtype.newbyteorder("="))
                unsigned = values.view(f"u{values.itemsize}")
                np.cumsum(unsigned, axis=2, dtype=unsigned.dtype, out=unsigned)
        values = values.reshape(rows, columns * across, geometry.samples)
        bottom, right = min(y + rows, height), min(x + columns * across, width)
        channels = np.s_[:] if kept == tuple(range(geometry.samples)) else list(kept)
        # to the result's type, in native order; the padding of tiles at the edges left out
        out[y:bottom, x:right] = values[:bottom - y, :right - x, channels]


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


def _bytes_rows(f: BinaryIO, tags: TiffImagePlugin.ImageFileDirectory_v2,
                layout: dict[int, object], starts: tuple[int, ...],
                lengths: tuple[int, ...]) -> np.ndarray:
    """The bytes of the strips or tiles at ``starts`` (``lengths`` bytes long) of the TIFF open
    as ``f``, decompressed by Pillow as the rows of an 8-bit grey image of ``layout``: a TIFF
    of just them is made, with a directory saying so."""
    data = []
    for start, length in zip(starts, lengths, strict=True):
        f.seek(start)
        data.append(f.read(length))
    big = sum(map(len, data)) > 0xFFFF0000  # past what a TIFF's 32-bit offsets reach
    order, head = ("<", b"II") if tags.prefix == b"II" else (">", b"MM")
    head += struct.pack(f"{order}HHHQ", 43, 8, 0, 0) if big else struct.pack(f"{order}HL", 42, 0)
    offsets = tuple(accumulate(map(len, data[:-1]), initial=len(head)))
    at = offsets[-1] + len(data[-1])
    at += at % 2  # a directory starts on a word boundary
    where, sizes = (_TILES, _TILE_SIZES) if _TILE_WIDTH in layout else (_STRIPS, _STRIP_SIZES)
    directory = {**layout, _BITS: 8, _COMPRESSION: tags.get(_COMPRESSION, 1), _PHOTOMETRIC: 1,
                 _SAMPLES: 1, _PLANAR: 1, where: offsets, sizes: tuple(map(len, data))}
    head = head[:-8] + struct.pack(f"{order}Q", at) if big else \
        head[:-4] + struct.pack(f"{order}L", at)
    made = b"".join((head, *data, bytes(at - offsets[-1] - len(data[-1])),
                     _directory(directory, at, order, big)))
    del data  # the pieces are in ``made`` now
    with Image.open(io.BytesIO(made)) as rows:
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
        values = as_tuple(value)
        packed = struct.pack(f"{order}{len(values)}{kind}", *values)
        if len(packed) > slot:
            packed, tables = struct.pack(f"{order}{kind}", after + len(tables)), tables + packed
        entries.append(struct.pack(f"{order}HH{kind}", tag, wide, len(values))
                       + packed.ljust(slot, b"\0"))
    return count + b"".join(entries) + bytes(slot) + tables


def _unpremultiplied(pixels: np.ndarray) -> np.ndarray:
    """Colour stored multiplied by its alpha (the last channel) divided by it again, rounded
    and kept within range for 16-bit samples; colour under no alpha is left as stored. In place,
    a block of rows at a time: their 32-bit copies (:data:`_PIECE_BYTES` of them, within what
    :func:`decode_bytes` counts for the pieces) are all the memory it takes."""
    height, width, channels = pixels.shape
    rows = max(1, _PIECE_BYTES // (width * channels * 4))
    for top in range(0, height, rows):
        block = pixels[top:top + rows]
        colour, alpha = block[..., :-1], block[..., -1:]
        if pixels.dtype == np.uint16:
            wide = alpha.astype(np.uint32)
            divided = colour.astype(np.uint32)
            divided *= 65535  # at most 65535 * 65535 + 32767: within 32 bits
            divided += wide >> 1  # rounded to the nearest
            divided //= np.maximum(wide, 1)
            np.minimum(divided, 65535, out=divided)
            np.copyto(colour, divided, casting="unsafe", where=wide > 0)
        else:
            with np.errstate(invalid="ignore"):  # infinite colour under infinite alpha: NaN
                np.divide(colour, alpha, out=colour, where=alpha > 0)
    return pixels
