"""The tags of an XMP packet, found in one pass: what :func:`.colourspace.without_gain_map` and
:mod:`.jpegmeta`'s packet splitting both walk, so that neither hostile packets (unclosed tags,
quotes, comments) nor text that only looks like a tag sends either astray."""

from __future__ import annotations

import re
from collections.abc import Iterator

# An XML tag: the slash of a closing tag, the name, the attributes (a value holds no '<', so a
# match never crosses one, and finding every tag of any text takes linear time)
XML_TAG = re.compile(rb"""<(/?)([\w.:-]+)((?:[^<>"']|"[^"<]*"|'[^'<]*')*)>""")
# What holds no element, however its text reads: comments, CDATA, processing instructions (the
# packet wrapper) and declarations, by how each opens and closes; the longer openings first
_SKIPPED = ((b"<!--", b"-->"), (b"<![CDATA[", b"]]>"), (b"<?", b"?>"), (b"<!", b">"))


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
