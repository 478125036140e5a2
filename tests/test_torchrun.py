"""torchrun jobs: an environment that names no job, a process of the job that dies, and what rank 0
logs for the whole job."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import tiny
from typer.testing import CliRunner

from drcn_plugin.cli import app
from drcn_plugin.devices import Dist, join_torchrun
from drcn_plugin.errors import DistributedError

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
