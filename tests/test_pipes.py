"""The CLI's standard streams: a reader that goes away (``| head -1``) and a closed stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import random_rgb

from drcn_plugin import cli, cli_measure, terminal

DRCN = [sys.executable, "-m", "drcn_plugin"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}


@pytest.fixture
def two_images(tmp_path: Path) -> Path:
    """A folder of two small images (a dataset for eval, a batch for upscale)."""
    folder = tmp_path / "two"
    folder.mkdir()
    for i in range(2):
        random_rgb(24, 24, seed=i).save(folder / f"{i}.png")
    return folder


def drcn(args: list[str], child_setup) -> subprocess.CompletedProcess:
    """Run ``drcn ARGS`` with stderr captured, after ``child_setup`` ran in the child."""
    return subprocess.run(DRCN + args, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, timeout=120, preexec_fn=child_setup)


def reader_gone_on(fd: int):
    """A child setup making ``fd`` a pipe whose reading end is already closed."""

    def setup() -> None:
        r, w = os.pipe()
        os.close(r)
        os.dup2(w, fd)
        os.close(w)

    return setup


@pytest.mark.parametrize("args", [["--help"], ["upscale", "--help"], ["--version"]])
def test_help_into_a_pipe_whose_reader_left_ends_quietly(args: list[str]) -> None:
    proc = drcn(args, reader_gone_on(1))
    assert proc.returncode == 141 and proc.stderr == "", proc.stderr


@pytest.mark.parametrize("with_json", [False, True])
def test_eval_into_a_pipe_whose_reader_left_ends_quietly(two_images: Path, tmp_path: Path,
                                                        with_json: bool) -> None:
    """As git or grep under SIGPIPE: exit 141 without a word; a --json result is still written."""
    out = tmp_path / "r.json"
    args = ["eval", "--dataset", str(two_images), "--scale", "2", "--model", "bicubic"]
    args += ["--json", str(out)] * with_json
    proc = drcn(args, reader_gone_on(1))
    assert proc.returncode == 141 and proc.stderr == "", proc.stderr  # 128 + SIGPIPE
    assert out.exists() == with_json
    if with_json:
        assert set(json.loads(out.read_text())) >= {"2"}


def full_disk_on(fd: int):
    """A child setup making ``fd`` a file on a full disk (a log file: ``2>>batch.log``)."""

    def setup() -> None:
        full = os.open("/dev/full", os.O_WRONLY)
        os.dup2(full, fd)
        os.close(full)

    return setup


@pytest.mark.parametrize("reports", ["reader gone", "disk full"])
def test_upscale_finishes_its_files_when_the_reader_of_its_reports_left(
        two_images: Path, tmp_path: Path, tiny_model_file: str, reports: str) -> None:
    """The files are the result; the progress, a bad file's error line and the summary on
    stderr are only reports, whether their reader left or their log file's disk is full."""
    if reports == "disk full" and not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    (two_images / "0-bad.png").write_bytes(b"")  # the first file: its error line comes first
    out = tmp_path / "out"
    proc = drcn(["upscale", str(two_images), "-o", str(out), "--model", tiny_model_file],
                reader_gone_on(2) if reports == "reader gone" else full_disk_on(2))
    assert proc.returncode == 1  # the bad file failed
    assert sorted(p.name for p in out.iterdir()) == ["0.png", "1.png"]


def test_eval_with_stdout_closed_is_one_line_before_any_work(two_images: Path) -> None:
    """``>&-``: the results would go nowhere, which is an error like ``> /dev/full``."""
    proc = drcn(["eval", "--dataset", str(two_images), "--scale", "2", "--model", "bicubic"],
                lambda: os.close(1))
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: stdout is closed") and proc.stderr.count("\n") == 1


def test_eval_stops_working_when_no_one_reads_its_only_output(two_images: Path, monkeypatch,
                                                              capsys) -> None:
    polls: list[bool] = []
    monkeypatch.setattr(cli_measure, "reader_gone", lambda: polls.append(True) or True)
    monkeypatch.setattr(sys, "argv", ["drcn", "eval", "--dataset", str(two_images), "--scale",
                                      "2", "3", "--model", "bicubic"])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == terminal.PIPE_EXIT and polls == [True], "stopped at the first image"
    assert capsys.readouterr().out == ""


def test_reader_gone_sees_a_pipe_without_reader(monkeypatch) -> None:
    r, w = os.pipe()
    with os.fdopen(w, "w") as stdout:
        monkeypatch.setattr(sys, "stdout", stdout)
        assert not terminal.reader_gone()
        os.close(r)
        assert terminal.reader_gone()


@pytest.mark.parametrize("group", [[], ["gimp"], ["comfyui"]])
def test_help_lists_each_command_with_its_whole_summary(group: list[str]) -> None:
    """In an 80-column terminal every command's one-line summary is printed whole: neither cut
    with "..." nor broken where its docstring's source line broke."""
    import typer.main

    command = typer.main.get_command(cli.app)
    for name in group:
        command = command.commands[name]
    proc = subprocess.run(DRCN + [*group, "--help"], env={**ENV, "COLUMNS": "80"},
                          capture_output=True, text=True, timeout=120)
    lines = proc.stdout.splitlines()
    listed = lines[lines.index("Commands:") + 1:]
    assert len(listed) == len(command.commands)
    for line, (name, sub) in zip(listed, command.commands.items(), strict=True):
        summary = sub.help.split("\n\n")[0]
        assert "\n" not in summary and line.split() == [name, *summary.split()], line



def test_every_option_says_in_its_help_what_it_takes() -> None:
    """No option's line in ``--help`` is bare (compare's --scale included), and eval's --model names
    bicubic, the interpolation alone, which it scores as the README says."""
    import click
    import typer.main

    def bare(command: click.Command, path: str) -> list[str]:
        if isinstance(command, click.Group):
            return [b for name, sub in command.commands.items() for b in bare(sub, f"{path} {name}")]
        return [f"{path} {p.name}" for p in command.params if not getattr(p, "help", None)]

    root = typer.main.get_command(cli.app)
    assert bare(root, "drcn") == []
    model = next(p for p in root.commands["eval"].params if p.name == "model")
    assert "bicubic" in model.help


def test_eval_table_naming_a_folder_a_windows_pipe_cannot_encode_is_printed(
        tmp_path: Path, monkeypatch) -> None:
    """A Windows stdout redirected to a file or a pipe is cp1252 and strict: a folder name
    outside it in eval's title is written escaped, not a UnicodeEncodeError after the work."""
    import io

    folder = tmp_path / "写真"
    folder.mkdir()
    random_rgb(24, 24).save(folder / "a.png")
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="cp1252")
    monkeypatch.setattr(sys, "stdout", stdout)
    monkeypatch.setattr(cli_measure, "reader_gone", lambda: False)
    monkeypatch.setattr(sys, "argv", ["drcn", "eval", "--dataset", str(folder), "--scale", "2",
                                      "--model", "bicubic"])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    stdout.flush()
    printed = stdout.buffer.getvalue().decode("cp1252")
    assert exit_.value.code == 0 and "\\u5199\\u771f" in printed and "x2" in printed
    assert stdout.errors == "strict", "a caller in this process keeps its stream as it was"


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("args", [["--version"], ["eval", "--help"]])
def test_a_full_stdout_is_one_line(args: list[str]) -> None:
    with open("/dev/full", "w") as full:
        proc = subprocess.run(DRCN + args, env=ENV, stdout=full, stderr=subprocess.PIPE,
                              text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == ["error: cannot write to stdout: No space left "
                                                "on device"], proc.stderr
