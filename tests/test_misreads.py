"""Files Pillow reads wrong without a word: a PNG whose compressed pixels end early (black rows),
an ICC profile no colour engine can use (copied into the result), a 16-bit TGA's alpha bit (read
inverted, or where the header declares none), PNG chunks whose checksum is wrong. Each is refused
in one line, dropped with a note, or read as the file means it."""

from __future__ import annotations

import io
import os
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from helpers import hand_png, png_chunk, random_rgb, tga16, upscale
from PIL import Image, TiffImagePlugin

from drcn_plugin import imagefile
from drcn_plugin.errors import BadImageError
from drcn_plugin.imagefile import image_shape8, read_image

pytestmark = pytest.mark.usefixtures("wide_console")

_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
          (0, 1, 1, 2))


def _units(pixels: np.ndarray, interlaced: bool) -> list[bytes]:
    """The filtered pixel data (filter 0) of an 8-bit RGB PNG, row by row, or pass by pass when
    ``interlaced`` (Adam7)."""
    if not interlaced:
        return [b"\0" + row.tobytes() for row in pixels]
    return [b"".join(b"\0" + row.tobytes() for row in pixels[y0::dy, x0::dx] if row.size)
            for x0, y0, dx, dy in _ADAM7]


def _png(pixels: np.ndarray, interlaced: bool = False, keep: int | None = None,
         idat_size: int = 1 << 20) -> bytes:
    """An 8-bit RGB PNG of ``pixels`` whose zlib stream is whole but holds only the first
    ``keep`` rows (passes when interlaced; all when None), in IDAT chunks of ``idat_size``."""
    h, w = pixels.shape[:2]
    return hand_png((w, h), 8, 2, b"".join(_units(pixels, interlaced)[:keep]),
                    interlaced=interlaced, idat_size=idat_size)


@pytest.mark.parametrize("interlaced", [False, True])
def test_a_png_whose_pixel_data_ends_early_is_refused_not_read_black(
        tmp_path: Path, interlaced: bool) -> None:
    """A zlib stream that ends after whole rows (or passes) leaves the rest black in Pillow; one
    cut inside a row it already refuses as truncated."""
    pixels = np.asarray(random_rgb(20, 13))
    black = pixels.copy()
    black[-1, -1] = 0  # a last pixel as missing rows leave it: inflated again to be sure
    whole = tmp_path / "whole.png"
    whole.write_bytes(_png(black, interlaced, idat_size=100))  # several IDAT chunks
    assert np.array_equal(read_image(whole)[0], black)
    for keep in (1, len(_units(pixels, interlaced)) - 1):
        path = tmp_path / f"short-{keep}.png"
        path.write_bytes(_png(pixels, interlaced, keep))
        with Image.open(path) as im:  # what this guards against: Pillow fills in black
            im.load()
        with pytest.raises(BadImageError) as caught:
            read_image(path)
        assert str(caught.value).startswith(f"{path}: damaged PNG: its pixel data ends early")


@pytest.mark.parametrize("mode, bits", [("1", 1), ("L", 8), ("LA", 8), ("P", 2), ("P", 4),
                                        ("I;16", 16), ("RGB", 8), ("RGBA", 8)])
def test_whole_pngs_of_every_depth_are_not_taken_for_short_ones(tmp_path: Path, mode: str,
                                                                 bits: int) -> None:
    """Rows of 1, 2 and 4 bits end inside a byte; a black last pixel makes the check inflate."""
    rng = np.random.default_rng(1)
    top = {"1": 2, "P": 1 << bits, "I;16": 65536}.get(mode, 256)
    shape = (7, 13, len(mode)) if mode in ("LA", "RGB", "RGBA") else (7, 13)
    levels = rng.integers(1, top, shape)
    levels[-1, -1] = 0
    if mode == "1":
        im = Image.fromarray(levels.astype(bool))
    elif mode == "P":
        im = Image.fromarray(levels.astype(np.uint8), "P")
        im.putpalette(bytes(range(3 * top)))
    elif mode == "I;16":
        im = Image.fromarray(levels.astype(np.uint16))
    else:
        im = Image.fromarray(levels.astype(np.uint8), mode)
    im.save(tmp_path / "w.png", bits=bits)
    with Image.open(tmp_path / "w.png") as check:
        assert check.mode == mode and check.getpixel((12, 6)) in (0, (0,) * len(mode))
    array, _ = read_image(tmp_path / "w.png")
    assert array.shape[:2] == (7, 13)


def test_a_png_with_short_pixel_data_is_one_line_and_no_result(folder: Path,
                                                               tiny_model_file: str) -> None:
    (folder / "short.png").write_bytes(_png(np.asarray(random_rgb()), keep=9))
    random_rgb().save(folder / "good.png")
    out = folder.parent / "out"
    r = upscale(str(folder), "-o", str(out), "--model", tiny_model_file)
    assert r.exit_code == 1 and "1 done, 0 skipped, 1 failed" in r.output, r.output
    assert "short.png: damaged PNG: its pixel data ends early" in r.output
    assert "Traceback" not in r.output
    assert sorted(p.name for p in out.iterdir()) == ["good.png"]


def _srgb() -> bytes:
    cms = pytest.importorskip("PIL.ImageCms")
    return cms.ImageCmsProfile(cms.createProfile("sRGB")).tobytes()


@pytest.mark.parametrize("kind", ["garbage", "cut"])
@pytest.mark.parametrize("name", ["p.png", "j.jpg"])
def test_a_damaged_icc_profile_is_dropped_with_a_note_and_the_pixels_written(
        folder: Path, tiny_model_file: str, kind: str, name: str) -> None:
    """Garbage no colour engine opens, or a cut profile whose header opens but whose tags do
    not: copied through, it makes viewers fail on the result or ignore it."""
    srgb = _srgb()
    profile = {"garbage": b"not an ICC profile " * 10, "cut": srgb[:len(srgb) // 2]}[kind]
    random_rgb().save(folder / name, icc_profile=profile)
    random_rgb().save(folder / f"good-{name}", icc_profile=srgb)
    out = folder.parent / "out"
    r = upscale(str(folder), "-o", str(out), "--model", tiny_model_file)
    assert r.exit_code == 0, r.output
    assert r.output.count("ICC profile dropped: damaged") == 1, r.output
    with Image.open(out / name) as im:
        assert im.size == (40, 32) and "icc_profile" not in im.info
    with Image.open(out / f"good-{name}") as im:
        assert im.info["icc_profile"] == srgb


@pytest.mark.parametrize("rle", [False, True])
def test_a_16_bit_tga_reads_the_alpha_bit_its_header_declares(tmp_path: Path, rle: bool) -> None:
    """The top bit is alpha (1 opaque, as GIMP, ImageMagick and stb read it) only where the
    header declares an attribute bit and some pixel sets it; Pillow reads it inverted, also
    where the header declares none."""
    opaque = np.zeros((6, 9), bool)
    opaque[:, 4:] = True
    colours = (20 << 10) | (10 << 5) | 31
    pixels = (opaque.astype(np.uint16) << 15) | colours
    (tmp_path / "a.tga").write_bytes(tga16(pixels, 1, rle))
    array, _ = read_image(tmp_path / "a.tga")
    assert array.shape == (6, 9, 4) and np.array_equal(array[..., 3], opaque * 255)
    expected = np.array([round(20 * 255 / 31), round(10 * 255 / 31), 255])
    assert np.abs(array[..., :3].astype(int) - expected).max() <= 1
    for name, bits, stored in (("undeclared", 0, pixels), ("all-set", 0, pixels | 0x8000),
                               ("all-clear", 1, pixels & 0x7FFF)):
        (tmp_path / f"{name}.tga").write_bytes(tga16(stored, bits, rle))
        colour, _ = read_image(tmp_path / f"{name}.tga")
        assert colour.shape == (6, 9, 3), name  # no alpha: every pixel shows
        assert np.array_equal(colour, array[..., :3]), name


def _mapped_tga(entries: list[bytes], depth: int, indices: np.ndarray, alpha_bits: int) -> bytes:
    """A top-down colour-mapped TGA: ``entries`` of ``depth`` bits (BGRA or ARGB1555), one
    byte per pixel."""
    h, w = indices.shape
    head = struct.pack("<BBBHHBHHHHBB", 0, 1, 1, 0, len(entries), depth, 0, 0, w, h, 8,
                       0x20 | alpha_bits)
    return head + b"".join(entries) + indices.astype(np.uint8).tobytes()


def test_a_colour_mapped_tga_keeps_the_alpha_of_its_colour_map(tmp_path: Path) -> None:
    """32-bit entries hold 8-bit alpha; 16-bit ones the alpha bit, read as in 16-bit pixels."""
    indices = np.array([[0, 1, 1, 0]] * 3)
    red_clear = {32: bytes([0, 0, 255, 0]), 16: struct.pack("<H", 31 << 10)}
    green_set = {32: bytes([0, 255, 0, 255]), 16: struct.pack("<H", 0x8000 | 31 << 5)}
    for depth, bits in ((32, 8), (16, 1)):
        data = _mapped_tga([red_clear[depth], green_set[depth]], depth, indices, bits)
        (tmp_path / f"m{depth}.tga").write_bytes(data)
        array, _ = read_image(tmp_path / f"m{depth}.tga")
        assert array.shape == (3, 4, 4), depth
        assert np.array_equal(array[0], [[255, 0, 0, 0], [0, 255, 0, 255], [0, 255, 0, 255],
                                         [255, 0, 0, 0]]), depth
    (tmp_path / "none.tga").write_bytes(_mapped_tga([red_clear[16], green_set[16]], 16,
                                                    indices, 0))
    assert read_image(tmp_path / "none.tga")[0].shape == (3, 4, 3)


def test_a_16_bit_tga_with_alpha_comes_out_as_rgba(folder: Path, tiny_model_file: str) -> None:
    opaque = np.zeros((8, 10), bool)
    opaque[:, 5:] = True
    (folder / "a.tga").write_bytes(tga16((opaque.astype(np.uint16) << 15) | 0x3DEF, 1))
    out = folder.parent / "out"
    r = upscale(str(folder), "-o", str(out), "--model", tiny_model_file)
    assert r.exit_code == 0, r.output
    with Image.open(out / "a.png") as im:
        alpha = np.asarray(im.getchannel("A")) if im.mode == "RGBA" else None
    assert alpha is not None and alpha.shape == (16, 20)
    assert (alpha[:, :6] == 0).all() and (alpha[:, 14:] == 255).all()


def test_an_icc_profile_that_is_kept_is_the_files_own_bytes(tmp_path: Path) -> None:
    srgb = _srgb()
    buf = io.BytesIO()
    random_rgb().save(buf, "PNG", icc_profile=srgb)
    (tmp_path / "s.png").write_bytes(buf.getvalue())
    _, info = read_image(tmp_path / "s.png")
    assert info.icc_profile == srgb and not info.notes


def test_a_damaged_compressed_tiff_is_one_line_with_libtiffs_reason(
        tmp_path: Path, capfd, monkeypatch: pytest.MonkeyPatch) -> None:
    """libtiff writes why it cannot decode a strip straight to the process's stderr, beside
    drcn's line, and Pillow then says "decoder error -2": its reason is the error's, and nothing
    else of it reaches the terminal. What a live progress display writes meanwhile still does,
    and is no note of a file decoded whole."""
    random_rgb(48, 40).save(tmp_path / "good.tif", compression="tiff_adobe_deflate")
    data = bytearray((tmp_path / "good.tif").read_bytes())
    data[40:400] = b"\x55" * 360  # inside the compressed strip, which Pillow writes first
    (tmp_path / "z.tif").write_bytes(bytes(data))
    refresh, load = "\x1b[2K\rimages \u2501\u2501 1/2\n", TiffImagePlugin.TiffImageFile.load

    def displayed_meanwhile(im):
        if not hasattr(im, "shown"):  # once a decode: Pillow's load() calls itself again
            im.shown = os.write(2, refresh.encode())  # as rich's refresh thread may, any time
        return load(im)

    monkeypatch.setattr(TiffImagePlugin.TiffImageFile, "load", displayed_meanwhile)
    with pytest.raises(BadImageError, match=r"z\.tif: cannot decode image \(ZIPDecode: "
                                            r"Decoding error .*, incorrect data check\)$"):
        read_image(tmp_path / "z.tif")
    assert capfd.readouterr().err == refresh
    assert read_image(tmp_path / "good.tif")[1].notes == []
    assert capfd.readouterr().err == refresh


def test_a_compressed_tiff_reads_when_no_temporary_file_can_be_made(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """libtiff's stderr is caught in a temporary file; with a full or unwritable temporary
    folder a compressed TIFF reads as it would without the catch, not failed for that
    unrelated reason."""
    random_rgb(48, 40).save(tmp_path / "good.tif", compression="tiff_adobe_deflate")

    def no_room(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tempfile, "TemporaryFile", no_room)
    array, info = read_image(tmp_path / "good.tif")
    assert array.shape == (40, 48, 3) and info.notes == []
    assert (array == np.asarray(random_rgb(48, 40))).all()


def _spoiled(data: bytes, kind: bytes) -> bytes:
    """A PNG with one bit of ``kind`` chunk's checksum flipped."""
    pos = data.index(kind) - 4
    end = pos + 8 + int.from_bytes(data[pos:pos + 4], "big")
    return data[:end] + bytes([data[end] ^ 1]) + data[end + 1:]


@pytest.mark.parametrize("kind, before", [(b"tEXt", True), (b"tIME", False)],
                         ids=["text-before-pixels", "time-after-pixels"])
def test_a_png_chunk_with_a_bad_checksum_is_dropped_and_the_image_upscaled(
        folder: Path, tiny_model_file: str, kind: bytes, before: bool) -> None:
    """A text or time chunk whose checksum is wrong makes Pillow refuse the whole PNG (before
    the pixels), or is carried over as it is (after them); libpng-based readers drop the
    chunk and show the image, and so does drcn, naming the chunk."""
    pixels = np.asarray(random_rgb(12, 8))
    extra = png_chunk(kind, b"Title\0holiday" if kind == b"tEXt" else bytes(7))
    clean = hand_png((12, 8), 8, 2, b"".join(b"\0" + row.tobytes() for row in pixels),
                     chunks=extra if before else b"")
    if not before:  # after the pixel data, before IEND
        clean = clean[:-12] + extra + clean[-12:]
    (folder / "clean.png").write_bytes(clean)
    (folder / "damaged.png").write_bytes(_spoiled(clean, kind))
    array, info = read_image(folder / "damaged.png")
    assert (array == pixels).all() and "Title" not in info.about.text
    assert info.notes == [f"damaged PNG chunk dropped: {kind.decode()} (wrong checksum; the "
                          "pixels are whole)"]
    r = upscale(str(folder), "-m", tiny_model_file, "-o", str(folder.parent / "out"))
    assert r.exit_code == 0, r.output
    assert f"dropped: {kind.decode()}" in r.output
    results = [np.asarray(Image.open(folder.parent / "out" / name)) for name in
               ("clean.png", "damaged.png")]
    assert (results[0] == results[1]).all()


@pytest.mark.parametrize("kind", [b"IHDR", b"IDAT"])
def test_a_png_whose_critical_chunk_has_a_bad_checksum_is_refused(tmp_path: Path,
                                                                   kind: bytes) -> None:
    """A wrong checksum on the header or the pixel data is refused, as libpng refuses it;
    Pillow reads damaged pixel data without a word."""
    data = io.BytesIO()
    random_rgb(12, 8).save(data, "PNG")
    (tmp_path / "bad.png").write_bytes(_spoiled(data.getvalue(), kind))
    with pytest.raises(BadImageError, match=rf"bad\.png: damaged PNG: its {kind.decode()} "
                                            r"chunk's checksum is wrong \(.*damaged\)$"):
        read_image(tmp_path / "bad.png")


def test_the_shape_of_a_png_is_read_without_reading_its_pixel_data(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``image_shape8`` (a training run's memory estimate, for every file of a data set) reads
    a PNG's header: the checksum check of its chunks stops at the pixel data instead of reading
    the whole file."""
    data = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (256, 256, 3), np.uint8)).save(
        data, "PNG")
    data = data.getvalue()
    (tmp_path / "big.png").write_bytes(data)
    read: list[int] = []

    class Counted(io.BufferedReader):
        def read(self, size: int | None = -1) -> bytes:
            read.append(len(got := super().read(size)))
            return got

    monkeypatch.setattr(imagefile, "open_regular", lambda path: Counted(io.FileIO(path)))
    assert image_shape8(tmp_path / "big.png") == (3, 256, 256)
    assert sum(read) < len(data) // 4, (sum(read), len(data))


@pytest.mark.parametrize("kind, data, lost", [
    (b"tRNS", bytes([0, 255]), "transparency"),
    (b"eXIf", b"MM\0*\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01\0\x06\0\0\0\0\0\0", "orientation"),
    (b"gAMA", (45455).to_bytes(4, "big"), "sRGB")], ids=["tRNS", "eXIf", "gAMA"])
def test_a_dropped_png_chunk_that_changed_the_image_says_what_it_changed(
        tmp_path: Path, kind: bytes, data: bytes, lost: str) -> None:
    """A damaged transparency, EXIF or colour chunk is dropped as libpng drops it, but the
    result then differs from what the file meant (opaque, unturned, colours read as sRGB): the
    note says so instead of "the pixels are whole"."""
    palette = png_chunk(b"PLTE", bytes(range(6)))
    clean = hand_png((4, 2), 8, 3, b"\0\0\1\0\1" * 2, chunks=palette + png_chunk(kind, data))
    (tmp_path / "damaged.png").write_bytes(_spoiled(clean, kind))
    notes = read_image(tmp_path / "damaged.png")[1].notes
    assert len(notes) == 1 and f"dropped: {kind.decode()}" in notes[0], notes
    assert lost in notes[0] and "the pixels are whole" not in notes[0], notes
