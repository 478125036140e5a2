"""A training never leaves a checkpoint it cannot go on from: weights that went NaN end the run
with one line and the last good checkpoint kept."""

from __future__ import annotations

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
from drcn_plugin.errors import CheckpointError, DiskFullError, DivergedError, TrainingError
from drcn_plugin.training import checkpoint, trainer
from drcn_plugin.training.schedule import lr_factor
from drcn_plugin.training.trainer import Trainer, train

pytestmark = pytest.mark.usefixtures("one_thread")
_step = Trainer._train_step


def _poisoned_at(step: int, stop: bool) -> object:
    """A training step whose update makes the weights NaN at ``step`` (as a huge learning rate
    does in one step), then, with ``stop``, a SIGTERM: the stop a user asks for as it happens."""
    def poisoned(self: Trainer) -> torch.Tensor:
        loss = _step(self)
        if self.step == step:
            with torch.no_grad():
                next(self.model.parameters()).fill_(math.nan)
            if stop:
                os.kill(os.getpid(), signal.SIGTERM)
        return loss
    return poisoned


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_diverged_run_goes_on_from_its_checkpoint_with_a_lower_learning_rate(
        t12: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A stop as the weights go NaN keeps the good checkpoint, and a resume given a lower peak
    rate trains on with it: the schedule is the one a run started with that rate has from the
    resumed step, recorded in the checkpoint, the log's history and the model card."""
    train(tiny(t12, tmp_path, steps=40, stop_at=4))  # a good last.pt at step 4, peak rate 2e-3
    before = (tmp_path / "last.pt").read_bytes()
    monkeypatch.setattr(Trainer, "_train_step", _poisoned_at(7, stop=True))
    with pytest.raises(DivergedError) as e:
        train(tiny(t12, tmp_path, steps=40), resume=True)
    assert (tmp_path / "last.pt").read_bytes() == before  # not NaN weights over the good ones
    said = str(e.value)
    assert "diverged" in said and "by step 7" in said, said
    assert f"the checkpoint of step 4 is kept in {tmp_path}: resume it with a lower learning " \
        "rate, such as 0.0002" in said, said
    assert e.value.resumable and e.value.rate == pytest.approx(2e-4)
    monkeypatch.setattr(Trainer, "_train_step", _step)
    with caplog.at_level(logging.WARNING):
        resumed = train(tiny(t12, tmp_path, steps=40, lr=2e-4, stop_at=8), resume=True)
    assert resumed["stopped_at"] == 8 and "ignored" not in caplog.text, caplog.text
    assert "learning rate 0.0002 from step 4 on (was 0.002)" in caplog.text, caplog.text
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    rate = 2e-4 * lr_factor(tiny(t12, tmp_path), 8, 40)  # the rate such a run has at step 8
    assert [g["lr"] for g in state["optimizer"]["param_groups"]] == pytest.approx([rate] * 2)
    assert state["scheduler"]["base_lrs"] == [2e-4] * 2 and state["config"]["lr"] == 2e-4
    assert [r for r in state["history"] if "loss" in r][-1]["lr"] == pytest.approx(rate)
    change = [r for r in state["history"] if r.get("event") == "lr"]
    assert [(r["step"], r["peak_lr"], r["was"]) for r in change] == [(4, 2e-4, 2e-3)]
    log = train(tiny(t12, tmp_path, steps=40, lr=2e-4), resume=True)  # on to the end
    assert log["config"]["lr"] == 2e-4
    card = (tmp_path / f"{log['weights'].removesuffix('.safetensors')}.md").read_text()
    assert "learning rate 0.002, 0.0002 from step 4, cosine schedule" in card, card
    assert "--lr 0.002" in card and "--stop-at 4\ndrcn train --resume --lr 0.0002\n" in card, card


def test_a_new_rate_for_a_run_with_no_steps_left_is_not_recorded(
        t12: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    train(tiny(t12, tmp_path, steps=4))
    with caplog.at_level(logging.WARNING):
        log = train(tiny(t12, tmp_path, steps=4, lr=1e-4), resume=True)  # exports again
    assert "the new learning rate is ignored: the run has no steps left" in caplog.text
    assert log["config"]["lr"] == 2e-3 and not [r for r in log["history"] if r.get("event") == "lr"]


def test_the_divergence_line_names_the_options_to_go_on_with(
        t12: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    common = ["train", "--out", str(tmp_path), "--no-curves"]
    recipe = ["--data", str(t12), "-s", "3", "-F", "4", "-D", "2", "--patch", "32", "--stride",
              "64", "--batch", "4", "--device", "cpu", "--val-every", "0", "--steps", "40",
              "--warmup", "1", "--lr", "1e-3"]
    runner = CliRunner()
    assert runner.invoke(app, [*common, *recipe, "--stop-at", "3"]).exit_code == 0
    monkeypatch.setattr(Trainer, "_train_step", _poisoned_at(5, stop=False))
    r = runner.invoke(app, [*common, "--resume", "--stop-at", "6"])
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert "the checkpoint of step 3 is kept" in r.output, r.output
    assert f"(drcn train --resume --out {tmp_path} --lr 0.0001)" in r.output, r.output
    monkeypatch.setattr(Trainer, "_train_step", _step)
    r = runner.invoke(app, [*common, "--resume", "--lr", "1e-4", "--stop-at", "6"])
    assert r.exit_code == 0 and "stopped at step 6" in r.output, r.output
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["scheduler"]["base_lrs"] == [1e-4] * 2 and state["config"]["lr"] == 1e-4


def test_the_divergence_line_of_a_torchrun_job_says_the_torchrun_command(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under torchrun the line gives the torchrun command, not "drcn train --resume ...",
    which would resume on one process."""
    from drcn_plugin.devices import Dist
    from drcn_plugin.training.cli import diverged_advice

    error = DivergedError("training diverged", rate=1e-4, resumable=True)
    for name, value in (("WORLD_SIZE", "2"), ("RANK", "1"), ("LOCAL_RANK", "1"),
                        ("LOCAL_WORLD_SIZE", "2")):
        monkeypatch.setenv(name, value)  # as torchrun --nproc-per-node 2 sets them
    assert diverged_advice(error, tmp_path, Dist.from_env()) == (
        f"torchrun --nproc-per-node 2 --no-python drcn train --resume --out {tmp_path} "
        "--lr 0.0001")
    assert diverged_advice(DivergedError("x", 1e-4), tmp_path, Dist.from_env()) == \
        "the same command with --lr 0.0001"
    odd = 1.23456789e-4  # the rate given again exactly, not rounded to six digits
    assert float(diverged_advice(DivergedError("x", odd), tmp_path, Dist.from_env()).split()[-1]) \
        == odd
    monkeypatch.setenv("WORLD_SIZE", "4")  # two machines of two processes each
    assert diverged_advice(error, tmp_path, Dist.from_env()) == \
        f"the job's torchrun launch of drcn train --resume --out {tmp_path} --lr 0.0001"
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert diverged_advice(error, tmp_path, Dist.from_env()) == \
        f"drcn train --resume --out {tmp_path} --lr 0.0001"


@pytest.mark.parametrize("kind", ["stop_at", "end", "validation"])
def test_weights_that_went_nan_are_never_saved(t12: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    """At --stop-at, at the end and at a validation, the loss last seen was computed before the
    step that broke the weights: it is finite, the weights are not."""
    monkeypatch.setattr(Trainer, "_train_step", _poisoned_at(6, stop=False))
    cfg = {"stop_at": tiny(t12, tmp_path, steps=40, stop_at=6),
           "end": tiny(t12, tmp_path, steps=6),
           "validation": tiny(t12, tmp_path, steps=40, val_every=6, val_data=str(t12))}[kind]
    with pytest.raises(TrainingError, match=r"diverged.* by step 6; no checkpoint was written"):
        train(cfg)
    assert not {p.name for p in tmp_path.iterdir()} & {"last.pt", "best.pt",
                                                      "drcn-f8-d3-x3.safetensors"}


def test_the_loss_and_the_weights_end_the_run_with_the_same_line(t12: Path,
                                                                 tmp_path: Path) -> None:
    common = ["train", "--data", str(t12), "--out", str(tmp_path), "-s", "3", "-F", "8", "-D",
              "3", "--patch", "32", "--stride", "32", "--batch", "16", "--device", "cpu",
              "--no-curves", "--val-every", "0", "--steps", "40", "--optimizer", "sgd", "--lr",
              "1000", "--clip", "0"]
    r = CliRunner().invoke(app, common)
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    lines = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "training diverged: the loss became nan" in lines[0], r.output
    assert "no checkpoint was written" in lines[0] and "lower learning rate" in lines[0]
    assert lines[0].endswith("such as 100 (the same command with --lr 100)"), lines[0]


def test_a_checkpoint_holding_nan_weights_is_not_resumed(t12: Path, tmp_path: Path) -> None:
    """One written before this check (or by hand) would resume a run of NaN."""
    cfg = tiny(t12, tmp_path, steps=8, stop_at=4)
    train(cfg)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    next(iter(state["optimizer"]["state"].values()))["exp_avg"].fill_(math.inf)
    torch.save(state, tmp_path / "last.pt")
    with pytest.raises(CheckpointError, match="NaN or infinite values in the optimizer state"):
        train(tiny(t12, tmp_path, steps=8), resume=True)


def test_a_disk_that_fills_between_the_two_checkpoints_of_a_best_loses_no_best(
        t12: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """best.pt is written before last.pt, so a disk that fills between the two leaves no last.pt
    counting a best that best.pt does not hold: the resume reaches that best again."""
    monkeypatch.setattr(Trainer, "_validate", lambda self: {"val_psnr": float(self.step)})
    written: list[str] = []  # every validation is a new best: each writes both files

    def fills_at_the_fourth(path: Path, state: dict) -> None:
        if len(written) == 3:
            raise DiskFullError(f"disk full while writing {path}; nothing was written")
        written.append(path.name)
        checkpoint.save_state(path, state)

    monkeypatch.setattr(trainer, "save_state", fills_at_the_fourth)
    with pytest.raises(DiskFullError, match="--resume continues from its last checkpoint"):
        train(tiny(t12, tmp_path, steps=40, val_every=2))
    best, last = (torch.load(tmp_path / name, weights_only=True) for name in ("best.pt", "last.pt"))
    assert (best["step"], best["best"]) == (4, 4.0)  # the new best's weights are kept
    assert last["best"] <= best["best"]  # and the resume, from step 2, reaches it again


def test_a_disk_that_fills_at_the_first_validation_leaves_a_run_to_resume(
        t12: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """best.pt is written before last.pt: a full disk between the two at the first validation
    leaves best.pt alone, from which --resume goes on (a new run would refuse the folder
    without --overwrite)."""
    monkeypatch.setattr(Trainer, "_validate", lambda self: {"val_psnr": float(self.step)})
    whole = train(tiny(t12, tmp_path / "whole", steps=8, val_every=4))  # never interrupted

    def no_room_for_last(path: Path, state: dict) -> None:
        if path.name == "last.pt":
            raise DiskFullError(f"disk full while writing {path}; nothing was written")
        checkpoint.save_state(path, state)

    monkeypatch.setattr(trainer, "save_state", no_room_for_last)
    run = tmp_path / "run"
    cfg = tiny(t12, run, steps=8, val_every=4)
    with pytest.raises(DiskFullError, match="--resume continues from its last checkpoint"):
        train(cfg)
    assert (run / "best.pt").is_file() and not (run / "last.pt").exists()
    monkeypatch.setattr(trainer, "save_state", checkpoint.save_state)  # room again
    with caplog.at_level(logging.WARNING):
        log = train(cfg, resume=True)
    assert f"{run / 'last.pt'} is missing: resuming from " \
        f"{run / 'best.pt'} (step 4)" in caplog.text, caplog.text
    assert log["sha256"] == whole["sha256"]  # the same weights as the run never interrupted


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_stop_step_given_to_a_time_budget_not_yet_fitted_is_kept(t12: Path,
                                                                   tmp_path: Path) -> None:
    """A time-budget run stopped before it fitted its step count (30 steps into a session)
    trained on past a --stop-at given to its resume, even one before the checkpoint's step, and
    saved a checkpoint that no resume would then take (a stop step with a time budget)."""
    def stop_at_25(progress: trainer.Progress) -> None:  # progress comes every 25 steps
        if progress.step == 25:
            os.kill(os.getpid(), signal.SIGINT)

    assert train(tiny(t12, tmp_path, steps=0, minutes=0.05), on_progress=stop_at_25)["total"] == 0
    before = (tmp_path / "last.pt").read_bytes()
    assert train(tiny(t12, tmp_path, stop_at=10), resume=True)["nothing_to_do"]
    assert (tmp_path / "last.pt").read_bytes() == before
    assert train(tiny(t12, tmp_path, stop_at=28), resume=True)["stopped_at"] == 28
    assert train(tiny(t12, tmp_path), resume=True)["weights"]  # the checkpoint resumes to an end


def test_a_damaged_last_checkpoint_names_the_whole_best_one(t12: Path, tmp_path: Path) -> None:
    """last.pt cut short (a copy of the run folder that stopped) beside a whole best.pt: the
    refusal names best.pt and its step, and moving last.pt aside resumes from it."""
    from helpers import random_rgb

    (tmp_path / "val").mkdir()
    random_rgb(24, 24).save(tmp_path / "val" / "a.png")
    run = tmp_path / "run"
    cfg = tiny(t12, run, steps=8, val_every=4, stop_at=4, val_data=str(tmp_path / "val"))
    train(cfg)
    last = run / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    result = CliRunner().invoke(app, ["train", "--out", str(run), "--resume",
                                      "--device", "cpu", "--no-curves"])
    assert result.exit_code == 2, result.output
    line = result.output.strip().splitlines()[-1]
    assert f"{last} is damaged" in line and f"{run / 'best.pt'} (step 4) is whole" in line
    last.rename(run / "last.pt.damaged")
    assert train(replace(cfg, stop_at=0), resume=True)["weights"]


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE")
def test_a_file_size_limit_at_a_checkpoint_keeps_the_previous_one(t12: Path,
                                                                  tmp_path: Path) -> None:
    """A resume whose checkpoint cannot be written (``ulimit -f``, as a full disk): one line, and
    the previous checkpoint is left as it was, so a later resume goes on from it."""
    import resource

    cfg = tiny(t12, tmp_path, steps=8, val_every=4, stop_at=4)
    train(cfg)
    before = (tmp_path / "last.pt").read_bytes()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) // 2, hard))  # Python ignores SIGXFSZ
    try:
        result = CliRunner().invoke(app, ["train", "--out", str(tmp_path), "--resume",
                                          "--device", "cpu", "--no-curves"])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if "error" in line]
    assert len(errors) == 1 and "File too large" in errors[0], result.output
    assert "Traceback" not in result.output and (tmp_path / "last.pt").read_bytes() == before
    assert train(replace(cfg, stop_at=0), resume=True)["step"] == 8
