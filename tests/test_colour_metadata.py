"""What says how an image's colours look travels with it: an Adobe RGB camera JPEG's EXIF
interoperability marker, a PNG's cICP chunk (HDR, wide gamut), XMP's pixel size, the copyright
of a PNG's text chunks."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from helpers import hand_png, png_chunk, random_rgb, upscale
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from drcn_plugin.imagefile import read_image

pytestmark = pytest.mark.usefixtures("wide_console")
INTEROP = 0xA005


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp", "avif"])
def test_an_adobe_rgb_camera_jpeg_keeps_its_interoperability_marker(
        folder: Path, tiny_model_file: str, fmt: str) -> None:
    """Cameras set to Adobe RGB embed no ICC profile: EXIF ColorSpace 'uncalibrated' with the
    interoperability index R03 is what tells a viewer the colours are Adobe RGB; without it
    they are shown as sRGB, dull."""
    exif = Image.Exif()
    exif[0x8769] = {0xA001: 65535, INTEROP: {1: "R03", 2: b"0100"}}
    random_rgb(24, 16).save(folder / "cam.jpg", exif=exif)
    r = upscale(str(folder / "cam.jpg"), "-m", tiny_model_file, "-o", str(folder / "out"),
                "--format", fmt)
    assert r.exit_code == 0, r.output
    assert "malformed" not in r.output
    out = next((folder / "out").iterdir())
    with Image.open(out) as im:
        tags = im.getexif()
        assert tags.get_ifd(0x8769)[0xA001] == 65535
        assert tags.get_ifd(INTEROP).get(1) == "R03"


def test_tiff_names_the_interoperability_marker_it_cannot_hold(folder: Path,
                                                              tiny_model_file: str) -> None:
    """Pillow's TIFF writer keeps the Exif sub-IFD but not the IFD nested in it: the marker is
    named, not left as a pointer to nothing."""
    exif = Image.Exif()
    exif[0x8769] = {0xA001: 65535, INTEROP: {1: "R03", 2: b"0100"}}
    random_rgb(24, 16).save(folder / "cam.jpg", exif=exif)
    r = upscale(str(folder / "cam.jpg"), "-m", tiny_model_file, "-o", str(folder / "out"),
                "--format", "tiff")
    assert r.exit_code == 0, r.output
    assert "interoperability index (R03: Adobe RGB) dropped" in r.output
    with Image.open(folder / "out" / "cam.tif") as im:
        tags = im.getexif().get_ifd(0x8769)
        assert tags[0xA001] == 65535 and INTEROP not in tags


def _cicp_png(path: Path) -> None:
    """A 24x16 RGB PNG whose cICP chunk says BT.2020 primaries, PQ transfer (HDR10), which
    Pillow reads past."""
    pixels = np.asarray(random_rgb(24, 16))
    rows = b"".join(b"\0" + row.tobytes() for row in pixels)
    path.write_bytes(hand_png((24, 16), 8, 2, rows, png_chunk(b"cICP", bytes([9, 16, 0, 1]))))


def _chunks(path: Path) -> dict[bytes, bytes]:
    data, pos, out = path.read_bytes(), 8, {}
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        out.setdefault(kind, data[pos + 8:pos + 8 + length])
        pos += 12 + length
    return out


def test_an_hdr_png_keeps_its_cicp_chunk(folder: Path, tiny_model_file: str) -> None:
    """Without its cICP chunk a PQ (HDR10) PNG is shown as sRGB: washed out and dim."""
    _cicp_png(folder / "hdr.png")
    r = upscale(str(folder / "hdr.png"), "-m", tiny_model_file, "-o", str(folder / "out"))
    assert r.exit_code == 0, r.output
    chunks = _chunks(folder / "out" / "hdr.png")
    assert chunks[b"cICP"] == bytes([9, 16, 0, 1])
    kinds = list(chunks)
    assert kinds.index(b"cICP") < kinds.index(b"IDAT")


_XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/'
        b'22-rdf-syntax-ns#"><rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" '
        b'xmlns:exif="http://ns.adobe.com/exif/1.0/" tiff:Orientation="6" '
        b"exif:PixelXDimension='24' exif:PixelYDimension=\"16\"><tiff:ImageWidth>24"
        b"</tiff:ImageWidth><tiff:ImageLength>16</tiff:ImageLength></rdf:Description>"
        b"</rdf:RDF></x:xmpmeta>")


@pytest.mark.parametrize("fmt", ["same", "png", "tiff", "webp"])
def test_xmp_states_the_results_upright_size(folder: Path, tiny_model_file: str,
                                             fmt: str) -> None:
    """XMP's pixel size (as Lightroom and exiftool write it, in attributes or elements) is the
    result's, upright, as the EXIF's is; the small original's would contradict the file."""
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 24x16, upright 16x24
    random_rgb(24, 16).save(folder / "cam.jpg", exif=exif, xmp=_XMP)
    r = upscale(str(folder / "cam.jpg"), "-m", tiny_model_file, "-o", str(folder / "out"),
                "--format", fmt)
    assert r.exit_code == 0, r.output
    with Image.open(next((folder / "out").iterdir())) as im:
        assert im.size == (32, 48)
        xmp = im.info.get("xmp") or im.getexif().get(700)
    xmp = xmp if isinstance(xmp, bytes) else xmp.encode()
    for tag in (b"exif:PixelXDimension='32'", b'exif:PixelYDimension="48"',
                b"<tiff:ImageWidth>32<", b"<tiff:ImageLength>48<", b'tiff:Orientation="1"'):
        assert tag in xmp, xmp


def _xmp_saying(attributes: str) -> bytes:
    """An XMP packet whose one description holds ``attributes``, written as XML allows."""
    return ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/'
            "22-rdf-syntax-ns#\"><rdf:Description rdf:about='' xmlns:tiff='http://ns.adobe.com/"
            f"tiff/1.0/' {attributes}/></rdf:RDF></x:xmpmeta>").encode()


@pytest.mark.parametrize("orientation", ["tiff:Orientation='6'", 'tiff:Orientation = "6"'])
@pytest.mark.parametrize("in_exif", [True, False])
def test_an_xmp_orientation_in_any_xml_quoting_is_applied_once(
        folder: Path, tiny_model_file: str, orientation: str, in_exif: bool) -> None:
    """XML allows single quotes and spaces around "=", which Pillow's reading of tiff:Orientation
    misses: the result was upright but its XMP still said 6, so every XMP-aware viewer turned
    it again (and one stated only there was not applied at all)."""
    exif = Image.Exif()
    if in_exif:
        exif[0x0112] = 6
    pixels = random_rgb(24, 16)  # stored 24x16, upright 16x24
    pixels.save(folder / "cam.png", exif=exif,
                pnginfo=_png_xmp(_xmp_saying(orientation)))
    r = upscale(str(folder / "cam.png"), "-m", tiny_model_file, "-o", str(folder / "out"),
                "--scale", "1")
    assert r.exit_code == 0, r.output
    with Image.open(folder / "out" / "cam.png") as im:
        xmp = im.info["xmp"]
        assert im.size == (16, 24) and b"6" not in xmp.split(b"tiff:Orientation")[1][:5], xmp
        assert np.array_equal(np.asarray(im), np.asarray(pixels.transpose(Image.ROTATE_270)))


def test_a_tiff_turned_by_pillow_is_not_turned_again_by_its_xmp_orientation(
        folder: Path) -> None:
    """Pillow turns a TIFF by its Orientation tag while loading and strips only the XMP
    orientation it reads (double quotes): a single-quoted tiff:Orientation='6' left behind must
    not make drcn take the pixels as unturned and turn them (or the XMP's size) a second time."""
    pixels = random_rgb(24, 16)  # stored 24x16, upright 16x24
    xmp = _xmp_saying("tiff:Orientation='6' tiff:ImageWidth='24' tiff:ImageLength='16'")
    pixels.save(folder / "side.tif", tiffinfo={0x0112: 6, 700: xmp})
    array, info = read_image(folder / "side.tif")
    assert np.array_equal(array, np.asarray(pixels.transpose(Image.ROTATE_270))), array.shape
    assert b"tiff:ImageWidth='16' tiff:ImageLength='24'" in info.about.xmp, info.about.xmp


def test_xmp_resolutions_are_swapped_with_the_exif_ones_when_the_turn_transposes(
        folder: Path, tiny_model_file: str) -> None:
    """A 300x150 dpi photo stored on its side: upright, its horizontal resolution is 150, which
    the EXIF and JFIF said and the XMP contradicted (600 across and 300 down, x2)."""
    exif = Image.Exif()
    exif[0x0112], exif[0x011A], exif[0x011B], exif[0x0128] = 6, 300, 150, 2
    xmp = _xmp_saying('tiff:XResolution="300/1" tiff:YResolution="150/1"')
    random_rgb(24, 16).save(folder / "side.jpg", exif=exif, xmp=xmp, dpi=(300, 150))
    r = upscale(str(folder / "side.jpg"), "-m", tiny_model_file, "-o", str(folder / "out"))
    assert r.exit_code == 0, r.output
    with Image.open(folder / "out" / "side.jpg") as im:
        written = im.getexif()
        assert (written[0x011A], written[0x011B], im.info["dpi"]) == (300, 600, (300, 600))
        for said in (b'tiff:XResolution="300/1"', b'tiff:YResolution="600/1"'):
            assert said in im.info["xmp"], im.info["xmp"]


def _png_xmp(packet: bytes) -> PngInfo:
    """PNG text chunks holding ``packet`` as XMP, where Photoshop and exiftool put it."""
    info = PngInfo()
    info.add_itxt("XML:com.adobe.xmp", packet.decode())
    return info


@pytest.mark.parametrize("fmt", ["jpeg", "webp", "tiff", "avif"])
def test_a_pngs_copyright_author_and_description_go_to_exif(folder: Path, tiny_model_file: str,
                                                            fmt: str) -> None:
    """PNG's standard keywords have EXIF tags in every other format: the copyright is not lost,
    and only text with no such place is named as dropped."""
    info = PngInfo()
    info.add_text("Copyright", "© 2024 Jane Doe")
    info.add_itxt("Author", "Jane Doe")
    info.add_text("Description", "harbour at dawn", zip=True)
    info.add_text("Mood", "calm")
    random_rgb(24, 16).save(folder / "art.png", pnginfo=info)
    r = upscale(str(folder / "art.png"), "-m", tiny_model_file, "-o", str(folder / "out"),
                "--format", fmt)
    assert r.exit_code == 0, r.output
    assert "text dropped" in r.output
    with Image.open(next((folder / "out").iterdir())) as im:
        exif = im.getexif()
    assert (exif[0x8298], exif[0x013B], exif[0x010E]) == ("(c) 2024 Jane Doe", "Jane Doe",
                                                          "harbour at dawn")


def test_a_png_with_only_carried_text_names_nothing_dropped(folder: Path,
                                                            tiny_model_file: str) -> None:
    info = PngInfo()
    info.add_text("Copyright", "Jane Doe")
    random_rgb(24, 16).save(folder / "art.png", pnginfo=info)
    r = upscale(str(folder / "art.png"), "-m", tiny_model_file, "-o", str(folder / "out"),
                "--format", "jpeg")
    assert r.exit_code == 0, r.output
    assert "dropped" not in r.output
    with Image.open(folder / "out" / "art.jpg") as im:
        assert im.getexif()[0x8298] == "Jane Doe"
