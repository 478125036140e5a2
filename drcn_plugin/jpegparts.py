"""The images a JPEG carries behind its photo, listed in its MPF (Multi-Picture Format, CIPA
DC-007) index: a phone's HDR gain map or depth map, a camera's large previews, a 3D camera's
second view. Pillow opens such a file as an MPO of several frames; what each extra image is
comes from its MP type code or, for type "undefined" (gain maps, depth maps), from the XMP of
the image itself. And damage to a JPEG's data that its restart markers show, or coded data too
short for its size (a JPEG-compressed TIFF's strips too), which Pillow decodes without a
word. :func:`marker_segments` is the walk over a JPEG stream's marker segments that reading
its tables (:mod:`.compression`) shares."""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from PIL import Image

from .colourspace import GAIN_MAP_NOTE
from .errors import DamagedImageError

GAIN_MAP = "HDR gain map"
# CIPA DC-007's MP type codes (the low 24 bits of an MP entry's attribute) of images other than
# the photo; those of the photo itself (0x030000 baseline primary) and unknown ones are "extra"
_MP_TYPES = {0x010001: "preview image", 0x010002: "preview image", 0x020001: "panorama frame",
             0x020002: "stereo (3D) view", 0x020003: "multi-angle view"}
# What an extra image's XMP says it is: Ultra HDR's and Adobe's gain map namespace, Apple's
# auxiliary image types and depth namespace, Google's depth map
_XMP_KINDS = ((GAIN_MAP, (b"hdrgm:", b"HDRGainMap", b"aux:hdrgainmap")),
              ("depth map", (b"depthData", b"aux:depth", b"aux:disparity", b"GDepth:")),
              ("portrait matte", (b"aux:portraiteffectsmatte", b"aux:semantic")))
_XMP_HEAD = b"http://ns.adobe.com/xap/1.0/\0"
_MOST_ENTRIES = 64  # extra images named one by one; more are counted as "extra image"
_SCAN_MARKERS = (0xDA, 0xD9)  # SOS, EOI: the header segments are over


def _segments(f: BinaryIO, start: int) -> Iterator[tuple[int, bytes]]:
    """The marker segments (marker byte, data) of the JPEG image at ``start`` in ``f`` up to its
    first scan; none when no SOI is there."""
    f.seek(start)
    if f.read(2) != b"\xff\xd8":
        return
    while len(head := f.read(4)) == 4 and head[0] == 0xFF and head[1] not in _SCAN_MARKERS:
        length = int.from_bytes(head[2:], "big")
        if length < 2:
            return
        yield head[1], f.read(length - 2)


def _mp_entries(f: BinaryIO) -> list[tuple[int, int]]:
    """The (MP type, file offset) of each image a JPEG's MPF index lists, the photo first; empty
    when it has none, or when the index is damaged."""
    for marker, data in _segments(f, 0):
        if marker != 0xE2 or not data.startswith(b"MPF\0"):
            continue
        base, tiff = f.tell() - len(data) + 4, data[4:]  # offsets count from the TIFF header
        order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
        try:
            if order is None:
                return []
            ifd = struct.unpack_from(f"{order}I", tiff, 4)[0]
            for i in range(struct.unpack_from(f"{order}H", tiff, ifd)[0]):
                tag, _, count, at = struct.unpack_from(f"{order}HHII", tiff, ifd + 2 + 12 * i)
                if tag == 0xB002:  # MP Entry: 16 bytes an image
                    n = min(count // 16, _MOST_ENTRIES + 1)
                    rows = [struct.unpack_from(f"{order}IIIHH", tiff, at + 16 * k)
                            for k in range(n)]
                    return [(row[0] & 0xFFFFFF, base + row[2] if row[2] else 0) for row in rows]
        except struct.error:
            return []
        return []
    return []


def _kind(f: BinaryIO, mp_type: int, start: int) -> str:
    """What the extra image at ``start`` is, in a photographer's words."""
    for marker, data in _segments(f, start):
        if marker == 0xE1 and data.startswith(_XMP_HEAD):
            for kind, signs in _XMP_KINDS:
                if any(sign in data for sign in signs):
                    return kind
    return _MP_TYPES.get(mp_type, "extra image")


def extra_images(f: BinaryIO, im: Image.Image) -> list[str]:
    """What each image a JPEG carries behind its photo is (its MPF index's other entries), in
    file order; empty for other files. ``f`` is the open file, whose position is kept."""
    if im.format not in ("JPEG", "MPO") or "mp" not in im.info:
        return []
    where = f.tell()
    try:
        entries = _mp_entries(f)
        return [_kind(f, mp_type, start) for mp_type, start in entries[1:]]
    except OSError:
        return []
    finally:
        f.seek(where)


def extra_images_note(kinds: list[str], notes: list[str]) -> str:
    """One note naming the extra images ``kinds`` the result leaves out ("HDR gain map and
    preview image dropped ..."); it stands for the XMP's gain map note in ``notes``, which is
    removed from there."""
    counted = {kind: kinds.count(kind) for kind in sorted(set(kinds), key=kinds.index)}
    names = [kind if n == 1 else f"{n} {kind}s" for kind, n in counted.items()]
    said = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
    hdr = GAIN_MAP in counted
    note = f"{said} dropped (the result is the {'SDR ' if hdr else ''}photo alone)"
    if GAIN_MAP_NOTE in notes:
        notes.remove(GAIN_MAP_NOTE)
        note += "; its XMP no longer promises a gain map"
    return note


# A marker inside entropy-coded data: 0xFF followed by neither a stuffed 0x00 nor fill 0xFF
_MARKER = re.compile(rb"\xff[^\x00\xff]")
_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # SOFn: DHT, JPG and DAC are not
_RST0, _RST7, _SOS, _DRI, _EOI = 0xD0, 0xD7, 0xDA, 0xDD, 0xD9
# The least bits a Huffman-coded block takes in a scan from coefficient 0, by frame (SOFn): a
# DC code and an AC one (at least EOB) in a sequential scan, a DC code in a progressive one
_LEAST_BITS = {0xC0: 2, 0xC1: 2, 0xC2: 1}


def marker_segments(data: bytes, pos: int = 0) -> Iterator[tuple[int, bytes, int]]:
    """The marker segments of a JPEG stream from ``pos`` (past its SOI), each as (marker, its
    data, where the next one starts), fill bytes passed over, up to and including the next
    scan's header (SOS; its entropy-coded data follows); they end at EOI, a length below 2, or
    bytes that are no marker."""
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker, length = data[pos + 1], int.from_bytes(data[pos + 2:pos + 4], "big")
        if marker == 0xFF:  # fill before a marker
            pos += 1
            continue
        if marker == _EOI or length < 2:
            return
        pos += 2 + length
        yield marker, data[pos - length + 2:pos], pos
        if marker == _SOS:
            return


@dataclass
class _Scan:
    """One scan of a JPEG stream: its frame header's marker (SOFn, 0 where none came before),
    image size and sampling factors (:func:`_frame_header`), the restart interval, the scan's
    own header (SOS), where its coded data starts and ends (None: the file ends first) and the
    numbers (0-7) of the restart markers inside it, in order."""

    frame: int
    size: tuple[int, int]
    sampling: dict[int, tuple[int, int]]
    interval: int
    header: bytes
    start: int
    end: int | None
    restarts: list[int]


def _scans(data: bytes) -> Iterator[_Scan]:
    """The scans of a JPEG stream in order, up to its end (EOI) or one whose coded data the
    file ends in."""
    frame, interval, size, sampling, segments = 0, 0, (0, 0), {}, marker_segments(data, 2)
    while (item := next(segments, None)) is not None:
        marker, segment, pos = item
        if marker in _FRAMES and len(segment) >= 6:
            frame, (size, sampling) = marker, _frame_header(segment)
        elif marker == _DRI and len(segment) >= 2:
            interval = int.from_bytes(segment[:2], "big")
        elif marker == _SOS and segment:
            restarts, end = [], None
            for m in _MARKER.finditer(data, pos):
                if not _RST0 <= data[m.start() + 1] <= _RST7:
                    end = m.start()
                    break
                restarts.append(data[m.start() + 1] - _RST0)
            yield _Scan(frame, size, sampling, interval, segment, pos, end, restarts)
            if end is None:
                return
            segments = marker_segments(data, end)  # those after the scan


def _damaged_row(data: bytes) -> int | None:
    """The row (of the stored image) from about which a JPEG's entropy-coded data is damaged, as
    its restart markers show it: out of sequence, or more or fewer in a scan than its restart
    interval and size call for (data lost, or garbage put in). None when they show nothing, or
    the file has none: an error between two markers shows only to a full decode."""
    for scan in _scans(data):
        header, size, sampling, interval = scan.header, scan.size, scan.sampling, scan.interval
        wrong = next((n for n, k in enumerate(scan.restarts) if k != n % 8), None)
        if wrong is not None:
            return _row(wrong * interval, header, size, sampling)
        if scan.end is None:
            return None  # no end: a truncated file, which the decoder refuses
        restarts, mcus = len(scan.restarts), _mcus(header, size, sampling)
        # a marker between each two intervals; some encoders also put one after the last
        # interval when it is a whole one, which libjpeg passes over
        if interval and mcus and restarts != _up(mcus, interval) - 1 \
                and not (mcus % interval == 0 and restarts == mcus // interval):
            return _row(min(restarts, mcus // interval) * interval, header, size, sampling)
    return None


def _frame_header(segment: bytes) -> tuple[tuple[int, int], dict[int, tuple[int, int]]]:
    """A frame header's (SOFn's) image size (width, height) and each component's sampling
    factors (horizontal, vertical), by component id."""
    size = (int.from_bytes(segment[3:5], "big"), int.from_bytes(segment[1:3], "big"))
    return size, {segment[i]: (segment[i + 1] >> 4, segment[i + 1] & 15)
                  for i in range(6, len(segment) - 2, 3)}


def require_whole_jpeg(im: Image.Image) -> None:
    """Refuse, before loading, a JPEG whose coded data is far too short for the blocks its
    frame header declares (:func:`_scan_shortfall`): libjpeg fills the rest with grey without a
    word to Pillow, so a 633-byte file declaring 2000x2000 became a 4000x4000 result of grey,
    minutes to upscale. A JPEG-compressed TIFF's strips or tiles, each a JPEG stream, alike.
    Read from Pillow's file, whose position is kept."""
    if im.format not in ("JPEG", "MPO", "TIFF") or im.fp is None:
        return
    where = im.fp.tell()
    try:
        short = next(filter(None, map(_scan_shortfall, _jpeg_streams(im))), None)
    finally:
        im.fp.seek(where)
    if short is not None:
        (w, h), held, need = short
        whose = "JPEG-compressed TIFF: a strip's or tile's" if im.format == "TIFF" else "JPEG: its"
        raise DamagedImageError(f"damaged {whose} coded data ends early ({held} bytes, where its "
                                f"{w}x{h} pixels need at least {need}; the rest would be grey)")


_TIFF_JPEG = 7  # TIFF's Compression for JPEG (TIFF Technical Note 2); 6, the old one, not read


def _jpeg_streams(im: Image.Image) -> Iterator[bytes]:
    """The JPEG streams of an opened JPEG (its file) or JPEG-compressed TIFF (each strip or
    tile of the current page, by its offset and byte count)."""
    if im.format != "TIFF":
        im.fp.seek(0)
        yield im.fp.read()
        return
    tags = getattr(im, "tag_v2", {})
    if tags.get(259) != _TIFF_JPEG:
        return
    offsets, counts = (tags.get(324), tags.get(325)) if 324 in tags else (tags.get(273),
                                                                           tags.get(279))
    for offset, count in zip(offsets or (), counts or (), strict=False):  # a damaged count list
        im.fp.seek(offset)
        yield im.fp.read(count)


def _scan_shortfall(data: bytes) -> tuple[tuple[int, int], int, int] | None:
    """The image size, the bytes held and the least bytes needed of the first scan of a JPEG
    stream that cannot hold the blocks it covers: every Huffman-coded block of a scan from
    coefficient 0 takes at least :data:`_LEAST_BITS`. None where every scan may hold them, or
    it cannot be told (arithmetic coding, which has no such floor; a file cut short, which
    Pillow refuses)."""
    for scan in _scans(data):
        if scan.end is None:
            return None
        header, size, sampling = scan.header, scan.size, scan.sampling
        ids = [header[1 + 2 * i] for i in range(header[0]) if 2 + 2 * i < len(header)]
        per_mcu = sum(h * v for i, (h, v) in sampling.items() if i in ids) \
            if len(ids) > 1 else 1
        need = _up(_LEAST_BITS.get(scan.frame, 0) * _mcus(header, size, sampling) * per_mcu, 8)
        if len(header) == 4 + 2 * len(ids) and header[-3] == 0 and scan.end - scan.start < need:
            return size, scan.end - scan.start, need
    return None


def _scan_blocks(scan: bytes, size: tuple[int, int],
                 sampling: dict[int, tuple[int, int]]) -> tuple[int, int, int] | None:
    """A scan's MCUs across, down, and the image rows each MCU row covers; None when its frame
    header is missing or damaged."""
    ids = [scan[1 + 2 * i] for i in range(scan[0]) if 2 + 2 * i < len(scan)]
    if not ids or not all(size) or not all(i in sampling for i in ids) \
            or not all(all(s) for s in sampling.values()):
        return None
    h_max, v_max = (max(s[k] for s in sampling.values()) for k in (0, 1))
    (w, h), (ch, cv) = size, sampling[ids[0]]
    if len(ids) > 1:  # interleaved: an MCU covers the largest sampling factors' blocks
        return _up(w, 8 * h_max), _up(h, 8 * v_max), 8 * v_max
    return _up(_up(w * ch, h_max), 8), _up(_up(h * cv, v_max), 8), 8 * v_max // cv


def _up(a: int, b: int) -> int:
    """``a / b`` rounded up."""
    return -(-a // b)


def _mcus(scan: bytes, size: tuple[int, int], sampling: dict[int, tuple[int, int]]) -> int:
    """How many MCUs a scan holds (0 when unknown, as with a height set by a DNL marker)."""
    blocks = _scan_blocks(scan, size, sampling)
    return blocks[0] * blocks[1] if blocks else 0


def _row(mcu: int, scan: bytes, size: tuple[int, int], sampling: dict[int, tuple[int, int]]) -> int:
    """The first image row of MCU number ``mcu`` of a scan."""
    blocks = _scan_blocks(scan, size, sampling)
    return min(mcu // blocks[0] * blocks[2], size[1] - 1) if blocks else 0


def damage_note(f: BinaryIO, im: Image.Image, upright: bool) -> str | None:
    """A note that a JPEG's data is damaged (see :func:`_damaged_row`), with the row it starts
    from when the stored image is the upright one; None for other files. Pillow drops libjpeg's
    warnings and decodes what it can. ``f`` is the open file, whose position is kept."""
    if im.format not in ("JPEG", "MPO"):
        return None
    where = f.tell()
    try:
        f.seek(0)
        row = _damaged_row(f.read())
    except OSError:
        return None
    finally:
        f.seek(where)
    if row is None:
        return None
    return f"the JPEG's data is damaged{f' from about row {row}' if upright else ''}: " \
        "the result may show it"
