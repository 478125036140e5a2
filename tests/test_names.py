"""Output names that every file system takes (a USB stick, an NTFS disk, a folder synced to
Windows), that fit the file system they go to, and file names shown safely in messages."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import random_rgb, upscale

from drcn_plugin import engine, writing
from drcn_plugin.errors import single_line


def _never_upscaled(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("an upscale ran although the run was refused")

    monkeypatch.setattr(engine.Upscaler, "upscale", never)


@pytest.mark.parametrize("suffix", ["_a:b", "?", "*", "<x>", '"', "|", "\\x", "/../../x",
                                    "\x1b[2J", "\n", "\t", "\x7f", "\udce9"])
def test_a_suffix_windows_cannot_hold_is_one_line_before_any_work(
        folder: Path, tiny_model_file: str, monkeypatch: pytest.MonkeyPatch, suffix: str) -> None:
    """A name written on Linux to an NTFS or exFAT disk, or synced to Windows later, must be one
    Windows can open; a separator must never take a result out of its folder."""
    random_rgb().save(folder / "a.png")
    _never_upscaled(monkeypatch)
    r = upscale(str(folder), "--suffix", suffix, "--model", tiny_model_file)
    assert r.exit_code == 2 and "invalid value for --suffix" in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1 and "\x1b" not in r.output, r.output
    assert "\\udc" not in r.output, r.output  # a byte that is not text is shown as \xe9
    assert sorted(p.name for p in folder.parent.iterdir()) == ["in"]


@pytest.mark.parametrize(("name", "suffix"), [("com.png", "1"), ("lp.png", "T9"),
                                               ("au.png", "X "), ("lpt.png", "\u00b9")])
def test_a_suffix_that_makes_a_windows_device_name_is_refused(
        folder: Path, tiny_model_file: str, monkeypatch: pytest.MonkeyPatch, name: str,
        suffix: str) -> None:
    """``com.png`` with ``--suffix 1`` would be ``com1.png``: COM1, a serial port, on Windows,
    whatever the extension or case."""
    random_rgb().save(folder / name)
    _never_upscaled(monkeypatch)
    r = upscale(str(folder), "--suffix", suffix, "--model", tiny_model_file)
    assert r.exit_code == 2 and "invalid value for --suffix" in r.output, r.output
    assert "reserves" in r.output and name in r.output, r.output
    assert sorted(p.name for p in folder.parent.iterdir()) == ["in"]


def test_an_input_named_like_a_device_keeps_its_name(folder: Path, tiny_model_file: str) -> None:
    """``aux.png`` (a device name on Windows) is a file here; its result keeps its name, and a
    suffix may follow."""
    random_rgb().save(folder / "aux.png")
    assert upscale(str(folder), "-o", str(folder.parent / "out"), "--model",
                   tiny_model_file).exit_code == 0
    assert upscale(str(folder), "--suffix", "_x2", "--model", tiny_model_file).exit_code == 0
    assert (folder.parent / "out" / "aux.png").is_file()
    assert (folder.parent / "in-drcn-x2" / "aux_x2.png").is_file()


def test_a_name_too_long_for_its_file_system_fails_that_file_alone(
        folder: Path, tiny_model_file: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """eCryptfs takes 143 bytes, not 255: a longer result name is one line naming its input,
    and the rest of the batch is written."""
    real = os.pathconf

    def ecryptfs(path: object, name: str | int) -> int:
        return 143 if name == "PC_NAME_MAX" else real(path, name)

    monkeypatch.setattr(os, "pathconf", ecryptfs)
    long = "n" * 140 + ".png"
    random_rgb().save(folder / long)
    random_rgb().save(folder / "a.png")
    out = folder.parent / "out"
    r = upscale(str(folder), "-o", str(out), "--suffix", "_up", "--model", tiny_model_file)
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    line = next(ln for ln in r.output.splitlines() if ln.startswith("error:"))
    assert long in line and "147 bytes" in line and "143" in line, r.output
    assert [p.name for p in out.iterdir()] == ["a_up.png"]


def test_temporary_names_fit_a_file_system_with_short_names(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hidden ``.NAME.PID.XXXXXXXX.part`` of a 140-byte name is cut to the folder's 143."""
    real, made = os.open, []

    def recording(path: str, *args: object, **kwargs: object) -> int:
        made.append(os.path.basename(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "pathconf", lambda path, name: 143)
    monkeypatch.setattr(writing.os, "open", recording)
    target = tmp_path / ("n" * 136 + ".png")
    writing.atomic_save(writing.Encoded(random_rgb(), "PNG"), target)
    assert target.is_file() and made and max(len(os.fsencode(n)) for n in made) <= 143, made


def test_a_name_that_is_not_utf8_is_read_and_written_byte_for_byte(
        folder: Path, tiny_model_file: str) -> None:
    """``caf\\xe9.png`` (Latin-1, from an old camera or a Windows share): its result has the
    same bytes, and its bytes are shown as ``\\xe9`` in the report."""
    name = os.fsdecode(b"caf\xe9.png")
    random_rgb().save(folder / name)
    (folder / os.fsdecode(b"bad\xff.png")).write_bytes(b"not an image")
    out = folder.parent / "out"
    r = upscale(str(folder), "-o", str(out), "--model", tiny_model_file)
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert os.listdir(os.fsencode(out)) == [b"caf\xe9.png"]
    assert "caf\\xe9.png" in r.output and "bad\\xff.png" in r.output, r.output


def test_control_characters_in_a_name_cannot_forge_terminal_output(
        folder: Path, tiny_model_file: str, wide_console: None) -> None:
    """A name holding ESC sequences (colour, clear screen) or a line break is shown escaped in
    the error line and the summary (wide enough not to fold it), never obeyed by the terminal."""
    name = "x\x1b[2J\x1b[32mok\rdone\x9b1m.png"
    (folder / name).write_bytes(b"not an image")
    r = upscale(str(folder), "-o", str(folder.parent / "out"), "--model", tiny_model_file)
    assert r.exit_code == 1, r.output
    assert not any(c in r.output for c in "\x1b\r\x9b"), repr(r.output)
    assert r.output.count("x\\x1b[2J\\x1b[32mok\\rdone\\x9b1m.png") >= 2, r.output


def test_a_message_shows_every_unsafe_character_escaped() -> None:
    assert single_line("a\nb\r\t\x1b[1m\x00\x7f\x85\u2028\u202e\udcff\ud800 é\\") == \
        "a\\nb\\r\\t\\x1b[1m\\x00\\x7f\\x85\\u2028\\u202e\\xff\\ud800 é\\"


@pytest.mark.parametrize("command", ["compare", "eval"])
def test_the_line_naming_a_written_file_cannot_be_forged_by_its_name(
        folder: Path, tiny_model_file: str, command: str) -> None:
    """``wrote NAME`` (compare's PNG, eval's --plot) shows a line break or ESC sequence in the
    name escaped: the name can neither begin a line of its own nor drive the terminal."""
    from typer.testing import CliRunner

    from drcn_plugin.cli import app

    name = "x\n\x1b[32mok.png"
    random_rgb(24, 24).save(folder / "a.png")
    target = str(folder.parent / name)
    args = ["compare", str(folder / "a.png"), "--crop", "8", "-s", "2", "-m", tiny_model_file,
            "-o", target] if command == "compare" else \
        ["eval", "--dataset", str(folder), "-s", "2", "-m", tiny_model_file, "--plot", target]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0 and os.path.isfile(target), r.output
    assert "\x1b" not in r.output, repr(r.output)
    assert f"wrote {folder.parent}/x\\n\\x1b[32mok.png" in r.output.splitlines(), r.output


def test_a_note_naming_a_path_cannot_be_forged_by_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine's notes name folders (the tile-plan cache's, from DRCN_CACHE_DIR or
    XDG_CACHE_HOME): a line break or ESC sequence there is shown escaped."""
    import io

    from drcn_plugin import terminal

    out = io.StringIO()
    monkeypatch.setattr(terminal, "console", terminal._Console(file=out, stderr=True, width=200))
    terminal.note("cannot keep the tile plan in /c/x\n\x1b[31mforged (Not a directory)")
    assert out.getvalue() == "cannot keep the tile plan in /c/x\\n\\x1b[31mforged (Not a " \
                             "directory)\n"
