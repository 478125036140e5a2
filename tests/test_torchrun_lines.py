"""What a torchrun job's processes say: a line every process meets alike once, from the machine's
first process; a line only one process can know from that process; a stop named as torchrun's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from drcn_plugin import stops, terminal
from drcn_plugin.cli import app
from drcn_plugin.errors import BadOptionError, OutOfMemoryError, PeerLostError
from drcn_plugin.training import cli as train_cli

runner = CliRunner()


@pytest.fixture
def later(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process as torchrun's agent starts the second process of a machine."""
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")
    monkeypatch.setenv("LOCAL_RANK", "1")
    stops.arm_stops()
    yield
    stops.arm_stops()  # the stop the test recorded is forgotten


def _ended_by_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    """torchrun's SIGTERM comes while this process waits for the first to say the line."""
    def sigterm(seconds: float) -> None:
        stops.record_stop(signal.SIGTERM)
        raise KeyboardInterrupt

    monkeypatch.setattr(terminal.time, "sleep", sigterm)


def _said(error: Exception, capsys: pytest.CaptureFixture) -> str:
    """What a command that raised ``error`` inside :func:`terminal.user_errors` said."""
    with pytest.raises(typer.Exit) as end, terminal.user_errors():
        raise error
    assert end.value.exit_code == 2
    return capsys.readouterr().err


def test_a_later_process_leaves_a_shared_error_to_the_first(
        later: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    _ended_by_torchrun(monkeypatch)
    assert _said(BadOptionError("batch 3 does not split over 2 processes", "batch"), capsys) == ""


@pytest.mark.parametrize("error", [OutOfMemoryError("this GPU's memory is full"),
                                   PeerLostError("another process of this torchrun job stopped")])
def test_a_later_process_says_what_only_it_can_know(
        later: None, monkeypatch: pytest.MonkeyPatch, error: Exception,
        capsys: pytest.CaptureFixture) -> None:
    _ended_by_torchrun(monkeypatch)  # never waited for: the line is at once
    assert _said(error, capsys).count("error:") == 1


def test_a_shared_error_the_first_did_not_meet_is_said_after_the_wait(
        later: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    waited: list[float] = []
    monkeypatch.setattr(terminal.time, "sleep", waited.append)  # not ended: the first goes on
    said = _said(BadOptionError("a file only this process found gone"), capsys)
    assert waited == [terminal._FIRST_GRACE] and said.count("error:") == 1, said


@pytest.mark.parametrize(("agent", "local"), [
    ("test", "0"),  # torchrun's first process of a machine
    (None, "1"),  # a later process no torchrun agent started: none ends it
])
def test_the_first_process_and_one_no_agent_ends_say_it_at_once(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, agent: str | None,
        local: str) -> None:
    monkeypatch.setattr(terminal.time, "sleep", lambda s: pytest.fail("waited"))
    monkeypatch.setenv("LOCAL_RANK", local)
    if agent is None:
        monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    else:
        monkeypatch.setenv("TORCHELASTIC_RUN_ID", agent)
    assert _said(BadOptionError("no"), capsys).count("error: no") == 1


def test_a_usage_mistake_is_left_to_the_first_process(
        later: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from drcn_plugin import cli

    _ended_by_torchrun(monkeypatch)
    monkeypatch.setattr(sys, "argv", ["drcn", "train", "--bogus"])
    with pytest.raises(SystemExit) as end:
        cli.main()
    assert end.value.code == 2 and "error:" not in capsys.readouterr().err


@pytest.mark.parametrize(("signum", "said"), [
    (signal.SIGINT, ""),  # Ctrl-C reached every process: the first says it
    (signal.SIGTERM, "error: stopped by torchrun (SIGTERM: the job was stopped, or another of "
                     "its processes ended; its output says why): no checkpoint was written yet"),
])
def test_a_stopped_training_names_torchrun_s_stop(
        later: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, signum: int,
        said: str) -> None:
    def stopped(*args: object) -> None:
        stops.record_stop(signum)
        raise KeyboardInterrupt

    monkeypatch.setattr(train_cli, "_train", stopped)
    r = runner.invoke(app, ["train", "--data", str(tmp_path), "--out", str(tmp_path / "run")])
    assert r.exit_code == 128 + signum
    assert r.output.strip() == said, r.output


def test_a_sigterm_outside_torchrun_is_an_interrupt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    stops.record_stop(signal.SIGTERM)
    try:
        assert stops.stop_word() == "interrupted"
    finally:
        stops.arm_stops()


@pytest.mark.slow
def test_a_bad_option_under_torchrun_is_one_line(tmp_path: Path) -> None:
    """Two processes on one machine, each refusing the option: one line, from the first."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                        "--master-port", "0", "-m", "drcn_plugin", "train", "--data",
                        str(tmp_path), "--out", str(tmp_path / "run"), "--bogus"],
                       capture_output=True, text=True, timeout=120, env=env)
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith("error: No such option: --bogus"), r.stderr


def test_rank_0s_bar_counts_its_share_as_its_own(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_model_file: str) -> None:
    """Rank 0 shows the one bar, of its own files: 2 of a batch of 3, named as its share, so
    the summary's 3 files do not contradict it."""
    import torch
    from PIL import Image

    from drcn_plugin import devices

    monkeypatch.setattr(devices, "join_torchrun",
                        lambda *a, **k: (devices.Dist(0, 2), torch.device("cpu")))
    for i in range(3):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(tmp_path / f"{i}.png")
    r = runner.invoke(app, ["upscale", *(str(tmp_path / f"{i}.png") for i in range(3)), "-o",
                            str(tmp_path / "up"), "--model", tiny_model_file, "--device", "cpu"])
    assert r.exit_code == 0, r.output
    bar = next(ln for ln in r.output.splitlines() if ln.startswith("images"))
    assert bar.startswith("images (rank 0's)") and " 2/2 " in bar, r.output
