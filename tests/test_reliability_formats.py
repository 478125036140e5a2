"""Reliability of formats and metadata: EXIF of every shape to every format, content that does not
match its name, alpha in BMP, float range, messages for big ICC and full disks, impossible
mode/format pairs refused before the upscale."""

from __future__ import annotations

import errno
import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from helpers import png_chunk, random_rgb, upscale
from PIL import Image, PngImagePlugin
from typer.testing import CliRunner

from drcn_plugin import engine, writing
from drcn_plugin.cli import app
from drcn_plugin.errors import BadImageError, DamagedImageError
from drcn_plugin.imagefile import image_shape8, read_image

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("wide_console")
rgb = random_rgb





def _raw_exif(entries: list[tuple[int, int, int, bytes]]) -> bytes:
    """Big-endian EXIF with entries (tag, type, count, value of up to 4 bytes)."""
    ifd = struct.pack(">H", len(entries))
    for tag, typ, count, value in entries:
        ifd += struct.pack(">HHI", tag, typ, count) + value.ljust(4, b"\0")
    return b"Exif\0\0MM\0\x2a" + struct.pack(">I", 8) + ifd + struct.pack(">I", 0)


def test_exif_sub_ifd_goes_to_tiff(folder: Path, tiny_model_file: str) -> None:
    """Every camera photo has an EXIF sub-IFD; TIFF output keeps the EXIF."""
    ex = Image.Exif()
    ex[0x8769] = {0x8827: 100}
    ex[0x010F] = "Canon"
    rgb().save(folder / "p.jpg", exif=ex)
    out = folder.parent / "out"
    r = upscale(str(folder), "-o", str(out), "--format", "tiff", "--model", tiny_model_file)
    assert r.exit_code == 0, r.output
    exif = Image.open(out / "p.tif").getexif()
    assert exif.get(0x010F) == "Canon" and exif.get_ifd(0x8769).get(0x8827) == 100


def test_wrongly_typed_exif_tag_is_dropped_not_fatal(folder: Path, tiny_model_file: str) -> None:
    """XResolution stored as ASCII."""
    exif = _raw_exif([(0x011A, 2, 3, b"72\0"), (0x010F, 2, 4, b"Sony")])
    rgb().save(folder / "w.jpg", exif=exif)
    out = folder.parent / "out"
    r = upscale(str(folder), "-o", str(out), "--model", tiny_model_file)
    assert r.exit_code == 0 and "malformed EXIF" in r.output, r.output
    assert Image.open(out / "w.jpg").getexif().get(0x010F) == "Sony"


def test_exif_over_64k_is_shrunk_for_jpeg(folder: Path, tiny_model_file: str) -> None:
    """EXIF > 64 KB (a big maker note) written to JPEG."""
    ex = Image.Exif()
    ex[0x010F] = "Nikon"
    ex[0x8769] = {0x927C: b"m" * 70000, 0x8827: 200}
    rgb().save(folder / "big.png", exif=ex)
    out = folder.parent / "out"
    r = upscale(str(folder), "-o", str(out), "--format", "jpg", "--model", tiny_model_file)
    assert r.exit_code == 0 and "64 KB" in r.output, r.output
    exif = Image.open(out / "big.jpg").getexif()
    assert exif.get(0x010F) == "Nikon" and exif.get_ifd(0x8769).get(0x8827) == 200


def test_content_not_matching_extension(folder: Path, tiny_model_file: str) -> None:
    """A JPEG named x.png comes back as a PNG (what its name says)."""
    rgb().save(folder / "x.png", format="JPEG")
    out = folder.parent / "out"
    r = upscale(str(folder), "-o", str(out), "--model", tiny_model_file)
    assert r.exit_code == 0 and "content is JPEG" in r.output
    assert Image.open(out / "x.png").format == "PNG"


def test_a_format_that_is_only_read_is_written_as_png_with_a_note(folder: Path,
                                                                  tiny_model_file: str) -> None:
    rgb().save(folder / "x.jp2")
    out = folder.parent / "out"
    r = upscale(str(folder), "-o", str(out), "--model", tiny_model_file)
    assert r.exit_code == 0 and ".jp2 is not an output format: written as PNG" in r.output
    assert Image.open(out / "x.png").format == "PNG"


def test_rgba_bmp_keeps_alpha(folder: Path, tiny_model_file: str) -> None:
    """32-bit BI_RGB BMP with alpha; the result states its alpha in a BITMAPV4HEADER's mask,
    where readers that keep to the format (Pillow's) look: BI_RGB's fourth byte is unused."""
    a = np.dstack([np.asarray(rgb()), np.tile(np.arange(0, 200, 10, dtype=np.uint8), (16, 1))])
    Image.fromarray(a).save(folder / "a.bmp")
    assert read_image(folder / "a.bmp")[0].shape == (16, 20, 4)
    out = folder.parent / "out"
    assert upscale(str(folder), "-o", str(out), "--model", tiny_model_file).exit_code == 0
    back = read_image(out / "a.bmp")[0]
    assert back.shape == (32, 40, 4) and back[..., 3].min() == 0
    with Image.open(out / "a.bmp") as im:  # Pillow's own reader, as other programs read it
        assert im.mode == "RGBA" and im.info["dpi"] == pytest.approx((192, 192), rel=1e-3)
        assert np.array_equal(np.asarray(im), back)  # rows and channels in their places
    head = (out / "a.bmp").read_bytes()[:54]
    assert struct.unpack("<IIIHHI", head[2:6] + head[10:18] + head[26:34]) == (
        (out / "a.bmp").stat().st_size, 122, 108, 1, 32, 3)  # size, offset, V4, BI_BITFIELDS


def test_exif_resolution_scaled_and_swapped(folder: Path, tiny_model_file: str) -> None:
    """EXIF X/YResolution scaled like the DPI; non-square DPI swapped for orientation 6."""
    ex = Image.Exif()
    ex[0x0112] = 6
    ex[0x011A], ex[0x011B] = 100.0, 200.0
    rgb().save(folder / "r.jpg", exif=ex, dpi=(100, 200))
    out = folder.parent / "out"
    assert upscale(str(folder), "-o", str(out), "--model", tiny_model_file).exit_code == 0
    im = Image.open(out / "r.jpg")
    assert im.size == (32, 40)
    assert tuple(round(v) for v in im.info["dpi"]) == (400, 200)
    exif = im.getexif()
    assert (float(exif[0x011A]), float(exif[0x011B])) == (400.0, 200.0)


def test_float_tiff_stays_in_the_input_range(folder: Path, tiny_model_file: str) -> None:
    """Bicubic overshoots on edges; the result is clamped to the input's range."""
    board = np.kron(np.indices((4, 5)).sum(0) % 2, np.ones((4, 4))).astype(np.float32)
    Image.fromarray(0.2 + 0.6 * board).save(folder / "f.tif")
    out = folder.parent / "out"
    assert upscale(str(folder), "-o", str(out), "--model", tiny_model_file).exit_code == 0
    result = np.asarray(Image.open(out / "f.tif"))
    assert result.dtype == np.float32
    assert result.min() >= np.float32(0.2) and result.max() <= np.float32(0.8)


def test_big_icc_png_message(folder: Path, tiny_model_file: str) -> None:
    """A 2 MB ICC profile in a PNG is refused in words, not Pillow's constant name."""
    icc = np.random.default_rng(0).integers(0, 256, 2_000_000, np.uint8).tobytes()
    rgb().save(folder / "icc.png", icc_profile=icc)
    r = upscale(str(folder), "--model", tiny_model_file)
    assert r.exit_code == 1 and "ICC profile" in r.output and "MAX_TEXT_CHUNK" not in r.output


def test_a_png_holding_more_text_than_pillows_limit_is_refused_in_words(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Text chunks each within Pillow's limit but over its limit on all of a file's text (64 MB,
    made 1 MB here: 3 compressed chunks of 400 KB) are refused as what the file holds, in
    words, not as damage ("cannot decode image (Too much memory used in text chunks: ...)")."""
    monkeypatch.setattr(PngImagePlugin, "MAX_TEXT_MEMORY", 1 << 20)
    text = b"".join(png_chunk(b"zTXt", b"note%d\0\0" % i + zlib.compress(b"x" * 400_000))
                    for i in range(3))
    still = io.BytesIO()
    rgb(6, 5).save(still, "PNG")
    data = still.getvalue()
    pixels = data.index(b"IDAT") - 4
    (tmp_path / "t.png").write_bytes(data[:pixels] + text + data[pixels:])
    with pytest.raises(BadImageError) as e:
        read_image(tmp_path / "t.png")
    assert not isinstance(e.value, DamagedImageError)
    assert str(e.value) == f"{tmp_path / 't.png'}: its text chunks hold more text in all than " \
        "Pillow's 1 MB safety limit"


def test_disk_full_while_writing_tiff(folder: Path, tiny_model_file: str, monkeypatch) -> None:
    """libtiff reports a full disk as "encoder error -2"."""
    from PIL import TiffImagePlugin

    rgb().save(folder / "a.tif")
    real_save = TiffImagePlugin._save

    def full(im, fp, filename):
        if not hasattr(fp, "name"):  # the check before upscaling, in memory
            return real_save(im, fp, filename)
        raise OSError("encoder error -2 when writing image file")

    monkeypatch.setattr(TiffImagePlugin, "_save", full)
    monkeypatch.setitem(Image.SAVE, "TIFF", full)
    monkeypatch.setattr(writing.shutil, "disk_usage", lambda p: os.statvfs_result if False
                        else type("U", (), {"free": 0})())
    out = folder.parent / "out"
    r = upscale(str(folder), "-o", str(out), "--model", tiny_model_file)
    assert r.exit_code == 1 and "disk full" in r.output, r.output
    assert list(out.iterdir()) == []


def test_a_refused_write_on_a_full_looking_file_system_gives_its_own_reason(
        tmp_path: Path, monkeypatch) -> None:
    """Pseudo and read-only file systems report no free space: the errno is the reason."""
    monkeypatch.setattr(writing.shutil, "disk_usage", lambda p: type("U", (), {"free": 0})())

    def refused(f) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    with pytest.raises(writing.WriteError, match="cannot write .*: Permission denied"):
        writing._atomic(tmp_path / "x.bin", True, refused)
    assert list(tmp_path.iterdir()) == []


def test_format_is_case_insensitive_and_pairs_checked_first(folder: Path, tiny_model_file: str,
                                                            monkeypatch) -> None:
    """``--format JPG``; LA to BMP and float to PNG are converted; RGBA to JPEG is refused
    before the upscale runs."""
    rgb().save(folder / "a.png")
    r = upscale(str(folder / "a.png"), "-o", str(folder.parent / "j"), "--format", "JPG",
                "--model", tiny_model_file)
    assert r.exit_code == 0 and (folder.parent / "j" / "a.jpg").exists()
    Image.new("LA", (8, 6), (100, 50)).save(folder / "la.png")
    Image.fromarray(np.full((6, 8), 0.5, np.float32)).save(folder / "f.tif")
    r = upscale(str(folder / "la.png"), "-o", str(folder.parent / "b"), "--format", "bmp",
                "--model", tiny_model_file)
    assert r.exit_code == 0, r.output
    assert read_image(folder.parent / "b" / "la.bmp")[0].shape == (12, 16, 4)
    r = upscale(str(folder / "f.tif"), "-o", str(folder.parent / "p"), "--format", "png",
                "--model", tiny_model_file)
    assert r.exit_code == 0 and Image.open(folder.parent / "p" / "f.png").mode.startswith("I")
    Image.new("RGBA", (8, 6)).save(folder / "rgba.png")
    called = []
    monkeypatch.setattr(engine.Upscaler, "upscale", lambda *a, **k: called.append(1))
    r = upscale(str(folder / "rgba.png"), "-o", str(folder.parent / "q"), "--format", "jpg",
                "--model", tiny_model_file)
    assert r.exit_code == 1 and "alpha" in r.output and called == []


_STORED_AS = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
              4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
              6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_270}


@pytest.mark.parametrize("kind", ["jpg", "tif", "tif-2-pages", "png", "webp"])
@pytest.mark.parametrize("value", range(2, 9))
def test_every_orientation_is_turned_upright_once(tmp_path: Path, kind: str, value: int) -> None:
    upright = np.zeros((20, 30, 3), np.uint8)
    upright[:8, :10] = (255, 0, 0)  # a red corner at the top left
    stored = Image.fromarray(upright).transpose(_STORED_AS[value])
    exif = Image.Exif()
    exif[0x0112] = value
    path = tmp_path / f"o.{kind.split('-')[0]}"
    extra = {"save_all": True, "append_images": [stored]} if kind == "tif-2-pages" else {}
    dpi = {} if kind == "webp" else {"dpi": (72, 144)}
    stored.save(path, exif=exif, **dpi, **extra, **({"quality": 95} if kind == "jpg" else {}))
    array, info = read_image(path)
    assert array.shape[:2] == (20, 30)
    assert array[2, 2, 0] > 200 and array[-2, -2, 0] < 50
    assert image_shape8(path) == (3, 20, 30), "training's header-only size turns it too"
    if dpi:
        assert info.dpi == pytest.approx((144, 72) if value >= 5 else (72, 144), abs=0.5)
    assert info.exif is None or info.exif.get(0x0112, 1) == 1


@pytest.mark.parametrize("name, save", [
    ("plain.tif", {}),
    ("exif.jpg", {"exif": Image.Exif()}),
    ("dpi.tif", {"dpi": (300, 300)}),
    ("dpi.jpg", {"dpi": (300, 300)}),
])
def test_only_a_stated_resolution_is_carried(tmp_path: Path, name: str, save: dict) -> None:
    if "exif" in save:
        save["exif"][0x010F] = "camera"  # EXIF without resolution tags, JFIF density unitless
    Image.new("RGB", (16, 16)).save(tmp_path / name, **save)
    _, info = read_image(tmp_path / name)
    assert info.dpi == (pytest.approx((300, 300)) if "dpi" in save else None)


_XMP = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/'
        '22-rdf-syntax-ns#"><rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" '
        'xmlns:xmp="http://ns.adobe.com/xap/1.0/" tiff:Orientation="6" xmp:Rating="5" '
        'tiff:XResolution="300/1"/>'
        '</rdf:RDF></x:xmpmeta>')


def _xmp_of(im: Image.Image) -> str:
    xmp = im.info.get("xmp", b"")
    return xmp.decode() if isinstance(xmp, bytes) else xmp


@pytest.mark.parametrize("fmt", ["png", "jpg", "webp", "tiff"])
def test_xmp_text_and_comments_travel(folder: Path, tiny_model_file: str, fmt: str) -> None:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_itxt("XML:com.adobe.xmp", _XMP)
    info.add_itxt("parameters", "a cat, ünïcode")
    info.add(b"gAMA", struct.pack(">I", 100000))
    info.add_text("Raw profile type exif", "stale copy of the EXIF")  # ImageMagick's
    random_rgb().save(folder / "p.png", pnginfo=info)
    random_rgb().save(folder / "j.jpg", xmp=_XMP.encode(), comment=b"shot on film")
    r = runner.invoke(app, ["upscale", str(folder / "p.png"), str(folder / "j.jpg"), "-m",
                            tiny_model_file, "-f", fmt, "-o", str(folder / "out")])
    assert r.exit_code == 0, r.output
    ext = {"tiff": "tif"}.get(fmt, fmt)
    for name in ("p", "j"):
        out = Image.open(folder / "out" / f"{name}.{ext}")
        xmp = _xmp_of(out)
        assert 'xmp:Rating="5"' in xmp and 'tiff:Orientation="1"' in xmp  # stored upright
        # scaled with the image, and, as the DPI, made the upright Y by the turn (6)
        assert 'tiff:YResolution="600/1"' in xmp
    png_out = Image.open(folder / "out" / f"p.{ext}")
    jpg_out = Image.open(folder / "out" / f"j.{ext}")
    if fmt == "png":
        assert png_out.text["parameters"] == "a cat, ünïcode" and png_out.info["gamma"] == 1.0
        assert not any(k.startswith("Raw profile") for k in png_out.text)
        assert jpg_out.text["Comment"] == "shot on film"
    elif fmt == "jpg":
        assert jpg_out.info["comment"] == b"shot on film"
    if fmt != "png":  # gAMA 1.0 travels as an ICC profile saying the same
        assert "icc_profile" in png_out.info and "colour signalling" not in r.output


@pytest.mark.parametrize("value", [1, 6])
def test_exif_pixel_dimensions_follow_the_result(folder: Path, tiny_model_file: str,
                                                 value: int) -> None:
    upright = Image.new("RGB", (30, 20), (50, 60, 70))
    stored = upright if value == 1 else upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = value
    exif[0x8769] = {0xA002: stored.width, 0xA003: stored.height, 0x9003: "2020:01:01 00:00:00"}
    stored.save(folder / "px.jpg", exif=exif)
    r = runner.invoke(app, ["upscale", str(folder / "px.jpg"), "-m", tiny_model_file, "-o",
                            str(folder / "out"), "--scale", "2"])
    assert r.exit_code == 0, r.output
    out = Image.open(folder / "out" / "px.jpg")
    tags = out.getexif().get_ifd(0x8769)
    assert out.size == (60, 40) and (tags[0xA002], tags[0xA003]) == (60, 40)
    assert tags[0x9003] == "2020:01:01 00:00:00"  # the other Exif tags travel as they were


@pytest.mark.parametrize(("channels", "fits", "over"), [(1, (65535, 65536), (65536, 65536)),
                                                     (3, (37837, 37837), (37837, 37838)),
                                                     (4, (32767, 32768), (32768, 32768))])
def test_a_bmp_past_4_gib_is_refused_before_the_upscale(channels: int, fits: tuple[int, int],
                                                       over: tuple[int, int]) -> None:
    """A BMP states its size in 32 bits: one past it is refused before the upscale, where
    Pillow refuses it only when writing it."""
    from drcn_plugin.encoding import check_writable
    from drcn_plugin.errors import BadOptionError
    from drcn_plugin.imagefile import ImageInfo

    array = np.zeros((4, 4, channels)[:2 if channels == 1 else 3], np.uint8)
    check_writable(array, "BMP", ImageInfo(format="PNG"), 2.0, size=fits)
    with pytest.raises(BadOptionError, match=r"BMP files hold at most 4 GiB, the result would be "
                                             rf"{over[1]}x{over[0]} \(4\.0 GiB\)"):
        check_writable(array, "BMP", ImageInfo(format="PNG"), 2.0, size=over)
