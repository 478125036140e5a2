"""A training's run folder: nothing it reads or holds is replaced, its files can be written before
the first step, one training at a time, a signal stops it resumably, a damaged checkpoint is one
line."""

from __future__ import annotations

import os
import signal
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from helpers import as_on_windows, tiny
from safetensors.torch import load_file

from drcn_plugin.errors import (
    BadOptionError,
    CheckpointError,
    DiskFullError,
    DRCNError,
    WriteError,
)
from drcn_plugin.training import checkpoint, trainer
from drcn_plugin.training.trainer import train


def test_a_new_run_never_writes_over_weights_it_reads_or_finds(t12: Path, tmp_path: Path) -> None:
    train(tiny(t12, tmp_path / "a", steps=4))
    weights = tmp_path / "a" / "drcn-f8-d3-x3.safetensors"
    folder = tmp_path / "b"
    folder.mkdir()
    (folder / weights.name).write_bytes(weights.read_bytes())  # a folder holding weights
    with pytest.raises(DRCNError, match="holds a training run"):
        train(tiny(t12, folder, steps=4))
    with pytest.raises(BadOptionError, match="which it reads"):  # even when asked to overwrite
        train(tiny(t12, folder, steps=4, init=str(folder / weights.name)), overwrite=True)
    assert (folder / weights.name).read_bytes() == weights.read_bytes()


def test_a_folder_of_the_runs_images_is_refused_as_its_output(t12: Path) -> None:
    with pytest.raises(BadOptionError, match="holds the run's images"):
        train(tiny(t12, t12, steps=4))


def test_the_last_checkpoint_comes_before_the_export(t12: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def no_room(model: object, path: Path) -> None:
        raise DiskFullError(f"disk full while writing {path}; nothing was written")

    monkeypatch.setattr(trainer, "export_safetensors", no_room)
    with pytest.raises(DiskFullError, match="disk full .*--resume continues from its last chec"):
        train(tiny(t12, tmp_path, steps=6))  # the line says how to go on once there is room
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    assert saved["step"] == 6  # no step is lost
    monkeypatch.setattr(trainer, "export_safetensors", checkpoint.export_safetensors)
    log = train(tiny(t12, tmp_path, steps=6), resume=True)  # the resume exports
    assert log["weights"] == "drcn-f8-d3-x3.safetensors"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and locks")
def test_a_signal_stops_at_a_step_and_the_resume_is_exact(t12: Path, tmp_path: Path) -> None:
    whole = train(tiny(t12, tmp_path / "whole", steps=60, val_every=20))

    def signal_at_20(progress: trainer.Progress) -> None:
        if progress.step == 20:
            os.kill(os.getpid(), signal.SIGTERM)

    cut = tiny(t12, tmp_path / "cut", steps=60, val_every=20)
    log = train(cut, on_progress=signal_at_20)
    assert log["interrupted"] and 20 <= log["stopped_at"] < 60
    resumed = train(cut, resume=True)
    assert resumed["step"] == whole["step"] == 60
    name = "drcn-f8-d3-x3.safetensors"
    a, b = load_file(tmp_path / "whole" / name), load_file(tmp_path / "cut" / name)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX locks")
def test_a_second_training_in_the_same_folder_is_refused(t12: Path, tmp_path: Path) -> None:
    from drcn_plugin.training.runfolder import hold_run_folder

    with hold_run_folder(tmp_path), pytest.raises(DRCNError, match="another training is running"):
        train(tiny(t12, tmp_path, steps=4))  # while another holds the folder
    train(tiny(t12, tmp_path, steps=4))


@pytest.mark.parametrize(("key", "value"), [
    ("step", "x"), ("history", None), ("step", 10**9), ("model", {}), ("rng", torch.zeros(3)),
    ("optimizer", {}), ("config", {"lr": float("nan")}), ("history", [1, 2]),
    ("history", [{"x": 1}]), ("total", 10**30), ("step", 4.5), ("elapsed", float("nan")),
    ("config", {"test_data": "x"}), ("config", {"features": "8"}), ("config", {"downscales": []}),
    ("cwd", 5),
])
def test_a_damaged_checkpoint_field_is_one_line(t12: Path, tmp_path: Path, key: str,
                                                 value: object) -> None:
    cfg = tiny(t12, tmp_path, steps=8, stop_at=4)
    train(cfg)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    if key == "config":
        state["config"].update(value)
    else:
        state[key] = value
    torch.save(state, tmp_path / "last.pt")
    with pytest.raises(CheckpointError):
        train(replace(cfg, stop_at=0), resume=True)


def test_overwrite_refused_to_clear_is_one_line(t12: Path, tmp_path: Path) -> None:
    train(tiny(t12, tmp_path, steps=8, stop_at=4))
    (tmp_path / "log.json").unlink()
    (tmp_path / "log.json").mkdir()  # cannot be removed as a file
    with pytest.raises(WriteError, match="cannot remove the old run's"):
        train(tiny(t12, tmp_path, steps=4), overwrite=True)


def test_changed_data_on_resume_is_named(t12: Path, tmp_path: Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    import shutil

    data = tmp_path / "data"
    shutil.copytree(t12, data)
    cfg = tiny(data, tmp_path / "run", steps=8, stop_at=4)
    train(cfg)
    from PIL import Image, ImageOps

    first = sorted(data.iterdir())[0]  # the same image, inverted in place: same size and count
    ImageOps.invert(Image.open(first).convert("RGB")).save(first)
    train(replace(cfg, stop_at=0), resume=True)
    assert "the training data changed since this run started (12 images" in caplog.text


def test_a_refused_second_start_keeps_the_first_ones_folder_and_lock(tmp_path: Path) -> None:
    from drcn_plugin.training.runfolder import hold_run_folder

    out = tmp_path / "new"
    with hold_run_folder(out):  # the first start made the folder and holds it
        with pytest.raises(DRCNError, match="another training"), hold_run_folder(out):
            pass
        assert (out / ".lock").exists()
    with pytest.raises(RuntimeError), hold_run_folder(out / "sub"):
        raise RuntimeError("refused before its first file")
    assert not (out / "sub").exists()  # a folder a refused start made goes again
    with pytest.raises(RuntimeError), hold_run_folder(out / "a" / "b" / "run"):
        raise RuntimeError("a typo in --data found while the patches are made")
    assert sorted(p.name for p in out.iterdir()) == [".lock"]  # and so do the parents it made


def test_a_refused_start_on_windows_removes_the_folder_it_made(tmp_path: Path,
                                                              monkeypatch) -> None:
    """Windows removes no open file: the run folder's lock is closed before it goes, so the
    refusal is what the user reads, not a PermissionError, and no folder stays behind."""
    from drcn_plugin.training.runfolder import hold_run_folder

    as_on_windows(monkeypatch)
    with pytest.raises(RuntimeError, match="refused"), hold_run_folder(tmp_path / "a" / "run"):
        raise RuntimeError("refused before its first file")
    assert list(tmp_path.iterdir()) == []


def test_a_time_budget_stopped_before_it_was_fitted_resumes_to_an_end(t12: Path,
                                                                     tmp_path: Path) -> None:
    def signal_at_25(progress: trainer.Progress) -> None:  # progress comes every 25 steps
        if progress.step == 25:
            os.kill(os.getpid(), signal.SIGINT)

    cfg = tiny(t12, tmp_path, steps=0, minutes=0.02)
    log = train(cfg, on_progress=signal_at_25)
    assert log["stopped_at"] == 25 and log["total"] == 0  # fitted at step 30, not reached
    def bounded(progress: trainer.Progress) -> None:
        if progress.step > 2000:
            raise AssertionError("the time budget was never fitted: the run would not end")

    # the resumed session fits from its own steps
    assert train(cfg, resume=True, on_progress=bounded)["weights"]


@pytest.mark.skipif(sys.platform == "win32", reason="no SIGHUP")
def test_an_ignored_hangup_stays_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    from drcn_plugin.stops import take_stops
    from drcn_plugin.training.runfolder import StopRequest

    old = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as nohup starts a command
    try:
        take_stops()
        with StopRequest(True) as stop:
            os.kill(os.getpid(), signal.SIGHUP)
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN and not stop.asked
    finally:
        signal.signal(signal.SIGHUP, old)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_each_run_in_one_process_takes_its_own_second_stop(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """train() called again in one process (a notebook): each run counts its own stops, so a
    second Ctrl-C in each run interrupts it (stops counted over the runs would pass over the
    second run's and end the process at the third's)."""
    from drcn_plugin import stops
    from drcn_plugin.training.runfolder import StopRequest

    ended: list[int] = []
    monkeypatch.setattr(stops.os, "_exit", ended.append)
    old = signal.getsignal(signal.SIGINT)
    try:
        for _ in range(3):
            with StopRequest(True) as stop, pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)  # the run asked to stop at a step
                assert stop.asked
                os.kill(os.getpid(), signal.SIGINT)  # a second: at once
    finally:
        signal.signal(signal.SIGINT, old)
    assert ended == []


def test_the_default_validation_folder_is_refused_as_the_output(t12: Path, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(t12, tmp_path / "T")
    (tmp_path / "Set5").mkdir()  # found beside the data as the validation folder
    shutil.copy(sorted(t12.iterdir())[0], tmp_path / "Set5")
    with pytest.raises(BadOptionError, match="holds the run's images"):
        train(tiny(tmp_path / "T", tmp_path / "Set5", steps=4))


def test_a_signal_in_the_final_validation_keeps_the_steps(t12: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(self: trainer.Trainer) -> dict:
        raise KeyboardInterrupt  # as Ctrl-C during the end's slow validation

    monkeypatch.setattr(trainer.Trainer, "_validate", interrupted)
    out = tmp_path / "new"
    with pytest.raises(KeyboardInterrupt):
        train(tiny(t12, out, steps=6))
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 6


def test_a_name_too_long_for_the_system_is_one_line() -> None:
    from typer.testing import CliRunner

    from drcn_plugin.cli import app

    for args in (["--data", "q" * 300], ["--data", ".", "--out", "q" * 300]):
        r = CliRunner().invoke(app, ["train", *args, "--steps", "1"])
        assert r.exit_code == 2 and "Traceback" not in r.output
        assert "not found" in r.output or "too long" in r.output, r.output


def test_a_run_name_too_long_for_its_file_system_is_refused_before_work(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """eCryptfs takes 143-byte names: a 140-byte --name (``NAME.safetensors``) is refused there,
    and taken where names may be 255 bytes."""
    from drcn_plugin.training.runfolder import check_run_folder

    cfg = tiny(tmp_path, tmp_path / "run", name="r" * 140)
    check_run_folder(cfg, resume=False, overwrite=False)
    real = os.pathconf
    monkeypatch.setattr(os, "pathconf", lambda path, name: 143 if name == "PC_NAME_MAX"
                        else real(path, name))
    with pytest.raises(BadOptionError, match="longer than the 143 bytes"):
        check_run_folder(cfg, resume=False, overwrite=False)


def test_a_resume_from_another_folder_reads_what_its_start_read(
        t12: Path, tmp_path: Path, tiny_model_file: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    project = tmp_path / "project"
    shutil.copytree(t12, project / "data")
    (project / "test").mkdir()
    shutil.copy(sorted(t12.iterdir())[0], project / "test")
    shutil.copy(tiny_model_file, project / "w.safetensors")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(project)  # every path relative, as typed there
    cfg = tiny(Path("data"), Path("straight"), steps=8, test_data=["test"],
               baseline="w.safetensors")
    straight = train(cfg)
    train(replace(cfg, out="split", stop_at=4))
    monkeypatch.chdir(tmp_path / "elsewhere")
    split = train(replace(cfg, out=str(project / "split")), resume=True)
    assert split["measured"] == straight["measured"] and split["baseline"] == straight["baseline"]
    name = "drcn-f8-d3-x3.safetensors"
    assert (project / "split" / name).read_bytes() == (project / "straight" / name).read_bytes()


def test_rooted_paths_leave_shipped_and_hub_models_named() -> None:
    from drcn_plugin.training.config import rooted

    cfg = rooted(tiny(Path("data"), Path("run"), test_data=["t", "/abs/u"], init="w.safetensors",
                      baseline="drcn-lite", teacher="hf:owner/repo"), "/start")
    assert (cfg.data, cfg.test_data, cfg.init) == (["/start/data"], ["/start/t", "/abs/u"],
                                                   "/start/w.safetensors")
    assert (cfg.baseline, cfg.teacher, cfg.val_data, cfg.out) == ("drcn-lite", "hf:owner/repo",
                                                                  "", "run")


def test_a_resume_already_at_its_stop_step_says_so_and_touches_nothing(t12: Path,
                                                                       tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from drcn_plugin.cli import app

    train(tiny(t12, tmp_path, steps=8, stop_at=4))
    files = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    log = train(tiny(t12, tmp_path, steps=8, stop_at=4), resume=True)
    assert log == {"step": 4, "total": 8, "stopped_at": 4, "interrupted": False,
                   "nothing_to_do": True}  # a stop at the checkpoint's step, as the first one
    r = CliRunner().invoke(app, ["train", "--out", str(tmp_path), "--resume", "--stop-at", "2"])
    assert r.exit_code == 0 and r.output.splitlines()[-1] == (
        "already at step 4, past --stop-at 2: nothing to do; give a later --stop-at or none")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == files


class _Newer:
    """A type a newer drcn-plugin might pickle into its checkpoint (weights_only refuses it)."""


@pytest.mark.parametrize(("state", "message"), [
    ({"format": "drcn-train-checkpoint-2", "drcn_plugin": "9.1.0"},
     r"written by drcn-plugin 9\.1\.0 \(checkpoint format 2\); this is drcn-plugin "),
    ({"format": "drcn-train-checkpoint-12"}, r"written by a newer drcn-plugin \(checkpoint "
                                             r"format 12\)"),
    ({"format": "drcn-train-checkpoint-3", "extra": _Newer()}, r"a newer drcn-plugin \(checkpoint "
                                                               r"format 3\)"),
])
def test_a_checkpoint_from_a_newer_version_asks_for_an_upgrade(tmp_path: Path, state: dict,
                                                              message: str) -> None:
    torch.save(state, tmp_path / "last.pt")
    with pytest.raises(CheckpointError, match=message + ".*upgrade") as caught:
        checkpoint.load_checkpoint(tmp_path / "last.pt", tiny(tmp_path, tmp_path))
    assert "\n" not in str(caught.value)


def test_a_checkpoint_names_the_version_that_wrote_it(t12: Path, tmp_path: Path) -> None:
    from drcn_plugin import __version__

    train(tiny(t12, tmp_path, steps=2))
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert (state["format"], state["drcn_plugin"]) == (checkpoint.CHECKPOINT_FORMAT, __version__)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX FIFOs")
def test_a_checkpoint_that_is_a_fifo_is_refused_not_read(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "last.pt")  # torch.load would wait for a writer for ever
    with pytest.raises(CheckpointError, match="not a regular file"):
        checkpoint.load_checkpoint(tmp_path / "last.pt", tiny(tmp_path, tmp_path))


def test_a_checkpoint_whose_bytes_changed_is_refused(t12: Path, tmp_path: Path) -> None:
    cfg = tiny(t12, tmp_path, steps=8, stop_at=4)
    train(cfg)
    with zipfile.ZipFile(tmp_path / "last.pt") as z:  # the first tensor's stored bytes
        name = next(n for n in z.namelist() if n.endswith("/data/0"))
        at = z.getinfo(name).header_offset
    raw = bytearray((tmp_path / "last.pt").read_bytes())
    at += 30 + int.from_bytes(raw[at + 26:at + 28], "little") + \
        int.from_bytes(raw[at + 28:at + 30], "little")  # past the entry's local header
    raw[at] ^= 0x40  # one bit, as a failing disk or copy flips it: torch.load reads it silently
    (tmp_path / "last.pt").write_bytes(raw)
    with pytest.raises(CheckpointError, match=r"last.pt is damaged \(.*data/0 fails its "
                                              r"checksum\)"):
        train(replace(cfg, stop_at=0), resume=True)
