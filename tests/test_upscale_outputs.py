"""``drcn upscale`` output places under hostile conditions: reruns, results beside their inputs."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import random_rgb
from typer.testing import CliRunner

from drcn_plugin.cli import app

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("wide_console")


def upscale(*args: str):
    return runner.invoke(app, ["upscale", *args])


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_results_beside_their_inputs_are_not_upscaled_again(folder: Path,
                                                            tiny_model_file: str) -> None:
    """-o on the input folder with a --suffix: the next run (resumed with --skip-existing, or
    redone with --overwrite) takes the first run's results for results, not for inputs."""
    random_rgb().save(folder / "a.png")
    random_rgb(seed=1).save(folder / "b.jpg")
    args = (str(folder), "-o", str(folder), "--suffix", "_x", "--model", tiny_model_file)
    assert upscale(*args).exit_code == 0
    first = names(folder)
    assert first == ["a.png", "a_x.png", "b.jpg", "b_x.jpg"]
    r = upscale(*args, "--skip-existing")
    assert r.exit_code == 0 and "0 done, 2 skipped, 0 failed" in r.output, r.output
    r = upscale(*args, "--overwrite")
    assert r.exit_code == 0 and "2 done, 0 skipped, 0 failed" in r.output, r.output
    assert names(folder) == first
