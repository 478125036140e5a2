"""Every kind of file the README says `drcn upscale` reads, through one batch with format `same`:
each result has the format its name asks for (PNG for read-only formats), twice the size, the
kind of pixels the README promises (grey stays grey, 16-bit grey and PNG colour 16-bit, float
float, palettes RGB or RGBA) and its alpha and colours where they were."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from helpers import hand_png, tga16, upscale
from PIL import Image, features

from drcn_plugin.imagefile import read_image

H, W = 16, 24
TOP = np.arange(H)[:, None] < H // 2  # red (or light grey) above, blue (or dark grey) below
RGB = np.where(TOP[..., None], np.uint8([220, 30, 30]), np.uint8([30, 30, 220])) \
    * np.ones((1, W, 1), np.uint8)
GREY = np.where(TOP, 200, 50).astype(np.uint8) * np.ones((1, W), np.uint8)
# Three column bands: see-through, half (where the format holds more than one bit), opaque.
BAND = np.arange(W)[None, :] // (W // 3) * np.ones((H, 1), int)
ALPHA = np.uint8([0, 128, 255])[BAND]
BIT_ALPHA = np.uint8([0, 255, 255])[BAND]


def _palette(path: Path, transparent: bool) -> None:
    """Index 0 red, 1 blue; 2 (black) on the see-through band, and transparent, if asked."""
    indices = np.where(TOP, 0, 1).astype(np.uint8) * np.ones((1, W), np.uint8)
    if transparent:
        indices[BAND == 0] = 2
    im = Image.fromarray(indices, "P")
    im.putpalette([220, 30, 30, 30, 30, 220, 0, 0, 0])
    im.save(path, **({"transparency": 2} if transparent else {}))


def _png16_rgb(path: Path) -> None:
    """16-bit RGB, which Pillow reads (as 8 bits) but cannot write: it comes back 16-bit."""
    rows = b"".join(b"\0" + (row.astype(">u2") * 257).tobytes() for row in RGB)
    path.write_bytes(hand_png((W, H), 16, 2, rows))


def _tga16(path: Path) -> None:
    """ARGB1555 with the alpha bit declared: 5-bit levels, widened back on reading."""
    five = RGB.astype(np.uint16) >> 3
    path.write_bytes(tga16((BIT_ALPHA.astype(np.uint16) >> 7 << 15) | five[..., 0] << 10
                           | five[..., 1] << 5 | five[..., 2], alpha_bits=1))


def _heic(path: Path) -> None:
    """A phone's photo (pillow-heif's own writer), which comes back as PNG."""
    from pillow_heif import from_pillow

    from_pillow(Image.fromarray(RGB)).save(path, quality=95)


def _save(array: np.ndarray, mode: str | None = None, **options) -> Callable[[Path], None]:
    return lambda path: Image.fromarray(array, mode).save(path, **options)


RGBA = np.dstack([RGB, ALPHA])
# input name, how it is written, result name, the result's kind of pixels, its alpha
CASES = [
    ("png-rgb.png", _save(RGB), "png-rgb.png", "RGB", None),
    ("png-rgba.png", _save(RGBA), "png-rgba.png", "RGBA", ALPHA),
    ("png-grey.png", _save(GREY), "png-grey.png", "L", None),
    ("png-grey-alpha.png", _save(np.dstack([GREY, ALPHA]), "LA"), "png-grey-alpha.png", "LA",
     ALPHA),
    ("png-grey16.png", _save(GREY.astype(np.uint16) * 257), "png-grey16.png", "I;16", None),
    ("png-rgb16.png", _png16_rgb, "png-rgb16.png", "RGB16", None),
    ("png-palette.png", lambda p: _palette(p, False), "png-palette.png", "RGB", None),
    ("png-palette-alpha.png", lambda p: _palette(p, True), "png-palette-alpha.png", "RGBA",
     BIT_ALPHA),
    ("jpg-rgb.jpg", _save(RGB, quality=95), "jpg-rgb.jpg", "RGB", None),
    ("jpg-grey.jpg", _save(GREY, quality=95), "jpg-grey.jpg", "L", None),
    ("webp-rgb.webp", _save(RGB, quality=90), "webp-rgb.webp", "RGB", None),
    ("webp-rgba.webp", _save(RGBA, lossless=True), "webp-rgba.webp", "RGBA", ALPHA),
    ("tif-rgb.tif", _save(RGB), "tif-rgb.tif", "RGB", None),
    ("tif-rgba.tif", _save(RGBA), "tif-rgba.tif", "RGBA", ALPHA),
    ("tif-grey16.tif", _save(GREY.astype(np.uint16) * 257), "tif-grey16.tif", "I;16", None),
    ("tif-float.tif", _save(GREY.astype(np.float32) / 255), "tif-float.tif", "F", None),
    ("bmp-rgb.bmp", _save(RGB), "bmp-rgb.bmp", "RGB", None),
    ("bmp-rgba.bmp", _save(RGBA), "bmp-rgba.bmp", "RGBA", ALPHA),
    ("tga-rgb.tga", _save(RGB), "tga-rgb.png", "RGB", None),
    ("tga-rgba.tga", _save(RGBA), "tga-rgba.png", "RGBA", ALPHA),
    ("tga-16.tga", _tga16, "tga-16.png", "RGBA", BIT_ALPHA),
    ("gif-alpha.gif", lambda p: _palette(p, True), "gif-alpha.png", "RGBA", BIT_ALPHA),
]
if features.check("avif"):  # codecs Pillow may be built without, or a package may add
    CASES.append(("avif-rgba.avif", _save(RGBA, quality=95), "avif-rgba.avif", "RGBA", ALPHA))
if importlib.util.find_spec("pillow_heif"):
    CASES.append(("heic-rgb.heic", _heic, "heic-rgb.png", "RGB", None))
# how each kind of pixels is held as an array: channels (0: a plane) and type
KINDS = {"L": (0, np.uint8), "LA": (2, np.uint8), "RGB": (3, np.uint8), "RGBA": (4, np.uint8),
         "I;16": (0, np.uint16), "RGB16": (3, np.uint16), "F": (0, np.float32)}
OUTPUT_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".webp": "WEBP", ".tif": "TIFF", ".bmp": "BMP",
                  ".avif": "AVIF"}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory, tiny_model_file: str) -> Path:
    """The folder of results of one ``drcn upscale`` (x2, format ``same``) of every case."""
    folder = tmp_path_factory.mktemp("round-trip")
    for name, write, *_ in CASES:
        write(folder / name)
    out = folder / "out"
    r = upscale(str(folder), "-o", str(out), "--model", tiny_model_file)
    assert r.exit_code == 0 and f"{len(CASES)} done" in r.output, r.output
    return out


@pytest.mark.parametrize(("result", "kind", "alpha"), [case[2:] for case in CASES],
                         ids=[case[0] for case in CASES])
def test_each_format_comes_back_as_documented(results: Path, result: str, kind: str,
                                              alpha: np.ndarray | None) -> None:
    path = results / result
    with Image.open(path) as im:
        assert im.format == OUTPUT_FORMATS[path.suffix]
    array, _ = read_image(path)
    channels, dtype = KINDS[kind]
    assert array.shape == ((2 * H, 2 * W, channels) if channels else (2 * H, 2 * W))
    assert array.dtype == dtype
    level = array.astype(float) / {np.uint8: 255, np.uint16: 65535}.get(dtype, 1.0)
    # inside each band and half, away from the edges bicubic smooths
    cols = [slice(2 * W // 3 * b + 3, 2 * W // 3 * (b + 1) - 3) for b in range(3)]
    top, bottom = slice(0, H - 3), slice(H + 3, 2 * H)
    opaque = level[:, cols[2]]
    if channels in (3, 4):  # the colour difference is bicubic's alone, as the model sees Y
        assert (opaque[top, :, 0] - opaque[top, :, 2]).min() > 0.5, "red stays red"
        assert (opaque[bottom, :, 2] - opaque[bottom, :, 0]).min() > 0.5, "blue stays blue"
    else:
        grey = opaque if channels == 0 else opaque[..., 0]
        assert grey[top].min() - grey[bottom].max() > 0.4, "light above, dark below"
    for band, col in enumerate(cols if alpha is not None else []):
        want = alpha[0, band * W // 3] / 255
        assert np.abs(level[:, col, -1] - want).max() <= 3 / 255, f"alpha of band {band}"
