"""How an image's colours are signalled, carried from its file to the result: H.273 code points
(a PNG's cICP chunk, a HEIF's or an AVIF's nclx box) with a PNG's mDCv and cLLi (the HDR
mastering display and light levels), and an ICC profile made from a PNG's gAMA/cHRM or from SDR
code points for formats that carry ICC but not those. The chunks travel as
``Descriptive.png_colour``, PNG's form of them; an HDR transfer (PQ, HLG) that the output format
cannot state is refused, as its result would be shown as washed-out SDR."""

from __future__ import annotations

import io
import re
import struct
import zlib
from typing import BinaryIO

import numpy as np
from PIL import Image

from .av1header import avif_head, first_box, isobmff_boxes, primary_item
from .errors import BadOptionError
from .misreads import png_chunks, png_hdr_chunks
from .xmp import xml_tags

HDR_TRANSFERS = {16: "PQ", 18: "HLG"}
CICP_FORMATS = ("PNG", "AVIF")  # formats whose files state code points (cICP, nclx)
PILLOW_WRITES = (b"gAMA", b"cHRM", b"sRGB", b"cICP")  # the PNG colour chunks Pillow writes
_SRGB_PRIMARIES = (1, 2)  # BT.709 (sRGB's), unspecified
_SRGB_TRANSFERS = (1, 2, 6, 13, 14, 15)  # sRGB, BT.709 and BT.601 (shown as sRGB), unspecified
# Chromaticities (white, red, green, blue x, y) of H.273 colour primaries: BT.709, BT.2020,
# DCI-P3 (SMPTE RP 431-2), Display P3 (SMPTE EG 432-1)
_PRIMARIES = {1: (.3127, .329, .64, .33, .3, .6, .15, .06),
              9: (.3127, .329, .708, .292, .17, .797, .131, .046),
              11: (.314, .351, .68, .32, .265, .69, .15, .06),
              12: (.3127, .329, .68, .32, .265, .69, .15, .06)}
SRGB_CHROMATICITIES = _PRIMARIES[1]
# The power of light each H.273 transfer characteristic stores (None: sRGB's curve)
_CURVES = {8: 1.0, 4: 2.2, **dict.fromkeys(_SRGB_TRANSFERS)}


# What makes an image a gain-map HDR one (Android's Ultra HDR, Adobe's, Apple's): XMP attributes
# and elements, and the container directory that locates the gain map, a second image after it
_GAIN_MAP_ATTRIBUTE = re.compile(rb"""\s(?:hdrgm|HDRGainMap):[\w.-]+\s*=\s*(?:"[^"]*"|'[^']*')""")
_GAIN_MAP_ELEMENTS = (b"hdrgm:", b"HDRGainMap:")
_DIRECTORY = b"Container:Directory"
GAIN_MAP_NOTE = ("HDR gain map dropped (the result is the SDR image); its XMP no longer "
                 "promises one")


def without_gain_map(xmp: bytes) -> bytes:
    """``xmp`` without what promises a gain map (hdrgm: and HDRGainMap: attributes and elements,
    a container directory listing one): the result has none (Pillow reads the first image), and
    a viewer that trusts the promise looks for one after it. One pass over the tags, so that any
    XMP takes linear time; an element left unclosed, or closed out of order, stays, as does what
    a comment or CDATA holds (text, not elements)."""
    edits: list[tuple[int, int, bytes]] = []  # (start, end, replacement), in file order
    opened: list[tuple[bytes, int]] = []  # the elements open here: name, start
    within = 0  # how many of them are gain-map elements or directories
    for tag in xml_tags(xmp):
        if tag is None:  # a stray "<": text
            continue
        closing, name, attributes = tag.groups()
        candidate = name.startswith(_GAIN_MAP_ELEMENTS) or name == _DIRECTORY
        start, end = tag.span()
        if closing:
            if not opened or opened[-1][0] != name:
                continue
            start = opened.pop()[1]
            within -= candidate
        elif not attributes.endswith(b"/"):
            opened.append((name, start))
            within += candidate
        if candidate and not within and (name != _DIRECTORY or b"GainMap" in xmp[start:end]):
            while edits and edits[-1][0] >= start:  # inside what goes
                edits.pop()
            edits.append((start, end, b""))
        elif not closing and (kept := _GAIN_MAP_ATTRIBUTE.sub(b"", tag[0])) != tag[0]:
            edits.append((start, end, kept))
    out, pos = [], 0
    for start, end, replacement in edits:
        out += [xmp[pos:start], replacement]
        pos = end
    return b"".join(out) + xmp[pos:]


def read_colour_chunks(f: BinaryIO, im: Image.Image) -> dict[bytes, bytes]:
    """The colour signalling Pillow reads past, as PNG chunks: a PNG's cICP, mDCv and cLLi; a
    HEIF's nclx profile (Pillow's info) or an AVIF's nclx box as cICP, when it says other than
    sRGB and the file has no ICC profile (which viewers take over it). ``f`` is the open file,
    whose position is kept."""
    if im.format == "PNG":
        return png_hdr_chunks(f)
    if im.info.get("icc_profile"):
        return {}
    nclx = im.info.get("nclx_profile") if im.format == "HEIF" else None
    if isinstance(nclx, dict):
        points = (nclx.get("color_primaries"), nclx.get("transfer_characteristics"))
    elif im.format == "AVIF":
        points = _avif_code_points(f)
    else:
        return {}
    if not all(isinstance(v, int) and 0 <= v < 256 for v in points):
        return {}
    cicp = bytes([*points, 0, 1])  # the decoded pixels are full-range RGB (matrix 0)
    return {} if says_srgb(cicp) else {b"cICP": cicp}


def says_srgb(cicp: bytes) -> bool:
    """Whether cICP code points describe what a viewer assumes anyway: sRGB."""
    return cicp[0] in _SRGB_PRIMARIES and cicp[1] in _SRGB_TRANSFERS


def _nclx_at(data: bytes) -> int | None:
    """Where an AVIF's primary image's nclx colour box (meta, iprp, ipco, colr) holds its code
    points; None when it has none. Another item's (an alpha plane's, a gain map's) describes
    that image, not the one Pillow reads; without item associations, the first nclx box."""
    meta = first_box(data, b"meta")
    iprp = meta and first_box(data, b"iprp", meta[0] + 4, meta[1])  # 4: meta's version, flags
    ipco = iprp and first_box(data, b"ipco", *iprp)
    if not ipco:
        return None
    primary = _primary_properties(data, meta, iprp)
    for index, (kind, a, b) in enumerate(isobmff_boxes(data, *ipco), 1):
        if (primary is None or index in primary) and kind == b"colr" \
                and data[a:a + 4] == b"nclx" and b - a >= 11:
            return a + 4
    return None


def _primary_properties(data: bytes, meta: tuple[int, int],
                        iprp: tuple[int, int]) -> set[int] | None:
    """The ipco indices (from 1) of the properties that the ipma box gives the primary item
    (pitm); None where either box is missing or damaged."""
    pitm, ipma = first_box(data, b"pitm", meta[0] + 4, meta[1]), first_box(data, b"ipma", *iprp)
    if pitm is None or ipma is None or ipma[1] - ipma[0] < 8:
        return None
    primary = primary_item(data, pitm)
    if primary is None:
        return None
    pos, end = ipma
    size, wide = (2 if data[pos] == 0 else 4), data[pos + 3] & 1  # version, flags
    step = 2 if wide else 1  # an association's bytes: 15-bit index, else 7, after the essential bit
    pos += 8  # past version, flags and the count of entries
    while pos + size < end:
        item, count = int.from_bytes(data[pos:pos + size], "big"), data[pos + size]
        pos += size + 1 + count * step
        if pos > end:
            return None
        if item == primary:
            return {int.from_bytes(data[i:i + step], "big") & (0x7FFF if wide else 0x7F)
                    for i in range(pos - count * step, pos, step)}
    return None


def _avif_code_points(f: BinaryIO) -> tuple[int, int]:
    """An AVIF's colour primaries and transfer characteristics from its nclx box; (2, 2),
    unspecified, without one. ``f``'s position is kept."""
    data = avif_head(f)
    at = _nclx_at(data)
    return struct.unpack_from(">HH", data, at) if at is not None else (2, 2)


def with_chunks(data: bytes, fmt: str, chunks: dict[bytes, bytes]) -> list[bytes | memoryview]:
    """The pieces, in order, of an encoded file that states the colour ``chunks`` Pillow does
    not write: a PNG's (mDCv, cLLi) inserted before its pixels, which stay views of ``data`` (no
    copy of them is made); an AVIF's cICP as the primaries and transfer of its nclx box (libavif
    writes sRGB's), whose matrix and range stay: they describe its YUV coding."""
    if fmt == "AVIF":
        at = _nclx_at(data)
        if at is None or b"cICP" not in chunks:
            return [data]
        cicp = chunks[b"cICP"]
        return [data[:at], struct.pack(">HH", cicp[0], cicp[1]), data[at + 4:]]
    encoded, pos = io.BytesIO(data), len(data)
    for kind, _ in png_chunks(encoded):
        if kind in (b"PLTE", b"IDAT"):
            pos = encoded.tell() - 8  # the chunk's start, before its length and type
            break
    view = memoryview(data)
    return [view[:pos], b"".join(png_chunk(k, v) for k, v in chunks.items()), view[pos:]]


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data and CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def refuse_unstated_hdr(chunks: dict[bytes, bytes], fmt: str) -> None:
    """Refuse an HDR image (PQ or HLG transfer) for a format that cannot state it: shown as
    SDR sRGB, its result would look washed out and dim."""
    cicp = chunks.get(b"cICP", b"")
    if fmt not in CICP_FORMATS and len(cicp) == 4 and cicp[1] in HDR_TRANSFERS:
        raise BadOptionError(f"an HDR image ({HDR_TRANSFERS[cicp[1]]} transfer): {fmt} cannot "
                             "say so and its result would look washed out: use PNG or AVIF",
                             option="format")


def unsaid_colour(chunks: dict[bytes, bytes], fmt: str, icc: bytes | None,
                  grey: bool) -> tuple[bytes | None, dict[bytes, bytes]]:
    """For a ``fmt`` other than PNG: the ICC profile (the file's, or one made to say what its
    gAMA/cHRM or SDR cICP say), and the chunks left to say otherwise (an AVIF's cICP, in its
    nclx box) or to name in a note. Chunks that say sRGB, or that ICC overrides, need nothing;
    mDCv and cLLi, which only a PNG holds, are always left to name."""
    cicp = chunks.get(b"cICP")
    hints = {k: v for k, v in chunks.items() if k in (b"mDCv", b"cLLi")}
    if cicp is None and (icc or b"sRGB" in chunks):  # ICC and sRGB override gAMA/cHRM
        return icc, hints
    if cicp is not None and fmt == "AVIF":  # said in its nclx box, which ICC would override
        return None, chunks
    made = _cicp_icc(cicp, grey) if cicp is not None else _gamma_icc(chunks, grey)
    if made == b"":  # the chunks say sRGB
        return icc, hints
    if made is None or fmt == "BMP":  # BMP has no place for ICC either
        return icc, chunks
    return made, hints


def _cicp_icc(cicp: bytes, grey: bool) -> bytes | None:
    """An ICC profile saying what SDR code points say (b"" for sRGB's); None where none can."""
    if says_srgb(cicp):
        return b""
    white_and_rgb = _PRIMARIES.get(cicp[0] if cicp[0] != 2 else 1)
    if white_and_rgb is None or cicp[1] not in _CURVES:
        return None
    return icc_profile(white_and_rgb, _CURVES[cicp[1]], grey)


def _gamma_icc(chunks: dict[bytes, bytes], grey: bool) -> bytes | None:
    """An ICC profile saying what gAMA and cHRM say (b"" where that is sRGB); None where they
    are damaged or out of any profile's range."""
    gamma = 1 / 2.2  # what a PNG without gAMA is taken to have
    white_and_rgb = SRGB_CHROMATICITIES
    if b"gAMA" in chunks:
        (value,) = struct.unpack(">I", chunks[b"gAMA"][:4].rjust(4, b"\0"))
        gamma = value / 100000
    if b"cHRM" in chunks and len(chunks[b"cHRM"]) == 32:
        white_and_rgb = tuple(v / 100000 for v in struct.unpack(">8I", chunks[b"cHRM"]))
    if not 1 / 255 < gamma <= 4:  # a curve's exponent is 1/gamma, in 8.8 fixed point
        return None
    if abs(gamma * 2.2 - 1) < 0.01 and \
            np.allclose(white_and_rgb, SRGB_CHROMATICITIES, atol=0.001):
        return b""
    try:
        return icc_profile(white_and_rgb, 1 / gamma, grey)
    except (np.linalg.LinAlgError, ZeroDivisionError, ValueError):
        return None  # degenerate chromaticities


_D50 = np.array([0.9642, 1.0, 0.8249])  # the ICC connection space's white
_BRADFORD = np.array([[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367],
                      [0.0389, -0.0685, 1.0296]])


def _xyz(x: float, y: float) -> np.ndarray:
    if y <= 0:
        raise ValueError("chromaticity y must be positive")
    return np.array([x / y, 1.0, (1 - x - y) / y])


def icc_profile(white_and_rgb: tuple[float, ...], exponent: float | None,
                grey: bool = False) -> bytes:
    """A minimal ICC v2 display profile (matrix and curves) for RGB of these chromaticities
    (white, red, green, blue x, y), or grey of that white, whose samples are light to the power
    ``exponent`` (None: sRGB's curve), colorants adapted to D50 with Bradford as ICC asks."""
    white = _xyz(*white_and_rgb[:2])
    rgb = np.stack([_xyz(*white_and_rgb[i:i + 2]) for i in (2, 4, 6)], axis=1)
    rgb = rgb * np.linalg.solve(rgb, white)  # scaled so that R = G = B = 1 is the white
    cone = _BRADFORD @ white
    adapt = np.linalg.inv(_BRADFORD) @ np.diag((_BRADFORD @ _D50) / cone) @ _BRADFORD
    if not np.isfinite(rgb).all() or (rgb < -1e-6).any() or not np.isfinite(adapt).all():
        raise ValueError("chromaticities that make no display")
    if exponent is None:  # sRGB's piecewise curve, sampled
        v = np.linspace(0, 1, 1024)
        table = np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)
        curve = struct.pack(">I", 1024) + np.round(table * 65535).astype(">u2").tobytes()
    else:
        curve = struct.pack(">IH", 1, round(exponent * 256))
    tags = [(b"desc", _desc("drcn: from the file's colour chunks")),
            (b"cprt", b"text\0\0\0\0No copyright, use freely\0"),
            (b"wtpt", _xyz_tag(white / white[1]))]
    if grey:
        tags.append((b"kTRC", b"curv\0\0\0\0" + curve))
    else:
        colorants = adapt @ rgb
        tags += [(name, _xyz_tag(colorants[:, i])) for i, name in
                 enumerate((b"rXYZ", b"gXYZ", b"bXYZ"))]
        tags += [(name, b"curv\0\0\0\0" + curve) for name in (b"rTRC", b"gTRC", b"bTRC")]
    offset = 128 + 4 + 12 * len(tags)
    table, body = struct.pack(">I", len(tags)), b""
    for name, data in tags:
        data += b"\0" * (-len(data) % 4)
        table += struct.pack(">4sII", name, offset + len(body), len(data))
        body += data
    size = offset + len(body)
    header = struct.pack(">I4sI4s4s4s12s4s", size, b"", 0x02100000, b"mntr",
                         b"GRAY" if grey else b"RGB ", b"XYZ ", b"", b"acsp")
    header = header.ljust(68, b"\0") + b"".join(_s15(v) for v in _D50)
    return header.ljust(128, b"\0") + table + body


def _s15(value: float) -> bytes:
    """An ICC s15Fixed16Number; ValueError beyond its range (chromaticities with y near 0)."""
    if not -32768 <= value <= 32767:
        raise ValueError(f"{value} is beyond an ICC number's range")
    return struct.pack(">i", round(value * 65536))


def _xyz_tag(xyz: np.ndarray) -> bytes:
    return b"XYZ \0\0\0\0" + b"".join(_s15(v) for v in xyz)


def _desc(text: str) -> bytes:
    """An ICC v2 textDescriptionType: ASCII, with empty Unicode and ScriptCode parts."""
    ascii_ = text.encode("ascii") + b"\0"
    return (b"desc\0\0\0\0" + struct.pack(">I", len(ascii_)) + ascii_
            + struct.pack(">IIHB", 0, 0, 0, 0) + b"\0" * 67)
