"""The tags of an XMP packet, found in one pass: what :func:`.colourspace.without_gain_map` and
:mod:`.jpegmeta`'s packet splitting both walk, so that neither hostile packets (unclosed tags,
quotes, comments) nor text that only looks like a tag sends either astray; and the values
that describe the pixels (orientation, size, resolution), set for an upright, enlarged result."""

from __future__ import annotations

import re
from collections.abc import Iterator

# An XML tag: the slash of a closing tag, the name, the attributes (a value holds no '<', so a
# match never crosses one, and finding every tag of any text takes linear time)
XML_TAG = re.compile(rb"""<(/?)([\w.:-]+)((?:[^<>"']|"[^"<]*"|'[^'<]*')*)>""")
# What holds no element, however its text reads: comments, CDATA, processing instructions (the
# packet wrapper) and declarations, by how each opens and closes; the longer openings first
_SKIPPED = ((b"<!--", b"-->"), (b"<![CDATA[", b"]]>"), (b"<?", b"?>"), (b"<!", b">"))
# where a value opens: XML allows either quote and spaces around "=" (Pillow reads only =")
_OPENS = rb"""(?:\s*=\s*["']|>)"""
XMP_ORIENTATION = re.compile(rb"(tiff:Orientation" + _OPENS + rb")([1-8])")
XMP_RESOLUTION = re.compile(rb"(tiff:([XY])Resolution" + _OPENS + rb")(\d+(?:\.\d*)?)(?:/(\d+))?")
_RESOLUTION_NAME = re.compile(rb"(tiff:)([XY])(Resolution)")  # attributes, and elements' tags
# the pixel size XMP states (Lightroom: exif:, some writers tiff:), in an attribute or an element
XMP_SIZE = re.compile(rb"((?:exif:Pixel([XY])Dimension|tiff:Image(Width|Length))" + _OPENS
                      + rb")\d+")


def xml_tags(packet: bytes) -> Iterator[re.Match[bytes] | None]:
    """Each tag of ``packet`` in order, past comments, CDATA, processing instructions and
    declarations; None for a "<" that opens none of these (stray text, or one left unclosed),
    after which the scan goes on from the next "<". Linear time, whatever the packet holds."""
    at, unclosed = 0, set()  # closers known to be missing from here to the end
    while (at := packet.find(b"<", at)) >= 0:
        if (tag := XML_TAG.match(packet, at)) is not None:
            yield tag
            at = tag.end()
            continue
        if packet[at + 1:at + 2] in (b"!", b"?"):  # tried only where a tag is not
            opener, closer = next((o, c) for o, c in _SKIPPED if packet.startswith(o, at))
            end = -1 if closer in unclosed else packet.find(closer, at + len(opener))
            if end >= 0:
                at = end + len(closer)
                continue
            unclosed.add(closer)  # not searched for again: each closer is missed at most once
        yield None
        at += 1


def upright_xmp(packet: bytes, size: tuple[int, int], transposed: bool) -> bytes:
    """``packet`` for pixels turned upright to ``size`` (width, height): orientation 1, that
    pixel size, and, where the turn ``transposed`` them, the resolutions' X and Y swapped as the
    EXIF's are (else a 300x150 dpi file's XMP contradicts its EXIF)."""
    if transposed:
        packet = _RESOLUTION_NAME.sub(lambda m: m[1] + (b"Y" if m[2] == b"X" else b"X") + m[3],
                                      packet)
    packet = XMP_ORIENTATION.sub(rb"\g<1>1", packet)
    return XMP_SIZE.sub(lambda m: m[1] + str(size[vertical(m)]).encode(), packet)


def vertical(m: re.Match[bytes]) -> int:
    """1 when an :data:`XMP_SIZE` match is the height, 0 the width."""
    return int(m[2] == b"Y" or m[3] == b"Length")
