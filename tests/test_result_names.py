"""Result names of ``drcn upscale``: whose result an existing file is, what a renamed result
says, and how planning grows with inputs that share a name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import time_growth, upscale
from PIL import Image

from drcn_plugin.resultnames import Job, unique_targets

pytestmark = pytest.mark.usefixtures("wide_console")


def solid(path: Path, colour: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), colour).save(path)


def reddest(path: Path) -> bool:
    """Whether the result at ``path`` is the red input's (red above blue), not the blue one's."""
    r, _, b = np.asarray(Image.open(path).convert("RGB"), dtype=float).mean(axis=(0, 1))
    return r > b


def test_skip_existing_never_skips_an_input_for_another_inputs_result(
        folder: Path, tiny_model_file: str) -> None:
    """x.jpg's result is out/x.png; an x.png added later has that name by default, but the file
    there is x.jpg's: one error line naming it, not "skipped", and --overwrite redoes it. An
    input whose name no other input can have is still skipped."""
    solid(folder / "x.jpg", "red")
    solid(folder / "y.png", "green")
    out = folder.parent / "out"
    args = (str(folder), "-o", str(out), "-f", "png", "--model", tiny_model_file)
    assert upscale(*args).exit_code == 0
    solid(folder / "x.png", "blue")
    r = upscale(*args, "--skip-existing")
    assert r.exit_code == 1 and "1 done, 1 skipped, 1 failed" in r.output, r.output
    assert f"{out / 'x.png'} exists but may be {folder / 'x.jpg'}'s result, which can have that " \
           "name too: not skipped (--overwrite redoes it, or move that file away)" in r.output
    assert reddest(out / "x.png") and reddest(out / "x.jpg.png")  # x.jpg's, kept and redone
    r = upscale(*args, "--overwrite")
    assert r.exit_code == 0 and "3 done" in r.output, r.output
    assert not reddest(out / "x.png") and reddest(out / "x.jpg.png")


def test_skip_existing_never_skips_a_same_named_file_of_another_folder(
        tmp_path: Path, tiny_model_file: str) -> None:
    """``day2 -o out``, then ``day1 day2 -o out --skip-existing``: out/IMG_1.png is day2's, so
    day1/IMG_1.png is an error line naming it, never reported skipped."""
    solid(tmp_path / "day1" / "IMG_1.png", "red")
    solid(tmp_path / "day2" / "IMG_1.png", "blue")
    out = tmp_path / "out"
    assert upscale(str(tmp_path / "day2"), "-o", str(out), "--model", tiny_model_file).exit_code == 0
    r = upscale(str(tmp_path / "day1"), str(tmp_path / "day2"), "-o", str(out), "--skip-existing",
                "--model", tiny_model_file)
    assert r.exit_code == 1 and "0 skipped" in r.output, r.output
    assert f"{out / 'IMG_1.png'} exists but may be {tmp_path / 'day2' / 'IMG_1.png'}'s result" \
        in r.output
    assert not reddest(out / "IMG_1.png")  # still day2's


def test_a_renamed_result_says_whose_result_has_its_name(tmp_path: Path,
                                                          tiny_model_file: str) -> None:
    """Four inputs that would all be x.png: each result not named so says, in the summary,
    which input's result took the name."""
    for name in ("a/x.png", "b/x.png", "a/X.png", "a/x.PNG"):
        solid(tmp_path / name, "red")
    out = tmp_path / "out"
    r = upscale(*(str(tmp_path / n) for n in ("a/x.png", "b/x.png", "a/X.png", "a/x.PNG")),
                "-o", str(out), "-f", "png", "--model", tiny_model_file)
    assert r.exit_code == 0 and "4 done" in r.output, r.output
    assert sorted(p.name for p in out.iterdir()) == ["X.png", "x-2.png", "x-3.png", "x.PNG.PNG"]
    owner = tmp_path / "a" / "X.png"
    for name in ("x-2.png", "x-3.png", "x.PNG.PNG"):
        assert f"written as {name}: X.png is {owner}'s result" in r.output
    assert r.output.count("written as") == 3  # X.png has its own name: no note


def test_planning_inputs_that_share_a_name_grows_linearly(tmp_path: Path) -> None:
    """Each of many inputs named x.png gets the next free number at once, not after trying all
    the numbers taken before it (3,000 of them took seconds)."""
    def plan(count: int) -> None:
        jobs = [Job(tmp_path / f"d{i}" / "x.png", tmp_path / "x.png") for i in range(count)]
        unique_targets(jobs, "", "png", set())
        assert {j.target.name for j in jobs} == {"x.png", "x.png.png",
                                                 *(f"x-{n}.png" for n in range(2, count))}

    assert time_growth(plan, 250) < 10
