"""The per-file default choice on files as cameras, phones and editors leave them: turned photos,
tiled patterns and JPEG-compressed TIFFs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import DATA
from PIL import Image
from test_photo import _run, _through_jpeg

from drcn_plugin.compression import file_jpeg_quality, jpeg_history
from drcn_plugin.hub import choose_for_source


def _crop(name: str = "Set14/lenna") -> Image.Image:
    return Image.open(DATA / f"{name}.png").convert("RGB").crop((8, 8, 168, 128))


@pytest.mark.parametrize("name", ["Set14/lenna", "Set14/baboon", "Set5/bird"])
def test_jpeg_history_is_read_from_turned_pixels(name: str) -> None:
    """A JPEG's pixels turned by 90 degrees (a portrait photo turned upright by its EXIF
    orientation, then kept as PNG) show the same quality as upright ones."""
    for quality in (30, 50, 75, 90):
        jpeg = _through_jpeg(_crop(name), quality)
        for turn in (Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_270,
                     Image.Transpose.TRANSPOSE):
            found = jpeg_history(np.asarray(jpeg.transpose(turn)))
            assert found is not None and abs(found - quality) <= 2, (quality, turn, found)


def test_a_portrait_photo_resaved_upright_is_upscaled_as_its_first_jpeg(
        tmp_path: Path, wide_console: None) -> None:
    """A phone's quality-40 portrait photo (stored sideways, EXIF orientation 6) re-saved at 95
    with its orientation kept: read upright, its first JPEG's grid still gives the photo model."""
    folder = tmp_path / "in"
    folder.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6
    _through_jpeg(_crop(), 40).save(folder / "portrait.jpg", quality=95, exif=exif)
    out = _run([str(folder), "-o", str(tmp_path / "out")])
    assert "q40" in out and "drcn-lite-photo" in out


def test_a_jpeg_compressed_tiff_gets_the_strength_of_its_tables(
        tmp_path: Path, wide_console: None) -> None:
    """A TIFF keeps its JPEG tables in its JPEGTables tag: they give its quality as a JPEG's
    own tables do, not the quality-80 guess of a file whose quality is unknown."""
    folder = tmp_path / "in"
    folder.mkdir()
    for quality in (95, 40):
        _crop().save(folder / f"q{quality}.tif", compression="jpeg", quality=quality)
        with Image.open(folder / f"q{quality}.tif") as im:
            assert file_jpeg_quality(im) == quality
    out = _run([str(folder), "-o", str(tmp_path / "out")]).splitlines()
    fine, coarse = (next(line for line in out if f"q{q}.tif" in line and "done" in line)
                    for q in (95, 40))
    assert choose_for_source(True, 95).label in fine and "photo" not in fine
    assert "drcn-lite-photo" in coarse
    damaged = Image.open(folder / "q95.tif")
    damaged.tag_v2[347] = damaged.tag_v2[347][:40]  # cut inside its first table
    assert file_jpeg_quality(damaged) is None


def test_a_pattern_tiled_every_8_or_16_pixels_shows_no_jpeg() -> None:
    """A background tiled from one small swatch, or diagonal stripes, repeats a few blocks whose
    few coefficient values can fit some quality's steps: the pixels must still count as clean."""
    rng = np.random.default_rng(0)
    photo = np.asarray(_crop().convert("L"))
    for period in (8, 16):
        for _ in range(6):
            y, x = rng.integers(0, 100, 2)
            for swatch in (rng.random((period, period)) * 255, photo[y: y + period, x: x + period],
                           np.where(rng.random((period, period)) > 0.5, 220, 40)):
                tiled = np.tile(swatch, (152 // period, 192 // period)).astype(np.uint8)
                assert jpeg_history(tiled) is None, period
    i, j = np.indices((152, 192))
    for period, dark in ((4, 0), (8, 0), (16, 204)):
        stripes = np.where((i + j) // period % 2, 255, dark).astype(np.uint8)
        assert jpeg_history(stripes) is None, period
