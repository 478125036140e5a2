"""XMP over one JPEG segment (64 KB), which Lightroom, Photoshop and phone cameras write as
extended XMP: a main packet naming an extension spread over APP1 segments. It travels whole to
every format, and back to JPEG as extended XMP, instead of being dropped."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest
from helpers import random_rgb, time_growth, upscale
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from drcn_plugin.jpegmeta import EXTENSION, joined_xmp, split_xmp

pytestmark = pytest.mark.usefixtures("wide_console")
_RDF = 'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"'
_SETTINGS = ('<rdf:Description rdf:about="" xmlns:crs="http://ns.adobe.com/camera-raw-settings/1.0/"'
             ' crs:Exposure2012="+0.50"><crs:Look>' + "L" * 100_000 + "</crs:Look></rdf:Description>")


def _packet(*descriptions: str) -> bytes:
    return (f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF {_RDF}>{"".join(descriptions)}'
            "</rdf:RDF></x:xmpmeta>").encode()


def _creator(claim: str = "") -> str:
    return ('<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/" '
            'xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="4" tiff:Orientation="1" '
            f'xmlns:tiff="http://ns.adobe.com/tiff/1.0/"{claim}><dc:creator><rdf:Seq>'
            "<rdf:li>Jane</rdf:li></rdf:Seq></dc:creator></rdf:Description>")


def _segments(extension: bytes, guid: bytes, portion: int = 65000) -> bytes:
    return b"".join(b"\xff\xe1" + struct.pack(">H", 2 + len(EXTENSION) + 40 + len(part))
                    + EXTENSION + guid + struct.pack(">II", len(extension), at) + part
                    for at, part in ((at, extension[at:at + portion])
                                     for at in range(0, len(extension), portion)))


def _with_extended_xmp(path: Path, drop_segment: bool = False) -> None:
    """A JPEG as Lightroom writes one whose develop settings are over 64 KB."""
    extension = _packet(_SETTINGS)
    guid = hashlib.md5(extension).hexdigest().upper().encode()
    main = _packet(_creator(f' xmlns:xmpNote="http://ns.adobe.com/xmp/note/" '
                            f'xmpNote:HasExtendedXMP="{guid.decode()}"'))
    random_rgb().save(path, xmp=main)
    data, segments = path.read_bytes(), _segments(extension, guid)
    if drop_segment:
        segments = segments[:segments.index(b"\xff\xe1", 4)]
    at = data.index(b"\xff\xdb")  # before the quantisation tables
    path.write_bytes(data[:at] + segments + data[at:])


def _xmp(path: Path) -> bytes:
    """The file's whole XMP, a JPEG's extension joined to its main packet by our reader's
    rules checked here: the claim names the MD5 of the extension the segments hold."""
    im = Image.open(path)
    if im.format != "JPEG":
        xmp = im.info.get("xmp") or im.getexif().get(700)
        return xmp.encode() if isinstance(xmp, str) else xmp
    main = im.info["xmp"]
    parts = sorted((struct.unpack(">II", d[len(EXTENSION) + 32:len(EXTENSION) + 40]), d)
                   for m, d in im.applist if m == "APP1" and d.startswith(EXTENSION))
    if parts:
        extension = b"".join(d[len(EXTENSION) + 40:] for _, d in parts)
        guid = hashlib.md5(extension).hexdigest().upper().encode()
        assert len(extension) == parts[0][0][0]
        assert all(d[len(EXTENSION):len(EXTENSION) + 32] == guid for _, d in parts)
        assert b'HasExtendedXMP="' + guid + b'"' in main
        assert len(main) <= 65502
    return joined_xmp(main, im.applist, [])


@pytest.mark.parametrize("fmt", ["jpg", "png", "webp", "tiff"])
def test_a_jpegs_extended_xmp_travels_whole(folder: Path, tiny_model_file: str,
                                            fmt: str) -> None:
    _with_extended_xmp(folder / "lr.jpg")
    out = folder.parent / "out"
    r = upscale(str(folder / "lr.jpg"), "-f", fmt, "-o", str(out), "-m", tiny_model_file)
    assert r.exit_code == 0, r.output
    assert "XMP" not in r.output  # nothing dropped, nothing to say
    xmp = _xmp(next(out.iterdir()))
    assert b"<rdf:li>Jane</rdf:li>" in xmp and b'xmp:Rating="4"' in xmp
    assert b'crs:Exposure2012="+0.50"' in xmp and b"L" * 100_000 in xmp
    if fmt != "jpg":  # one packet: nothing left for a reader to look for
        assert b"HasExtendedXMP" not in xmp


def test_xmp_over_one_jpeg_segment_goes_to_jpeg_as_extended_xmp(
        folder: Path, tiny_model_file: str) -> None:
    info = PngInfo()
    info.add_itxt("XML:com.adobe.xmp", _packet(_creator(), _SETTINGS).decode())
    random_rgb().save(folder / "big.png", pnginfo=info)
    out = folder.parent / "out"
    r = upscale(str(folder / "big.png"), "-f", "jpg", "-o", str(out), "-m", tiny_model_file)
    assert r.exit_code == 0, r.output
    assert "XMP" not in r.output
    main = Image.open(out / "big.jpg").info["xmp"]
    assert b"<rdf:li>Jane</rdf:li>" in main  # what fits stays where every reader sees it
    xmp = _xmp(out / "big.jpg")
    assert b"<rdf:li>Jane</rdf:li>" in xmp and b"L" * 100_000 in xmp


def test_an_extension_missing_a_segment_is_dropped_with_a_note(
        folder: Path, tiny_model_file: str) -> None:
    _with_extended_xmp(folder / "cut.jpg", drop_segment=True)
    out = folder.parent / "out"
    r = upscale(str(folder / "cut.jpg"), "-f", "png", "-o", str(out), "-m", tiny_model_file)
    assert r.exit_code == 0, r.output
    assert "extended XMP dropped" in r.output
    xmp = _xmp(out / "cut.png")
    assert b"<rdf:li>Jane</rdf:li>" in xmp  # the main packet travels
    assert b"HasExtendedXMP" not in xmp and b"crs:Look" not in xmp


@pytest.mark.parametrize("junk", [b'<a b="', b"<", b"<!--", b"<a>", b"<?xpacket ", b" "])
def test_a_hostile_packet_is_read_and_split_or_refused_in_linear_time(junk: bytes) -> None:
    """Unclosed tags, quotes, comments or packet wrappers, or blank space, repeated: a pattern
    that looked past each to the end of the packet would take time growing as its square
    (minutes on 300 KB, hours on a few MB), and hang the batch."""
    def read(size: int) -> None:
        repeated = junk * (size // len(junk))
        for packet in (b"<x:xmpmeta><rdf:RDF>" + repeated,  # inside, or after what is well-nested
                       b"<x:xmpmeta><rdf:RDF><rdf:Description/></rdf:RDF>" + repeated):
            assert joined_xmp(packet, [], []) == packet  # names no extension
            assert split_xmp(packet) is None  # not well-nested, or no room: dropped, noted

    assert time_growth(read, 70_000) < 10  # over one segment: 4 times that, 280 KB


def _to(path: Path, out: Path, fmt: str, model: str) -> Path:
    """``path`` upscaled to ``fmt`` in ``out``, nothing said about XMP."""
    r = upscale(str(path), "-f", fmt, "-o", str(out), "-m", model)
    assert r.exit_code == 0, r.output
    assert "XMP" not in r.output
    return out / f"{path.stem}.{fmt}"


def test_a_stale_claim_does_not_hide_the_extension(folder: Path, tiny_model_file: str) -> None:
    """A packet already naming an extension (a stale claim, or a big XMP that came from a JPEG)
    keeps all it holds through JPEG: the claim written names the segments written."""
    stale = ' xmlns:xmpNote="http://ns.adobe.com/xmp/note/" xmpNote:HasExtendedXMP="' + "0" * 32 + '"'
    parts = [f'<rdf:Description rdf:about="" xmlns:p="p:/" p:n="{n}">{"D" * 3000}</rdf:Description>'
             for n in range(40)]
    info = PngInfo()
    info.add_itxt("XML:com.adobe.xmp", _packet(_creator(stale), *parts).decode())
    random_rgb().save(folder / "s.png", pnginfo=info)
    jpeg = _to(folder / "s.png", folder.parent / "jpg", "jpg", tiny_model_file)
    xmp = _xmp(_to(jpeg, folder.parent / "png", "png", tiny_model_file))
    assert all(f'p:n="{n}"'.encode() in xmp for n in range(40))
    assert b"<rdf:li>Jane</rdf:li>" in xmp and b"HasExtendedXMP" not in xmp


def test_jpeg_round_trips_leave_the_xmp_as_it_was(folder: Path, tiny_model_file: str) -> None:
    """Reading a JPEG drops the element that named its extension, so each trip through JPEG
    leaves the joined XMP as it was, not one empty element longer."""
    _with_extended_xmp(folder / "a.jpg")
    b = _to(folder / "a.jpg", folder.parent / "b", "jpg", tiny_model_file)
    c = _to(b, folder.parent / "c", "jpg", tiny_model_file)
    assert _xmp(c) == _xmp(b)
    assert _xmp(b).count(b"<rdf:Description") == 2  # the creator's, and the settings'


def test_padding_does_not_push_xmp_out_of_a_jpeg(folder: Path, tiny_model_file: str) -> None:
    """Padding (blank space left for editing in place) is not content: a small packet padded
    past 64 KB goes to JPEG without it, whole, in one segment."""
    info = PngInfo()
    info.add_itxt("XML:com.adobe.xmp", '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
                  + _packet(_creator()).decode() + " " * 70_000 + '<?xpacket end="w"?>')
    random_rgb().save(folder / "pad.png", pnginfo=info)
    main = Image.open(_to(folder / "pad.png", folder.parent / "out", "jpg", tiny_model_file))
    assert b"<rdf:li>Jane</rdf:li>" in main.info["xmp"]
    assert main.info["xmp"].endswith(b'</x:xmpmeta><?xpacket end="w"?>')
