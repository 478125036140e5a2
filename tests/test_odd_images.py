"""Odd but valid files a photographer, designer or scientist may have: each is read with its
true values (white-is-zero grey, deep samples, extra channels) or refused in one line, and any
loss on the way is named in a note."""

from __future__ import annotations

import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from helpers import hand_tiff
from PIL import Image

from drcn_plugin.errors import BadImageError
from drcn_plugin.imagefile import image_shape8, read_image

WHITE_IS_ZERO, BLACK_IS_ZERO = 0, 1  # TIFF PhotometricInterpretation
SAMPLE_FORMAT, FLOAT_SAMPLES = 339, 3


def _ramp16(h: int = 6, w: int = 9) -> np.ndarray:
    """Distinct 16-bit levels, none symmetric about mid-grey, so an inversion shows."""
    return (np.arange(h * w).reshape(h, w) * 1000 + 123).astype(np.uint16)


def test_a_16_bit_white_is_zero_tiff_is_read_with_its_true_levels(tmp_path: Path) -> None:
    """Pillow undoes white-is-zero only up to 8 bits; a 16-bit scan is inverted here, not left a
    negative."""
    grey = _ramp16()
    hand_tiff(tmp_path / "w.tif", 65535 - grey, WHITE_IS_ZERO)
    array, _ = read_image(tmp_path / "w.tif")
    assert array.dtype == np.uint16 and np.array_equal(array, grey)
    hand_tiff(tmp_path / "b.tif", grey, BLACK_IS_ZERO)
    assert np.array_equal(read_image(tmp_path / "b.tif")[0], grey)


def test_a_float_white_is_zero_tiff_is_refused_not_read_as_a_negative(tmp_path: Path) -> None:
    hand_tiff(tmp_path / "f.tif", np.linspace(0, 1, 54, dtype=np.float32).reshape(6, 9),
          WHITE_IS_ZERO, {SAMPLE_FORMAT: [FLOAT_SAMPLES]})
    with pytest.raises(BadImageError, match="white-is-zero"):
        read_image(tmp_path / "f.tif")


SEPARATED = 5  # TIFF PhotometricInterpretation: CMYK inks
_COLOUR_NOTE = "16-bit colour read and written as 8 bits: Pillow has no 16-bit colour"


@pytest.mark.parametrize("magic, maxval", [(b"P6", 65535), (b"P6", 1000), (b"P3", 4095)])
def test_deep_ppm_colour_says_it_is_read_as_8_bits(tmp_path: Path, magic: bytes,
                                                   maxval: int) -> None:
    """A PPM with a maxval over 255 holds 16-bit samples, which Pillow reads as 8-bit RGB."""
    rgb = np.linspace(0, maxval, 6 * 9 * 3).round().astype(">u2").reshape(6, 9, 3)
    body = rgb.tobytes() if magic == b"P6" else " ".join(map(str, rgb.ravel())).encode()
    (tmp_path / "deep.ppm").write_bytes(magic + b"\n9 6\n%d\n" % maxval + body)
    array, info = read_image(tmp_path / "deep.ppm")
    assert array.dtype == np.uint8 and array.shape == (6, 9, 3)
    assert np.abs(array / 255.0 - rgb / maxval).max() < 1 / 255
    assert _COLOUR_NOTE in info.notes


def test_16_bit_cmyk_says_it_is_read_as_8_bits(tmp_path: Path) -> None:
    inks = np.zeros((6, 9, 4), np.uint16)
    inks[..., 0] = _ramp16()
    hand_tiff(tmp_path / "cmyk.tif", inks, SEPARATED)
    array, info = read_image(tmp_path / "cmyk.tif")
    assert array.shape == (6, 9, 3) and _COLOUR_NOTE in info.notes


EXTRA_SAMPLES, UNSPECIFIED, UNASSOCIATED_ALPHA = 338, 0, 2


@pytest.mark.parametrize("photometric, extras, channels", [
    (BLACK_IS_ZERO, [UNSPECIFIED], 1), (2, [UNSPECIFIED], 3),
    (2, [UNASSOCIATED_ALPHA, UNSPECIFIED, UNSPECIFIED], 4)])
def test_tiff_channels_not_marked_as_alpha_are_named_when_dropped(
        tmp_path: Path, photometric: int, extras: list[int], channels: int) -> None:
    """A scientist's or a designer's extra planes (a mask, depth) that the TIFF does not call
    alpha: Pillow reads past them, the note says so; marked alpha stays."""
    colours = 1 if photometric == BLACK_IS_ZERO else 3
    pixels = np.full((6, 9, colours + len(extras)), 200, np.uint8)
    hand_tiff(tmp_path / "x.tif", pixels, photometric, {EXTRA_SAMPLES: extras})
    array, info = read_image(tmp_path / "x.tif")
    assert (array.shape[2] if array.ndim == 3 else 1) == channels
    dropped = extras.count(UNSPECIFIED)
    assert f"{dropped} extra channel(s) the TIFF does not mark as alpha dropped" in info.notes


def _bmp16(path: Path, pixels: np.ndarray, masks: tuple[int, int, int, int]) -> None:
    """A 16-bit BMP with a V4 header whose bit fields ``masks`` (red, green, blue, alpha) say how
    ``pixels`` (``H x W`` uint16, top row first) hold their colours, as texture tools write."""
    h, w = pixels.shape
    rows = pixels[::-1].astype("<u2")
    data = b"".join(row.tobytes().ljust((w * 2 + 3) // 4 * 4, b"\0") for row in rows)
    header = struct.pack("<IiiHHIIiiII4I4s48x", 108, w, h, 1, 16, 3, len(data), 2835, 2835, 0,
                         0, *masks, b"sRGB")
    path.write_bytes(b"BM" + struct.pack("<IHHI", 14 + 108 + len(data), 0, 0, 14 + 108)
                     + header + data)


def test_a_16_bit_bmp_keeps_the_alpha_bit_its_header_declares(tmp_path: Path) -> None:
    """ARGB1555: Pillow reads the colours and drops the alpha bit the header's mask names."""
    opaque = np.zeros((6, 9), bool)
    opaque[:, 4:] = True
    pixels = (opaque.astype(np.uint16) << 15) | (20 << 10) | (10 << 5) | 31
    _bmp16(tmp_path / "a.bmp", pixels, (0x7C00, 0x3E0, 0x1F, 0x8000))
    array, _ = read_image(tmp_path / "a.bmp")
    assert array.shape == (6, 9, 4) and np.array_equal(array[..., 3], opaque * 255)
    _bmp16(tmp_path / "x.bmp", pixels, (0x7C00, 0x3E0, 0x1F, 0))  # the top bit unused: no alpha
    colours, _ = read_image(tmp_path / "x.bmp")
    assert colours.shape == (6, 9, 3)
    assert np.abs(array[..., :3].astype(int) - colours).max() <= 1  # 5 bits widened to 8


@pytest.mark.parametrize("photometric, channels, extras", [
    (2, 3, []), (2, 4, [UNASSOCIATED_ALPHA]), (BLACK_IS_ZERO, 1, []), (2, 4, [UNSPECIFIED])])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_an_uncompressed_tiff_stored_a_plane_per_channel_is_read_with_its_pixels(
        tmp_path: Path, photometric: int, channels: int, extras: list[int], dtype: type) -> None:
    """A scanner's TIFF with each channel in its own plane (PlanarConfiguration 2): Pillow's own
    reader of such planes scrambles 16-bit colour without an error and refuses 16-bit grey and
    an unmarked extra plane; each is read as the same pixels stored interleaved are."""
    pixels = (np.arange(6 * 9 * channels).reshape(6, 9, channels) * 37 % 251).astype(dtype)
    if dtype == np.uint16:
        pixels = pixels * 257 + np.arange(channels, dtype=np.uint16)  # both bytes of a sample
    pixels = pixels[..., 0] if channels == 1 else pixels
    tags = {EXTRA_SAMPLES: extras} if extras else {}
    hand_tiff(tmp_path / "chunky.tif", pixels, photometric, tags)
    hand_tiff(tmp_path / "planar.tif", pixels, photometric, tags, planar=True)
    chunky, chunky_info = read_image(tmp_path / "chunky.tif")
    planar, planar_info = read_image(tmp_path / "planar.tif")
    assert planar.dtype == chunky.dtype and np.array_equal(planar, chunky)
    assert planar_info.notes == chunky_info.notes
    assert image_shape8(tmp_path / "planar.tif") == image_shape8(tmp_path / "chunky.tif")


SIGNED_SAMPLES = 2  # TIFF SampleFormat: two's complement integers


@pytest.mark.parametrize("dtype", [np.int8, np.int16])
def test_signed_samples_are_read_when_none_is_negative_and_refused_when_one_is(
        tmp_path: Path, dtype: type) -> None:
    """A signed TIFF (a scientist's, a height map) whose samples are all 0 or more holds plain
    levels; with one below zero it is refused in words that say so, not read as the wrong
    picture (Pillow reads signed bytes as unsigned: -1 as 255) nor called 32-bit."""
    levels = np.arange(54, dtype=dtype).reshape(6, 9)
    hand_tiff(tmp_path / "plain.tif", levels, BLACK_IS_ZERO, {SAMPLE_FORMAT: [SIGNED_SAMPLES]})
    assert np.array_equal(read_image(tmp_path / "plain.tif")[0], levels)
    hand_tiff(tmp_path / "below.tif", levels - 20, BLACK_IS_ZERO,
              {SAMPLE_FORMAT: [SIGNED_SAMPLES]})
    with pytest.raises(BadImageError, match=r"below\.tif: samples below zero \(signed integers\) "
                                            r"are not supported$"):
        read_image(tmp_path / "below.tif")


@pytest.mark.parametrize(("mode", "name"), [("RGB", "c.png"), ("RGBA", "c.png"), ("L", "g.png"),
                                            ("LA", "g.png"), ("I;16", "g.png"), ("F", "f.tif"),
                                            ("RGB", "c.jpg")])
def test_an_image_is_read_without_a_whole_image_copy_beside_its_array(
        tmp_path: Path, mode: str, name: str) -> None:
    """Its array is copied from the decoded image a block of rows at a time, not by
    ``np.asarray``, which joins a whole copy of the pixels' bytes into another: a peak of twice
    the array beside Pillow's own pixels (10 bytes a pixel for RGB)."""
    y, x = np.mgrid[0:1500, 0:2000]
    channels = len(Image.new(mode, (1, 1)).getbands())
    planes = [(x * (3 + c) + y * (5 - c)) % 256 for c in range(channels)]
    pixels = np.dstack(planes) if channels > 1 else planes[0]
    pixels = pixels.astype({"I;16": np.uint16, "F": np.float32}.get(mode, np.uint8))
    image = Image.fromarray(pixels / np.float32(255) if mode == "F" else pixels)
    assert image.mode == mode
    image.save(tmp_path / name)
    tracemalloc.start()
    try:
        array = read_image(tmp_path / name)[0]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert array.shape == pixels.shape and peak < array.nbytes * 1.25, peak
