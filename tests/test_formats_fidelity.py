"""Pixels and metadata that must survive reading and writing: orientation of every TIFF mode,
transparency, lossless WebP, 16-bit and grey+alpha sources, colour profiles, stale Photoshop
data, what BMP and JPEG cannot hold, and outputs that cannot be written."""

from __future__ import annotations

import io
import itertools
import struct
from pathlib import Path

import numpy as np
import pytest
from helpers import hand_png, png_chunk, upscale
from PIL import Image

from drcn_plugin import engine
from drcn_plugin.colourspace import SRGB_CHROMATICITIES, icc_profile
from drcn_plugin.compression import is_lossy
from drcn_plugin.imagefile import read_image
from drcn_plugin.profiles import srgb_profile

pytestmark = pytest.mark.usefixtures("wide_console")

# How a stored image is turned upright for each EXIF orientation.
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
            4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
            6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}


def _ramp(h: int = 12, w: int = 18) -> np.ndarray:
    """Every pixel different, so a wrong turn or a scrambled row shows."""
    return (np.arange(h * w).reshape(h, w) * 7 % 251).astype(np.uint8)


@pytest.mark.parametrize("mode", ["L", "P", "I;16", "I;16B", "RGB"])
@pytest.mark.parametrize("compression", [None, "tiff_lzw"])
def test_tiff_of_every_mode_is_turned_upright(tmp_path: Path, mode: str,
                                              compression: str | None) -> None:
    """Uncompressed L, P and 16-bit grey TIFFs with orientation 5-8 (which Pillow memory-maps
    with the turned size) come back upright and unscrambled, like every other mode."""
    ramp = _ramp()
    stored = {"L": Image.fromarray(ramp), "P": Image.fromarray(ramp).convert("P"),
              "I;16": Image.fromarray(ramp.astype(np.uint16) * 257),
              "I;16B": Image.fromarray((ramp.astype(np.uint16) * 257).astype(">u2")),
              "RGB": Image.fromarray(np.stack([ramp, 255 - ramp, ramp // 2], -1))}[mode]
    for value in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = value
        path = tmp_path / f"o{value}.tif"
        stored.save(path, exif=exif, **({"compression": compression} if compression else {}))
        with Image.open(path) as check:  # libtiff compresses big-endian 16-bit as little
            assert check.mode == mode or (compression, mode) == ("tiff_lzw", "I;16B")
        upright = stored.transpose(_UPRIGHT[value]) if value > 1 else stored
        expected = np.asarray(upright.convert("RGB") if mode == "P" else upright)
        array, info = read_image(path)
        assert array.shape == expected.shape and np.array_equal(array, expected), value
        assert info.exif is None or info.exif.get(0x0112, 1) == 1


def test_turned_grey_tiff_is_upscaled_upright(folder: Path, tiny_model_file: str) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(_ramp(40, 60)).save(folder / "o6.tif", exif=exif)
    r = upscale(str(folder / "o6.tif"), "-m", tiny_model_file, "--scale", "2", "-o",
                str(folder / "out"))
    assert r.exit_code == 0, r.output
    assert Image.open(folder / "out" / "o6.tif").size == (80, 120)


def _png16(path: Path, array: np.ndarray, colour_type: int, trns: bytes = b"",
           chunks: bytes = b"") -> None:
    """A 16-bit PNG (Pillow cannot write 16-bit colour): colour type 2 RGB, 4 grey+alpha, 6 RGBA;
    ``chunks`` go before its pixels."""
    h, w = array.shape[:2]
    rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in array)
    path.write_bytes(hand_png((w, h), 16, colour_type, rows,
                              (png_chunk(b"tRNS", trns) if trns else b"") + chunks))


@pytest.mark.parametrize("colour_type, channels", [(2, 3), (6, 4), (4, 2)])
def test_16_bit_png_colour_is_read_at_16_bits(tmp_path: Path, colour_type: int,
                                              channels: int) -> None:
    """Pillow reads 16-bit colour (and grey with alpha) as 8 bits; the low byte of each sample
    is read too."""
    deep = np.random.default_rng(0).integers(0, 65536, (7, 9, channels), dtype=np.uint16)
    _png16(tmp_path / "d.png", deep, colour_type)
    array, info = read_image(tmp_path / "d.png")
    assert array.dtype == np.uint16 and np.array_equal(array, deep) and not info.notes


@pytest.mark.parametrize("orientation", range(2, 9))
def test_a_turned_16_bit_png_is_read_upright_at_16_bits(tmp_path: Path, orientation: int) -> None:
    """A 16-bit PNG with an EXIF orientation (an eXIf chunk) is read upright and at 16 bits:
    each byte of each sample turns as Pillow turns 8-bit colour."""
    deep = np.random.default_rng(1).integers(0, 65536, (5, 7, 3), dtype=np.uint16)
    exif = Image.Exif()
    exif[0x0112] = orientation
    _png16(tmp_path / "t.png", deep, 2, chunks=png_chunk(b"eXIf", exif.tobytes()))
    array, info = read_image(tmp_path / "t.png")
    high, low = (np.asarray(Image.fromarray((deep >> s & 255).astype(np.uint8))
                            .transpose(_UPRIGHT[orientation])) for s in (8, 0))
    assert array.dtype == np.uint16 and not info.notes, info.notes
    assert np.array_equal(array, high.astype(np.uint16) << 8 | low)


def test_a_16_bit_rgb_transparent_colour_read_at_8_bits_is_named_when_dropped(
        tmp_path: Path) -> None:
    """An animated PNG's 16-bit colour is read at 8 bits (its first frame, by Pillow), where the
    16-bit key can match nothing exactly (a still one's is alpha: test_deep_transparency)."""
    rgb = np.zeros((6, 8, 3), np.uint16) + np.array([1000, 2000, 3000], np.uint16)
    rgb[3:] = 40000
    _png16(tmp_path / "k.png", rgb, 2, trns=struct.pack(">3H", 1000, 2000, 3000),
           chunks=png_chunk(b"acTL", struct.pack(">II", 2, 0)))  # 2 frames, looping
    array, info = read_image(tmp_path / "k.png")
    assert array.shape == (6, 8, 3)
    assert "transparent colour dropped: Pillow reads 16-bit colour as 8 bits" in info.notes
    assert any(n.startswith("its animation is damaged or cut short") for n in info.notes)


@pytest.mark.parametrize("mode, key", [("RGB", (255, 0, 255)), ("L", 7)])
def test_png_transparent_colour_becomes_alpha(tmp_path: Path, mode: str, key) -> None:
    """8-bit grey and RGB (16-bit: test_deep_transparency)."""
    ramp = _ramp()
    base = {"RGB": np.stack([ramp, ramp, ramp], -1), "L": ramp}[mode]
    base[:3, :4] = key  # the transparent colour in the top left corner only
    Image.fromarray(base).save(tmp_path / "t.png", transparency=key)
    array, info = read_image(tmp_path / "t.png")
    assert array.shape == ramp.shape + (4 if mode == "RGB" else 2,)
    alpha = array[..., -1]
    assert (alpha[:3, :4] == 0).all() and (alpha[3:] == 255).all() and (alpha[:, 4:] == 255).all()
    assert array.dtype == np.uint8 and np.array_equal(array[3:, :, 0], ramp[3:])
    assert not info.notes, info.notes


def _grey_png(path: Path, levels: np.ndarray, depth: int, trns: int) -> None:
    """A 1/2/4-bit grey PNG with a transparent level (Pillow writes only 8-bit grey)."""
    h, w = levels.shape
    rows = b""
    for row in levels:
        bits = "".join(format(int(v), f"0{depth}b") for v in row)
        bits += "0" * (-len(bits) % 8)
        rows += b"\0" + int(bits, 2).to_bytes(len(bits) // 8, "big")
    path.write_bytes(hand_png((w, h), depth, 0, rows, png_chunk(b"tRNS", struct.pack(">H", trns))))


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_low_bit_grey_transparent_level_becomes_alpha(tmp_path: Path, depth: int) -> None:
    levels = np.arange(6 * 8).reshape(6, 8) % (1 << depth)
    _grey_png(tmp_path / "g.png", levels, depth, trns=1)
    array, _ = read_image(tmp_path / "g.png")
    assert array.shape == (6, 8, 2)
    assert np.array_equal(array[..., 1] == 0, levels == 1)
    assert np.array_equal(array[..., 0], (levels * (255 // ((1 << depth) - 1))).astype(np.uint8))


@pytest.mark.parametrize("mode, key", [("RGB", (255, 0, 255)), ("L", 7), ("I;16", 5)])
def test_a_transparent_colour_no_pixel_has_adds_nothing(tmp_path: Path, mode: str, key) -> None:
    ramp = _ramp() + 10  # no pixel at the key
    base = {"RGB": np.stack([ramp, ramp, ramp], -1), "L": ramp,
            "I;16": ramp.astype(np.uint16) * 257}[mode]
    Image.fromarray(base).save(tmp_path / "t.png", transparency=key)
    array, info = read_image(tmp_path / "t.png")
    assert array.dtype == base.dtype and np.array_equal(array, base) and not info.notes


def test_a_5_6_5_bmp_is_not_called_16_bit_colour(tmp_path: Path) -> None:
    w, h = 4, 2
    pixels = np.arange(w * h, dtype="<u2").reshape(h, w) * 2049  # 5-6-5 packed
    body = pixels.tobytes()
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 16, 3, len(body), 2835, 2835, 0, 0)
    masks = struct.pack("<III", 0xF800, 0x07E0, 0x001F)
    offset = 14 + len(info) + len(masks)
    header = b"BM" + struct.pack("<IHHI", offset + len(body), 0, 0, offset)
    (tmp_path / "c.bmp").write_bytes(header + info + masks + body)
    array, info_ = read_image(tmp_path / "c.bmp")
    assert array.shape == (h, w, 3) and not any("16-bit" in n for n in info_.notes)


def test_transparent_colour_and_16_bit_sources_upscale(folder: Path,
                                                        tiny_model_file: str) -> None:
    """A tRNS colour gives RGBA; 16-bit colour stays 16-bit (Pillow reads the result at 8);
    16-bit grey with alpha stays 16-bit grey with alpha, which drcn reads back at 16 bits
    (Pillow reads it as RGBA at 8)."""
    ramp = _ramp().astype(np.uint16) * 257
    rgb = np.stack([ramp, ramp // 2, 65535 - ramp], -1)
    Image.fromarray(np.stack([_ramp()] * 3, -1)).save(folder / "t.png", transparency=(0, 0, 0))
    _png16(folder / "c16.png", rgb, 2)
    _png16(folder / "la16.png", np.stack([ramp, np.full_like(ramp, 40000)], -1), 4)
    r = upscale(str(folder), "-m", tiny_model_file, "-o", str(folder / "out"))
    assert r.exit_code == 0, r.output
    modes = {n: Image.open(folder / "out" / n).mode for n in ("t.png", "c16.png", "la16.png")}
    assert modes == {"t.png": "RGBA", "c16.png": "RGB", "la16.png": "RGBA"}
    assert "read and written as 8 bits" not in r.output
    assert (folder / "out" / "c16.png").read_bytes()[24] == 16  # IHDR's bit depth
    assert (folder / "out" / "la16.png").read_bytes()[24:26] == bytes([16, 4])  # grey+alpha
    grey_alpha, _ = read_image(folder / "out" / "la16.png")
    assert grey_alpha.dtype == np.uint16 and grey_alpha.shape[2] == 2
    assert (grey_alpha[..., 1] == 40000).all()  # not 40000 // 257 * 257: the low bytes read


@pytest.mark.parametrize(("args", "lossless_kept"), [
    (["-f", "same"], True), (["-f", "webp"], True), (["--quality", "60"], False)])
def test_lossless_webp_stays_lossless_unless_a_quality_is_given(
        folder: Path, tiny_model_file: str, args: list[str], lossless_kept: bool) -> None:
    Image.fromarray(np.stack([_ramp()] * 3, -1)).save(folder / "l.webp", lossless=True)
    Image.fromarray(np.stack([_ramp()] * 3, -1)).save(folder / "y.webp", quality=80)
    r = upscale(str(folder), "-m", tiny_model_file, *args, "-o", str(folder / "out"))
    assert r.exit_code == 0, r.output
    lossy = {}
    for name in ("l", "y"):
        with open(folder / "out" / f"{name}.webp", "rb") as f, Image.open(f) as im:
            lossy[name] = is_lossy(f, im)
    assert lossy == {"l": not lossless_kept, "y": True}


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _cmyk_profile() -> bytes:
    """A minimal CMYK printer profile (352 bytes): one lut16 A2B0 tag from a 2-point CMYK grid
    to Lab, with coloured inks unlike Pillow's plain conversion."""
    clut = b""
    for c, m, y, k in itertools.product((0, 1), repeat=4):
        light = (1 - 0.7 * k) * (1 - 0.25 * (c + m + y))
        a, b = 60 * (m - c), 60 * (y - m)
        clut += struct.pack(">3H", round(light * 0xFF00), round((a + 128) * 256),
                            round((b + 128) * 256))
    ramp = struct.pack(">2H", 0, 0xFFFF)
    lut = (b"mft2" + bytes(4) + bytes([4, 3, 2, 0])
           + b"".join(_s15(v) for v in (1, 0, 0, 0, 1, 0, 0, 0, 1))
           + struct.pack(">2H", 2, 2) + ramp * 4 + clut + ramp * 3)
    return _icc(b"prtrCMYKLab ", [(b"A2B0", lut)])


def _icc(kind: bytes, tags: list[tuple[bytes, bytes]]) -> bytes:
    """An ICC v2 profile: ``kind`` is class, colour space and PCS; a D50 white point is added."""
    d50 = _s15(0.9642) + _s15(1.0) + _s15(0.8249)
    tags = [*tags, (b"wtpt", b"XYZ " + bytes(4) + d50)]
    offset = 128 + 4 + 12 * len(tags)
    table, data = struct.pack(">I", len(tags)), b""
    for sig, body in tags:
        table += sig + struct.pack(">2I", offset + len(data), len(body))
        data += body + bytes(-len(body) % 4)
    header = (struct.pack(">I", offset + len(data)) + bytes(4) + struct.pack(">I", 0x02100000)
              + kind + bytes(12) + b"acsp" + bytes(28) + d50 + bytes(48))
    return header + table + data


def _cmyk() -> Image.Image:
    ramp = _ramp()
    return Image.fromarray(np.stack([ramp, 255 - ramp, ramp // 2, ramp // 3], -1), "CMYK")


def test_cmyk_goes_through_its_profile_to_srgb(folder: Path, tiny_model_file: str) -> None:
    """CMYK with a profile is converted through it to sRGB and tagged sRGB."""
    cms = pytest.importorskip("PIL.ImageCms")
    profile = _cmyk_profile()
    _cmyk().save(folder / "c.tif", icc_profile=profile)
    array, info = read_image(folder / "c.tif")
    expected = cms.profileToProfile(_cmyk(), cms.ImageCmsProfile(io.BytesIO(profile)),
                                    cms.createProfile("sRGB"), outputMode="RGB")
    assert np.array_equal(array, np.asarray(expected))
    assert np.abs(array.astype(int) - np.asarray(_cmyk().convert("RGB"))).mean() > 20
    assert "CMYK converted to sRGB through its ICC profile" in info.notes
    r = upscale(str(folder / "c.tif"), "-m", tiny_model_file, "-f", "png", "-o",
                str(folder / "out"))
    assert r.exit_code == 0, r.output
    embedded = Image.open(folder / "out" / "c.png").info["icc_profile"]
    assert cms.ImageCmsProfile(io.BytesIO(embedded)).profile.xcolor_space.strip() == "RGB"


def test_cmyk_with_an_unusable_profile_is_converted_plainly(tmp_path: Path) -> None:
    cms = pytest.importorskip("PIL.ImageCms")
    srgb = cms.ImageCmsProfile(cms.createProfile("sRGB")).tobytes()  # RGB: wrong for CMYK
    _cmyk().save(tmp_path / "c.tif", icc_profile=srgb)
    array, info = read_image(tmp_path / "c.tif")
    assert np.array_equal(array, np.asarray(_cmyk().convert("RGB")))
    assert info.icc_profile is None
    assert any(n.startswith("CMYK converted to RGB without its ICC profile, which cannot be used")
               for n in info.notes)


def test_jpeg_takes_images_whose_alpha_is_all_opaque(folder: Path, tiny_model_file: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """An all-opaque alpha (or a palette's unused transparent index) is dropped for JPEG."""
    ramp = _ramp()
    colour = np.stack([ramp, 255 - ramp, ramp // 2], -1)
    Image.fromarray(np.dstack([colour, np.full_like(ramp, 255)])).save(folder / "opaque.png")
    Image.fromarray(np.dstack([ramp, np.full_like(ramp, 255)]), "LA").save(folder / "la.png")
    palette = Image.fromarray(colour).quantize(16)
    palette.save(folder / "p.png", transparency=16)  # an index no pixel uses
    seen = np.dstack([colour, np.full_like(ramp, 255)])
    seen[-1, -1, 3] = 0  # one see-through pixel away from the probed corner
    Image.fromarray(seen).save(folder / "seen.png")
    r = upscale(str(folder), "-m", tiny_model_file, "-f", "jpg", "-o", str(folder / "out"))
    assert r.exit_code == 1, r.output
    modes = {n: Image.open(folder / "out" / f"{n}.jpg").mode for n in ("opaque", "la", "p")}
    assert modes == {"opaque": "RGB", "la": "L", "p": "RGB"}
    assert not (folder / "out" / "seen.jpg").exists() and "alpha" in r.output
    calls = []  # the see-through one is refused before its upscale
    monkeypatch.setattr(engine.Upscaler, "upscale", lambda *a, **k: calls.append(1))
    upscale(str(folder / "seen.png"), "-m", tiny_model_file, "-f", "jpg", "-o",
            str(folder / "out2"))
    assert calls == []


def _srgb_levels(linear: np.ndarray) -> np.ndarray:
    """8-bit levels of linear light on sRGB's curve (IEC 61966-2-1)."""
    v = linear.astype(np.float64) / 255
    return 255 * np.where(v <= 0.0031308, 12.92 * v, 1.055 * v ** (1 / 2.4) - 0.055)


@pytest.mark.parametrize(("fmt", "grey", "name"), [
    ("webp", True, ""), ("bmp", True, ""), ("bmp", False, ""),
    ("bmp", True, "GIMP built-in Linear sRGB, no gamma"), ("bmp", False, "Linear sRGB")])
def test_a_profile_the_output_cannot_carry_is_applied_not_dropped(
        folder: Path, tiny_model_file: str, fmt: str, grey: bool, name: str) -> None:
    """A grey profile in WebP (which stores grey as RGB) or any profile in a BMP cannot be
    carried; dropped with the pixels kept, a linear-light image shows 40-60 levels too dark.
    The pixels go through the profile to sRGB, against the PNG result that keeps the profile;
    one named "sRGB" too, as GIMP names its linear one (a name is no proof of sRGB's curve)."""
    pytest.importorskip("PIL.ImageCms")
    linear = icc_profile(SRGB_CHROMATICITIES, 1.0, grey=grey)
    if name:  # the description tag's text, changed in place
        linear = linear.replace(b"drcn: from the file's colour chunks", name.ljust(35).encode())
    ramp = _ramp()
    Image.fromarray(ramp if grey else np.dstack([ramp, ramp[::-1], ramp[:, ::-1]])).save(
        folder / "g.png", icc_profile=linear)
    said = {}
    for out_fmt in (fmt, "png"):
        lossless = ["--quality", "100"] if out_fmt == "webp" else []
        r = upscale(str(folder / "g.png"), "-m", tiny_model_file, "-f", out_fmt, *lossless,
                    "-o", str(folder / out_fmt))
        assert r.exit_code == 0, r.output
        said[out_fmt] = r.output
    with Image.open(folder / "png" / "g.png") as kept, Image.open(folder / fmt / f"g.{fmt}") as im:
        assert kept.info.get("icc_profile") == linear
        want = _srgb_levels(np.asarray(kept.convert("RGB")))
        got = np.asarray(im.convert("RGB")).astype(np.float64)
        tagged = im.info.get("icc_profile")
    assert np.abs(got - want).mean() < 2.0 and np.abs(got - want).max() <= 12
    assert np.abs(got - np.asarray(kept.convert("RGB"))).mean() > 20  # what dropping it gave
    assert tagged == (None if fmt == "bmp" else srgb_profile())
    why = "has no place for it" if fmt == "bmp" else "stores grey as RGB"
    assert f"{'grey' if grey else 'RGB'} converted to sRGB through its ICC profile: " \
           f"{fmt.upper()} {why}" in said[fmt] and "converted" not in said["png"]


@pytest.mark.parametrize("flag", ["--overwrite", "--skip-existing"])
@pytest.mark.parametrize("link", [False, True])
def test_an_output_name_taken_by_a_folder_is_refused_before_the_upscale(
        folder: Path, tiny_model_file: str, monkeypatch: pytest.MonkeyPatch, flag: str,
        link: bool) -> None:
    """A folder, or a link to one, is neither replaced nor counted as a result done."""
    Image.fromarray(_ramp()).save(folder / "a.png")
    Image.fromarray(_ramp()).save(folder / "b.png")
    taken = folder / "out" / "a.png"
    if link:
        (folder.parent / "elsewhere").mkdir()
        taken.parent.mkdir()
        taken.symlink_to(folder.parent / "elsewhere", target_is_directory=True)
    else:
        taken.mkdir(parents=True)
    calls = []
    upscale_one = engine.Upscaler.upscale
    monkeypatch.setattr(engine.Upscaler, "upscale",
                        lambda self, *a, **k: calls.append(1) or upscale_one(self, *a, **k))
    r = upscale(str(folder / "a.png"), str(folder / "b.png"), "-m", tiny_model_file,
                flag, "-o", str(folder / "out"))
    assert r.exit_code == 1
    kind = "a link to a folder" if link else "an existing folder"
    assert f"its output {taken} is {kind}" in r.output
    assert "Traceback" not in r.output and calls == [1]  # only b.png was upscaled
    assert taken.is_dir() and taken.is_symlink() == link and (folder / "out" / "b.png").is_file()


def _resource(number: int, data: bytes, name: bytes = b"") -> bytes:
    """One Photoshop image resource: ``8BIM``, id, Pascal name and data, each padded to even."""
    title = bytes([len(name)]) + name
    return (b"8BIM" + number.to_bytes(2, "big") + title + bytes(len(title) & 1)
            + len(data).to_bytes(4, "big") + data + bytes(len(data) & 1))


@pytest.mark.parametrize("segments", [1, 2])
def test_jpeg_iptc_travels_alone_to_jpeg_and_tiff(folder: Path, tiny_model_file: str,
                                                  segments: int) -> None:
    """A JPEG's IPTC (APP13 resource 0x0404), in the first Photoshop block or a later one,
    travels; its thumbnail and resolution resources describe the small original and stay."""
    iptc = b"\x1c\x02\x00\x00\x02\x00\x04\x1c\x02\x78\x00\x07Caption\x1c\x02\x19\x00\x03cat"
    resources = [_resource(0x03ED, bytes(16), b"res"), _resource(0x0404, iptc),
                 _resource(0x040C, b"thumbnail")]
    blocks = [b"".join(resources)] if segments == 1 else [resources[0], b"".join(resources[1:])]
    Image.fromarray(_ramp()).save(folder / "i.jpg", quality=95)
    data = (folder / "i.jpg").read_bytes()
    app13 = b"".join(b"\xff\xed" + (len(b) + 16).to_bytes(2, "big") + b"Photoshop 3.0\x00" + b
                     for b in blocks)
    (folder / "i.jpg").write_bytes(data[:2] + app13 + data[2:])  # right after SOI
    outputs = {}
    for fmt in ("jpg", "tiff", "png"):
        r = upscale(str(folder / "i.jpg"), "-m", tiny_model_file, "-f", fmt, "-o",
                    str(folder / fmt))
        assert r.exit_code == 0, r.output
        outputs[fmt] = r.output
    with Image.open(folder / "jpg" / "i.jpg") as out:
        app13 = [d for m, d in out.applist if m == "APP13"]
    assert app13 == [b"Photoshop 3.0\x00" + _resource(0x0404, iptc)]
    with Image.open(folder / "tiff" / "i.tif") as out:
        assert out.tag_v2[33723] == iptc
    assert "IPTC dropped: PNG has no place for it" in outputs["png"]
    assert "IPTC" not in outputs["jpg"] + outputs["tiff"]


def _with_app13(path: Path, block: bytes, room: int = 60000) -> None:
    """``path`` (a JPEG) with ``block`` in APP13 segments of at most ``room`` bytes each."""
    data = path.read_bytes()
    segments = b"".join(b"\xff\xed" + (len(part) + 16).to_bytes(2, "big") + b"Photoshop 3.0\x00"
                        + part for part in (block[i:i + room] for i in range(0, len(block), room)))
    path.write_bytes(data[:2] + segments + data[2:])


def test_iptc_over_one_segment_travels_whole(folder: Path, tiny_model_file: str) -> None:
    caption = b"\x1c\x02\x78" + (30000).to_bytes(2, "big") + b"c" * 30000
    iptc = b"\x1c\x02\x05\x00\x01T" + caption * 3 + b"\x1c\x02\x19\x00\x03dog"  # 90 KB
    Image.fromarray(_ramp()).save(folder / "big.jpg", quality=95)
    _with_app13(folder / "big.jpg", _resource(0x0404, iptc))
    for fmt in ("jpg", "tiff"):
        r = upscale(str(folder / "big.jpg"), "-m", tiny_model_file, "-f", fmt, "-o",
                     str(folder / fmt))
        assert r.exit_code == 0 and "IPTC" not in r.output, r.output
    with Image.open(folder / "jpg" / "big.jpg") as out:
        parts = [d[14:] for m, d in out.applist if m == "APP13"]
    assert len(parts) == 2 and b"".join(parts) == _resource(0x0404, iptc)
    with Image.open(folder / "tiff" / "big.tif") as out:
        assert out.tag_v2[33723] == iptc


def test_a_damaged_iptc_block_is_dropped_with_a_note(folder: Path, tiny_model_file: str) -> None:
    Image.fromarray(_ramp()).save(folder / "d.jpg", quality=95)
    _with_app13(folder / "d.jpg", _resource(0x0404, b"\x1c\x02\x05\x00\x01T")[:-4])  # cut short
    r = upscale(str(folder / "d.jpg"), "-m", tiny_model_file, "-o", str(folder / "out"))
    assert r.exit_code == 0 and "IPTC dropped: its Photoshop block is damaged" in r.output
    with Image.open(folder / "out" / "d.jpg") as out:
        assert not [m for m, _ in out.applist if m == "APP13"]

