"""16-bit PNGs with a transparent colour (tRNS: one 16-bit grey level, or three 16-bit RGB
samples): read at 16 bits with the key, matched in all 16 bits, as alpha, and upscaled to 16-bit
grey with alpha or RGBA, as a 16-bit PNG with an alpha channel is."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from helpers import hand_png, png_chunk, upscale
from PIL import Image

from drcn_plugin.imagefile import read_image
from drcn_plugin.opening import first_ifd

pytestmark = pytest.mark.usefixtures("wide_console")

GREY_KEY = 0x1234
RGB_KEY = (0x1234, 0x5678, 0x9ABC)


def _ramp(h: int = 10, w: int = 12) -> np.ndarray:
    """16-bit levels with every low byte used (20000..59999: never a key)."""
    y, x = np.mgrid[:h, :w]
    return ((y * 4099 + x * 1237) % 40000 + 20000).astype(np.uint16)


def _grey16(path: Path) -> np.ndarray:
    """A 16-bit grey PNG (Pillow's I;16) whose top left 4x4 pixels are the transparent level,
    and one pixel a level above it (the same at 8 bits) is not: its pixels."""
    grey = _ramp()
    grey[:4, :4] = GREY_KEY
    grey[5, 5] = GREY_KEY + 1
    Image.fromarray(grey).save(path, transparency=GREY_KEY)
    return grey


def _rgb16(path: Path, key: tuple[int, int, int] = RGB_KEY) -> np.ndarray:
    """A 16-bit RGB PNG with tRNS ``key`` (Pillow writes no 16-bit colour), whose top left 4x4
    pixels are RGB_KEY and two are near it (one sample's low byte off, one sample off): its
    pixels."""
    rgb = np.stack([_ramp() + 7 * c for c in range(3)], axis=-1)
    rgb[:4, :4] = RGB_KEY
    rgb[5, 5] = (*RGB_KEY[:2], RGB_KEY[2] + 1)
    rgb[6, 6] = (RGB_KEY[0], RGB_KEY[1], 40000)
    rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in rgb)
    path.write_bytes(hand_png((12, 10), 16, 2, rows, png_chunk(b"tRNS", struct.pack(">3H", *key))))
    return rgb


_WRITE = {"grey": _grey16, "rgb": _rgb16}


@pytest.mark.parametrize("kind", ["grey", "rgb"])
def test_a_16_bit_png_transparent_colour_is_read_as_16_bit_alpha(tmp_path: Path,
                                                                  kind: str) -> None:
    """Pillow gives the key in 16 bits; the pixels are read in 16 bits and matched on all 16:
    alpha 0 exactly at the key, 65535 elsewhere (at the pixels that match only at 8 bits too)."""
    pixels = _WRITE[kind](tmp_path / "k.png")
    array, info = read_image(tmp_path / "k.png")
    assert array.dtype == np.uint16 and not info.notes, info.notes
    assert array.shape == (10, 12, 2 if kind == "grey" else 4)
    assert np.array_equal(array[..., :-1].reshape(pixels.shape), pixels)
    assert (array[..., 0] % 257 != 0).any()  # levels between 8-bit ones survive
    expected = np.full((10, 12), 65535, np.uint16)
    expected[:4, :4] = 0
    assert np.array_equal(array[..., -1], expected)


def test_a_16_bit_rgb_key_no_pixel_has_in_16_bits_adds_nothing(tmp_path: Path) -> None:
    """A key that pixels match at 8 bits (its high bytes) but none in all 16: 16-bit RGB, no
    alpha, nothing noted."""
    pixels = _rgb16(tmp_path / "n.png", key=(RGB_KEY[0] + 1, *RGB_KEY[1:]))
    array, info = read_image(tmp_path / "n.png")
    assert array.dtype == np.uint16 and np.array_equal(array, pixels) and not info.notes


@pytest.mark.parametrize("fmt, suffix", [("png", "png"), ("tiff", "tif")])
def test_16_bit_pngs_with_a_transparent_colour_upscale_to_16_bits_with_alpha(
        folder: Path, tiny_model_file: str, fmt: str, suffix: str) -> None:
    """A folder of both, upscaled x2: 16-bit grey with alpha and 16-bit RGBA files, the keyed
    corner transparent, the rest opaque, more than 256 levels."""
    for kind, write in _WRITE.items():
        write(folder / f"{kind}.png")
    out = folder.parent / "o"
    r = upscale(str(folder), "-m", tiny_model_file, "-o", str(out), "--scale", "2", "-f", fmt)
    assert r.exit_code == 0, r.output
    assert "8 bits" not in r.output and "transparent" not in r.output, r.output
    for kind, channels in (("grey", 2), ("rgb", 4)):
        path = out / f"{kind}.{suffix}"
        array, _ = read_image(path)
        assert array.dtype == np.uint16 and array.shape == (20, 24, channels)
        assert (array[..., 0] % 257 != 0).any()  # more than 8-bit levels
        alpha = array[..., -1]
        assert (alpha[:6, :6] == 0).all()
        assert (alpha[:, 12:] == 65535).all() and (alpha[12:] == 65535).all()
        if fmt == "png":  # IHDR's bit depth and colour type: grey with alpha, RGBA
            assert path.read_bytes()[24:26] == bytes([16, 4 if kind == "grey" else 6])
        else:
            with open(path, "rb") as f:
                tags = first_ifd(f)
            assert tags is not None and tags[258] == (16,) * channels
