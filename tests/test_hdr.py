"""HDR and wide-gamut files come back looking as they did: their colour code points (a PNG's
cICP, a HEIF's or AVIF's nclx) with a PNG's mDCv and cLLi stay where the output format has a
place; an ICC profile says what gAMA/cHRM or SDR code points say in formats without one; an HDR
image is refused, in one line, for a format that cannot say it is HDR; a gain map's promise is
not kept once the gain map is gone."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
from helpers import hand_png, png_chunk, random_rgb, upscale
from PIL import Image, ImageCms
from PIL.PngImagePlugin import PngInfo

pytestmark = pytest.mark.usefixtures("wide_console")
PQ = bytes([9, 16, 0, 1])  # BT.2020 primaries, PQ transfer, RGB, full range: HDR10
MDCV = struct.pack(">8H2I", 35400, 14600, 8500, 39850, 6550, 2300, 15635, 16450, 10000000, 1)
CLLI = struct.pack(">2I", 10000000, 4000000)


def _hdr_png(path: Path, *chunks: bytes) -> None:
    """A 24x16 RGB PNG with ``chunks`` (which Pillow does not write) before its pixels."""
    rows = b"".join(b"\0" + row.tobytes() for row in np.asarray(random_rgb(24, 16)))
    path.write_bytes(hand_png((24, 16), 8, 2, rows, b"".join(chunks)))


def _chunks_of(path: Path) -> dict[bytes, bytes]:
    """A PNG's cICP, mDCv and cLLi chunks, all before its pixels."""
    data, pos, out = path.read_bytes(), 8, {}
    while (kind := data[pos + 4:pos + 8]) != b"IDAT":
        length = struct.unpack_from(">I", data, pos)[0]
        if kind in (b"cICP", b"mDCv", b"cLLi"):
            out[kind] = data[pos + 8:pos + 8 + length]
        pos += 12 + length
    return out


def _avif_points(path: Path) -> tuple[int, int]:
    """The colour primaries and transfer of an AVIF's nclx box."""
    data = path.read_bytes()
    at = data.find(b"colrnclx") + 8
    return struct.unpack_from(">HH", data, at)


def test_a_png_keeps_its_mastering_display_and_light_levels(folder: Path,
                                                           tiny_model_file: str) -> None:
    """mDCv and cLLi say how bright an HDR10 image was mastered; Pillow drops them on saving."""
    _hdr_png(folder / "hdr.png", png_chunk(b"cICP", PQ), png_chunk(b"mDCv", MDCV),
             png_chunk(b"cLLi", CLLI))
    r = upscale(str(folder / "hdr.png"), "-m", tiny_model_file, "-o", str(folder / "out"))
    assert r.exit_code == 0, r.output
    assert _chunks_of(folder / "out" / "hdr.png") == {b"cICP": PQ, b"mDCv": MDCV, b"cLLi": CLLI}
    with Image.open(folder / "out" / "hdr.png") as im:
        im.load()  # the inserted chunks keep the file whole
        assert im.size == (48, 32)


@pytest.mark.parametrize("fmt", ["jpeg", "webp", "tiff", "bmp"])
def test_an_hdr_image_is_refused_where_the_format_cannot_say_so(folder: Path,
                                                               tiny_model_file: str,
                                                               fmt: str) -> None:
    """Shown as SDR sRGB, a PQ image looks washed out: one line, and nothing written."""
    _hdr_png(folder / "hdr.png", png_chunk(b"cICP", PQ))
    r = upscale(str(folder / "hdr.png"), "-m", tiny_model_file, "-o", str(folder / "out"),
                "--format", fmt)
    assert r.exit_code != 0
    assert "an HDR image (PQ transfer)" in r.output and "use PNG or AVIF" in r.output
    assert "Traceback" not in r.output
    assert not any((folder / "out").glob("hdr.*"))


def test_an_hdr_png_written_as_avif_says_pq_in_its_nclx_box(folder: Path,
                                                           tiny_model_file: str) -> None:
    """cICP overrides an ICC profile in a PNG; an AVIF viewer would take the profile over the
    nclx box, so the profile is not written."""
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    _hdr_png(folder / "hdr.png", png_chunk(b"iCCP", b"sRGB\0\0" + zlib.compress(srgb)),
             png_chunk(b"cICP", PQ), png_chunk(b"cLLi", CLLI))
    r = upscale(str(folder / "hdr.png"), "-m", tiny_model_file, "-o", str(folder / "out"),
                "--format", "avif")
    assert r.exit_code == 0, r.output
    assert _avif_points(folder / "out" / "hdr.avif") == (9, 16)
    assert "(cLLi) dropped" in r.output  # Pillow writes no clli box
    with Image.open(folder / "out" / "hdr.avif") as im:
        assert im.size == (48, 32) and "icc_profile" not in im.info


def test_an_hlg_avif_stays_hlg(folder: Path, tiny_model_file: str) -> None:
    """Pillow reads an AVIF's pixels but not its nclx box, and writes sRGB's."""
    random_rgb(24, 16).save(folder / "hlg.avif")
    data = bytearray((folder / "hlg.avif").read_bytes())
    at = data.find(b"colrnclx") + 8
    data[at:at + 4] = struct.pack(">HH", 9, 18)  # libavif wrote sRGB's (1, 13)
    (folder / "hlg.avif").write_bytes(data)
    r = upscale(str(folder / "hlg.avif"), "-m", tiny_model_file, "-o", str(folder / "out"))
    assert r.exit_code == 0, r.output
    assert _avif_points(folder / "out" / "hlg.avif") == (9, 18)
    r = upscale(str(folder / "hlg.avif"), "-m", tiny_model_file, "-o", str(folder / "out"),
                "--format", "png")
    assert r.exit_code == 0, r.output
    assert _chunks_of(folder / "out" / "hlg.png") == {b"cICP": bytes([9, 18, 0, 1])}


@pytest.mark.parametrize("primaries, transfer", [(9, 16), (12, 13)])
def test_a_heic_described_by_nclx_keeps_it_in_png(folder: Path, tiny_model_file: str,
                                                 primaries: int, transfer: int) -> None:
    """A phone's HDR (PQ) or Display P3 HEIC without an ICC profile comes back as a PNG whose
    cICP chunk says what the nclx box said, with no note of a loss."""
    pillow_heif = pytest.importorskip("pillow_heif")
    nclx = {"color_primaries": primaries, "transfer_characteristics": transfer,
            "matrix_coefficients": 9, "full_range_flag": 1}
    pillow_heif.from_pillow(random_rgb(24, 16)).save(folder / "p.heic", nclx_profile=nclx)
    r = upscale(str(folder / "p.heic"), "-m", tiny_model_file, "-o", str(folder / "out"))
    assert r.exit_code == 0, r.output
    assert _chunks_of(folder / "out" / "p.png") == {b"cICP": bytes([primaries, transfer, 0, 1])}
    assert "colour space" not in r.output and "dropped" not in r.output


def _to_srgb(profile: bytes, rgb: tuple[int, int, int]) -> np.ndarray:
    """``rgb`` in ``profile`` as sRGB, by littlecms."""
    src = ImageCms.ImageCmsProfile(io.BytesIO(profile))
    out = ImageCms.profileToProfile(Image.new("RGB", (1, 1), rgb), src,
                                    ImageCms.createProfile("sRGB"), outputMode="RGB")
    return np.asarray(out, dtype=float)[0, 0]


def _srgb_encode(linear: np.ndarray) -> np.ndarray:
    return 255 * np.where(linear <= 0.0031308, 12.92 * linear,
                          1.055 * np.clip(linear, 0, 1) ** (1 / 2.4) - 0.055)


def test_a_made_icc_profile_is_read_by_littlecms_as_the_chunks_say() -> None:
    """Linear light (gAMA 1.0) of sRGB primaries: grey 128 is sRGB's 188; BT.2020 primaries:
    a colour maps to sRGB by the published BT.2020-to-BT.709 matrix; grey stays grey."""
    from drcn_plugin.colourspace import icc_profile

    srgb = (.3127, .329, .64, .33, .3, .6, .15, .06)
    bt2020 = (.3127, .329, .708, .292, .17, .797, .131, .046)
    assert np.abs(_to_srgb(icc_profile(srgb, 1.0), (128, 128, 128)) - 188).max() <= 1
    assert np.abs(_to_srgb(icc_profile(srgb, 1.0), (255, 0, 0)) - (255, 0, 0)).max() <= 1
    linear = np.array([0.3, 0.5, 0.4])
    to709 = np.array([[1.6605, -0.5876, -0.0728], [-0.1246, 1.1329, -0.0083],
                      [-0.0182, -0.1006, 1.1187]])
    want = _srgb_encode(to709 @ linear)
    got = _to_srgb(icc_profile(bt2020, 1.0), tuple(round(v * 255) for v in linear))
    assert np.abs(got - want).max() <= 2, (got, want)
    grey = icc_profile(bt2020, None, grey=True)
    assert ImageCms.ImageCmsProfile(io.BytesIO(grey)).profile.xcolor_space.strip() == "GRAY"


def _gamma_png(path: Path, gamma: int, chromaticities: tuple[int, ...] | None = None) -> None:
    info = PngInfo()
    info.add(b"gAMA", struct.pack(">I", gamma))
    if chromaticities:
        info.add(b"cHRM", struct.pack(">8I", *chromaticities))
    Image.new("RGB", (24, 16), (128, 128, 128)).save(path, pnginfo=info)


@pytest.mark.parametrize("fmt", ["jpeg", "webp", "tiff", "avif"])
def test_an_unusual_gamma_travels_as_an_icc_profile(folder: Path, tiny_model_file: str,
                                                   fmt: str) -> None:
    """A linear-light PNG (gAMA 1.0) written as another format is shown as it was: its
    result's ICC profile shows its pixels as linear light, as gAMA 1.0 does."""
    _gamma_png(folder / "lin.png", 100000)
    r = upscale(str(folder / "lin.png"), "-m", tiny_model_file, "-o", str(folder / "out"),
                "--format", fmt)
    assert r.exit_code == 0, r.output
    assert "dropped" not in r.output
    out = next((folder / "out").iterdir())
    with Image.open(out) as im:
        profile = im.info["icc_profile"]
        centre = im.convert("RGB").getpixel((24, 16))
    want = _srgb_encode(np.asarray(centre) / 255)
    assert np.abs(_to_srgb(profile, centre) - want).max() <= 2, (centre, want)


@pytest.mark.parametrize("fmt", ["jpeg", "bmp"])
def test_an_srgb_gamma_needs_no_profile_and_no_note(folder: Path, tiny_model_file: str,
                                                   fmt: str) -> None:
    """gAMA 1/2.2 with sRGB's chromaticities is what any viewer assumes: nothing is lost, also
    where the format has no place for a profile (BMP named them as dropped)."""
    _gamma_png(folder / "s.png", 45455, (31270, 32900, 64000, 33000, 30000, 60000, 15000, 6000))
    r = upscale(str(folder / "s.png"), "-m", tiny_model_file, "-o", str(folder / "out"),
                "--format", fmt)
    assert r.exit_code == 0, r.output
    assert "dropped" not in r.output
    with Image.open(next((folder / "out").iterdir())) as im:
        assert "icc_profile" not in im.info


@pytest.mark.parametrize("primaries, kept", [(12, True), (22, False)])
def test_sdr_code_points_travel_as_an_icc_profile_or_are_named(
        folder: Path, tiny_model_file: str, primaries: int, kept: bool) -> None:
    """A Display P3 PNG (cICP 12, sRGB transfer) written as JPEG gets a Display P3 profile;
    code points no profile here makes (EBU 3213 primaries) are named as dropped."""
    _hdr_png(folder / "wide.png", png_chunk(b"cICP", bytes([primaries, 13, 0, 1])))
    r = upscale(str(folder / "wide.png"), "-m", tiny_model_file, "-o", str(folder / "out"),
                "--format", "jpeg")
    assert r.exit_code == 0, r.output
    assert ("colour signalling (cICP) dropped" in r.output) != kept
    with Image.open(folder / "out" / "wide.jpg") as im:
        profile = im.info.get("icc_profile")
    assert (profile is not None) == kept
    if kept:  # P3's pure green is beyond sRGB's: littlecms clips it, red and blue stay low
        green = _to_srgb(profile, (0, 255, 0))
        assert green[1] == 255 and green[0] < 60 and green[2] < 60


_ULTRA_HDR = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/'
              b'02/22-rdf-syntax-ns#"><rdf:Description xmlns:Container="http://ns.google.com/'
              b'photos/1.0/container/" xmlns:Item="http://ns.google.com/photos/1.0/container/'
              b'item/" xmlns:hdrgm="http://ns.adobe.com/hdr-gain-map/1.0/" xmlns:xmp="http://'
              b'ns.adobe.com/xap/1.0/" hdrgm:Version="1.0" xmp:Rating="4"><Container:Directory>'
              b'<rdf:Seq><rdf:li rdf:parseType="Resource"><Container:Item Item:Semantic="Primary"'
              b' Item:Mime="image/jpeg"/></rdf:li><rdf:li rdf:parseType="Resource"><Container:'
              b'Item Item:Semantic="GainMap" Item:Mime="image/jpeg" Item:Length="1234"/></rdf:li>'
              b'</rdf:Seq></Container:Directory></rdf:Description></rdf:RDF></x:xmpmeta>')
_APPLE = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/'
          b'22-rdf-syntax-ns#"><rdf:Description xmlns:HDRGainMap="http://ns.apple.com/HDRGainMap'
          b'/1.0/" xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="4"><HDRGainMap:'
          b'HDRGainMapVersion>65536</HDRGainMap:HDRGainMapVersion></rdf:Description></rdf:RDF>'
          b'</x:xmpmeta>')


@pytest.mark.parametrize("xmp", [_ULTRA_HDR, _APPLE], ids=["ultra-hdr", "apple"])
@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_a_gain_map_photo_no_longer_promises_its_gain_map(folder: Path, tiny_model_file: str,
                                                          xmp: bytes, fmt: str) -> None:
    """An Ultra HDR or iPhone JPEG holds its gain map as a second image (MPF) that the result
    does not have: its XMP must not send a viewer looking for one; the rest of the XMP stays."""
    gain_map = Image.new("L", (6, 4), 128)
    random_rgb(24, 16).save(folder / "hdr.jpg", "MPO", save_all=True, append_images=[gain_map],
                            xmp=xmp)
    r = upscale(str(folder / "hdr.jpg"), "-m", tiny_model_file, "-o", str(folder / "out"),
                "--format", fmt)
    assert r.exit_code == 0, r.output
    assert "HDR gain map dropped" in r.output
    with Image.open(next((folder / "out").iterdir())) as im:
        kept = im.info["xmp"] if fmt == "jpeg" else im.text["XML:com.adobe.xmp"].encode()
    promises = (b"<HDRGainMap:", b"hdrgm:Version", b"Container:Directory")
    assert not any(promise in kept for promise in promises)
    assert b'xmp:Rating="4"' in kept
    ElementTree.fromstring(kept)  # still well-formed XML


def _png16(path: Path) -> np.ndarray:
    """A 16-bit RGB PNG's samples, decoded here (filters None and Sub) as the PNG spec says."""
    data, pos, idat = path.read_bytes(), 8, b""
    width, height, depth, colour = struct.unpack_from(">IIBB", data, 16)
    assert (depth, colour) == (16, 2)
    while pos < len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        idat += data[pos + 8:pos + 8 + length] if kind == b"IDAT" else b""
        pos += 12 + length
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, -1)
    out = rows[:, 1:].astype(np.uint32)
    for y in range(height):
        assert rows[y, 0] in (0, 1)
        if rows[y, 0] == 1:
            for x in range(6, out.shape[1]):
                out[y, x] = (out[y, x] + out[y, x - 6]) % 256
    pairs = out.reshape(height, width, 3, 2)
    return (pairs[..., 0] << 8 | pairs[..., 1]).astype(np.uint16)


def test_a_10_bit_hdr_heic_comes_back_as_a_16_bit_png(folder: Path,
                                                     tiny_model_file: str) -> None:
    """PQ at 8 bits bands in gradients: the PNG keeps the HEIC's 10 bits and its code points;
    Pillow still reads it (at 8 bits), as other readers do."""
    pillow_heif = pytest.importorskip("pillow_heif")
    ramp = np.linspace(0, 65535, 24 * 16 * 3).astype(np.uint16).reshape(16, 24, 3)
    heic = pillow_heif.from_bytes(mode="RGB;16", size=(24, 16), data=ramp.tobytes())
    heic.save(folder / "pq.heic", quality=-1, color_primaries=9, transfer_characteristics=16,
              matrix_coefficients=9, full_range_flag=1)
    r = upscale(str(folder / "pq.heic"), "-m", tiny_model_file, "-o", str(folder / "out"))
    assert r.exit_code == 0, r.output
    assert "8 bits" not in r.output
    out = folder / "out" / "pq.png"
    assert _chunks_of(out) == {b"cICP": PQ}
    deep = _png16(out)
    assert deep.shape == (32, 48, 3) and len(np.unique(deep)) > 256
    with Image.open(out) as im:
        assert np.abs(np.asarray(im.convert("RGB"), dtype=int) - (deep >> 8)).max() <= 1
    r = upscale(str(folder / "pq.heic"), "-m", tiny_model_file, "-o", str(folder / "out"),
                "--format", "avif")
    assert r.exit_code == 0, r.output
    assert "Pillow writes AVIF colour at 8 bits" in r.output


@pytest.mark.parametrize("colour", ["icc", "srgb"])
def test_light_levels_a_format_cannot_hold_are_named_beside_a_profile(
        folder: Path, tiny_model_file: str, colour: str) -> None:
    """mDCv/cLLi beside an ICC profile, or beside cICP code points that say sRGB, have no place
    in a JPEG: the note names them instead of losing them without a word."""
    if colour == "icc":
        srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
        first = png_chunk(b"iCCP", b"sRGB\0\0" + zlib.compress(srgb))
    else:
        first = png_chunk(b"cICP", bytes([1, 13, 0, 1]))
    _hdr_png(folder / "hdr.png", first, png_chunk(b"mDCv", MDCV), png_chunk(b"cLLi", CLLI))
    r = upscale(str(folder / "hdr.png"), "-m", tiny_model_file, "-o", str(folder / "out"),
                "--format", "jpeg")
    assert r.exit_code == 0, r.output
    assert "colour signalling (mDCv, cLLi) dropped" in " ".join(r.output.split())
