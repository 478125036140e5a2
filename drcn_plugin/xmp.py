"""The tags of an XMP packet, found in one pass: what :func:`.colourspace.without_gain_map` and
:mod:`.jpegmeta`'s packet splitting both walk, so that neither hostile packets (unclosed tags,
quotes, comments) nor text that only looks like a tag sends either astray; and the values
that describe the pixels (orientation, size, resolution), set for an upright, enlarged result,
and the media-management IDs, renewed for a file derived from the source (:func:`derived_xmp`)."""

from __future__ import annotations

import re
import uuid
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


# The IDs XMP Media Management gives a file, as attributes (either quote, spaces around "=")
_ID_ATTRIBUTE = re.compile(rb"""xmpMM:(InstanceID|DocumentID)\s*=\s*(?:"([^"]*)"|'([^']*)')""")
_ID_ELEMENTS = (b"xmpMM:InstanceID", b"xmpMM:DocumentID")
_DERIVED_FROM = b"xmpMM:DerivedFrom"
_PROPERTIES = [b"rdf:RDF", b"rdf:Description"]  # the open elements around a top-level property


def derived_xmp(packet: bytes) -> bytes:
    """``packet`` for a new file made from the one it describes, as Photoshop and Lightroom write
    an export: a new ``xmpMM:InstanceID`` (``xmp.iid:`` and a random UUID), the
    ``xmpMM:DocumentID`` kept, and an ``xmpMM:DerivedFrom`` naming the source's instance and
    document in place of the source's own. Only the packet's top-level properties count (a
    Photoshop pantry's entries describe other files); one without an InstanceID is as it was."""
    edits: list[tuple[int, int, bytes]] = []  # (start, stop, replacement), in packet order
    ids: dict[bytes, bytes] = {}
    at_instance = None  # where the new DerivedFrom goes: (position, the tag to reopen or None)
    stack: list[bytes] = []  # the names of the open elements
    derived_at = None  # where a top-level DerivedFrom being removed starts
    id_text = None  # a top-level ID element open: (its name, where its text starts)
    new_id = f"xmp.iid:{uuid.uuid4()}".encode()
    for tag in xml_tags(packet):
        if tag is None:
            continue
        closing, name, empty = tag[1], tag[2], tag[3].endswith(b"/")
        if closing:  # closes the innermost element, whatever it names: linear time always
            if stack:
                stack.pop()
            if stack[-2:] == _PROPERTIES and name == _DERIVED_FROM and derived_at is not None:
                edits.append((derived_at, tag.end(), b""))
                derived_at = None
            elif stack[-2:] == _PROPERTIES and id_text is not None and name == id_text[0]:
                # its text runs to its closer, past any comment or CDATA section inside it
                ids.setdefault(name, packet[id_text[1]:tag.start()])
                if name == _ID_ELEMENTS[0]:
                    edits.append((id_text[1], tag.start(), new_id))
                    at_instance = at_instance or (tag.end(), None)  # DerivedFrom follows it
                id_text = None
            continue
        top = stack[-1:] == [b"rdf:RDF"] and name == b"rdf:Description"
        property_level = stack[-2:] == _PROPERTIES
        if top:
            for m in _ID_ATTRIBUTE.finditer(tag[0]):
                which, group = m[1], 2 if m[2] is not None else 3
                ids.setdefault(b"xmpMM:" + which, m[group])
                if which == b"InstanceID":
                    edits.append((tag.start() + m.start(group), tag.start() + m.end(group),
                                  new_id))
                    at_instance = at_instance or ((tag.end(), name if empty else None))
        elif property_level and name in _ID_ELEMENTS and not empty:
            id_text = (name, tag.end())
        elif property_level and name == _DERIVED_FROM:
            if empty:
                edits.append((tag.start(), tag.end(), b""))
            else:
                derived_at = tag.start()
        if not empty:
            stack.append(name)
    if at_instance is None:
        return packet
    where, reopened = at_instance
    if reopened is not None:  # <rdf:Description .../> holds the ID: opened to hold DerivedFrom
        edits.append((where - 2, where, b">" + _derived_from(ids) + b"</" + reopened + b">"))
    else:
        edits.append((where, where, _derived_from(ids)))
    out, at = [], 0
    for start, stop, replacement in sorted(edits):
        out += [packet[at:start], replacement]
        at = stop
    return b"".join(out) + packet[at:]


def _derived_from(ids: dict[bytes, bytes]) -> bytes:
    """The ``xmpMM:DerivedFrom`` element naming the source's instance and document ``ids`` (as
    they were written, escaped as text may be), declaring the namespaces it uses."""
    refs = b"".join(b"<stRef:%s>%s</stRef:%s>" % (ref, ids[key], ref)
                    for key, ref in ((b"xmpMM:InstanceID", b"instanceID"),
                                     (b"xmpMM:DocumentID", b"documentID")) if key in ids)
    return (b'<xmpMM:DerivedFrom rdf:parseType="Resource" xmlns:xmpMM="http://ns.adobe.com/xap/'
            b'1.0/mm/" xmlns:stRef="http://ns.adobe.com/xap/1.0/sType/ResourceRef#">' + refs
            + b"</xmpMM:DerivedFrom>")
