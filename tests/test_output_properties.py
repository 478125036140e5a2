"""What a photographer expects of an upscaled file's own properties, as mature tools (Photoshop,
Lightroom, ImageMagick) write them: a progressive JPEG stays progressive, a derived file gets
its own XMP instance and names the one it came from."""

from __future__ import annotations

import re
import time
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
from helpers import random_rgb, time_growth, upscale
from PIL import Image, ImageFile

from drcn_plugin import memory
from drcn_plugin.profiles import srgb_profile
from drcn_plugin.xmp import derived_xmp

pytestmark = pytest.mark.usefixtures("wide_console")


@pytest.mark.parametrize("progressive", [True, False])
def test_a_jpeg_result_keeps_the_sources_progressive_coding(folder: Path, tiny_model_file: str,
                                                           progressive: bool) -> None:
    """A web export saved progressive comes back progressive (SOF2), a baseline one baseline;
    a PNG made from the progressive one is written as usual."""
    random_rgb(24, 16).save(folder / "web.jpg", quality=85, progressive=progressive)
    for fmt in ("same", "png"):
        r = upscale(str(folder / "web.jpg"), "-m", tiny_model_file, "-o", str(folder / "out"),
                    "-f", fmt)
        assert r.exit_code == 0, r.output
    with Image.open(folder / "out" / "web.jpg") as im:
        assert im.size == (48, 32)
        assert bool(im.info.get("progressive")) is progressive
        assert (b"\xff\xc2" in (folder / "out" / "web.jpg").read_bytes()) is progressive
    with Image.open(folder / "out" / "web.png") as im:
        assert im.format == "PNG" and im.size == (48, 32)


def test_a_progressive_jpeg_result_larger_than_pillows_guess_is_written(
        folder: Path, tiny_model_file: str, monkeypatch: pytest.MonkeyPatch,
        capfd: pytest.CaptureFixture[str]) -> None:
    """libjpeg writes a progressive file's scans only once every pixel is in, into one buffer:
    Pillow's guess of it (2 bytes a pixel at quality 95 and up, 1 below) is less than a detailed
    image takes at quality 100 (here 2.9), and the result was lost ('broken data stream', with
    libjpeg's 'Suspension not allowed here' on the terminal)."""
    monkeypatch.setattr(ImageFile, "MAXBLOCK", 1 << 22)  # room to write the source itself
    random_rgb(160, 120).save(folder / "web.jpg", quality=100, subsampling=0, progressive=True)
    monkeypatch.undo()
    r = upscale(str(folder / "web.jpg"), "-m", tiny_model_file, "-o", str(folder / "out"),
                "--scale", "1.5", "--quality", "100")
    assert r.exit_code == 0, r.output
    assert "Suspension" not in capfd.readouterr().err
    data = (folder / "out" / "web.jpg").read_bytes()
    assert len(data) > 2 * 240 * 180 and b"\xff\xc2" in data
    with Image.open(folder / "out" / "web.jpg") as im:
        assert im.size == (240, 180) and im.info.get("progressive")
    assert ImageFile.MAXBLOCK == 65536, "Pillow's own buffer size is left as it was"


@pytest.mark.parametrize("progressive", [True, False])
def test_a_progressive_jpegs_coefficients_are_counted_before_the_upscale(
        folder: Path, tiny_model_file: str, monkeypatch: pytest.MonkeyPatch,
        progressive: bool) -> None:
    """libjpeg holds every DCT coefficient of a progressive JPEG while it writes it (2 bytes a
    sample: 6 a pixel at 4:4:4), where a baseline one is written a few rows at a time: memory
    that fits the baseline result but not those is refused in one line before the upscale
    (it was not counted, and a large result could be killed for memory in its encode)."""
    random_rgb(24, 16).save(folder / "web.jpg", quality=85, progressive=progressive)
    room = memory.memory_needed(16, 24, 3, 1, size=(32, 48)) + 100
    monkeypatch.setattr(memory, "_available_memory", lambda device: room)
    r = upscale(str(folder / "web.jpg"), "-m", tiny_model_file, "-o", str(folder / "out"))
    if progressive:
        assert r.exit_code == 1 and "a 48x32 result needs about" in r.output, r.output
        assert not (folder / "out" / "web.jpg").exists()
    else:
        assert r.exit_code == 0, r.output


# Photoshop's packet of a file that was itself derived, with a placed file's entry in its pantry
_XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22'
        b'-rdf-syntax-ns#"><rdf:Description rdf:about="" xmlns:xmpMM="http://ns.adobe.com/xap/1.0'
        b'/mm/" xmlns:stRef="http://ns.adobe.com/xap/1.0/sType/ResourceRef#" xmlns:tiff="http://'
        b'ns.adobe.com/tiff/1.0/" xmpMM:InstanceID="xmp.iid:source" xmpMM:DocumentID='
        b'"xmp.did:doc" xmpMM:OriginalDocumentID="xmp.did:raw" tiff:ImageWidth="24"><xmpMM:'
        b'DerivedFrom stRef:instanceID="xmp.iid:parent" stRef:documentID="xmp.did:doc"/>'
        b'<xmpMM:Pantry><rdf:Bag><rdf:li><rdf:Description xmpMM:InstanceID="xmp.iid:placed">'
        b'<xmpMM:DerivedFrom rdf:parseType="Resource"><stRef:instanceID>xmp.iid:placedparent'
        b'</stRef:instanceID></xmpMM:DerivedFrom></rdf:Description></rdf:li></rdf:Bag>'
        b'</xmpMM:Pantry></rdf:Description></rdf:RDF></x:xmpmeta>')
RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"
MM, REF = "{http://ns.adobe.com/xap/1.0/mm/}", "{http://ns.adobe.com/xap/1.0/sType/ResourceRef#}"
_NEW_ID = re.compile(rb'xmpMM:InstanceID="(xmp\.iid:[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-'
                     rb'[89ab][0-9a-f]{3}-[0-9a-f]{12})"')


def _xmp(path: Path) -> bytes:
    with Image.open(path) as im:
        packet = im.tag_v2[700] if im.format == "TIFF" else im.info["xmp"]
    return packet.encode() if isinstance(packet, str) else bytes(packet)


def test_an_upscaled_file_is_a_new_xmp_instance_derived_from_its_source(
        folder: Path, tiny_model_file: str) -> None:
    """As Photoshop's and Lightroom's exports: each result gets a new ``xmp.iid:`` InstanceID
    of its own, keeps the DocumentID (and the original's), and its DerivedFrom names the
    source's instance and document in place of the source's own; a pantry entry (a placed
    file's metadata) is left as it was. The packet stays well-formed XML."""
    random_rgb(24, 16).save(folder / "edit.jpg", xmp=_XMP)
    for fmt in ("same", "tiff", "png"):
        r = upscale(str(folder / "edit.jpg"), "-m", tiny_model_file, "-o", str(folder / "out"),
                    "-f", fmt)
        assert r.exit_code == 0, r.output
    ids = set()
    for name in ("edit.jpg", "edit.tif", "edit.png"):
        packet = _xmp(folder / "out" / name)
        ids.add(_NEW_ID.search(packet)[1].decode())
        assert b'xmpMM:DocumentID="xmp.did:doc"' in packet
        assert b'xmpMM:OriginalDocumentID="xmp.did:raw"' in packet
        assert b'tiff:ImageWidth="48"' in packet
        assert b"xmp.iid:source" not in packet.split(b"<xmpMM:DerivedFrom")[0]
        assert b"<stRef:instanceID>xmp.iid:source</stRef:instanceID><stRef:documentID>"\
               b"xmp.did:doc</stRef:documentID></xmpMM:DerivedFrom>" in packet
        assert b"xmp.iid:parent" not in packet, "the source's own DerivedFrom is replaced"
        assert b'xmpMM:InstanceID="xmp.iid:placed"' in packet and b"placedparent" in packet
        top = ElementTree.fromstring(packet).find(f"{RDF}RDF/{RDF}Description")
        assert top.get(f"{MM}InstanceID") in ids and top.get(f"{MM}DocumentID") == "xmp.did:doc"
        assert [{ref.tag[len(REF):]: ref.text for ref in derived}
                for derived in top.findall(f"{MM}DerivedFrom")] == \
            [{"instanceID": "xmp.iid:source", "documentID": "xmp.did:doc"}]
    assert len(ids) == 3, "each result is an instance of its own"


def test_xmp_ids_written_as_elements_are_renewed_alike() -> None:
    """The element form of the IDs (Lightroom's older packets, exiftool's): the new InstanceID
    in the element, DerivedFrom beside it in place of the source's own (an element with
    content); a packet without an InstanceID is as it was."""
    packet = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/'
              b'02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" xmlns:xmpMM="http://ns.adobe'
              b'.com/xap/1.0/mm/"><xmpMM:DocumentID>uuid:D&amp;1</xmpMM:DocumentID><xmpMM:'
              b'InstanceID>uuid:I1</xmpMM:InstanceID><xmpMM:DerivedFrom rdf:parseType="Resource">'
              b'<stRef:instanceID>uuid:I0</stRef:instanceID></xmpMM:DerivedFrom></rdf:Description>'
              b'</rdf:RDF></x:xmpmeta>')
    out = derived_xmp(packet)
    new = re.search(rb"<xmpMM:InstanceID>(xmp\.iid:[-0-9a-f]{36})</xmpMM:InstanceID>"
                    rb"<xmpMM:DerivedFrom ", out)
    assert new is not None and derived_xmp(packet) != out
    assert b"<stRef:instanceID>uuid:I1</stRef:instanceID><stRef:documentID>uuid:D&amp;1<" in out
    assert b"<xmpMM:DocumentID>uuid:D&amp;1</xmpMM:DocumentID>" in out and b"uuid:I0" not in out
    assert out.count(b"<xmpMM:DerivedFrom ") == 1 and out.count(b"</xmpMM:DerivedFrom>") == 1
    without = packet.replace(b"<xmpMM:InstanceID>uuid:I1</xmpMM:InstanceID>", b"")
    assert derived_xmp(without) == without


@pytest.mark.parametrize("text", [b"<!-- set by hand -->uuid:I1", b"<![CDATA[uuid:I1]]>"])
def test_an_xmp_id_element_holding_a_comment_or_cdata_is_renewed_whole(text: bytes) -> None:
    """An ID element's text runs to its closing tag: one holding a comment or a CDATA section
    (valid XML) became the new ID followed by the old one ("xmp.iid:...uuid:I1"), and its
    DerivedFrom named no instance (the text before the first "<" was empty)."""
    packet = (b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
              b'rdf:about="" xmlns:xmpMM="http://ns.adobe.com/xap/1.0/mm/"><xmpMM:InstanceID>'
              + text + b"</xmpMM:InstanceID></rdf:Description></rdf:RDF>")
    top = ElementTree.fromstring(derived_xmp(packet)).find(f"{RDF}Description")
    assert re.fullmatch(r"xmp\.iid:[-0-9a-f]{36}", top.findtext(f"{MM}InstanceID")), top
    assert top.findtext(f"{MM}DerivedFrom/{REF}instanceID") == "uuid:I1"


def test_renewing_xmp_ids_takes_linear_time_in_hostile_packets() -> None:
    """Deep nesting closed by names never opened, and stray "<": each closing tag is one step,
    not a search of the open elements."""
    def hostile(size: int) -> bytes:
        return (b'<rdf:RDF><rdf:Description xmpMM:InstanceID="i">' + b"<a>" * size
                + b"</b><" * size + b"</rdf:Description></rdf:RDF>")

    assert derived_xmp(hostile(10)).count(b"<xmpMM:DerivedFrom ") == 1
    assert time_growth(lambda size: derived_xmp(hostile(size)), 5_000) < 10


@pytest.mark.parametrize("mode", ["RGB", "L", "I;16"])
def test_a_tiff_with_exif_sub_ifds_is_compressed_and_keeps_them(folder: Path, tiny_model_file: str,
                                                                mode: str) -> None:
    """Every camera photo's EXIF has an Exif sub-IFD (and often a GPS one), which libtiff cannot
    write: the TIFF result, 8-bit colour or grey or 16-bit grey, is still Deflate-compressed
    with a predictor (it was written uncompressed: twice the size, for Set14's monarch) and
    holds the same pixels as the result of the same photo without EXIF, which libtiff writes."""
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    exif[0x8769] = {0x829A: 0.008, 0x8827: 400}
    exif[0x8825] = {0x0001: "N", 0x0002: (52.0, 31.0, 12.0)}
    photo = random_rgb(24, 16).convert("L") if mode == "L" else random_rgb(24, 16)
    if mode == "I;16":
        photo = Image.fromarray(np.asarray(photo.convert("L"), np.uint16) * 257)
    suffix = "png" if mode == "I;16" else "jpg"
    photo.save(folder / f"cam.{suffix}", exif=exif)
    photo.save(folder / f"plain.{suffix}")
    r = upscale(str(folder), "-m", tiny_model_file, "-o", str(folder / "out"), "-f", "tiff")
    assert r.exit_code == 0 and "uncompressed" not in r.output, r.output
    with Image.open(folder / "out" / "cam.tif") as im, \
            Image.open(folder / "out" / "plain.tif") as plain:
        assert im.mode == plain.mode == mode and im.size == (48, 32)
        assert im.tag_v2[259] == 8 and im.tag_v2[317] == 2  # Adobe Deflate, horizontal predictor
        assert np.array_equal(np.asarray(im), np.asarray(plain))
        tags = im.getexif()
        assert tags[0x010F] == "Canon" and tags.get_ifd(0x8769)[0x8827] == 400
        assert tags.get_ifd(0x8825)[0x0001] == "N"


def test_the_srgb_profile_results_are_tagged_with_is_one_over_time() -> None:
    """littlecms stamps a profile with the second it was made: results taken to sRGB in one
    run carry the same bytes, however long the run (a test comparing them failed at random)."""
    first = srgb_profile()
    time.sleep(1.05)
    assert srgb_profile() == first and first[36:40] == b"acsp"
