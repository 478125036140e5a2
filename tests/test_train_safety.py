"""A training never leaves a checkpoint it cannot go on from: weights that went NaN end the run
with one line and the last good checkpoint kept."""

from __future__ import annotations

import math
import os
import signal
import sys
from pathlib import Path

import pytest
import torch
from helpers import tiny
from typer.testing import CliRunner

from drcn_plugin.cli import app
from drcn_plugin.errors import CheckpointError, DiskFullError, TrainingError
from drcn_plugin.training import checkpoint, trainer
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
def test_a_stop_after_the_weights_went_nan_keeps_the_good_checkpoint(
        t12: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny(t12, tmp_path, steps=40, stop_at=4)
    train(cfg)  # a good last.pt at step 4
    before = (tmp_path / "last.pt").read_bytes()
    monkeypatch.setattr(Trainer, "_train_step", _poisoned_at(7, stop=True))
    with pytest.raises(TrainingError) as e:
        train(tiny(t12, tmp_path, steps=40), resume=True)
    assert (tmp_path / "last.pt").read_bytes() == before  # not NaN weights over the good ones
    said = str(e.value)
    assert "diverged" in said and "by step 7" in said and "lower learning rate" in said, said
    assert f"{tmp_path / 'last.pt'} (step 4) is kept" in said, said
    monkeypatch.setattr(Trainer, "_train_step", _step)
    assert train(tiny(t12, tmp_path, steps=40, stop_at=8), resume=True)["stopped_at"] == 8


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
    """last.pt was written first: when best.pt then failed, last.pt counted a best that best.pt
    did not hold, and the resume, already past it, never wrote those weights again."""
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
