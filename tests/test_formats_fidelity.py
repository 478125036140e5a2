"""Pixels and metadata that must survive reading and writing: orientation of every TIFF mode,
transparency, lossless WebP, 16-bit and grey+alpha sources, colour profiles, stale Photoshop
data, what BMP and JPEG cannot hold, and outputs that cannot be written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from drcn_plugin.cli import app
from drcn_plugin.imagefile import read_image

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("wide_console")

# How a stored image is turned upright for each EXIF orientation.
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
            4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
            6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}


def upscale(*args: str):
    return runner.invoke(app, ["upscale", *args])


def _ramp(h: int = 12, w: int = 18) -> np.ndarray:
    """Every pixel different, so a wrong turn or a scrambled row shows."""
    return (np.arange(h * w).reshape(h, w) * 7 % 251).astype(np.uint8)


@pytest.mark.parametrize("mode", ["L", "P", "I;16", "I;16B", "RGB"])
@pytest.mark.parametrize("compression", [None, "tiff_lzw"])
def test_tiff_of_every_mode_is_turned_upright(tmp_path: Path, mode: str,
                                              compression: str | None) -> None:
    """Uncompressed L, P and 16-bit grey TIFFs with orientation 5-8 came back scrambled and
    unturned (Pillow memory-maps them with the turned size)."""
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
