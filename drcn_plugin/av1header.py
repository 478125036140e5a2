"""The quantiser of an AVIF still: ``base_q_idx`` (0 finest .. 255 coarsest) from the AV1 frame
header of the file's primary item, found through the ISOBMFF boxes ``meta``/``pitm``/``iloc``;
an AVIF sequence's number of plays, read from and written into its edit list as libavif does.

Only the reduced still-picture header (what libavif writes for a still image) is read; any
other layout, or damage, gives None. Every read is bounded by the bytes present. The box walk,
item lookup and bit reader are HEIF's too (:mod:`.hevcheader`).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from typing import BinaryIO

_HEAD_BYTES = 1 << 16  # of the primary item: its sequence and frame headers come first
_META_BYTES = 1 << 20  # a larger meta box (a huge thumbnail table) is not searched
_MOVIE_BYTES = 16 << 20  # a larger movie box (sample tables of millions of frames) is not read
_TOP_BOXES = 64  # top-level boxes looked through for the movie box (ftyp, meta, mdat, free...)
_INDEFINITE = (1 << 32) - 1, (1 << 64) - 1  # a duration "not known" (mvhd, tkhd version 0, 1)
_MVHD_DURATION, _TKHD_DURATION = (16, 24), (20, 28)  # where in the payload: version 0, 1
_OBU_SEQUENCE_HEADER, _OBU_FRAME_HEADER, _OBU_FRAME = 1, 3, 6


class Bits:
    """Most-significant-bit-first reader of a codec header (AV1's, HEVC's); reading past the end
    raises ValueError."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def f(self, n: int) -> int:
        """``n`` bits as an unsigned number (the spec's ``f(n)``)."""
        if self.pos + n > 8 * len(self.data):
            raise ValueError("header cut short")
        value = 0
        for _ in range(n):
            value = value << 1 | (self.data[self.pos >> 3] >> (7 - (self.pos & 7)) & 1)
            self.pos += 1
        return value

    def ns(self, n: int) -> int:
        """A number below ``n`` in the spec's non-symmetric code ``ns(n)``."""
        w = n.bit_length()
        m = (1 << w) - n
        v = self.f(w - 1)
        return v if v < m else (v << 1) - m + self.f(1)


def _box_header(data: bytes, start: int, end: int) -> tuple[bytes, int, int] | None:
    """(type, header length, size) of the box at ``data[start:]`` in a container that ends at
    ``end`` (a size of 0 runs to there); None where its header is cut short or its size is
    impossible. ``data`` may hold only the header (a box read from a file)."""
    room = min(end, len(data))
    if start + 8 > room:
        return None
    size, kind = struct.unpack_from(">I4s", data, start)
    head = 8
    if size == 1 and start + 16 <= room:
        size, head = struct.unpack_from(">Q", data, start + 8)[0], 16
    elif size == 0:
        size = end - start
    return (kind, head, size) if head <= size <= end - start else None


def isobmff_boxes(data: bytes, start: int = 0,
                  end: int | None = None) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, payload end) of the ISOBMFF boxes (AVIF's and HEIF's container) in
    ``data[start:end]``; a box running past the end stops the walk."""
    end = len(data) if end is None else end
    while (box := _box_header(data, start, end)) is not None:
        kind, head, size = box
        yield kind, start + head, start + size
        start += size


def first_box(data: bytes, kind: bytes, start: int = 0,
              end: int | None = None) -> tuple[int, int] | None:
    """The payload span of the first ``kind`` box in ``data[start:end]``; None without one."""
    return next(((a, b) for k, a, b in isobmff_boxes(data, start, end) if k == kind), None)


def primary_item(data: bytes, pitm: tuple[int, int]) -> int | None:
    """The primary item's ID, from the payload span of a ``pitm`` box in ``data``; None where
    the box is cut short."""
    a, b = pitm
    size = 2 if data[a:a + 1] == b"\0" else 4  # an item ID's bytes: version 0, else
    return int.from_bytes(data[a + 4:a + 4 + size], "big") if b - a >= 4 + size else None


def avif_head(f: BinaryIO) -> bytes:
    """The start of an AVIF or HEIF file ``f`` (its position kept), where its meta box is looked
    for."""
    where = f.tell()
    try:
        f.seek(0)
        return f.read(_META_BYTES)
    finally:
        f.seek(where)


def read_meta(f: BinaryIO) -> bytes | None:
    """The payload of the top-level ``meta`` box in the first MiB of ``f`` (AVIF's and HEIF's
    item tables), or None; ``f``'s position is kept."""
    top = avif_head(f)
    meta = first_box(top, b"meta")
    return top[meta[0]:meta[1]] if meta else None


def meta_children(meta: bytes) -> dict[bytes, tuple[int, int]]:
    """(payload start, end) in ``meta`` of each of its child boxes, by type."""
    return {kind: (a, b) for kind, a, b in isobmff_boxes(meta, 4)}  # past meta's version, flags


def meta_primary_item(meta: bytes) -> int | None:
    """The primary item's ID, from a ``meta`` payload's ``pitm`` box; None without one."""
    pitm = meta_children(meta).get(b"pitm")
    return primary_item(meta, pitm) if pitm else None


def item_extent(meta: bytes, wanted: int) -> tuple[int, int] | None:
    """File offset and length of item ``wanted``'s first extent, from a ``meta`` payload's
    ``iloc`` box; None for an item stored otherwise than in the file itself."""
    boxes = meta_children(meta)
    if b"iloc" not in boxes:
        return None
    a, b = boxes[b"iloc"]
    version, sizes = meta[a], meta[a + 4: a + 6]
    offset_size, length_size, base_size = sizes[0] >> 4, sizes[0] & 15, sizes[1] >> 4
    index_size = sizes[1] & 15 if version in (1, 2) else 0
    pos = a + 6

    def number(size: int) -> int:
        nonlocal pos
        value = int.from_bytes(meta[pos: pos + size], "big") if size else 0
        pos += size
        return value

    count = number(4 if version == 2 else 2)
    for _ in range(count):
        item = number(4 if version == 2 else 2)
        method = number(2) & 15 if version in (1, 2) else 0
        number(2)  # data_reference_index
        base = number(base_size)
        extents = [(number(index_size), number(offset_size), number(length_size))
                   for _ in range(number(2))]
        if pos > b:
            return None
        if item == wanted:
            return (base + extents[0][1], extents[0][2]) if extents and method == 0 else None
    return None


def avif_plays(f: BinaryIO) -> int | None:
    """How many times the AVIF image sequence ``f`` plays (0: for ever), as libavif reads it
    from its colour track's edit list (``moov/trak/edts/elst``): once unless the list repeats
    (flag 1), then for ever where the track's duration is indefinite, else as often as the list
    fits in that duration. Without an edit list for ever, as browsers play it; None where the
    boxes are damaged or past what is searched. ``f``'s position is kept."""
    where = f.tell()
    try:
        moov = _top_level_box(f, b"moov")
        if moov is None:
            return None
        for kind, a, b in isobmff_boxes(moov):
            if kind != b"trak":
                continue
            boxes = {k: (x, y) for k, x, y in isobmff_boxes(moov, a, b)}
            auxiliary = b"tref" in boxes and first_box(moov, b"auxl", *boxes[b"tref"])
            if b"tkhd" in boxes and not auxiliary:  # the colour track, not an alpha plane's
                return _track_plays(moov, boxes)
        return None
    except (struct.error, OSError):
        return None
    finally:
        f.seek(where)


def _top_level_box(f: BinaryIO, wanted: bytes) -> bytes | None:
    """The payload of the first top-level ``wanted`` box of ``f``, wherever it lies (a movie
    box may follow the media data, which is not read); None without one."""
    end = f.seek(0, 2)
    pos = 0
    for _ in range(_TOP_BOXES):
        f.seek(pos)
        box = _box_header(f.read(16), 0, end - pos)
        if box is None:
            return None
        kind, head, size = box
        if kind == wanted:
            f.seek(pos + head)
            return f.read(size - head) if size - head <= _MOVIE_BYTES else None
        pos += size
    return None


def _track_plays(moov: bytes, boxes: dict[bytes, tuple[int, int]]) -> int | None:
    """The plays of a track whose child boxes ``boxes`` (payload spans in ``moov``) holds, as
    :func:`avif_plays` reads them."""
    if b"edts" not in boxes:
        return 0  # libavif's "unknown" count, which Chrome loops for ever
    elst = first_box(moov, b"elst", *boxes[b"edts"])
    if elst is None or elst[1] - elst[0] < 4:
        return None
    if not moov[elst[0] + 3] & 1:  # flags: the list is not repeated
        return 1
    segment, at = _segment(moov, elst), _duration_at(moov, boxes[b"tkhd"], _TKHD_DURATION)
    if segment is None or at is None:
        return None
    duration = struct.unpack_from(">Q" if at[1] else ">I", moov, at[0])[0]
    if duration == 0:
        return None
    if duration == _INDEFINITE[at[1]]:
        return 0
    plays = -(-duration // segment)  # the list repeated to fill the duration, the last cut short
    return 0 if plays > 1 << 31 else plays  # past libavif's int: for ever, as libavif has it


def _segment(data: bytes, elst: tuple[int, int]) -> int | None:
    """The length of the one edit of the edit list whose payload span in ``data`` is ``elst``;
    None for several edits (which libavif refuses), one of length 0, or a damaged box."""
    a, b = elst
    version = data[a] if b > a else 2  # 1: 64-bit lengths, 0: 32-bit
    if version > 1 or b - a < (16 if version else 12):
        return None
    count, segment = struct.unpack_from(">IQ" if version else ">II", data, a + 4)
    return segment if count == 1 and segment else None


def _duration_at(data: bytes, box: tuple[int, int],
                 offsets: tuple[int, int]) -> tuple[int, int] | None:
    """(position in ``data``, box version) of the duration of the ``mvhd`` or ``tkhd`` payload
    span ``box``, which lies at ``offsets[version]``; None for another version or a box cut
    short."""
    a, b = box
    version = data[a] if b > a else 2  # 1: a 64-bit duration, 0: 32-bit
    if version > 1 or b - a < offsets[version] + 4 + 4 * version:
        return None
    return a + offsets[version], version


def avif_with_plays(data: bytes, plays: int) -> bytes | None:
    """The AVIF image sequence ``data`` made to play ``plays`` (1 or more) times, as libavif's
    writer says a finite count: the movie's and every track's duration (an alpha plane's too)
    the one edit's length times ``plays``, the edit list repeated (flag 1) only for more than
    one play. None where the boxes are laid out otherwise (no edit list, several edits, tracks
    whose edits differ), a field cannot hold the count, or the result would not read back as
    ``plays``: the file is then kept as it is rather than damaged."""
    moov = first_box(data, b"moov")
    if moov is None or plays < 1:
        return None
    durations, flags, segments = [], [], set()
    for kind, a, b in isobmff_boxes(data, *moov):
        if kind == b"mvhd":
            durations.append(_duration_at(data, (a, b), _MVHD_DURATION))
        elif kind == b"trak":
            boxes = {k: (x, y) for k, x, y in isobmff_boxes(data, a, b)}
            elst = first_box(data, b"elst", *boxes[b"edts"]) if b"edts" in boxes else None
            if elst is None or b"tkhd" not in boxes:
                return None
            durations.append(_duration_at(data, boxes[b"tkhd"], _TKHD_DURATION))
            segments.add(_segment(data, elst))
            flags.append(elst[0] + 3)  # the low byte of the list's flags
    if len(durations) != len(flags) + 1 or not flags or len(segments) != 1 or None in segments \
            or None in durations:  # one movie header, tracks whose one edit agrees
        return None
    total = segments.pop() * plays
    edited = bytearray(data)
    for at, version in durations:
        if total >= _INDEFINITE[version]:
            return None
        struct.pack_into(">Q" if version else ">I", edited, at, total)
    for at in flags:
        edited[at] = edited[at] & 0xFE | (plays > 1)
    return bytes(edited) if avif_plays(io.BytesIO(edited)) == plays else None


def _obus(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(type, payload) of the OBUs in ``data`` (each with its size field, as AVIF stores them)."""
    pos = 0
    while pos < len(data):
        header = data[pos]
        pos += 1 + (header >> 2 & 1)  # the extension byte, if any
        if not header >> 1 & 1:
            return
        size = shift = 0
        while pos < len(data) and shift < 56:  # leb128
            byte = data[pos]
            size, pos, shift = size | (byte & 0x7F) << shift, pos + 1, shift + 7
            if not byte & 0x80:
                break
        yield header >> 3 & 15, data[pos: pos + size]
        pos += size


def _still_sequence(bits: Bits) -> dict[str, int] | None:
    """What the frame header needs from a reduced still-picture sequence header."""
    bits.f(3)  # seq_profile
    bits.f(1)  # still_picture
    if not bits.f(1):  # reduced_still_picture_header
        return None
    bits.f(5)  # seq_level_idx
    width_bits, height_bits = bits.f(4) + 1, bits.f(4) + 1
    seq = {"width": bits.f(width_bits) + 1, "height": bits.f(height_bits) + 1,
           "sb128": bits.f(1)}
    bits.f(2)  # enable_filter_intra, enable_intra_edge_filter
    seq["superres"] = bits.f(1)
    return seq


def _tile_log2(size: int, target: int) -> int:
    k = 0
    while size << k < target:
        k += 1
    return k


def _skip_tile_info(bits: Bits, width: int, height: int, sb128: int) -> None:
    """Read past ``tile_info()`` of a frame of ``width`` x ``height`` pixels."""
    mi_cols, mi_rows = 2 * ((width + 7) >> 3), 2 * ((height + 7) >> 3)
    shift = 5 if sb128 else 4
    sb_cols, sb_rows = (mi_cols + (1 << shift) - 1) >> shift, (mi_rows + (1 << shift) - 1) >> shift
    sb_size = shift + 2
    max_width_sb, max_area_sb = 4096 >> sb_size, (4096 * 2304) >> (2 * sb_size)
    min_cols_log2 = _tile_log2(max_width_sb, sb_cols)
    max_cols_log2, max_rows_log2 = _tile_log2(1, min(sb_cols, 64)), _tile_log2(1, min(sb_rows, 64))
    min_log2 = max(min_cols_log2, _tile_log2(max_area_sb, sb_rows * sb_cols))
    if bits.f(1):  # uniform_tile_spacing_flag
        cols_log2 = min_cols_log2
        while cols_log2 < max_cols_log2 and bits.f(1):
            cols_log2 += 1
        rows_log2 = max(min_log2 - cols_log2, 0)
        while rows_log2 < max_rows_log2 and bits.f(1):
            rows_log2 += 1
    else:
        start = widest = cols = 0
        while start < sb_cols:
            size = bits.ns(min(sb_cols - start, max_width_sb)) + 1
            widest, start, cols = max(widest, size), start + size, cols + 1
        area = (sb_rows * sb_cols) >> (min_log2 + 1) if min_log2 else sb_rows * sb_cols
        max_height_sb, start, rows = max(area // widest, 1), 0, 0
        while start < sb_rows:
            start += bits.ns(min(sb_rows - start, max_height_sb)) + 1
            rows += 1
        cols_log2, rows_log2 = _tile_log2(1, cols), _tile_log2(1, rows)
    if cols_log2 or rows_log2:
        bits.f(cols_log2 + rows_log2 + 2)  # context_update_tile_id, tile_size_bytes_minus_1


def _still_base_q_idx(bits: Bits, seq: dict[str, int]) -> int:
    """``base_q_idx`` of a reduced still-picture frame header (a shown key frame)."""
    bits.f(1)  # disable_cdf_update
    screen_tools = bits.f(1)  # allow_screen_content_tools (the sequence leaves it to the frame)
    if screen_tools:
        bits.f(1)  # force_integer_mv
    width = seq["width"]
    if seq["superres"] and bits.f(1):  # use_superres: the coded width is scaled down
        width = _superres_width(width, bits)
    if bits.f(1):  # render_and_frame_size_different
        bits.f(32)
    if screen_tools and width == seq["width"]:
        bits.f(1)  # allow_intrabc
    _skip_tile_info(bits, width, seq["height"], seq["sb128"])
    return bits.f(8)


def _superres_width(width: int, bits: Bits) -> int:
    """The coded width of a frame that superres up-scales to ``width``."""
    denominator = bits.f(3) + 9
    return (width * 8 + denominator // 2) // denominator


def avif_base_q_idx(f: BinaryIO) -> int | None:
    """The primary image's ``base_q_idx`` of the AVIF file ``f`` (its position kept), or None
    where the file is laid out otherwise or damaged."""
    where = f.tell()
    try:
        meta = read_meta(f)
        primary = meta_primary_item(meta) if meta else None
        extent = None if primary is None else item_extent(meta, primary)
        if extent is None:
            return None
        f.seek(extent[0])
        seq = None
        for kind, payload in _obus(f.read(min(extent[1], _HEAD_BYTES))):
            if kind == _OBU_SEQUENCE_HEADER:
                seq = _still_sequence(Bits(payload))
                if seq is None:
                    return None
            elif kind in (_OBU_FRAME_HEADER, _OBU_FRAME) and seq is not None:
                return _still_base_q_idx(Bits(payload), seq)
        return None
    except (ValueError, IndexError, struct.error, OSError):
        return None
    finally:
        f.seek(where)
