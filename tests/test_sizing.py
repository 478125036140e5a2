"""Exact output sizes: the shared rule (``TargetSize``) and ``drcn upscale --width/--height/
--long-edge`` end to end, refusals included."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from drcn_plugin.cli import app
from drcn_plugin.engine import Upscaler
from drcn_plugin.errors import DRCNError
from drcn_plugin.sizing import TargetSize

runner = CliRunner()


@pytest.mark.parametrize("target, size", [
    (TargetSize(scale=2.5), (750, 1000)),
    (TargetSize(width=1000), (750, 1000)),
    (TargetSize(height=450), (450, 600)),
    (TargetSize(width=900, height=500), (500, 900)),
    (TargetSize(long_edge=1000), (750, 1000)),
    (TargetSize(width=401), (301, 401)),  # 300 * 401 / 400 = 300.75 rounds up
])
def test_landscape_sizes(target: TargetSize, size: tuple[int, int]) -> None:
    assert target.resolve(300, 400) == size


def test_long_edge_follows_the_longer_side() -> None:
    assert TargetSize(long_edge=1000).resolve(400, 300) == (1000, 750)
    assert TargetSize(long_edge=500).resolve(250, 250) == (500, 500)


@pytest.mark.parametrize("kwargs, words", [
    ({"width": 300}, "smaller than the input 400x300"),
    ({"width": 900, "height": 200}, "smaller than the input"),
    ({"long_edge": 399}, "smaller than the input"),
    ({"width": 400 * 17}, "more than 16x the input 400x300"),
    ({"scale": 0.5}, "out of range"),
])
def test_refusals(kwargs: dict, words: str) -> None:
    with pytest.raises(DRCNError, match=words):
        TargetSize(**kwargs).resolve(300, 400)



@pytest.mark.parametrize("target, size", [
    (TargetSize(height=10**4299), (1, 64)),  # the width kept in proportion has 4301 digits
    (TargetSize(width=10**20), (300, 400)),
])
def test_a_huge_target_is_refused_without_its_digits(target: TargetSize, size: tuple) -> None:
    """A side of thousands of digits (a pasted run of 9s, or the side kept in proportion to one)
    is refused as over 16x in a short line: Python cannot print an int of over 4300 digits (a
    ValueError), and a line of them says nothing more."""
    with pytest.raises(DRCNError) as refused:
        target.resolve(*size)
    assert str(refused.value) == f"target size huge is more than 16x the input {size[1]}x{size[0]}"


@pytest.mark.parametrize("kwargs, words", [
    ({"scale": 2.0, "width": 800}, "not both"),
    ({"long_edge": 800, "height": 600}, "not both"),
    ({"width": -1}, "whole number"),
    ({"height": 2.5}, "whole number"),
])
def test_contradictions(kwargs: dict, words: str) -> None:
    with pytest.raises(DRCNError, match=words):
        TargetSize(**kwargs)


def test_tags() -> None:
    assert [TargetSize(scale=2.5).tag(), TargetSize(width=9).tag(), TargetSize(height=9).tag(),
            TargetSize(width=9, height=8).tag(), TargetSize(long_edge=7).tag()] == \
        ["x2.5", "w9", "h9", "9x8", "long7"]


def test_exact_size_is_the_model_at_that_size(tiny_model) -> None:
    """Width and height give the engine's explicit size: no resize after the network."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    upscaler = Upscaler(tiny_model, device="cpu", precision="fp32")
    oh, ow = TargetSize(width=90, height=50).resolve(30, 40)
    out = upscaler.upscale(image, size=(oh, ow))
    assert out.shape == (50, 90, 3)
    # Different from squeezing the x2.25 result: each axis has its own interpolation ratio.
    wide = upscaler.upscale(image, 2.25)
    assert wide.shape == (68, 90, 3)


@pytest.fixture()
def photo(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    path = tmp_path / "a.png"
    Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(path)
    return path


def _run(photo: Path, model: str, *args: str):
    out = photo.parent / "out"
    result = runner.invoke(app, ["upscale", str(photo), "-o", str(out), "--model", model,
                                 "--device", "cpu", "--precision", "fp32", *args])
    files = sorted(out.glob("*.png")) if out.is_dir() else []
    return result, [Image.open(f).size for f in files]


@pytest.mark.parametrize("args, size", [
    (("--width", "1000"), (1000, 750)),
    (("--width", "900", "--height", "500"), (900, 500)),
    (("--height", "450"), (600, 450)),
    (("--long-edge", "800"), (800, 600)),
])
def test_cli_sizes(photo: Path, tiny_model_file: str, args: tuple, size: tuple) -> None:
    result, sizes = _run(photo, tiny_model_file, *args)
    assert result.exit_code == 0, result.output
    assert sizes == [size]


def test_cli_default_folder_names_the_size(photo: Path, tiny_model_file: str) -> None:
    result = runner.invoke(app, ["upscale", str(photo), "--width", "420", "--model",
                                 tiny_model_file, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert Image.open(photo.parent / "drcn-w420" / "a.png").size == (420, 315)


@pytest.mark.parametrize("args, words", [
    (("--scale", "2", "--width", "900"), "--scale: give a scale factor or a target size"),
    (("--long-edge", "900", "--height", "800"), "--long-edge: give a long edge or a width"),
    (("--width", "0"), "--width"),
])
def test_cli_option_refusals(photo: Path, tiny_model_file: str, args: tuple, words: str) -> None:
    result, sizes = _run(photo, tiny_model_file, *args)
    assert result.exit_code == 2 and words in result.output and sizes == []
    assert "Traceback" not in result.output


def test_cli_smaller_than_input_is_one_line(photo: Path, tiny_model_file: str) -> None:
    result, sizes = _run(photo, tiny_model_file, "--width", "300")
    assert result.exit_code == 1 and sizes == []
    errors = [ln for ln in result.output.splitlines() if "error" in ln]
    assert len(errors) == 1 and "target size 300x225 is smaller than the input 400x300" in \
        errors[0], result.output


def test_cli_huge_height_is_one_line(photo: Path, tiny_model_file: str) -> None:
    """The most digits Python reads: the width kept in proportion is past what it can print."""
    result, sizes = _run(photo, tiny_model_file, "--height", "9" * 4300)
    assert result.exit_code == 1 and sizes == []
    errors = [ln for ln in result.output.splitlines() if "error" in ln]
    assert len(errors) == 1, result.output
    assert errors[0].endswith("target size huge is more than 16x the input 400x300"), errors[0]
