"""A batch refuses from an image file's header, before its pixels are decoded, a result the checks
after decoding would refuse anyway (a format's size limits, memory), in the same words."""

from __future__ import annotations

import io
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from drcn_plugin import batch, devices, encoding, engine, memory
from drcn_plugin.batch import Job, Outcome, run_job
from drcn_plugin.colourspace import png_chunk
from drcn_plugin.headercheck import read_header, refuse_early
from drcn_plugin.imagefile import read_image
from drcn_plugin.sizing import TargetSize

ORIENTATION = 0x0112


@pytest.fixture(scope="module")
def upscaler(tiny_model_file: str) -> engine.Upscaler:
    return engine.Upscaler(tiny_model_file, device="cpu")


def _noise(mode: str, size: tuple[int, int]) -> Image.Image:
    bands = len(Image.new(mode, (1, 1)).getbands())
    shape = (size[1], size[0], bands)[:2 if bands == 1 else 3]
    pixels = np.random.default_rng(3).integers(0, 256, shape, np.uint8)
    return Image.fromarray(pixels).convert(mode)


def _not_decoded(path: Path) -> None:
    raise AssertionError(f"{path} was decoded")


def _wide_animated_webp(path: Path) -> Path:
    """A 2-frame animated WebP of 12x12 frames whose VP8X header claims an 8388609x12 canvas
    (a few hundred bytes; decoding it took 12-41 s and about 2 GB)."""
    frames = [Image.new("RGB", (12, 12), c) for c in ("red", "blue")]
    frames[0].save(path, "WEBP", save_all=True, append_images=frames[1:], duration=100,
                   lossless=True)
    data = bytearray(path.read_bytes())
    assert data[12:16] == b"VP8X"
    data[24:27] = (8388609 - 1).to_bytes(3, "little")  # the canvas width less one, 24 bits
    path.write_bytes(bytes(data))
    return path


def test_a_wide_animated_webp_is_refused_from_its_header(
        tmp_path: Path, upscaler: engine.Upscaler, monkeypatch: pytest.MonkeyPatch) -> None:
    """Upscaled x2 as WebP (16383 pixels a side at most) the claimed canvas cannot be written:
    refused in milliseconds, its pixels never decoded, nothing written."""
    source = _wide_animated_webp(tmp_path / "wide.webp")
    assert source.stat().st_size < 300
    monkeypatch.setattr(batch, "read_image", _not_decoded)
    job = Job(source, tmp_path / "out" / "wide.webp")
    t0 = time.perf_counter()
    outcome = run_job(job, upscaler, 2.0)
    assert time.perf_counter() - t0 < 1.0
    assert (outcome.status, outcome.message) == (
        "failed", f"{source}: WEBP images are at most 16383 pixels a side, the result would be "
                  "16777218x24: use PNG or TIFF")
    assert not (tmp_path / "out").exists()


def _png(path: Path, mode: str, size: tuple[int, int], **save) -> Path:
    _noise(mode, size).save(path, "PNG", **save)
    return path


def _turned_jpeg(path: Path) -> Path:
    """A JPEG stored 1100x8 whose EXIF orientation (6) turns it to 8x1100."""
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    _noise("RGB", (1100, 8)).save(path, "JPEG", exif=exif.tobytes())
    return path


def _animated(path: Path, fmt: str, frames: int = 4) -> Path:
    images = [_noise("RGB", (40, 30)).rotate(90 * k) for k in range(frames)]
    images[0].save(path, fmt, save_all=True, append_images=images[1:], duration=100,
                   **({"lossless": True} if fmt == "WEBP" else {}))
    return path


def _both(tmp_path: Path, source: Path, fmt: str, target: TargetSize,
          upscaler: engine.Upscaler, monkeypatch: pytest.MonkeyPatch) -> tuple[Outcome, Outcome]:
    """``source``'s job as a ``fmt`` result refused after decoding (the header's refusal left
    out), and refused from its header (decoding it fails the test)."""
    job = Job(source, tmp_path / "out" / f"result.{fmt}", fmt=fmt)
    with monkeypatch.context() as m:
        m.setattr(batch, "refuse_early", lambda *a: None)
        late = run_job(job, upscaler, target)
    with monkeypatch.context() as m:
        m.setattr(batch, "read_image", _not_decoded)
        early = run_job(job, upscaler, target)
    return late, early


def _room_for_one_result(monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory for the upscale of a 40x30 RGB still to 80x60 less a byte."""
    room = memory.memory_needed(30, 40, 3, 1, size=(60, 80)) - 1
    monkeypatch.setattr(memory, "_available_memory", lambda device: room)


def _room_for_two_results(monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory for one 40x30 frame's upscale to 80x60 and two results: not four frames'."""
    room = memory.memory_needed(30, 40, 3, 1, size=(60, 80)) + 2 * 80 * 60 * 3
    monkeypatch.setattr(memory, "_available_memory", lambda device: room)


CASES = {
    "side": (lambda p: _png(p / "a.png", "RGB", (1100, 8)), "webp", TargetSize(16.0),
             None, "WEBP images are at most 16383 pixels a side, the result would be "
                   "17600x128: use PNG or TIFF"),
    "turned": (lambda p: _turned_jpeg(p / "a.jpg"), "webp", TargetSize(width=128), None,
               "WEBP images are at most 16383 pixels a side, the result would be 128x17600"),
    "bmp grey": (lambda p: _png(p / "a.png", "L", (40, 30)), "bmp", TargetSize(2.0),
                 lambda m: m.setattr(encoding, "BMP_MAX_BYTES", 5000),
                 "BMP files hold at most 4 GiB, the result would be 80x60 (0.0 GiB)"),
    "bmp alpha": (lambda p: _png(p / "a.png", "RGBA", (40, 30)), "bmp", TargetSize(2.0),
                  lambda m: m.setattr(encoding, "BMP_MAX_BYTES", 20000),
                  "BMP files hold at most 4 GiB, the result would be 80x60"),
    "smaller": (lambda p: _png(p / "a.png", "RGB", (40, 30)), "png", TargetSize(width=20),
                None, "target size 20x15 is smaller than the input 40x30"),
    "memory": (lambda p: _png(p / "a.png", "RGB", (40, 30)), "png", TargetSize(2.0),
               _room_for_one_result, "a 80x60 result needs about"),
    "decoding": (lambda p: _png(p / "a.png", "RGB", (40, 30)), "png", TargetSize(2.0),
                 lambda m: m.setattr(devices, "host_available_memory", lambda: 1000),
                 "a 40x30 image needs about 37.5 KiB of memory to decode"),
    "frames": (lambda p: _animated(p / "a.png", "PNG"), "png", TargetSize(2.0),
               lambda m: m.setattr("drcn_plugin.animation.MAX_FRAMES", 3),
               "4 frames; drcn upscales animations of at most 3"),
    "animation memory": (lambda p: _animated(p / "a.webp", "WEBP"), "webp", TargetSize(2.0),
                         _room_for_two_results, "an animation of 4 frames of 80x60 needs about"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_what_decoding_would_refuse_is_refused_from_the_header_in_its_words(
        tmp_path: Path, upscaler: engine.Upscaler, monkeypatch: pytest.MonkeyPatch,
        case: str) -> None:
    """Each limit after decoding (the decoding's memory, the target, a format's side and a BMP's
    size, a still's and an animation's memory, the frame count) refuses the file from its header
    with the line decoding it first would end in; nothing is written either way."""
    make, fmt, target, limit, said = CASES[case]
    source = make(tmp_path)
    if limit is not None:
        limit(monkeypatch)
    late, early = _both(tmp_path, source, fmt, target, upscaler, monkeypatch)
    assert late.status == early.status == "failed"
    assert said in early.message, early.message
    assert early.message == late.message
    assert type(early.error) is type(late.error)
    assert not (tmp_path / "out").exists()


def _png16(path: Path, size: tuple[int, int]) -> Path:
    """A 16-bit RGB PNG, which Pillow opens as 8-bit RGB and drcn reads at 16 bits."""
    w, h = size
    rows = np.random.default_rng(5).integers(0, 65536, (h, w * 3), np.uint16).astype(">u2")
    raw = b"".join(b"\0" + row.tobytes() for row in rows)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">2I5B", w, h, 16, 2,
                                                                          0, 0, 0))
                     + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b""))
    return path


def _saved(path: Path, mode: str, fmt: str, **save) -> Path:
    _noise(mode, (6, 4)).save(path, fmt, **save)
    return path


def _keyed_png(path: Path) -> Path:
    """An RGB PNG with a transparent colour (tRNS) that one pixel has: read with alpha."""
    im = _noise("RGB", (6, 4))
    im.save(path, "PNG", transparency=im.getpixel((0, 0)))
    return path


def _turned(path: Path, fmt: str) -> Path:
    """A 6x4 image whose EXIF orientation (6) turns it to 4x6, saved as ``fmt``."""
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    if fmt == "HEIF":
        pillow_heif = pytest.importorskip("pillow_heif")
        pillow_heif.from_pillow(_noise("RGB", (6, 4))).save(path, quality=90, exif=exif.tobytes())
    else:
        _noise("RGB", (6, 4)).save(path, fmt, exif=exif.tobytes())
    return path


PLANES = [  # a file, the (channels, bytes a sample) its header settles (None: its pixels do)
    ("grey", lambda p: _saved(p / "a.png", "L", "PNG"), (1, 1)),
    ("1-bit", lambda p: _saved(p / "a.png", "1", "PNG"), (1, 1)),
    ("grey alpha", lambda p: _saved(p / "a.png", "LA", "PNG"), (2, 1)),
    ("rgb", lambda p: _saved(p / "a.png", "RGB", "PNG"), (3, 1)),
    ("rgba", lambda p: _saved(p / "a.webp", "RGBA", "WEBP", lossless=True), (4, 1)),
    ("palette", lambda p: _saved(p / "a.gif", "P", "GIF"), (3, 1)),
    ("palette alpha", lambda p: _saved(p / "a.png", "P", "PNG", transparency=0), (4, 1)),
    ("16-bit grey", lambda p: _saved(p / "a.png", "I;16", "PNG"), (1, 2)),
    ("float", lambda p: _saved(p / "a.tif", "F", "TIFF"), (1, 4)),
    ("cmyk", lambda p: _saved(p / "a.jpg", "CMYK", "JPEG"), (3, 1)),
    ("16-bit colour", lambda p: _png16(p / "a.png", (6, 4)), None),
    ("transparent colour", lambda p: _keyed_png(p / "a.png"), None),
    ("32-bit bmp", lambda p: _saved(p / "a.bmp", "RGBA", "BMP"), None),
    ("turned tiff", lambda p: _turned(p / "a.tif", "TIFF"), (3, 1)),
    ("turned heic", lambda p: _turned(p / "a.heic", "HEIF"), (3, 1)),
    ("png text", lambda p: _png_text(p / "a.png", "Software", 'tiff:Orientation="6"'), (3, 1)),
]


@pytest.mark.parametrize(("make", "planes"), [c[1:] for c in PLANES], ids=[c[0] for c in PLANES])
def test_the_header_says_the_size_and_planes_the_decoded_array_has(
        tmp_path: Path, make, planes: tuple[int, int] | None) -> None:
    """The header's upright size is the decoded array's (a TIFF's and a HEIF's orientation
    applied as their readers apply it). Where it settles the array's channels and sample size
    they are the decoded array's (its memory and a BMP's size are then checked before decoding); where the pixels
    decide (a transparent colour, a BMP's alpha byte, 16-bit colour) they are left open."""
    source = make(tmp_path)
    header = read_header(source)
    array, _ = read_image(source)
    assert header is not None and header.size == array.shape[:2]
    assert header.planes == planes
    if planes is not None:
        assert planes == (array.shape[2] if array.ndim == 3 else 1, array.itemsize)


def _after_pixels(path: Path, kind: bytes, data: bytes) -> Path:
    """An RGB PNG stored 40x10 with the chunk ``kind`` of ``data`` after its pixels."""
    png = io.BytesIO()
    _noise("RGB", (40, 10)).save(png, "PNG")
    end = png.getvalue().rindex(b"IEND") - 4
    path.write_bytes(png.getvalue()[:end] + png_chunk(kind, data) + png.getvalue()[end:])
    return path


def _exif6() -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    return exif.tobytes()


def _exif_after_pixels(path: Path) -> Path:
    """A PNG stored 40x10 whose EXIF orientation 6, after its pixels, turns it to 10x40."""
    return _after_pixels(path, b"eXIf", _exif6())


def test_a_header_that_leaves_the_size_open_refuses_nothing(
        tmp_path: Path, upscaler: engine.Upscaler) -> None:
    """A PNG's EXIF after its pixels (Pillow reads it only by decoding) may turn it, an icon's
    directory may claim another size than its image has, a file may be cut short or no image:
    the header says nothing, and the decoding decides. Upright, the PNG takes a width of 20."""
    turned = _exif_after_pixels(tmp_path / "turned.png")
    Image.new("RGB", (16, 16)).save(tmp_path / "icon.ico", sizes=[(16, 16)])
    (tmp_path / "cut.png").write_bytes(turned.read_bytes()[:30])
    (tmp_path / "text.png").write_text("not an image")
    for name in ("turned.png", "icon.ico", "cut.png", "text.png", "missing.png"):
        assert read_header(tmp_path / name) is None, name
        refuse_early(tmp_path / name, "PNG", TargetSize(width=20))
    outcome = run_job(Job(turned, tmp_path / "out.png"), upscaler, TargetSize(width=20))
    assert (outcome.status, outcome.out_size) == ("done", (20, 80)), outcome.message


def test_a_turned_jpeg_header_is_read_upright(tmp_path: Path) -> None:
    header = read_header(_turned_jpeg(tmp_path / "a.jpg"))
    assert header is not None and (header.size, header.frames) == ((1100, 8), 1)


XMP6 = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf'
        '-syntax-ns#"><rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" '
        'tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>')
RAW_EXIF6 = f"\nexif\n{len(_exif6()) - 6:8}\n{_exif6()[6:].hex()}\n"  # ImageMagick's, no "Exif\0\0"


def _png_text(path: Path, key: str, text: str, kind: str = "itxt", **add) -> Path:
    info = PngImagePlugin.PngInfo()
    getattr(info, f"add_{kind}")(key, text, **add)
    return _png(path, "RGB", (40, 10), pnginfo=info)


def _tiff_xmp(path: Path) -> Path:
    _noise("RGB", (40, 10)).save(path, "TIFF", tiffinfo={700: XMP6.encode()})
    return path


TURNED_WITHOUT_EXIF = {  # files stored 40x10 that Pillow's getexif() turns to 10x40, not by EXIF
    "png xmp": lambda p: _png_text(p / "a.png", "XML:com.adobe.xmp", XMP6),
    "png xmp after pixels": lambda p: _after_pixels(
        p / "a.png", b"iTXt", b"XML:com.adobe.xmp\0\0\0\0\0" + XMP6.encode()),
    "png raw exif": lambda p: _png_text(p / "a.png", "Raw profile type exif", RAW_EXIF6, "text"),
    "png raw exif zipped": lambda p: _png_text(p / "a.png", "Raw profile type exif", RAW_EXIF6,
                                               "text", zip=True),
    "tiff xmp": lambda p: _tiff_xmp(p / "a.tif"),
}


@pytest.mark.parametrize("case", list(TURNED_WITHOUT_EXIF))
def test_a_file_turned_by_xmp_or_text_exif_is_not_sized_unturned(
        tmp_path: Path, upscaler: engine.Upscaler, case: str) -> None:
    """Pillow takes an orientation from XMP or ImageMagick's hex EXIF where there is no EXIF
    (for a PNG, wherever the chunk is: it decodes to look): the header says the turned size or
    nothing, and a width the upright image takes is not refused as smaller than the stored."""
    source = TURNED_WITHOUT_EXIF[case](tmp_path)
    assert source.stat().st_size < 4000
    header = read_header(source)
    assert header is None or header.size == (40, 10), header
    outcome = run_job(Job(source, tmp_path / "out.png"), upscaler, TargetSize(width=30))
    assert (outcome.status, outcome.out_size) == ("done", (30, 120)), outcome.message
