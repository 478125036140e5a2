"""Training's option combinations and interrupts found by a hostile pass: an option the others
leave without effect is refused in one line, and an interrupt before the steps says so."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import tiny
from typer.testing import CliRunner

from drcn_plugin.cli import app
from drcn_plugin.errors import BadOptionError
from drcn_plugin.training.config import TrainConfig, check_options
from drcn_plugin.training.trainer import train

pytestmark = pytest.mark.usefixtures("one_thread")


def _cli(t12: Path, out: Path, *args: str) -> tuple[int, str]:
    r = CliRunner().invoke(app, ["train", "--data", str(t12), "--out", str(out), "-F", "4", "-D",
                                 "2", "-s", "2", "--patch", "32", "--stride", "64", "--downscale",
                                 "1", "--batch", "4", "--steps", "4", "--warmup", "1",
                                 "--device", "cpu", "--no-curves", *args])
    return r.exit_code, r.output


@pytest.mark.parametrize(("args", "message"), [
    (["--lr-drop", "0.3"], "--lr-drop: learning-rate drops act only with the step schedule, "
                           "not cosine"),
    (["--schedule", "constant", "--lr-drop", "0.5"], "only with the step schedule, not constant"),
    (["--momentum", "0.5"], "--momentum: the momentum acts only with the sgd optimizer"),
    (["--teacher-weight", "0.5"], "--teacher-weight: a teacher weight needs a teacher"),
    (["--degrade-copies", "2"], "--degrade-copies: degraded copies need a degradation recipe"),
    (["--alpha", "0", "--alpha-decay", "0.3"], "--alpha-decay: with alpha 0 there is no"),
    (["--minutes", "1"], "--steps: a time budget fits its own step count"),
    (["--stop-at", "4"], "--stop-at: step 4 is not before the run's end (4 steps)"),
    (["--stop-at", "9"], "--stop-at: step 9 is not before the run's end"),
    (["-s", "3", "-s", "2"], "--scale: scales 2, 3, 2 name one twice"),
    (["--downscale", "0.5", "--downscale", "1.0"],
     "--downscale: downscale factors 1, 0.5, 1 name one twice: give each once"),
    (["--val-degrade", "jpeg:75"], "--val-degrade: there is no validation or test folder"),
    (["--baseline", "drcn-lite"], "--baseline: there is no validation or test folder to measure"),
])
def test_an_option_the_others_leave_without_effect_is_refused(t12: Path, tmp_path: Path,
                                                             args: list[str],
                                                             message: str) -> None:
    code, output = _cli(t12, tmp_path / "run", *args)
    assert code == 2 and message in output, output
    assert "Traceback" not in output and not (tmp_path / "run").exists()


def test_options_where_they_act_are_taken(t12: Path, tmp_path: Path) -> None:
    base = tiny(t12, tmp_path, steps=4, warmup=1)
    for acting in (dict(schedule="step", lr_drops=[0.3]), dict(optimizer="sgd", momentum=0.5),
                   dict(degrade="jpeg:50", degrade_copies=2), dict(alpha_decay=0.3),
                   dict(stop_at=3), dict(stop_at=0), dict(minutes=1.0, steps=0),
                   dict(degrade="jpeg:50", teacher="drcn-lite", teacher_weight=0.5)):
        check_options(TrainConfig(**{**vars(base), **acting}), False, None)
    # A resume takes its checkpoint's recipe: what it is given there is named as ignored.
    check_options(TrainConfig(**{**vars(base), "lr_drops": [0.3]}), True, {"lr_drops"})


def test_a_downscale_factor_twice_is_refused_for_new_runs_only(t12: Path, tmp_path: Path) -> None:
    """The library refuses it as the command line does; a checkpoint an earlier version saved
    with one (checked as :func:`.checkpoint` loads it) and its resume still pass."""
    twice = tiny(t12, tmp_path, downscales=[0.8, 0.8])
    with pytest.raises(BadOptionError, match="factors 0.8, 0.8 name one twice") as info:
        check_options(twice, False, None)
    assert info.value.option == "downscales"
    twice.check()
    check_options(twice, True, {"downscales"})


def test_the_library_refuses_a_combination_before_making_the_run_folder(t12: Path,
                                                                        tmp_path: Path) -> None:
    with pytest.raises(BadOptionError, match="only with the sgd optimizer") as info:
        train(tiny(t12, tmp_path / "run", momentum=0.5))
    assert info.value.option == "momentum" and not (tmp_path / "run").exists()


def test_an_interrupt_before_the_steps_is_one_line(t12: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(TrainConfig, "check", interrupted)
    code, output = _cli(t12, tmp_path / "run")
    assert code == 130 and output.strip() == "error: interrupted: no checkpoint was written yet"


def test_the_closing_line_is_not_wrapped(t12: Path, tmp_path: Path) -> None:
    out = tmp_path / ("a-long-run-folder-name-" * 3)
    code, output = _cli(t12, out)
    assert code == 0, output
    assert f"wrote {out / 'drcn-f4-d2-x2.safetensors'} and its model card (4 steps, " in output
    assert output.rstrip().endswith(" steps/s)") and "\nsteps/s" not in output


@pytest.mark.parametrize(("args", "message"), [
    (["--lr", "1e38"], "--lr: learning rate must be a positive number up to 1000"),
    (["--optimizer", "sgd", "--lr", "0.01", "--weight-decay", "1e39"],
     "--weight-decay: weight decay must be a number in 0..1000"),
])
def test_a_rate_too_large_for_float32_is_refused_not_a_traceback(t12: Path, tmp_path: Path,
                                                                 args: list[str],
                                                                 message: str) -> None:
    code, output = _cli(t12, tmp_path / "run", *args)  # beyond float32 in the step
    assert code == 2 and message in output, output
    assert "Traceback" not in output and not (tmp_path / "run").exists()


def test_a_damaged_training_image_is_the_only_line(t12: Path, tmp_path: Path) -> None:
    """The bar shown while the data loads goes when the run fails before its first step."""
    data = tmp_path / "data"
    data.mkdir()
    for source in sorted(t12.iterdir())[:2]:
        (data / source.name).write_bytes(source.read_bytes())
    (data / "zz_cut.png").write_bytes(source.read_bytes()[:600])
    code, output = _cli(data, tmp_path / "run")
    assert code != 0 and output.strip().splitlines() == [
        f"error: {data / 'zz_cut.png'}: cannot decode image (image file is truncated)"], output


def test_a_run_that_fails_before_its_first_step_says_it_on_the_first_line(
        t12: Path, tmp_path: Path) -> None:
    """Off a terminal, the progress bar left a blank line above the error of a run that never
    started (Rich prints one as a non-interactive display stops)."""
    data = tmp_path / "data"
    shutil.copytree(t12, data)
    (data / "zz.png").write_bytes(b"not an image")
    code, output = _cli(data, tmp_path / "run")
    assert code == 2 and output.startswith("error: "), repr(output)
    assert output.count("\n") == 1 and "zz.png: not an image Pillow can read" in output


def test_a_resume_with_no_step_left_shows_no_empty_bar(t12: Path, tmp_path: Path) -> None:
    code, output = _cli(t12, tmp_path / "run")
    assert code == 0, output
    r = CliRunner().invoke(app, ["train", "--resume", "--out", str(tmp_path / "run"),
                                 "--no-curves"])
    assert r.exit_code == 0 and r.output.startswith("wrote "), r.output  # no "train 0/?" bar
