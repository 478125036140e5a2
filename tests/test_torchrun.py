"""torchrun jobs: an environment that names no job, a process of the job that dies, and what rank 0
logs for the whole job."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from helpers import DATA, tiny
from PIL import Image
from typer.testing import CliRunner

from drcn_plugin import batch
from drcn_plugin.cli import app
from drcn_plugin.devices import Dist, join_torchrun
from drcn_plugin.errors import DistributedError
from drcn_plugin.training.trainer import TrainConfig, Trainer, train

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()


@pytest.mark.parametrize(("env", "said"), [
    ({"WORLD_SIZE": "2"}, "RANK is not set"),
    ({"WORLD_SIZE": "two"}, "WORLD_SIZE is 'two'"),
    ({"WORLD_SIZE": "2", "RANK": "2"}, "RANK 2 and LOCAL_RANK 0 do not fit WORLD_SIZE 2"),
    ({"WORLD_SIZE": "2", "RANK": "0"}, "MASTER_ADDR"),
])
def test_a_job_environment_torchrun_did_not_set_is_one_line(
        t12: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
        said: str) -> None:
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(DistributedError, match=said):
        Dist.from_env()
        join_torchrun("cpu")
    cfg = tiny(t12, tmp_path / "run")
    r = runner.invoke(app, ["train", "--data", cfg.data[0], "--out", cfg.out, "-s", "3",
                            "-F", "8", "-D", "3", "--steps", "2", "--device", "cpu"])
    assert r.exit_code == 2, r.output
    assert said in r.output and r.output.count("error:") == 1 and "Traceback" not in r.output
    assert not (tmp_path / "run").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_at_step_3(self: Trainer) -> torch.Tensor:
    if self.step == 3:
        os._exit(9)
    return _step(self)


_step = Trainer._train_step


def _rank(rank: int, port: int, argv: list[str], report: Path) -> None:
    """One process of a two-process job running ``drcn ARGV``; rank 1 dies in the middle (at
    training step 3, or as an upscale gathers the outcomes). Rank 0 reports its exit code and
    output in ``report``."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2",
                      RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    if rank == 1:
        Trainer._train_step = _die_at_step_3
        batch.gather_outcomes = lambda outcomes: os._exit(9)
    r = runner.invoke(app, argv)
    report.write_text(f"{r.exit_code}\n{r.output}")


def _two_ranks(target: Callable[..., None], *args: object, timeout: float = 120
               ) -> list[int | None]:
    """Run ``target(rank, port, *args)`` as the two processes of a job; their exit codes (None:
    still running after ``timeout`` seconds, and then killed)."""
    ctx, port = multiprocessing.get_context("spawn"), _free_port()
    procs = [ctx.Process(target=target, args=(rank, port, *args)) for rank in (0, 1)]
    for p in procs:
        p.start()
    end = time.monotonic() + timeout
    for p in procs:
        p.join(max(0.0, end - time.monotonic()))
    codes = [p.exitcode for p in procs]
    for p in procs:
        p.kill()
    return codes


def _job(argv: list[str], report: Path) -> tuple[int, str]:
    """Rank 0's exit code and output in a job whose rank 1 dies."""
    assert None not in _two_ranks(_rank, argv, report), "a process of the job hangs"
    code, _, output = report.read_text().partition("\n")
    return int(code), output


def _tiny_train(data: Path, out: Path, *extra: str) -> list[str]:
    """``drcn train`` arguments for a tiny model on the CPU, a few seconds long."""
    return ["train", "--data", str(data), "--out", str(out), "-s", "3", "-F", "8", "-D", "3",
            "--patch", "32", "--stride", "32", "--batch", "4", "--device", "cpu", "--no-curves",
            *extra]


@pytest.mark.parametrize(("val_every", "left"), [
    ("2", "--resume continues from its last checkpoint"),  # saved at step 2, before the loss
    ("20", "start it again (nothing to resume)"),  # lost at step 3, nothing saved yet
])
def test_a_training_that_loses_a_process_is_one_line_on_the_others(
        t12: Path, tmp_path: Path, val_every: str, left: str) -> None:
    out = tmp_path / "run"
    code, text = _job(_tiny_train(t12, out, "--steps", "40", "--val-every", val_every),
                      tmp_path / "train.txt")
    assert code == 2 and "Traceback" not in text, text
    lines = [ln for ln in text.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "another process of this torchrun job stopped" in lines[0], text
    assert left in lines[0], text
    if val_every == "2":
        assert torch.load(out / "last.pt", weights_only=True)["step"] == 2  # what --resume takes
    else:
        assert not (out / "last.pt").exists()


def test_an_upscale_that_loses_a_process_keeps_what_this_one_wrote(
        tmp_path: Path, tiny_model_file: str) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        shutil.copy(DATA / "Set5" / "head.png", photos / f"{i}.png")
        Image.open(photos / f"{i}.png").crop((0, 0, 24, 24)).save(photos / f"{i}.png")
    code, text = _job(["upscale", str(photos), "-o", str(tmp_path / "up"), "--model",
                       tiny_model_file, "--device", "cpu"], tmp_path / "upscale.txt")
    assert code == 2 and "Traceback" not in text, text
    assert "this process wrote 2 files" in text, text
    assert sorted(p.name for p in (tmp_path / "up").iterdir()) == ["0.png", "1.png", "2.png"]


def _plain_rank(rank: int, port: int, argv: list[str], report: Path) -> None:
    """One process of a two-process job running ``drcn ARGV``; its exit code and output go to
    ``report`` with the rank appended."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2",
                      RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    r = runner.invoke(app, argv)
    Path(f"{report}{rank}").write_text(f"{r.exit_code}\n{r.output}")


def test_a_job_refused_by_another_trainings_lock_ends_on_every_rank_at_once(
        t12: Path, tmp_path: Path) -> None:
    """Rank 0 finds the run folder held and stops; the other ranks learn it from rank 0 and stop
    too, with the same line, instead of waiting for a rank 0 that never comes."""
    from drcn_plugin.training.runfolder import hold_run_folder

    out, report = tmp_path / "run", tmp_path / "rank"
    argv = _tiny_train(t12, out, "--steps", "4")
    with hold_run_folder(out):
        codes = _two_ranks(_plain_rank, argv, report, timeout=60)
    _every_rank_said(codes, report, f"another training is running in {out}")
    assert sorted(p.name for p in out.iterdir()) == [".lock"]


def _every_rank_said(codes: list[int | None], report: Path, said: str) -> None:
    """Each rank of a refused job ended with status 2 and one error line, the same: ``said``."""
    assert None not in codes, "a rank waits for a job that will not start"
    for rank in (0, 1):
        code, _, text = Path(f"{report}{rank}").read_text().partition("\n")
        assert code == "2" and "Traceback" not in text, text
        lines = [ln for ln in text.splitlines() if ln.startswith("error:")]
        assert len(lines) == 1 and said in lines[0], text


def test_a_lock_rank_0_cannot_open_is_the_same_line_on_every_rank(t12: Path,
                                                                  tmp_path: Path) -> None:
    """Rank 0 alone opens the run folder's lock; when it cannot, every rank says why, not a
    gloo error of a lost process."""
    out, report = tmp_path / "run", tmp_path / "rank"
    (out / ".lock").mkdir(parents=True)  # the lock's name taken by a folder
    codes = _two_ranks(_plain_rank, _tiny_train(t12, out, "--steps", "4"), report, timeout=60)
    _every_rank_said(codes, report, f"cannot open the run folder's lock {out / '.lock'}")
    assert sorted(p.name for p in out.iterdir()) == [".lock"]


def _rank_1_lost_at_the_lock(rank: int, port: int, argv: list[str], report: Path) -> None:
    """:func:`_plain_rank`, whose rank 1 ends as the job learns from rank 0 about the lock."""
    if rank == 1:
        Dist.from_main = lambda self, value: os._exit(9)
    _plain_rank(rank, port, argv, report)


def test_a_process_lost_as_the_job_takes_the_folder_is_one_line(t12: Path,
                                                                tmp_path: Path) -> None:
    out, report = tmp_path / "run", tmp_path / "rank"
    codes = _two_ranks(_rank_1_lost_at_the_lock, _tiny_train(t12, out, "--steps", "4"), report,
                       timeout=60)
    assert codes[0] is not None, "rank 0 waits for a process that has gone"
    code, _, text = Path(f"{report}0").read_text().partition("\n")
    lines = [ln for ln in text.splitlines() if ln.startswith("error:")]
    assert code == "2" and len(lines) == 1, text
    assert "another process of this torchrun job stopped" in lines[0], text
    assert "start it again (nothing to resume)" in lines[0], text


def test_a_warning_about_the_data_is_said_once_for_the_job(t12: Path, tmp_path: Path) -> None:
    """Every process reads the same data: a file read only in part is named by rank 0 alone."""
    data, report = tmp_path / "data", tmp_path / "rank"
    shutil.copytree(t12, data)
    frames = [Image.open(data / name).convert("RGB") for name in sorted(os.listdir(data))[:2]]
    frames[0].save(data / "anim.gif", save_all=True, append_images=frames[1:])
    argv = _tiny_train(data, tmp_path / "run", "--steps", "2")
    codes = _two_ranks(_plain_rank, argv, report)
    said = [Path(f"{report}{rank}").read_text().count("anim.gif: 2 frames: only the first is read")
            for rank in (0, 1)]
    assert codes == [0, 0] and said == [1, 0], said


def _slow_end_rank(rank: int, port: int, cfg: dict) -> None:
    """One process of a two-process training whose rank 0 takes 2 s more over its end (on a
    big test set the measurement takes minutes); each notes the time it returns."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2",
                      RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    finish = Trainer._finish
    Trainer._finish = lambda self: time.sleep(2) or finish(self)
    train(TrainConfig.from_dict(cfg))
    (Path(cfg["out"]) / f"rank{rank}.end").write_text(str(time.monotonic()))


def test_the_other_ranks_do_not_wait_on_rank_0s_end(t12: Path, tmp_path: Path) -> None:
    cfg = tiny(t12, tmp_path, steps=2, warmup=1)
    assert _two_ranks(_slow_end_rank, asdict(cfg)) == [0, 0]
    assert (tmp_path / "drcn-f8-d3-x3.md").is_file()
    # rank 1 ended without waiting in a collective for rank 0's end, where its timeout (30 min
    # for gloo, 10 for nccl) would end it and torchrun then rank 0's measurement
    end = [float((tmp_path / f"rank{rank}.end").read_text()) for rank in (0, 1)]
    assert end[1] < end[0] - 1.5


def test_gathered_outcomes_are_in_the_batchs_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rank r upscales files r, r + world, ...: the summary lists them as the batch named them,
    also when a rank stopped early (a full disk) with fewer."""
    import torch.distributed as dist

    jobs = [batch.Outcome(batch.Job(Path(f"{i}.png"), Path(f"out/{i}.png")), "done")
            for i in range(7)]
    parts = [jobs[0::3], jobs[1::3], jobs[2:3]]  # rank 2 stopped after its first file
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 3)
    monkeypatch.setattr(dist, "all_gather_object", lambda out, _: out.__setitem__(slice(None), parts))
    monkeypatch.setattr(dist, "destroy_process_group", lambda: None)
    names = [o.job.source.name for o in batch.gather_outcomes(parts[0])]
    assert names == ["0.png", "1.png", "2.png", "3.png", "4.png", "6.png"]


def _busy_rank(rank: int, port: int, argv: list[str], report: Path) -> None:
    """:func:`_plain_rank` with torch's wait for a collective cut to 3 s, and one process busy
    6 s more than the others (hours, in a real job): rank 0 at each validation of a training,
    rank 1 at each of its files of an upscale."""
    from datetime import timedelta

    import torch.distributed.distributed_c10d as c10d

    c10d.default_pg_timeout = timedelta(seconds=3)
    if rank == 0:
        validate = Trainer._validate
        Trainer._validate = lambda self: time.sleep(6) or validate(self)
    else:
        run_job = batch.run_job
        batch.run_job = lambda *a, **k: time.sleep(6) or run_job(*a, **k)
    _plain_rank(rank, port, argv, report)


@pytest.mark.slow  # two processes starting torch: 15-25 s on a busy 2-core machine
def test_the_others_wait_for_rank_0s_validation(t12: Path, tmp_path: Path) -> None:
    out, report = tmp_path / "run", tmp_path / "rank"
    codes = _two_ranks(_busy_rank, _tiny_train(t12, out, "--steps", "4", "--val-every", "2"),
                       report)
    text = Path(f"{report}0").read_text()
    assert codes == [0, 0] and "wrote" in text, text
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 4


@pytest.mark.slow  # two processes starting torch: 15-25 s on a busy 2-core machine
def test_an_upscale_waits_for_a_slower_share(tmp_path: Path, tiny_model_file: str) -> None:
    photos, report = tmp_path / "photos", tmp_path / "rank"
    photos.mkdir()
    for i in range(2):
        Image.open(DATA / "Set5" / "head.png").crop((0, 0, 16, 16)).save(photos / f"{i}.png")
    codes = _two_ranks(_busy_rank, ["upscale", str(photos), "-o", str(tmp_path / "up"),
                                          "--model", tiny_model_file, "--device", "cpu"], report)
    text = Path(f"{report}0").read_text()
    assert codes == [0, 0] and "2 done, 0 skipped, 0 failed" in text, text
