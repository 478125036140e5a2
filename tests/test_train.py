"""Training: a tiny run learns, resume is bit-for-bit, DDP matches one process, bad input fails early."""

from __future__ import annotations

import gc
import json
import logging
import os
import shutil
import socket
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from helpers import check_png, cuda_gpus, plotted_lines, tiny
from PIL import Image
from safetensors.torch import load_file
from torch.nn.parallel import DistributedDataParallel
from typer.testing import CliRunner

from drcn_plugin.cli import app
from drcn_plugin.errors import DRCNError
from drcn_plugin.hub import load_model
from drcn_plugin.model import DRCN
from drcn_plugin.training.data import image_files, load_images, make_patches
from drcn_plugin.training.recipe import distilled_target
from drcn_plugin.training.trainer import TrainConfig, drcn_loss, init_weights, train

pytestmark = pytest.mark.usefixtures("one_thread")


def test_tiny_run_learns_and_beats_bicubic(t12: Path, set5: Path, tmp_path: Path) -> None:
    val = tmp_path / "val"  # one Set5 image keeps the mid-run validation cheap
    val.mkdir()
    shutil.copy(set5 / "butterfly.png", val)
    cfg = tiny(t12, tmp_path, features=16, recursions=4, steps=300, val_data=str(val),
               val_every=150, test_data=[str(set5)])
    log = train(cfg)
    weights = tmp_path / "drcn-f16-d4-x3.safetensors"
    model = load_model(str(weights))  # the shipped format, through the public loader
    assert (model.features, model.recursions) == (16, 4)
    assert set(load_file(str(weights))) == set(DRCN(16, 4).state_dict())

    # The loss on the whole (fixed) patch set falls well below the starting point (= bicubic).
    patches = make_patches(load_images(image_files([t12])), [3], 32, 32, [1.0, 0.8]).pairs.float() / 255
    x, y = patches[:, :1], patches[:, 1:]
    start = DRCN(16, 4)
    init_weights(start, torch.Generator().manual_seed(0))
    with torch.no_grad():
        before, after = drcn_loss(start, x, y, 0.0).item(), drcn_loss(model, x, y, 0.0).item()
    assert after < 0.85 * before

    set5_x3 = log["measured"]["Set5"]["3"]
    assert set5_x3["psnr"] > set5_x3["bicubic_psnr"] + 0.3
    assert any("val_psnr" in h for h in log["history"] if h["step"] == 150)
    card = (tmp_path / "drcn-f16-d4-x3.md").read_text()
    assert "| Set5 | x3 |" in card and log["sha256"] in card
    for name in ("last.pt", "best.pt", "log.json"):
        assert (tmp_path / name).is_file()


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_resume_is_bit_for_bit(t12: Path, tmp_path: Path, ema: float) -> None:
    straight = tiny(t12, tmp_path / "straight", val_every=10, alpha_decay=0.5, ema=ema)
    train(straight)
    split = replace(straight, out=str(tmp_path / "split"), stop_at=20)
    log = train(split)
    assert log["stopped_at"] == 20 and not (tmp_path / "split" / "drcn-f8-d3-x3.safetensors").exists()
    train(replace(split, stop_at=0), resume=True)
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 40
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert torch.equal(a["rng"], b["rng"])
    assert ((tmp_path / "straight" / "drcn-f8-d3-x3.safetensors").read_bytes()
            == (tmp_path / "split" / "drcn-f8-d3-x3.safetensors").read_bytes())
    exported = load_file(tmp_path / "split" / "drcn-f8-d3-x3.safetensors")
    if ema:  # the moving average is what ships, and it is not the last step's weights
        assert all(torch.equal(exported[k], b["ema"][f"module.{k}"]) for k in exported)
        assert not all(torch.equal(exported[k], b["model"][k]) for k in exported)
    else:
        assert "ema" not in b and all(torch.equal(exported[k], b["model"][k]) for k in exported)


def _ddp_worker(rank: int, port: int, cfg: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2",
                      RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    train(TrainConfig.from_dict(cfg))
    # its DDP wrapper went before the process group did (freed at exit, gloo can abort)
    assert not any(isinstance(o, DistributedDataParallel) for o in gc.get_objects())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_match_one(t12: Path, tmp_path: Path) -> None:
    cfg = tiny(t12, tmp_path / "one", steps=2, warmup=1)
    train(cfg)
    mp.spawn(_ddp_worker, args=(_free_port(), asdict(replace(cfg, out=str(tmp_path / "ddp")))),
             nprocs=2)
    one = load_file(str(tmp_path / "one" / "drcn-f8-d3-x3.safetensors"))
    two = load_file(str(tmp_path / "ddp" / "drcn-f8-d3-x3.safetensors"))
    start = DRCN(8, 3)
    init_weights(start, torch.Generator().manual_seed(0))
    moved = 0
    for k, v in one.items():
        torch.testing.assert_close(two[k], v, rtol=1e-5, atol=1e-6)
        moved += int(not torch.equal(v, start.state_dict()[k]))
    assert moved >= 4  # the step really changed the weights
    losses = [[h["loss"] for h in json.loads((tmp_path / run / "log.json").read_text())["history"]
               if "loss" in h] for run in ("one", "ddp")]
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)  # the whole batch's, not rank 0's share


def test_distilled_target_moves_only_clean_patches_toward_the_teacher() -> None:
    teacher = DRCN(4, 2)
    init_weights(teacher, torch.Generator().manual_seed(1))
    torch.nn.init.normal_(teacher.reconstruct[2].weight, 0, 0.1)  # not the identity
    gen = torch.Generator().manual_seed(2)
    x, y = torch.rand(4, 1, 12, 12, generator=gen), torch.rand(4, 1, 12, 12, generator=gen)
    clean = torch.tensor([True, False, True, False])
    with torch.no_grad():
        t = teacher(x)
    full = distilled_target(teacher, x, y, clean, 1.0)
    half = distilled_target(teacher, x, y, clean, 0.5)
    # the teacher sees the clean half-batch there: float sums in another order, so an absolute
    # tolerance (values near 0 defeat a relative one)
    assert torch.allclose(full[clean], t[clean], atol=1e-6)
    assert torch.equal(full[~clean], y[~clean])
    assert torch.allclose(half[clean], (y[clean] + t[clean]) / 2, atol=1e-6)
    assert torch.equal(distilled_target(teacher, x, y, clean, 0.0), y)
    assert not torch.allclose(t, y)


def test_a_teacher_sets_the_clean_patches_targets_only(t12: Path, tmp_path: Path) -> None:
    """Clean draws whose target is the starting model's own output give no gradient (the run stays
    where it started, the same run on the real targets moves); with no clean draws a teacher
    changes nothing."""
    start = tmp_path / "start"
    train(tiny(t12, start, steps=10))
    init = str(start / "drcn-f8-d3-x3.safetensors")
    common = dict(steps=10, init=init, weight_decay=0.0, lr=1e-3, warmup=1, alpha=0.0,
                  downscales=[1.0], degrade_copies=1)
    runs = {"held": dict(teacher=init, degrade="jpeg:40,clean:1"),
            "free": dict(degrade="jpeg:40,clean:1"),
            "no clean draws": dict(teacher=init, degrade="jpeg:40"),
            "no teacher": dict(degrade="jpeg:40")}
    out = {}
    for name, kw in runs.items():
        train(tiny(t12, tmp_path / name, **common, **kw))
        out[name] = load_file(str(tmp_path / name / "drcn-f8-d3-x3.safetensors"))
    before = load_file(init)
    drift = {name: max((w[k] - before[k]).abs().max().item() for k in before)
             for name, w in out.items()}
    assert drift["held"] < 1e-5 and drift["free"] > 1e-3
    assert drift["no teacher"] > 1e-3
    assert all(torch.equal(out["no clean draws"][k], out["no teacher"][k]) for k in before)
    with pytest.raises(DRCNError, match="teacher weight"):
        train(tiny(t12, tmp_path / "bad", teacher=init, degrade="jpeg:40", teacher_weight=1.5))
    with pytest.raises(DRCNError, match="a teacher needs degraded training"):
        train(tiny(t12, tmp_path / "bad", teacher=init))
    with pytest.raises(DRCNError, match="^teacher .*missing"):
        train(tiny(t12, tmp_path / "bad", teacher=str(tmp_path / "missing.safetensors"),
                   degrade="jpeg:40"))
    assert not (tmp_path / "bad" / "last.pt").exists()


def test_bad_training_data_fails_before_training(t12: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DRCNError, match="no images"):
        train(tiny(empty, tmp_path / "a"))
    with pytest.raises(DRCNError, match="not found"):
        train(tiny(tmp_path / "missing", tmp_path / "a"))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "x.png").write_bytes(b"not a png")
    with pytest.raises(DRCNError, match="not an image Pillow can read"):
        train(tiny(broken, tmp_path / "a"))
    for batch in (16, 4096):  # the images are named, not the memory a step of such patches needs
        with pytest.raises(DRCNError, match="smaller than one 400x400 patch"):
            train(tiny(t12, tmp_path / "a", patch=400, stride=200, batch=batch))
    assert not (tmp_path / "a" / "last.pt").exists()


def test_images_a_scale_crops_below_one_patch_give_no_patches(tmp_path: Path) -> None:
    images = [("a", torch.full((40, 40), 128.0))]  # shrunk by 0.8: 32, cropped for x3 to 30
    assert make_patches(images, [2, 3], 32, 8, [1.0, 0.8]).per_scale == {2: 4 + 1, 3: 1}
    folder = tmp_path / "small"
    folder.mkdir()
    Image.new("L", (32, 32), 128).save(folder / "a.png")  # one 32x32 patch, but not at x3
    with pytest.raises(DRCNError, match="a.png is 32x32, smaller than one 32x32 patch once "
                                        "cropped to a multiple of scale 3"):
        train(tiny(folder, tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_checkpoint_of_another_architecture_is_refused(t12: Path, tmp_path: Path,
                                                       reference_weights: Path) -> None:
    train(tiny(t12, tmp_path, stop_at=5))
    with pytest.raises(DRCNError, match="is for F=8, D=3; this run asks for F=16, D=3"):
        train(tiny(t12, tmp_path, features=16), resume=True)
    with pytest.raises(DRCNError, match="nothing to resume"):
        train(tiny(t12, tmp_path / "new"), resume=True)
    with pytest.raises(DRCNError, match="F=64, D=16"):
        train(tiny(t12, tmp_path / "b", init=str(reference_weights / "drcn-f64-d16-x234.safetensors")))


def test_cli_trains_and_reports_errors_in_one_line(t12: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    common = ["train", "--out", str(tmp_path), "-s", "2", "-F", "4", "-D", "2", "--patch", "32",
              "--stride", "64", "--downscale", "1", "--batch", "4", "--device", "cpu"]
    ok = runner.invoke(app, [*common, "--data", str(t12), "--steps", "6", "--warmup", "2"])
    assert ok.exit_code == 0, ok.output
    assert load_model(str(tmp_path / "drcn-f4-d2-x2.safetensors")).features == 4
    check_png(tmp_path / "curves.png")  # drawn by default
    weights = (tmp_path / "drcn-f4-d2-x2.safetensors").read_bytes()
    again = runner.invoke(app, [*common, "--data", str(t12), "--steps", "6", "--seed", "1"])
    assert again.exit_code == 2 and "holds a training run" in again.output
    assert again.output.strip().count("\n") == 0  # the line alone: no progress bar before it
    assert (tmp_path / "drcn-f4-d2-x2.safetensors").read_bytes() == weights  # the run is kept
    log = (tmp_path / "log.json").read_bytes()
    bad = runner.invoke(app, [*common, "--overwrite", "--data", str(tmp_path / "nope")])
    assert bad.exit_code == 2 and "dataset folder not found" in bad.output
    assert "Traceback" not in bad.output
    assert (tmp_path / "log.json").read_bytes() == log  # a refused start keeps the old run
    assert (tmp_path / "last.pt").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--lr", "inf"], "learning rate must be a positive number"),
    (["--optimizer", "sgd", "--momentum", "-1"], "momentum must be in [0, 1)"),
    (["--minutes", "nan"], "minutes must be a number"),
    (["--seed", str(10**20)], "seed must be in"),
    (["--stop-at", "-5"], "stop-at must be >= 0"),
    (["--steps", "20000000000000", "--stop-at", "1"], "steps must be at most 1e+12"),  # unresumable
    (["--minutes", "1", "--stop-at", "3"], "a stop step needs a step count"),
    (["--name", "../away"], "without folders"),
    (["--clip", "nan"], "clip must be a number"),
    (["--lr-drop", "1.5"], "fractions of the run"),
    (["--val-every", "-5"], "val-every must be >= 0"),
    (["--data", ""], "--data: an empty path (an unset variable?)"),
    (["--test-data", ""], "--test-data: an empty path"),
    (["--val-data", ""], "--val-data: an empty path (an unset variable?)"),
    (["--init", ""], "--init: an empty path"),
    (["--teacher", "", "--degrade", "jpeg:75"], "--teacher: an empty path"),
    (["--baseline", ""], "--baseline: an empty path"),
])
def test_train_refuses_bad_numbers_before_it_starts(t12: Path, tmp_path: Path, args: list[str],
                                                    message: str) -> None:
    r = CliRunner().invoke(app, ["train", "--data", str(t12), "--out", str(tmp_path / "run"),
                                 "-F", "4", "-D", "2", "--steps", "4", *args])
    assert r.exit_code == 2 and message in r.output, r.output
    assert "Traceback" not in r.output and not (tmp_path / "run").exists()


def test_an_empty_run_folder_name_is_refused(t12: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # not a run in the working directory
    r = CliRunner().invoke(app, ["train", "--data", str(t12), "--out", "", "--steps", "4"])
    assert r.exit_code == 2 and "--out: an empty path (an unset variable?)" in r.output, r.output
    assert not list(tmp_path.iterdir())


def test_train_checks_what_it_needs_at_the_end_before_it_starts(t12: Path, tmp_path: Path) -> None:
    bad_val = tmp_path / "val"
    bad_val.mkdir()
    (bad_val / "x.png").write_bytes(b"not a png")
    tiny_val = tmp_path / "tiny"
    tiny_val.mkdir()
    Image.new("L", (12, 12), 128).save(tiny_val / "t.png")
    blocker = tmp_path / "afile"
    blocker.write_text("")
    for kwargs, message in ((dict(val_data=str(bad_val)), "not an image Pillow can read"),
                            (dict(test_data=[str(tiny_val)]), "t.png is 12x12: too small"),
                            (dict(baseline=str(tmp_path / "none.safetensors"), val_data=str(t12)),
                             "none.safetensors"),
                            (dict(out=str(blocker / "sub")), "cannot make the folder")):
        cfg = replace(tiny(t12, tmp_path / "run"), **kwargs)
        with pytest.raises(DRCNError, match=message):
            train(cfg)
        assert not (tmp_path / "run").exists()  # refused before anything was written


def test_test_folders_of_one_name_are_both_measured(t12: Path, set5: Path, tmp_path: Path) -> None:
    folders = [tmp_path / "a" / "Set5", tmp_path / "b" / "Set5"]
    shutil.copytree(set5, folders[0])
    folders[1].mkdir(parents=True)
    shutil.copy(sorted(set5.iterdir())[0], folders[1])
    log = train(tiny(t12, tmp_path / "run", steps=2, test_data=[str(f) for f in folders]))
    assert sorted(log["measured"]) == sorted(str(f) for f in folders)  # each under its own path
    a, b = (log["measured"][str(f)]["3"]["bicubic_psnr"] for f in folders)
    assert a != b


def test_a_diverging_run_stops_and_writes_no_weights(t12: Path, tmp_path: Path) -> None:
    with pytest.raises(DRCNError, match="the loss became nan"):
        train(tiny(t12, tmp_path, optimizer="sgd", lr=1.0, clip=0.0))
    assert not list(tmp_path.glob("*.safetensors"))


def test_resume_names_the_options_it_ignores(t12: Path, tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    train(tiny(t12, tmp_path, steps=8, stop_at=4))
    with caplog.at_level(logging.WARNING):
        train(tiny(t12, tmp_path, steps=8, weight_decay=1e-3), resume=True)
    assert "ignored: --weight-decay" in caplog.text and "--steps" not in caplog.text


def test_a_resume_names_an_option_typed_at_its_default(t12: Path, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    common = ["train", "--data", str(t12), "--out", str(tmp_path), "-s", "3", "-F", "4", "-D",
              "2", "--patch", "32", "--stride", "64", "--batch", "4", "--device", "cpu",
              "--no-curves", "--val-every", "0", "--steps", "4"]
    runner = CliRunner()
    assert runner.invoke(app, [*common, "--weight-decay", "1e-3", "--stop-at", "2"]).exit_code == 0
    with caplog.at_level(logging.WARNING):  # 1e-4 is --weight-decay's default; seed 0 the run's
        r = runner.invoke(app, [*common, "--resume", "--weight-decay", "1e-4", "--seed", "0"])
    assert r.exit_code == 0, r.output
    assert "ignored: --weight-decay" in caplog.text and "--seed" not in caplog.text


def test_a_resume_need_not_repeat_the_recipe(t12: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    none = runner.invoke(app, ["train", "--out", str(tmp_path / "new")])
    assert none.exit_code == 2 and "--data: no training folder given" in none.output
    first = runner.invoke(app, ["train", "--data", str(t12), "--out", str(tmp_path), "-s", "3",
                                "-F", "4", "-D", "2", "--patch", "32", "--stride", "64",
                                "--batch", "4", "--no-curves", "--steps", "4", "--stop-at", "2"])
    assert first.exit_code == 0, first.output
    resumed = runner.invoke(app, ["train", "--resume", "--out", str(tmp_path), "--no-curves"])
    assert resumed.exit_code == 0, resumed.output
    assert load_model(str(tmp_path / "drcn-f4-d2-x3.safetensors")).recursions == 2
    other = runner.invoke(app, ["train", "--resume", "--out", str(tmp_path), "-D", "3"])
    assert other.exit_code == 2 and "is for F=4, D=2; this run asks for D=3" in other.output


def test_overwrite_starts_over_and_does_not_mix_with_resume(t12: Path, tmp_path: Path) -> None:
    common = ["train", "--data", str(t12), "--out", str(tmp_path), "-s", "3", "-F", "4", "-D",
              "2", "--patch", "32", "--stride", "64", "--batch", "4", "--device", "cpu",
              "--no-curves", "--val-every", "0"]
    runner = CliRunner()
    assert runner.invoke(app, [*common, "--steps", "4", "--stop-at", "2"]).exit_code == 0
    both = runner.invoke(app, [*common, "--steps", "4", "--resume", "--overwrite"])
    assert both.exit_code == 2 and "ask for one" in both.output
    again = runner.invoke(app, [*common, "--steps", "3", "--overwrite"])
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "log.json").read_text())["step"] == 3


def test_a_damaged_checkpoint_is_refused_in_one_line(t12: Path, tmp_path: Path) -> None:
    from drcn_plugin.training.checkpoint import CHECKPOINT_FORMAT

    tmp_path.joinpath("last.pt").write_text("garbage")
    with pytest.raises(DRCNError, match="damaged or not a drcn training checkpoint"):
        train(tiny(t12, tmp_path), resume=True)
    torch.save({"format": CHECKPOINT_FORMAT, "config": {}}, tmp_path / "last.pt")
    with pytest.raises(DRCNError, match="is incomplete"):
        train(tiny(t12, tmp_path), resume=True)


def test_curves_follow_the_log_through_a_resume(t12: Path, set5: Path, tmp_path: Path,
                                                drawn: list) -> None:
    val = tmp_path / "val"  # a 96 px crop keeps the validations cheap
    val.mkdir()
    Image.open(set5 / "butterfly.png").crop((64, 64, 160, 160)).save(val / "butterfly.png")
    run = tmp_path / "run"
    cfg = tiny(t12, run, scales=[2, 3], val_every=15, val_data=str(val), stop_at=20, curves=True)
    train(cfg)
    check_png(run / "curves.png")
    train(replace(cfg, stop_at=0), resume=True)
    check_png(run / "curves.png")
    history = json.loads((run / "log.json").read_text())["history"]

    lines = plotted_lines(drawn[-1])  # the last drawing: the end of the run
    rows = [h for h in history if "loss" in h]
    assert [h["step"] for h in rows] == [15, 20, 30, 40]  # up to the stop, then on from it
    assert lines["training loss"] == [(h["step"], h["loss"]) for h in rows]
    assert lines["learning rate"] == [(h["step"], h["lr"]) for h in rows]
    assert lines["alpha"] == [(h["step"], h["alpha"]) for h in rows]
    validated = [h for h in history if h.get("val_psnr_per_scale")]
    assert [h["step"] for h in validated] == [15, 30, 40]
    for s in ("2", "3"):
        assert lines[f"x{s}"] == [(h["step"], h["val_psnr_per_scale"][s]) for h in validated]
    for h in validated:  # beside the per-scale scores, their mean
        assert h["val_psnr"] == pytest.approx(sum(h["val_psnr_per_scale"].values()) / 2)
    resume_marks = [ln for ax in drawn[-1].axes for ln in ax.get_lines()
                    if list(ln.get_xdata()) == [20, 20]]
    assert len(resume_marks) == 4  # a dotted line at the resume, in every panel


def test_training_goes_on_without_matplotlib(t12: Path, tmp_path: Path, no_matplotlib: None,
                                             caplog: pytest.LogCaptureFixture) -> None:
    log = train(tiny(t12, tmp_path, steps=10, val_every=5, curves=True))
    assert (tmp_path / log["weights"]).is_file() and not (tmp_path / "curves.png").exists()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1  # one line, not one per validation
    assert 'pip install "drcn-plugin[plot]"' in warnings[0] and "\n" not in warnings[0]


@pytest.mark.parametrize(("precision", "device", "native", "want"), [
    ("auto", "cuda", True, torch.bfloat16), ("auto", "cuda", False, None),
    ("auto", "cpu", True, None), ("bf16", "cuda", False, torch.bfloat16),
    ("fp32", "cuda", True, None)])
def test_auto_trains_in_bf16_only_on_gpus_built_for_it(
        monkeypatch: pytest.MonkeyPatch, precision: str, device: str, native: bool,
        want: torch.dtype | None) -> None:
    """A T4 or RTX 20xx answers ``is_bf16_supported()`` True through slow emulation; ``auto``
    reads the hardware (compute capability 8+) and trains in fp32 without it."""
    cuda_gpus(monkeypatch, (8, 0) if native else (7, 5))
    cfg = TrainConfig(data=["t91"], precision=precision)
    assert cfg.autocast_dtype(torch.device(device)) == want
