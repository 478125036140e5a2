"""Result names of ``drcn upscale``: whose result an existing file is, what a renamed result
says, and how planning grows with inputs that share a name."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from helpers import time_growth, upscale
from PIL import Image

from drcn_plugin.batch import collect_jobs
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
    there is x.jpg's: one error line naming it, not "skipped", and x.jpg is not written as
    x.jpg.png either (the next run would take out/x.png for x.png's), so a second run refuses
    alike; --overwrite redoes them. An input whose name no other input can have is skipped."""
    solid(folder / "x.jpg", "red")
    solid(folder / "y.png", "green")
    out = folder.parent / "out"
    args = (str(folder), "-o", str(out), "-f", "png", "--model", tiny_model_file)
    assert upscale(*args).exit_code == 0
    solid(folder / "x.png", "blue")
    for _ in range(2):
        r = upscale(*args, "--skip-existing")
        assert r.exit_code == 1 and "0 done, 1 skipped, 2 failed" in r.output, r.output
        assert f"{out / 'x.png'} exists but may be another input's result ({folder / 'x.jpg'}), " \
               "which can have that name and has none of its own yet: not skipped (move that " \
               "file away, or redo all with --overwrite)" in r.output
        assert f"{folder / 'x.jpg'}: its result may be {out / 'x.png'}, there under another " \
               "input's name: not written" in r.output
        assert reddest(out / "x.png") and not (out / "x.jpg.png").exists()  # x.jpg's, kept
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
    assert f"{out / 'IMG_1.png'} exists but may be another input's result " \
           f"({tmp_path / 'day2' / 'IMG_1.png'})" in r.output
    assert not reddest(out / "IMG_1.png")  # still day2's


def test_an_unchanged_rerun_skips_inputs_that_share_a_name(tmp_path: Path,
                                                           tiny_model_file: str) -> None:
    """A finished batch whose inputs share a name, run again with --skip-existing: every result
    of the run is there, so each file is its own input's and is skipped, none redone."""
    for folder, names, options in (("days", ("day1/IMG_1.png", "day2/IMG_1.png"), ()),
                                   ("exts", ("x.jpg", "x.png"), ("-f", "png")),
                                   ("dirs", ("d1/x.png", "d2/x.png", "d3/x.png"), ())):
        for name in names:
            solid(tmp_path / folder / name, "red")
        args = (*(str(tmp_path / folder / n) for n in names), "-o", str(tmp_path / folder / "o"),
                *options, "--model", tiny_model_file)
        assert upscale(*args).exit_code == 0
        r = upscale(*args, "--skip-existing")
        assert r.exit_code == 0 and f"0 done, {len(names)} skipped" in r.output, r.output


def test_an_input_that_sorts_first_never_takes_a_later_ones_name(tmp_path: Path,
                                                                 tiny_model_file: str) -> None:
    """d1, d2, d3 all hold x.png; d1's result x.png is gone. x.png.png and x-2.png can only be d2's
    and d3's (d1 comes first: it is given x.png in any run), so they are skipped and d1 redone."""
    for name, colour in (("d1", "red"), ("d2", "blue"), ("d3", "blue")):
        solid(tmp_path / name / "x.png", colour)
    out = tmp_path / "out"
    args = (*(str(tmp_path / d) for d in ("d1", "d2", "d3")), "-o", str(out), "--model",
            tiny_model_file)
    assert upscale(*args).exit_code == 0
    (out / "x.png").unlink()
    r = upscale(*args, "--skip-existing")
    assert r.exit_code == 0 and "1 done, 2 skipped" in r.output, r.output
    assert reddest(out / "x.png") and not reddest(out / "x-2.png")


def test_a_refused_skip_names_the_inputs_without_a_result(tmp_path: Path,
                                                         tiny_model_file: str) -> None:
    """``d3 -o out``, then ``d1 d2 d3 -o out --skip-existing``: out/x.png may be d2's or d3's
    result, and the line names both, not only the first other input."""
    for name in ("d1", "d2", "d3"):
        solid(tmp_path / name / "x.png", "red")
    out = tmp_path / "out"
    assert upscale(str(tmp_path / "d3"), "-o", str(out), "--model", tiny_model_file).exit_code == 0
    r = upscale(*(str(tmp_path / d) for d in ("d1", "d2", "d3")), "-o", str(out),
                "--skip-existing", "--model", tiny_model_file)
    assert r.exit_code == 1 and "0 skipped" in r.output, r.output
    assert f"{out / 'x.png'} exists but may be another input's result " \
           f"({tmp_path / 'd2' / 'x.png'} or {tmp_path / 'd3' / 'x.png'})" in r.output


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
    the numbers taken before it (which for 3,000 of them takes seconds)."""
    def plan(count: int) -> None:
        jobs = [Job(tmp_path / f"d{i}" / "x.png", tmp_path / "x.png") for i in range(count)]
        unique_targets(jobs, "", "png", set())
        assert {j.target.name for j in jobs} == {"x.png", "x.png.png",
                                                 *(f"x-{n}.png" for n in range(2, count))}

    assert time_growth(plan, 250) < 10


def test_an_input_given_again_is_upscaled_once_and_said_so(tmp_path: Path,
                                                          tiny_model_file: str) -> None:
    """The same path twice (written two ways), a symlink to it and a hard link: one result, and
    the summary names every other name, where the file used to vanish without a word."""
    solid(tmp_path / "in" / "a.png", "red")
    (tmp_path / "in" / "link.png").symlink_to("a.png")
    os.link(tmp_path / "in" / "a.png", tmp_path / "in" / "hard.png")
    out = tmp_path / "out"
    r = upscale(str(tmp_path / "in" / "a.png"), str(tmp_path / "in" / ".." / "in" / "a.png"),
                str(tmp_path / "in"), "-o", str(out), "--model", tiny_model_file)
    assert r.exit_code == 0 and "1 done, 0 skipped, 0 failed" in r.output, r.output
    assert [p.name for p in out.iterdir()] == ["a.png"]
    assert f"also given as {tmp_path / 'in' / 'hard.png'}, {tmp_path / 'in' / 'link.png'}" \
        in r.output
    r = upscale(str(tmp_path / "in" / "a.png"), str(tmp_path / "in" / "a.png"), "-o",
                str(tmp_path / "two"), "--model", tiny_model_file)
    assert r.exit_code == 0 and "given more than once" in r.output, r.output


def test_a_renamed_input_given_again_keeps_both_notes(tmp_path: Path) -> None:
    """A result renamed for a collision, whose input was also given twice, says both."""
    for name in ("a/x.png", "b/x.png"):
        solid(tmp_path / name, "red")
    jobs, errors = collect_jobs([str(tmp_path / "a" / "x.png"), str(tmp_path / "b" / "x.png"),
                                 str(tmp_path / "b" / "x.png")], 2, str(tmp_path / "out"),
                                False, "", "same")
    assert not errors and [j.note for j in jobs] == [
        "", f"written as x.png.png: x.png is {tmp_path / 'a' / 'x.png'}'s result; "
            "given more than once"]


def test_a_skipped_input_given_again_still_names_its_other_names(tmp_path: Path,
                                                                tiny_model_file: str) -> None:
    """--skip-existing skipping an input also given by a link: the link is said, not lost."""
    solid(tmp_path / "in" / "a.png", "red")
    (tmp_path / "in" / "link.png").symlink_to("a.png")
    solid(tmp_path / "out" / "a.png", "blue")
    r = upscale(str(tmp_path / "in" / "a.png"), str(tmp_path / "in" / "link.png"), "-o",
                str(tmp_path / "out"), "--skip-existing", "--model", tiny_model_file)
    assert r.exit_code == 0 and "0 done, 1 skipped, 0 failed" in r.output, r.output
    assert (f"already exists; also given as {tmp_path / 'in' / 'link.png'}"
            in " ".join(r.output.split())), r.output
