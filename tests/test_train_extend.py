"""A resume that changes the run's length (--steps), how often it validates (--val-every), and
one given a time budget (--minutes): the schedule goes on without a jump to the new end."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from helpers import tiny
from typer.testing import CliRunner

from drcn_plugin.cli import app
from drcn_plugin.training.schedule import alpha_at, lr_factor
from drcn_plugin.training.trainer import Progress, train

pytestmark = pytest.mark.usefixtures("one_thread")


def _rows(run: Path) -> list[dict]:
    return [r for r in json.loads((run / "log.json").read_text())["history"] if "loss" in r]


def _rate(run: Path) -> float:
    """The learning rate the next step of the run's checkpoint trains with."""
    state = torch.load(run / "last.pt", weights_only=True)
    return state["optimizer"]["param_groups"][0]["lr"]


def test_a_stopped_run_extended_goes_on_from_its_rate_to_the_new_end(
        t12: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = tiny(t12, tmp_path, steps=20, stop_at=8)  # cosine, 5 warm-up steps, alpha over 10
    train(cfg)
    before = _rate(tmp_path)
    with caplog.at_level(logging.WARNING):
        log = train(replace(cfg, steps=40, stop_at=9), resume=True)
    assert log["stopped_at"] == 9 and log["total"] == 40
    assert "ignored" not in caplog.text and "training on to step 40 (the run's total was 20)" \
        in caplog.text, caplog.text
    extended = [(8, 20)]
    assert lr_factor(cfg, 8, 40, extended) == lr_factor(cfg, 8, 20)  # no jump at the resume
    assert before == pytest.approx(2e-3 * lr_factor(cfg, 8, 20))
    after = _rate(tmp_path)  # one step on: a little lower, on the cosine stretched to 40
    assert after == pytest.approx(2e-3 * lr_factor(cfg, 9, 40, extended))
    assert 0.95 * before < after < before
    assert 2e-3 * lr_factor(cfg, 9, 40) > 1.05 * before  # the longer run's curve would jump
    assert alpha_at(cfg, 8, 40, extended) == alpha_at(cfg, 8, 20) == pytest.approx(0.2)

    log = train(replace(cfg, steps=40, stop_at=0), resume=True)  # the run's total is now 40
    rows = _rows(tmp_path)
    assert log["step"] == rows[-1]["step"] == 40 and log["weights"]
    assert rows[-1]["lr"] == 0.0 and rows[-1]["alpha"] == 0.0  # both reached their end at 40
    assert lr_factor(cfg, 39, 40, extended) > 0 and alpha_at(cfg, 19, 40, extended) > 0
    assert alpha_at(cfg, 20, 40, extended) == 0.0  # alpha_decay of the new total
    change = [r for r in log["history"] if r.get("event") == "steps"]
    assert [(r["step"], r["total"], r["was"]) for r in change] == [(8, 40, 20)]
    card = (tmp_path / f"{log['weights'].removesuffix('.safetensors')}.md").read_text()
    assert "40 steps (planned as 20, then 40 from step 8)" in card, card
    assert "--steps 20" in card and "--stop-at 8\ndrcn train --resume --steps 40\n" in card, card


def test_a_finished_run_extended_trains_on(t12: Path, tmp_path: Path) -> None:
    cfg = tiny(t12, tmp_path, steps=8, schedule="constant", alpha=0.0)
    train(cfg)
    log = train(replace(cfg, steps=12), resume=True)
    assert log["step"] == _rows(tmp_path)[-1]["step"] == 12 and log["weights"]
    card = (tmp_path / f"{log['weights'].removesuffix('.safetensors')}.md").read_text()
    assert "--steps 8" in card and "--stop-at" not in card, card
    assert "drcn train --resume --steps 12\n" in card, card


def test_a_finished_cosine_run_extended_starts_its_cosine_again(
        t12: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Its rate had reached 0: going on from it would train nothing."""
    cfg = tiny(t12, tmp_path, steps=8)  # cosine over steps 5..8
    train(cfg)
    assert _rate(tmp_path) == 0.0
    with caplog.at_level(logging.WARNING):
        assert train(replace(cfg, steps=16, stop_at=9), resume=True)["stopped_at"] == 9
    assert "rate at step 8 is 0.002 (it had ended at 0: a warm restart" in caplog.text
    assert _rate(tmp_path) == pytest.approx(2e-3 * 0.5 * (1 + math.cos(math.pi / 8)))
    log = train(replace(cfg, steps=16), resume=True)
    rows = _rows(tmp_path)
    assert log["step"] == rows[-1]["step"] == 16 and rows[-1]["lr"] == 0.0 and log["weights"]


def test_step_drops_taken_stay_taken_and_those_to_come_move(t12: Path) -> None:
    cfg = tiny(t12, t12, schedule="step", lr_drops=[0.25, 0.75], warmup=0)
    extended = [(20, 40)]  # drops at steps 10 and 30; the first is taken by step 20
    assert lr_factor(cfg, 20, 80, extended) == lr_factor(cfg, 20, 40) == pytest.approx(0.1)
    assert lr_factor(cfg, 30, 80, extended) == pytest.approx(0.1)  # the second moved to 60
    assert lr_factor(cfg, 59, 80, extended) == pytest.approx(0.1)
    assert lr_factor(cfg, 60, 80, extended) == pytest.approx(0.01)
    assert lr_factor(cfg, 13, 80, [(12, 40)]) == pytest.approx(0.1)  # the first drop, taken at
    # step 10, is not undone until its place in the longer run (20)


def test_a_cosine_extended_during_warm_up_is_the_longer_run_s(t12: Path) -> None:
    cfg = tiny(t12, t12, warmup=10)
    for step in (3, 10, 25, 60):
        assert lr_factor(cfg, step, 60, [(3, 20)]) == pytest.approx(lr_factor(cfg, step, 60))
    twice = [(15, 20), (18, 30)]  # extended again: still no jump, still 0 at the end
    assert lr_factor(cfg, 18, 50, twice) == lr_factor(cfg, 18, 30, twice[:1])
    assert lr_factor(cfg, 50, 50, twice) == 0.0 < lr_factor(cfg, 49, 50, twice)


def test_a_shortened_cosine_goes_on_from_its_rate_to_0_at_the_new_total(t12: Path) -> None:
    cfg = tiny(t12, t12)  # 5 warm-up steps
    shorter = [(20, 40)]
    assert lr_factor(cfg, 20, 30, shorter) == lr_factor(cfg, 20, 40)
    assert lr_factor(cfg, 21, 30, shorter) < lr_factor(cfg, 21, 40)  # it decays faster
    assert lr_factor(cfg, 30, 30, shorter) == 0.0 < lr_factor(cfg, 29, 30, shorter)
    assert alpha_at(cfg, 12, 30, [(12, 40)]) == alpha_at(cfg, 12, 40) == pytest.approx(0.4)
    assert alpha_at(cfg, 15, 30, [(12, 40)]) == 0.0 < alpha_at(cfg, 14, 30, [(12, 40)])


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_time_budget_run_given_steps_trains_to_them(t12: Path, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    def signal_at_25(progress: Progress) -> None:  # progress comes every 25 steps
        if progress.step == 25:
            os.kill(os.getpid(), signal.SIGINT)

    cfg = tiny(t12, tmp_path, steps=0, minutes=0.5)
    log = train(cfg, on_progress=signal_at_25)
    assert log["stopped_at"] == 25 and log["total"] == 0  # the budget not fitted yet (step 30)
    with caplog.at_level(logging.WARNING):
        log = train(replace(cfg, steps=40), resume=True)
    assert "training on to step 40 (the run's total was its time budget's)" in caplog.text
    assert log["step"] == _rows(tmp_path)[-1]["step"] == 40 and log["config"]["minutes"] == 0
    card = (tmp_path / f"{log['weights'].removesuffix('.safetensors')}.md").read_text()
    assert "40 steps (planned as a time budget, then 40 from step 25)" in card, card


def test_steps_not_past_the_checkpoint_are_refused_in_one_line(t12: Path,
                                                               tmp_path: Path) -> None:
    common = ["train", "--out", str(tmp_path), "--no-curves"]
    recipe = ["--data", str(t12), "-s", "3", "-F", "4", "-D", "2", "--patch", "32", "--stride",
              "64", "--batch", "4", "--device", "cpu", "--val-every", "0", "--steps", "8"]
    runner = CliRunner()
    assert runner.invoke(app, [*common, *recipe, "--stop-at", "4"]).exit_code == 0
    files = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    for steps in ("4", "3"):
        r = runner.invoke(app, [*common, "--resume", "--steps", steps])
        assert r.exit_code == 2 and r.output.count("error") == 1, r.output
        assert r.output.strip().splitlines()[-1] == (
            "error: invalid value for --steps: the run is at step 4: a resume trains on to a "
            "larger total, or to the run's own with none given"), r.output
    r = runner.invoke(app, [*common, "--resume", "--minutes", "5"])
    assert r.exit_code == 2 and r.output.count("error") == 1, r.output
    assert r.output.strip().splitlines()[-1] == (
        "error: invalid value for --minutes: a resume takes no time budget: give the run's new "
        "total in steps instead (past its step, 4)"), r.output
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == files  # nothing changed
    r = runner.invoke(app, [*common, "--resume", "--steps", "8", "--stop-at", "6"])  # its total
    assert r.exit_code == 0 and "stopped at step 6" in r.output, r.output
    assert not [h for h in json.loads((tmp_path / "log.json").read_text())["history"]
                if h.get("event") == "steps"]


def test_val_every_on_resume_is_this_session_s(t12: Path, tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    cfg = tiny(t12, tmp_path, steps=12, val_every=4, stop_at=4)
    train(cfg)
    with caplog.at_level(logging.WARNING):
        log = train(replace(cfg, val_every=3, stop_at=0), resume=True)
    assert "ignored" not in caplog.text, caplog.text
    validated = [h["step"] for h in log["history"] if "val_psnr" in h]
    assert validated == [4, 6, 9, 12]  # the first session's, then every 3 steps, and the end
    assert log["config"]["val_every"] == 3
