"""Training's edges found by a hostile pass: a resume on another kind of device, folders as other
systems leave them."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from helpers import random_rgb, tiny

from drcn_plugin.errors import (
    BadImageError,
    CheckpointError,
    DistributedError,
    InputGoneError,
    ModelLoadError,
)
from drcn_plugin.training.trainer import train

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_run_resumes_on_another_kind_of_device(t12: Path, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    cfg = tiny(t12, tmp_path, steps=8, stop_at=4)
    train(cfg)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    state["rng"] = torch.zeros(16, dtype=torch.uint8)  # a CUDA generator's state: seed, offset
    torch.save(state, tmp_path / "last.pt")
    assert train(replace(cfg, stop_at=0), resume=True)["step"] == 8
    assert "random state of another kind of device" in caplog.text
    state["rng"] = [1, 2]  # damaged, not another device's: refused as before
    torch.save(state, tmp_path / "last.pt")
    with pytest.raises(CheckpointError, match="does not fit this run"):
        train(replace(cfg, stop_at=0), resume=True)


def test_hidden_files_in_a_training_folder_are_skipped(t12: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(t12, data)
    (data / "._t1.png").write_bytes(b"\x00\x05\x16\x07Mac OS X")  # macOS AppleDouble metadata
    assert train(tiny(data, tmp_path / "run", steps=2))["images"] == 12  # as upscale skips them


def test_a_checkpoint_given_as_initial_weights_says_what_to_give(t12: Path,
                                                                 tmp_path: Path) -> None:
    train(tiny(t12, tmp_path / "a", steps=4, stop_at=2))
    with pytest.raises(ModelLoadError, match=r"last\.pt is a zip archive \(as torch\.save "
                                             r"writes\), not \.safetensors weights: a training"):
        train(tiny(t12, tmp_path / "b", init=str(tmp_path / "a" / "last.pt")))
    assert not (tmp_path / "b").exists()


def test_a_data_folder_whose_name_is_not_utf8_gets_its_model_card(t12: Path, tmp_path: Path) -> None:
    data = tmp_path / os.fsdecode(b"photos\xe9")  # Latin-1, as an old drive names it
    shutil.copytree(t12, data)
    train(tiny(data, tmp_path / "run", steps=2))
    card = (tmp_path / "run" / "drcn-f8-d3-x3.md").read_bytes()
    assert b"`photos\xe9`" in card and os.fsencode(data) in card  # the reproducing command


def test_files_read_only_in_part_are_named(t12: Path, tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    odd = tmp_path / "odd"
    odd.mkdir()
    frames = [random_rgb(48, 48, seed) for seed in (1, 2)]
    frames[0].save(odd / "anim.gif", save_all=True, append_images=frames[1:])
    rgba = random_rgb(48, 48).convert("RGBA")
    rgba.putalpha(rgba.getchannel("R").point(lambda v: 255 * (v > 64)))  # a cut-out
    rgba.save(odd / "cut.png")
    random_rgb(48, 48).convert("RGBA").save(odd / "opaque.png")  # alpha, none of it transparent
    cfg = tiny(t12, tmp_path / "run", val_data=str(odd), steps=2)
    train(replace(cfg, data=[str(t12), str(odd)]))
    said = [r.getMessage() for r in caplog.records]  # the data's and the validation folder's
    assert said.count(f"{odd / 'anim.gif'}: 2 frames: only the first is read") == 2
    assert said.count(f"{odd / 'cut.png'}: transparent pixels are read as the colour stored "
                      "under them") == 2
    assert len(said) == 4, said  # not t12's images, nor an opaque alpha


def test_a_float_image_outside_0_to_1_is_refused_as_training_reads_it(tmp_path: Path) -> None:
    from PIL import Image

    data = tmp_path / "data"
    data.mkdir()
    Image.new("F", (48, 48), 2.0).save(data / "hdr.tif")
    with pytest.raises(BadImageError, match=r"^\S+hdr\.tif: the float values span 2\.\.2; "
                                            "training, like scoring, reads float images as 0..1$"):
        train(tiny(data, tmp_path / "run"))


def test_a_run_whose_data_moved_resumes_from_the_new_place(t12: Path, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """A resume whose run's data folders are gone (moved, or the run taken to another machine)
    reads the --data given, and goes on as the run would have; while they are there, another
    --data is ignored."""
    data = tmp_path / "data"
    shutil.copytree(t12, data)
    straight = train(tiny(data, tmp_path / "straight", steps=8))
    train(tiny(data, tmp_path / "run", steps=8, stop_at=4))
    moved = data.rename(tmp_path / "moved")
    log = train(tiny(moved, tmp_path / "run", steps=8), resume=True, given={"data"})
    assert f"the run's --data {data} no longer exists: reading {moved} instead" in caplog.text
    assert "ignored" not in caplog.text and "data changed" not in caplog.text, caplog.text
    assert log["config"]["data"] == [str(moved)] and log["sha256"] == straight["sha256"]
    other = tmp_path / "other"
    shutil.copytree(moved, other)  # the run's folder is there: another one is still ignored
    train(tiny(other, tmp_path / "run", steps=8), resume=True, given={"data"})
    assert "ignored: --data" in caplog.text


def test_a_resume_on_processes_its_batch_does_not_split_over_says_what_to_change(
        t12: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A resume keeps its run's batch (another --batch is ignored), so 'invalid value for
    --batch' sent the user to an option the resume then ignored."""
    from drcn_plugin.devices import Dist
    from drcn_plugin.training import trainer
    from drcn_plugin.training.checkpoint import load_checkpoint

    train(tiny(t12, tmp_path, steps=8, stop_at=4))  # batch 16, one process
    monkeypatch.setattr(trainer, "join_torchrun",
                        lambda device: (Dist(rank=0, world=3), torch.device("cpu")))
    cfg = tiny(t12, tmp_path, steps=8)
    with pytest.raises(DistributedError, match="the run's batch 16 does not split over 3 "
                       "processes: resume it with a number of processes that divides 16"):
        trainer.Trainer(cfg, load_checkpoint(tmp_path / "last.pt", cfg), None)


def test_a_resume_whose_inputs_are_gone_says_how_to_give_their_new_place(
        t12: Path, tmp_path: Path, tiny_model_file: str) -> None:
    """A resume whose run's data folder, or baseline, has moved, with no --data, says how to
    give the new place, not only that the old one is not found."""
    from typer.testing import CliRunner

    from drcn_plugin.cli import app

    data, baseline, run = tmp_path / "data", tmp_path / "w.safetensors", tmp_path / "run"
    shutil.copytree(t12, data)
    shutil.copy(tiny_model_file, baseline)
    train(tiny(data, run, steps=8, stop_at=2, baseline=str(baseline), test_data=[str(t12)]))
    data.rename(tmp_path / "moved")
    runner = CliRunner()
    r = runner.invoke(app, ["train", "--resume", "--out", str(run)])
    assert r.exit_code == 2 and r.output.strip().splitlines()[-1] == (
        f"error: dataset folder not found: {os.path.realpath(data)} (the run's training images; "
        "give their new place with --data NEW_FOLDER)"), r.output
    with pytest.raises(InputGoneError, match=r"\(the run's training images; resume with data "
                                             r"set to their new place\)$") as e:
        train(tiny(data, run, steps=8), resume=True)  # the run's own place, given again
    assert e.value.option == "data"
    fresh = runner.invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "new"),
                                "--device", "cpu"])
    assert fresh.exit_code == 2 and fresh.output.strip().splitlines()[-1].endswith(
        f"dataset folder not found: {data}"), fresh.output  # a new run's line, as it was
    (tmp_path / "moved").rename(data)
    baseline.rename(tmp_path / "w2.safetensors")
    r = runner.invoke(app, ["train", "--resume", "--out", str(run)])
    assert r.exit_code == 2 and r.output.strip().splitlines()[-1] == (
        f"error: model not found: {os.path.realpath(baseline)} (the run's baseline weights; "
        "give their new place with --baseline NEW_PATH)"), r.output
    r = runner.invoke(app, ["train", "--resume", "--out", str(run), "--stop-at", "4",
                            "--baseline", str(tmp_path / "w2.safetensors")])
    assert r.exit_code == 0 and "stopped at step 4" in r.output, r.output
