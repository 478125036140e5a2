"""Metadata through JPEG's 64 KB segments: EXIF shrunk to fit its one segment, and XMP over one
segment carried as extended XMP (XMP Specification Part 3, 1.1.3.1: a main packet naming, by
the MD5 of its text, an extension spread over APP1 segments). Read, a JPEG's extension is
joined to its main packet (other formats hold XMP of any size); written to JPEG, a packet over
one segment is split again, whole top-level ``rdf:Description`` elements at a time."""

from __future__ import annotations

import hashlib
import re
import struct

from PIL import Image

from .xmp import XML_TAG, xml_tags

JPEG_EXIF_LIMIT = 65533  # an APP1 segment's payload
MAIN_XMP_LIMIT = 65502 - len(b"http://ns.adobe.com/xap/1.0/\x00")  # XMP in one APP1 segment
EXTENSION = b"http://ns.adobe.com/xmp/extension/\x00"  # how an extension's segments begin
_PORTION = 0xFFFF - 2 - len(EXTENSION) - 32 - 8  # extension bytes a segment holds
_CLAIM = re.compile(rb"""xmpNote:HasExtendedXMP\s*=\s*(["'])([0-9A-Fa-f]{32})\1"""
                    rb"""|<xmpNote:HasExtendedXMP>\s*([0-9A-Fa-f]{32})\s*</xmpNote:HasExtendedXMP>""")
_PACKET_WRAPPER = re.compile(rb"<\?xpacket[^<>]*\?>\s*")  # no "<" within: linear time
_ABOUT = re.compile(rb"""\srdf:about\s*=\s*("[^"]*"|'[^']*')""")
_QUOTED = re.compile(rb""""[^"]*"|'[^']*'""")  # within one tag XML_TAG matched: balanced
_PADDING_END = b"<?xpacket end="


def shrink_exif(exif: Image.Exif, notes: list[str], sub_ifds: tuple[int, ...]) -> bytes | None:
    """Drop the largest tags until the EXIF fits a JPEG segment; None when nothing useful fits."""
    sizes = []
    for tag, value in exif.items():
        if tag in sub_ifds:
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


def joined_xmp(xmp: bytes, applist: list[tuple[str, bytes]], notes: list[str]) -> bytes:
    """A JPEG's main XMP packet with the extension it names joined to it (its top-level
    elements added to the main packet's, the claim dropped); ``xmp`` as it is when it names
    none that the file holds. An extension whose segments do not add up is dropped, noted."""
    claims = [(claim[2] or claim[3]).upper() for claim in _CLAIM.finditer(xmp)]
    named, found = set(claims), {}
    for marker, data in applist:
        head = data[len(EXTENSION):]
        if marker == "APP1" and data.startswith(EXTENSION) and head[:32].upper() in named:
            found.setdefault(head[:32].upper(), []).append(head)
    guid = next((guid for guid in claims if guid in found), None)  # a stale claim names none
    if guid is None:
        return xmp
    parts, total = {}, None
    for head in found[guid]:
        total, offset = struct.unpack(">II", head[32:40].rjust(8, b"\0"))
        parts[offset] = head[40:]
    main = _unclaimed(xmp)
    extension, at = bytearray(), 0
    while at in parts and parts[at] and len(extension) < total:
        extension += parts[at]
        at += len(parts[at])
    children, _ = _top_level(bytes(extension)) or ([], 0)
    top = _top_level(main)
    if len(extension) != total or not children or top is None:
        notes.append("extended XMP dropped: its segments are incomplete or unreadable")
        return main
    added = b"".join(extension[start:stop] for start, stop in children)
    return main[:top[1]] + added + main[top[1]:]


def split_xmp(xmp: bytes) -> tuple[bytes, bytes] | None:
    """``xmp`` for a JPEG: its main packet, and the APP1 segments of its extension (empty when
    the packet fits one segment); None when even the main packet's frame is over a segment or
    the packet has no ``rdf:RDF`` to split. A claim it holds already is dropped: it names
    segments this JPEG will not have, and would hide the extension written here."""
    xmp = _unclaimed(xmp)
    if len(xmp) <= MAIN_XMP_LIMIT:
        return xmp, b""
    if (padding := xmp.rfind(_PADDING_END)) >= 0:  # blank space kept for editing, not content
        xmp = xmp[:padding].rstrip() + xmp[padding:]
        if len(xmp) <= MAIN_XMP_LIMIT:
            return xmp, b""
    top = _top_level(xmp)
    if top is None or not top[0]:
        return None
    children, end = top
    head, tail = xmp[:children[0][0]], xmp[end:]
    about = _ABOUT.search(xmp, children[0][0], children[0][1])
    room = MAIN_XMP_LIMIT - len(head) - len(tail) - len(_claim(about, b"0" * 32))
    kept, moved = [], []
    for start, stop in children:  # first fit: in order, each kept that fits the room left
        fits = stop - start <= room
        (kept if fits else moved).append(xmp[start:stop])
        room -= stop - start if fits else 0
    if room < 0:
        return None
    extension = (_PACKET_WRAPPER.sub(b"", head) + b"".join(moved)
                 + _PACKET_WRAPPER.sub(b"", tail))
    guid = hashlib.md5(extension).hexdigest().upper().encode()  # noqa: S324 - as the spec says
    segments = b"".join(
        b"\xff\xe1" + struct.pack(">H", 2 + len(EXTENSION) + 40 + len(part)) + EXTENSION + guid
        + struct.pack(">II", len(extension), at) + part
        for at, part in ((at, extension[at:at + _PORTION])
                         for at in range(0, len(extension), _PORTION)))
    return head + b"".join(kept) + _claim(about, guid) + tail, segments


def _claim(about: re.Match | None, guid: bytes) -> bytes:
    """The element by which a main packet names its extension, about what its others are."""
    return (b"<rdf:Description rdf:about=" + (about[1] if about else b'""')
            + b' xmlns:xmpNote="http://ns.adobe.com/xmp/note/" xmpNote:HasExtendedXMP="'
            + guid + b'"/>')


def _unclaimed(packet: bytes) -> bytes:
    """``packet`` without its claims to an extension, and without the top-level elements that
    held nothing else (as ``_claim`` writes them), so that reading and writing a JPEG again
    leaves the packet as it was."""
    top = _top_level(packet)
    if top is None:
        return _CLAIM.sub(b"", packet)
    kept, at = [], 0
    for start, stop in top[0]:
        child = _CLAIM.sub(b"", packet[start:stop])
        if len(child) < stop - start and _says_nothing(child):
            child = b""
        kept += [packet[at:start], child]
        at = stop
    return b"".join(kept) + packet[at:]


def _says_nothing(element: bytes) -> bool:
    """Whether ``element`` is an ``rdf:Description`` with no content and no property: only
    ``rdf:about`` and namespace declarations."""
    tag = XML_TAG.match(element)
    if tag is None or tag[2] != b"rdf:Description":
        return False
    content = element[tag.end():].strip()
    if content != (b"" if tag[3].endswith(b"/") else b"</rdf:Description>"):
        return False
    names = _QUOTED.sub(b" ", tag[3].rstrip(b"/")).replace(b"=", b" ").split()
    return all(name == b"rdf:about" or name.startswith(b"xmlns") for name in names)


def _top_level(packet: bytes) -> tuple[list[tuple[int, int]], int] | None:
    """Where each element directly inside ``rdf:RDF`` starts and stops, and where that
    element's content ends; None when the packet holds no well-nested ``rdf:RDF``."""
    depth, start, children, inside = 0, 0, [], False
    for tag in xml_tags(packet):
        if tag is None:  # a stray or unclosed "<": not XML to split
            return None
        closing, name, empty = tag[1], tag[2], tag[3].endswith(b"/")
        if not inside:
            inside = name == b"rdf:RDF" and not closing and not empty
        elif closing and depth == 0:
            return children, tag.start()
        elif closing:
            depth -= 1
            if depth == 0:
                children.append((start, tag.end()))
        elif empty and depth == 0:
            children.append((tag.start(), tag.end()))
        elif not empty:
            start = tag.start() if depth == 0 else start
            depth += 1
    return None
