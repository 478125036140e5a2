"""torchrun jobs: an environment that names no job, a process of the job that dies, and what rank 0
logs for the whole job."""

from __future__ import annotations

import multiprocessing
import os
import socket
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from helpers import tiny
from typer.testing import CliRunner

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
    ctx, port = multiprocessing.get_context("spawn"), _free_port()
    procs = [ctx.Process(target=_slow_end_rank, args=(rank, port, asdict(cfg))) for rank in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert (tmp_path / "drcn-f8-d3-x3.md").is_file()
    # rank 1 ended without waiting in a collective for rank 0's end, where its timeout (30 min
    # for gloo, 10 for nccl) would end it and torchrun then rank 0's measurement
    end = [float((tmp_path / f"rank{rank}.end").read_text()) for rank in (0, 1)]
    assert end[1] < end[0] - 1.5
