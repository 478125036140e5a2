"""The quality read from JPEG tables that are not IJG's: mozjpeg's, Photoshop's, flat ones. The
strengths expected here are those benchmarks/foreign_jpeg.py measured as best on Set5/Set14 at
x3 (the tables themselves are the benchmark's, with their sources)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from helpers import DATA
from PIL import Image

from drcn_plugin.compression import jpeg_history, jpeg_quality
from drcn_plugin.hub import choose_for_source
from drcn_plugin.imagefile import read_image


@pytest.fixture
def foreign(monkeypatch: pytest.MonkeyPatch):
    """``benchmarks/foreign_jpeg.py`` (its folder on the path, as when it is run)."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import foreign_jpeg

    return foreign_jpeg


def _saved(tmp_path: Path, **options: object) -> Path:
    path = tmp_path / "photo.jpg"
    Image.open(DATA / "Set14/lenna.png").convert("RGB").crop((0, 0, 96, 64)).save(path, **options)
    return path


def test_every_ijg_quality_is_read_back_exactly() -> None:
    for quality in range(1, 101):
        buf = io.BytesIO()
        Image.new("RGB", (16, 16)).save(buf, "JPEG", quality=quality)
        with Image.open(buf) as im:
            assert jpeg_quality(im.quantization) == quality


# label in foreign_jpeg.conditions() -> the best of denoise 0, 0.5 and 1 measured for it
MEASURED_BEST = {"mozjpeg q95": 0.5, "mozjpeg q90": 1.0, "mozjpeg q85": 1.0,
                 "mozjpeg table 2 q85": 1.0, "Photoshop maximum": 0.5,
                 "Photoshop medium": 1.0, "Photoshop low": 1.0, "flat 5": 0.5, "flat 8": 0.5}


@pytest.mark.parametrize("label", sorted(MEASURED_BEST))
def test_foreign_tables_get_the_measured_strength(label: str, foreign, tmp_path: Path) -> None:
    """A JPEG written with another encoder's tables gets the strength measured best for them,
    read from its tables as ``drcn upscale`` reads them."""
    info = read_image(_saved(tmp_path, **foreign.conditions()[label]))[1]
    assert choose_for_source(True, info.jpeg_quality).denoise == MEASURED_BEST[label], \
        info.jpeg_quality


def test_coarser_tables_never_read_as_finer(foreign) -> None:
    """Scaling a table coarser (mozjpeg's, a flat one) never raises the quality read from it."""
    for base in (foreign.MOZJPEG_3, foreign.MOZJPEG_2_LUMA, (5,) * 64):
        found = [jpeg_quality({0: foreign.scaled(base, q)}) for q in range(5, 100)]
        assert found == sorted(found), base


@pytest.mark.parametrize("label", ["flat 5", "flat 8"])
def test_a_flat_table_jpeg_kept_as_png_gets_the_measured_strength(label: str, foreign) -> None:
    """The pixels of a flat-table JPEG (as some cameras write) fit that flat table, not the IJG
    table of the same low-frequency steps (q81 for flat 5, the photo model's strength)."""
    buf = io.BytesIO()
    Image.open(DATA / "Set14/lenna.png").convert("RGB").crop((16, 16, 176, 144)).save(
        buf, "JPEG", **foreign.conditions()[label])
    found = jpeg_history(np.asarray(Image.open(buf).convert("RGB")))
    assert choose_for_source(True, found).denoise == MEASURED_BEST[label], found
