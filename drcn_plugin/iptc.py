"""A JPEG's IPTC records (captions, keywords, credits), read from and written to its Photoshop
APP13 block, the way Photoshop splits that block over segments; a TIFF's, from its IPTC tag."""

from __future__ import annotations

from typing import BinaryIO

from .opening import first_ifd

_APP13 = b"Photoshop 3.0\x00"  # how a JPEG's APP13 image resource block begins
_IPTC_RESOURCE = 0x0404  # the IPTC records among the image resources (Pillow parses them all)
_TIFF_IPTC = 33723  # a TIFF's IPTC tag
_IPTC_TYPES = (1, 2, 4, 7)  # BYTE, ASCII, LONG, UNDEFINED: the types writers give that tag


def jpeg_iptc(applist: list[tuple[str, bytes]]) -> bytes | bool | None:
    """The IPTC records (resource 0x0404) of a JPEG's Photoshop block, which may run on over
    several APP13 segments (Photoshop splits one over 64 KB); None when there are none, False
    when the block is damaged (a resource runs past its end)."""
    block = b"".join(data[len(_APP13):] for marker, data in applist
                     if marker == "APP13" and data.startswith(_APP13))
    records, pos = [], 0
    while pos + 12 <= len(block) and block[pos:pos + 4] == b"8BIM":
        resource = int.from_bytes(block[pos + 4:pos + 6], "big")
        pos += 6 + ((block[pos + 6] + 2) & ~1)  # Pascal name padded to even
        size = int.from_bytes(block[pos:pos + 4], "big")
        pos += 4
        if pos + size > len(block):
            return False
        if resource == _IPTC_RESOURCE:
            records.append(block[pos:pos + size])
        pos += size + (size & 1)
    return b"".join(records) or None


def app13(iptc: bytes) -> bytes:
    """JPEG APP13 segments holding only the IPTC resource, split as Photoshop splits a block
    over a segment's 64 KB (each segment repeats the ``Photoshop 3.0`` header)."""
    block = (b"8BIM" + _IPTC_RESOURCE.to_bytes(2, "big") + b"\x00\x00"
             + len(iptc).to_bytes(4, "big") + iptc + bytes(len(iptc) & 1))
    room = 0xFFFF - 2 - len(_APP13)
    return b"".join(b"\xff\xed" + (len(_APP13) + len(part) + 2).to_bytes(2, "big") + _APP13 + part
                    for part in (block[i:i + room] for i in range(0, len(block), room)))


def tiff_iptc(f: BinaryIO) -> bytes | None:
    """The IPTC records of a TIFF's or BigTIFF's first image (its tag 33723) as stored, read
    from ``f``: Pillow decodes that tag as one value, which keeps 4 bytes of one typed LONG (as
    Photoshop types it), so its stored bytes are taken before decoding. None without the tag."""
    ifd = first_ifd(f)
    if ifd is None or ifd.tagtype.get(_TIFF_IPTC) not in _IPTC_TYPES:
        return None
    return ifd._tagdata.get(_TIFF_IPTC)  # where Pillow's IFD keeps a tag's bytes, as documented
