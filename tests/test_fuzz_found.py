"""Failures a mutation fuzz of the reading path found (mutated seeds of every format read, run
through `drcn upscale`'s file job): each rebuilt here as a small file, read and checked for
writing back as the CLI does. Each is a way to give a catch-all error ("cannot decode image
(AssertionError)"), refuse a file whose pixels are whole, or read pixels wrong without a word."""

from __future__ import annotations

import io
import logging
import struct
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from helpers import hand_png, hand_tiff, random_rgb, seeded_drcn
from PIL import Image

from drcn_plugin.batch import Job, per_source_chooser, run_job
from drcn_plugin.compression import webp_quantizer
from drcn_plugin.encoding import check_writable, encode
from drcn_plugin.engine import Upscaler
from drcn_plugin.errors import BadImageError, DamagedImageError
from drcn_plugin.hub import choose_for_source
from drcn_plugin.imagefile import read_image


@pytest.mark.parametrize("compression", [None, "tiff_adobe_deflate"])
def test_a_multipage_tiff_turned_by_its_xmp_reads_upright(
        tmp_path: Path, compression: str | None) -> None:
    # Pillow turns a TIFF's pixels in load(), by its XMP's orientation where no tag states one;
    # counting the pages afterwards seeks back to the first, which re-reads the stored size and
    # the XMP: the pixels, decoded and turned again, must still fit the size
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/'
           b'02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" xmlns:tiff="http://ns.adobe.'
           b'com/tiff/1.0/" tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>')
    path = tmp_path / "scan.tif"
    random_rgb(20, 16).save(path, save_all=True, append_images=[random_rgb(20, 16, seed=1)],
                            tiffinfo={700: xmp}, compression=compression)
    array, info = read_image(path)
    assert array.shape == (20, 16, 3), "turned upright"
    assert info.frames == 2
    expected = np.asarray(random_rgb(20, 16).transpose(Image.Transpose.ROTATE_270))
    assert np.array_equal(array, expected)


def test_a_multipage_planar_tiff_reads_its_first_page_exactly(tmp_path: Path) -> None:
    # opened through libtiff (Pillow's own reader scrambles 16-bit planes); counting the pages
    # set the first page up again without it, and its 16-bit samples came out scrambled
    pixels = np.random.default_rng(0).integers(0, 65536, (6, 5, 3), dtype=np.uint16)
    path = tmp_path / "planes.tif"
    hand_tiff(path, pixels, 2, planar=True)
    data = bytearray(path.read_bytes())
    ifd = struct.unpack_from("<I", data, 4)[0]
    end = ifd + 2 + 12 * struct.unpack_from("<H", data, ifd)[0]
    struct.pack_into("<I", data, end, len(data))  # a second page: the same directory again
    path.write_bytes(bytes(data) + data[ifd:end] + bytes(4))
    array, info = read_image(path)
    assert info.frames == 2
    assert array.dtype == np.uint16 and np.array_equal(array, pixels)


def test_a_png_cut_short_after_its_pixel_data_reads_with_a_note(tmp_path: Path) -> None:
    # a download cut short in a text chunk after the pixels: Pillow fails reading that chunk
    # once the pixels are decoded, and reading the text then failed ("AssertionError")
    buf = io.BytesIO()
    random_rgb().save(buf, "PNG")
    data = buf.getvalue()
    path = tmp_path / "cut.png"
    path.write_bytes(data[:data.index(b"IEND") - 4] + struct.pack(">I", 1000)
                     + b"tEXtComment\0cut sh")
    array, info = read_image(path)
    assert np.array_equal(array, np.asarray(random_rgb()))
    assert any("after its pixel data" in n for n in info.notes), info.notes


def test_tiff_tags_libtiff_refuses_are_dropped_not_the_image(tmp_path: Path) -> None:
    # a resolution unit of 7 (TIFF knows 1-3): Pillow writes and reads it, libtiff (Pillow's
    # compressed TIFF writer) refuses to set it: the tag is dropped, not the whole result
    exif = Image.Exif()
    exif[0x0128] = 7
    exif[0x010F] = "Scanner"
    path = tmp_path / "odd.tif"
    random_rgb().save(path, exif=exif)
    array, info = read_image(path)
    check_writable(array, "TIFF", info, 2.0)
    notes: list[str] = []
    info.notes = notes
    out = io.BytesIO()
    encode(array, "TIFF", info, 2.0).write(out)
    with Image.open(out) as im:
        assert im.getexif().get(0x010F) == "Scanner" and 0x0128 not in im.getexif()
    assert any("libtiff" in n for n in notes), notes


def test_an_uncompressed_tiff_taller_than_its_strips_is_refused(tmp_path: Path) -> None:
    # its height tag raised to 4000 rows, its one strip holding 16: Pillow read the rest as
    # black, a 2 KB file so declaring any size (libtiff refuses a compressed one)
    path = tmp_path / "tall.tif"
    path.write_bytes(_retagged(_saved("TIFF", random_rgb(20, 16)), 257, kind=4, value=4000))
    with pytest.raises(BadImageError, match=r"tall\.tif: damaged TIFF: .*320 of the 80000 pixels"):
        read_image(path)


def test_a_damaged_lzw_tiff_is_one_line_with_libtiffs_reason(tmp_path: Path, capfd) -> None:
    # libtiff's LZW decoder names the file, not its own module, in its reason: Pillow's name for
    # every file, "tempfile.tif:"; taken for another writer's line, it went on to the terminal
    # beside drcn's, and the error said only "decoder error -2"
    buf = io.BytesIO()
    random_rgb().save(buf, "TIFF", compression="tiff_lzw")
    data = bytearray(buf.getvalue())
    data[12:20] = b"\xff" * 8  # inside the strip, which Pillow writes first: codes not yet made
    path = tmp_path / "lzw.tif"
    path.write_bytes(bytes(data))
    with pytest.raises(BadImageError, match=r"lzw\.tif: cannot decode image \(libtiff: Using "
                                            r"code not yet in table\)$"):
        read_image(path)
    assert capfd.readouterr().err == ""


def test_a_tiff_of_too_many_samples_is_one_line(tmp_path: Path, capsys,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # Pillow logs "More samples per pixel than can be decoded" before refusing the file: with
    # no logging set up (the CLI's), logging's last resort printed it at each opening
    monkeypatch.setattr(logging.root, "handlers", [])  # as outside pytest, which adds its own
    path = tmp_path / "spp.tif"
    hand_tiff(path, np.zeros((4, 5), np.uint8), 1, tags={277: [60000]})
    with pytest.raises(BadImageError, match=r"spp\.tif: .*samples per pixel"):
        read_image(path)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_a_float_tiff_of_nan_is_refused_before_its_corner_is_encoded(
        tmp_path: Path, value: float) -> None:
    # the check that the result can be written encodes a 2x2 corner first: its NaN cast to
    # levels put numpy's "invalid value encountered in cast" on the terminal beside the error
    # line, or made the error that instead of the engine's own
    pixels = np.full((6, 8), 0.5, np.float32)
    pixels[0, 0] = value
    path = tmp_path / "nan.tif"
    Image.fromarray(pixels).save(path)
    job = Job(path, tmp_path / "out" / "nan.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        outcome = run_job(job, Upscaler(seeded_drcn(), device="cpu"), 2.0, fmt="png")
    assert outcome.status == "failed"
    assert outcome.message == f"{path}: the image has NaN or infinite values"
    assert not job.target.parent.exists()


def test_an_interlaced_png_cut_short_in_its_pixels_says_so(tmp_path: Path) -> None:
    # reading its orientation decodes a PNG first (Pillow's getexif()), which failed and was
    # taken for damaged EXIF; Pillow's second try at an interlaced PNG then failed on its own
    # arguments: "cannot decode image (function takes at most 3 arguments (4 given))"
    data = hand_png((16, 12), 8, 2, bytes(12 * 49), interlaced=True)
    path = tmp_path / "cut.png"
    path.write_bytes(data[:data.index(b"IDAT") + 20])
    with pytest.raises(BadImageError, match=r"cut\.png: cannot decode image \(image file is "
                                            r"truncated\)$"):
        read_image(path)


def test_a_webp_whose_segments_set_negative_quantisers_is_upscaled(tmp_path: Path) -> None:
    # a VP8 key frame's segments may set their quantisers absolutely, to -127..127, which the
    # decoder clamps to 0..127. A lossy WebP whose frame header bytes are all ones sets them to
    # -127 and still decodes: its quantiser is read clamped, as the decoder reads it, and the
    # no-model choice gives it a model (unclamped, none of the strengths' bounds is that low)
    buf = io.BytesIO()
    random_rgb(40, 48).save(buf, "WEBP", quality=70)
    data = bytearray(buf.getvalue())
    at = data.find(b"VP8 ") + 8 + 10  # the first partition, past the frame tag and size
    data[at + 2: at + 9] = b"\xff" * 7
    src = tmp_path / "photo.webp"
    src.write_bytes(data)
    quantizer = webp_quantizer(io.BytesIO(data))
    assert quantizer is not None and 0 <= quantizer <= 127
    clean = Upscaler(seeded_drcn(), device="cpu", precision="fp32")
    outcome = run_job(Job(src, tmp_path / "out.png"), per_source_chooser(clean, device="cpu"), 2)
    assert outcome.status == "done", outcome.message
    assert outcome.model == choose_for_source(True, None, quantizer).label
    assert Image.open(tmp_path / "out.png").size == (80, 96)


def _saved(fmt: str, im: Image.Image | None = None) -> bytes:
    """``im`` (a small RGB image by default) saved by Pillow as ``fmt``."""
    buf = io.BytesIO()
    (im or random_rgb(6, 8)).save(buf, fmt)
    return buf.getvalue()


def _retagged(tiff: bytes, tag: int, kind: int, value: int | None = None) -> bytes:
    """A little-endian ``tiff``, its first directory's entry for ``tag`` given the field type
    ``kind`` (a count of 1), and ``value`` in place of the stored one if given."""
    data = bytearray(tiff)
    ifd = struct.unpack_from("<I", data, 4)[0]
    for k in range(struct.unpack_from("<H", data, ifd)[0]):
        at = ifd + 2 + 12 * k
        if struct.unpack_from("<H", data, at)[0] == tag:
            struct.pack_into("<HI", data, at + 2, kind, 1)
            if value is not None:
                struct.pack_into("<I", data, at + 8, value)
    return bytes(data)


FLOAT, UNDEFINED = 11, 7  # TIFF field types
PYTHONS_WORDS = ("object", "instances of", "unpack_from", "literal for int", "Token", "b'")


@pytest.mark.parametrize("name, data, fmt", [
    # Python's TypeError on decoding: "'float' object cannot be interpreted as an integer"
    ("float_offsets.tif", lambda: _retagged(_saved("TIFF"), 273, FLOAT), "TIFF"),
    # on opening: "'>' not supported between instances of 'bytes' and 'int'"
    ("bytes_samples.tif", lambda: _retagged(_saved("TIFF"), 277, UNDEFINED), "TIFF"),
    # a KeyError of no compression TIFF knows: "(its TIFF reader: 1.401298464324817e-45)"
    ("float_compression.tif", lambda: _retagged(_saved("TIFF"), 259, FLOAT), "TIFF"),
    # struct.error: "unpack_from requires a buffer of at least 2 bytes ..."
    ("cut.jpg", lambda: _saved("JPEG")[:5], "JPEG"),
    ("cut.bmp", lambda: _saved("BMP")[:14], "BMP"),
    ("count.ico", lambda: _saved("ICO")[:4] + b"\xff\0" + _saved("ICO")[6:20], "ICO"),
    # ValueError: "invalid literal for int() with base 10: b'8u'"
    ("literal.ppm", lambda: b"P6\n6 8u\n255\n" + bytes(144), "PPM"),
    # Pillow's own raise, of the file's bytes: "b'Token too long in file header: 999...'"
    ("token.ppm", lambda: b"P6\n" + b"9" * 20 + b" 8\n255\n" + bytes(144), "PPM"),
])
def test_a_file_pillow_trips_on_is_named_damaged_in_plain_words(
        tmp_path: Path, name: str, data: Callable[[], bytes], fmt: str) -> None:
    # a damaged file on which Python itself failed inside Pillow's reader gave Python's words
    # as the reason (or a bare number, a KeyError's): they say nothing to a user
    path = tmp_path / name
    path.write_bytes(data())
    with pytest.raises(DamagedImageError) as caught:
        read_image(path)
    assert str(caught.value) == f"{path}: damaged or not a valid {fmt} file"
    assert not any(words in str(caught.value) for words in PYTHONS_WORDS)
