"""Hostile batches and host installs: inputs that change during a run, names that collide only on
some file systems, stops before the first file, and install targets that cannot take files."""

from __future__ import annotations

import io
import os
import signal
import sys
import unicodedata
from pathlib import Path

import pytest
from helpers import random_rgb
from rich.console import Console
from typer.testing import CliRunner

from drcn_plugin import engine
from drcn_plugin.batch import Job, Outcome, collect_jobs, run_job
from drcn_plugin.cli import app
from drcn_plugin.engine import Upscaler
from drcn_plugin.progress import BatchProgress

runner = CliRunner()
posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX pipes")


@posix_only
def test_an_input_swapped_for_a_pipe_fails_at_once(tmp_path: Path, tiny_model_file: str) -> None:
    """An input that became a FIFO after planning is refused, not read for ever."""
    source = tmp_path / "a.png"
    os.mkfifo(source)

    def hung(signum: int, frame: object) -> None:
        raise TimeoutError("the read of a pipe blocked")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(10)
    try:
        out = run_job(Job(source, tmp_path / "out" / "a.png"), Upscaler(tiny_model_file), 2)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert out.status == "failed" and "not a regular file" in out.message, out.message
    assert not (tmp_path / "out").exists()


def test_a_line_break_in_a_name_stays_on_its_row_of_the_summary(tiny_model_file: str) -> None:
    """The summary shows ``\\n`` as error lines do, never a second row that reads as a file."""
    source = Path("/photos/nl\nx.png")
    console = Console(file=io.StringIO(), width=200)
    BatchProgress.summary(console, [Outcome(Job(source, Path("/out/nl\nx.png")), "failed",
                                            f"{source}: bad\nthing")], Upscaler(tiny_model_file))
    rows = [line for line in console.file.getvalue().splitlines() if "photos" in line]
    assert len(rows) == 1 and "nl\\nx.png" in rows[0] and "bad\\nthing" in rows[0], rows


def test_names_differing_only_in_accent_encoding_get_their_own_outputs(tmp_path: Path) -> None:
    """café.png as one é (Linux, Windows) and as e + a combining accent (macOS) are one name on
    macOS's file systems: two results must not share it."""
    for folder, form in (("a", "NFC"), ("b", "NFD")):
        (tmp_path / folder).mkdir()
        random_rgb().save(tmp_path / folder / unicodedata.normalize(form, "café.png"))
    jobs, errs = collect_jobs([str(tmp_path / "a"), str(tmp_path / "b")], 2, tmp_path / "out",
                              False, "", "same")
    names = {unicodedata.normalize("NFC", j.target.name).lower() for j in jobs}
    assert not errs and len(jobs) == 2 and len(names) == 2, [j.target for j in jobs]


def test_a_second_choice_name_too_long_falls_back_to_a_number(tmp_path: Path) -> None:
    """x.png and x.gif with a 249-byte stem: x.gif.png would pass 255 bytes, x-2.png fits."""
    stem = "n" * 249
    for ext in ("png", "gif"):
        random_rgb().save(tmp_path / f"{stem}.{ext}")
    jobs, errs = collect_jobs([str(tmp_path)], 2, tmp_path.parent / "out", False, "", "png")
    assert not errs and not any(j.problem for j in jobs), [j.problem for j in jobs]
    assert sorted(j.target.name for j in jobs) == [f"{stem}-2.png", f"{stem}.png"]


def test_a_stop_before_the_first_file_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   tiny_model_file: str) -> None:
    """Ctrl-C while the model loads says nothing was written, as compare and eval do."""
    random_rgb().save(tmp_path / "a.png")

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(engine.Upscaler, "__init__", interrupted)
    r = runner.invoke(app, ["upscale", str(tmp_path / "a.png"), "-m", tiny_model_file])
    assert r.exit_code == 130 and "error: interrupted: nothing written" in r.output, r.output
