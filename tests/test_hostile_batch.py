"""Hostile batches and host installs: inputs that change during a run, names that collide only on
some file systems, stops before the first file, and install targets that cannot take files."""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import unicodedata
from pathlib import Path

import pytest
import typer
from helpers import random_rgb
from rich.console import Console
from typer.testing import CliRunner

from drcn_plugin import cli_upscale, engine, stops, writing
from drcn_plugin.batch import Job, Outcome, collect_jobs, run_job
from drcn_plugin.cli import app
from drcn_plugin.engine import Upscaler
from drcn_plugin.errors import WriteError
from drcn_plugin.integrations import comfyui_install, gimp_install
from drcn_plugin.progress import BatchProgress

runner = CliRunner()
posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX pipes and shell scripts")


def _read_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every new file refused as in a read-only folder (the tests may run as root)."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(writing, "_new_part", refuse)


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


@pytest.mark.parametrize("length", [249, 251])
def test_a_second_choice_name_too_long_falls_back_to_a_number(tmp_path: Path,
                                                               length: int) -> None:
    """x.png and x.gif with a long stem: x.gif.png would pass 255 bytes; x-2.png fits, or with a
    stem over 249 bytes its stem is cut to fit."""
    stem = "é" + "n" * (length - 2)  # a two-byte character first: cut by characters, not bytes
    for ext in ("png", "gif"):
        random_rgb().save(tmp_path / f"{stem}.{ext}")
    jobs, errs = collect_jobs([str(tmp_path)], 2, tmp_path.parent / "out", False, "", "png")
    assert not errs and not any(j.problem for j in jobs), [j.problem for j in jobs]
    names = sorted(j.target.name for j in jobs)
    assert names[1] == f"{stem}.png" and names[0].endswith("-2.png") and \
        stem.startswith(names[0].removesuffix("-2.png")), names
    assert max(len(os.fsencode(n)) for n in names) <= 255


def test_a_stop_before_the_first_file_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   tiny_model_file: str) -> None:
    """Ctrl-C while the model loads says nothing was written, as compare and eval do."""
    random_rgb().save(tmp_path / "a.png")

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(engine.Upscaler, "__init__", interrupted)
    r = runner.invoke(app, ["upscale", str(tmp_path / "a.png"), "-m", tiny_model_file])
    assert r.exit_code == 130 and "error: interrupted: nothing written" in r.output, r.output


@posix_only
@pytest.mark.parametrize(("name", "status"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_stop_signalled_again_while_it_is_said_is_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model_file: str, name: str,
        status: int) -> None:
    """Ctrl-C pressed twice, or a SIGTERM after it: a second stop that comes while the first
    is being said does not have it said twice."""
    for k in range(3):
        random_rgb(seed=k).save(tmp_path / f"{k}.png")
    stop, real, calls = getattr(signal, name), engine.Upscaler.upscale, []

    def upscale(self: Upscaler, *args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 2:  # during the second file
            os.kill(os.getpid(), stop)
        return real(self, *args, **kwargs)

    def again(message: str, *args: object, **kwargs: object) -> None:
        said(message, *args, **kwargs)
        os.kill(os.getpid(), stop)

    said = cli_upscale.print_error
    monkeypatch.setattr(engine.Upscaler, "upscale", upscale)
    monkeypatch.setattr(cli_upscale, "print_error", again)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        r = runner.invoke(app, ["upscale", str(tmp_path), "-o", str(tmp_path / "out"), "-m",
                                tiny_model_file])
    finally:  # pytest's own again
        for s, handler in handlers.items():
            signal.signal(s, handler)
        stops.arm_stops()  # no stop left counted for a later test
    assert r.exit_code == status, r.output
    assert [line for line in r.output.splitlines() if "interrupted" in line] == [
        "error: interrupted: 1 of 3 files written, nothing of the one in progress "
        "(--skip-existing goes on from here)"], r.output
    assert "interrupted" in r.output.splitlines()[-1], "the bar's last frame came after it"
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["0.png"]


def test_a_third_stop_while_stopping_ends_the_process_at_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The second stop is passed over, so a cleanup stuck on a hung disk must not hold the
    terminal: the third ends the process with the first stop's status."""
    ended: list[int] = []
    monkeypatch.setattr(stops.os, "_exit", ended.append)
    stops.arm_stops()
    with pytest.raises(KeyboardInterrupt):
        stops.interrupt(signal.SIGTERM)
    stops.interrupt(signal.SIGINT)
    assert ended == []
    stops.interrupt(signal.SIGINT)
    assert ended == [143]
    stops.arm_stops()


def test_gimp_install_names_a_file_or_read_only_folder_in_its_way(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One line naming the cause, not errno text about a hidden temporary folder."""
    (tmp_path / "file").write_text("mine")
    r = runner.invoke(app, ["gimp", "install", "--gimp-dir", str(tmp_path / "file" / "GIMP")])
    assert r.exit_code == 2 and f"{tmp_path / 'file'} is a file" in r.output, r.output
    assert ".part" not in r.output and (tmp_path / "file").read_text() == "mine"
    _read_only(monkeypatch)
    r = runner.invoke(app, ["gimp", "install", "--gimp-dir", str(tmp_path / "GIMP 3")])
    assert r.exit_code == 2 and "cannot write into" in r.output and "Permission denied" in \
        r.output, r.output


def test_gimp_install_expands_a_tilde_the_shell_left(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """``--gimp-dir=~/GIMP`` (no shell expands a tilde after ``=``) is the home's folder, not a
    folder named ``~`` made in the current one."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    r = runner.invoke(app, ["gimp", "install", "--gimp-dir=~/GIMP"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "home" / "GIMP" / "plug-ins" / gimp_install.PLUGIN).is_dir()
    assert list((tmp_path / "here").iterdir()) == []


@posix_only
def test_comfyui_install_into_a_read_only_folder_is_refused_before_pip(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pip must not change ComfyUI's Python for nodes that then cannot be put in place."""
    comfy = tmp_path / "Comfy UI"
    (comfy / "custom_nodes").mkdir(parents=True)
    (comfy / "main.py").write_text("")
    python = tmp_path / "python"
    python.write_text(f"#!/bin/sh\nif [ \"$1\" = \"-c\" ]; then echo "
                      f"'{json.dumps(['2.5.1', None])}'; else touch {tmp_path}/pip-ran; fi\n")
    python.chmod(0o755)
    _read_only(monkeypatch)
    with pytest.raises(WriteError, match="cannot write into .*custom_nodes"):
        comfyui_install.install(comfy, python)
    assert not (tmp_path / "pip-ran").exists()
    assert sorted(p.name for p in comfy.iterdir()) == ["custom_nodes", "main.py"]


def test_a_stop_names_at_most_three_written_files(capsys: pytest.CaptureFixture) -> None:
    from drcn_plugin.terminal import stopped_cleanly

    with pytest.raises(typer.Exit), stopped_cleanly([f"out/{i}.png" for i in range(1000)]):
        raise KeyboardInterrupt
    err = capsys.readouterr()
    said = err.out + err.err
    assert "wrote out/0.png, out/1.png, out/2.png and 997 more before that" in said, said
