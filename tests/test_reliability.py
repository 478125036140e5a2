"""No file can crash a batch, lose a result, replace an input or hang the CLI: output names,
output places, stale and concurrent writers, signals, weights and sizes refused up front."""

from __future__ import annotations

import itertools
import os
import signal
import stat
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import dead_pid, random_rgb, upscale
from PIL import Image
from safetensors.torch import save_file
from typer.testing import CliRunner

from drcn_plugin import engine, memory, writing
from drcn_plugin.batch import Job, collect_jobs, run_job
from drcn_plugin.cli import app
from drcn_plugin.model import DRCN

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("wide_console")
rgb = random_rgb



def errors(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]




# -- data loss and wrong places -------------------------------------------------------------
def test_colliding_output_names_are_made_unique(folder: Path, tiny_model_file: str) -> None:
    """Inputs photo.png + photo.gif (and .jpg + .png with --format png) never share an output."""
    rgb().save(folder / "photo.png")
    rgb(seed=1).save(folder / "photo.gif")
    rgb(seed=2).save(folder / "x.jpg")
    rgb(seed=3).save(folder / "x.png")
    out = folder.parent / "out"
    r = upscale(str(folder), "-o", str(out), "--skip-existing", "--model", tiny_model_file)
    assert r.exit_code == 0 and "4 done" in r.output, r.output
    assert sorted(p.name for p in out.iterdir()) == ["photo.gif.png", "photo.png", "x.jpg",
                                                    "x.png"]
    r = upscale(str(folder), "-o", str(folder.parent / "png"), "--format", "png",
                "--model", tiny_model_file)
    assert r.exit_code == 0 and "4 done" in r.output, r.output
    assert sorted(p.name for p in (folder.parent / "png").iterdir()) == [
        "photo.gif.png", "photo.png", "x.jpg.png", "x.png"]


def test_an_output_never_lands_on_an_input(folder: Path, tiny_model_file: str) -> None:
    """With -o on the input folder and a suffix, a.png -> a-x.png must not replace the
    input a-x.png."""
    rgb().save(folder / "a.png")
    rgb(seed=1).save(folder / "a-x.png")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    r = upscale(str(folder / "a.png"), str(folder / "a-x.png"), "-o", str(folder), "--suffix",
                "-x", "--overwrite", "--model", tiny_model_file)
    assert r.exit_code == 1 and "would replace an input" in r.output
    assert (folder / "a-x-x.png").exists()
    assert all((folder / n).read_bytes() == b for n, b in before.items())


def test_compare_never_replaces_its_input(folder: Path, tiny_model_file: str) -> None:
    """``drcn compare c.png -o c.png --overwrite`` leaves c.png as it is."""
    rgb(40, 40).save(folder / "c.png")
    before = (folder / "c.png").read_bytes()
    r = runner.invoke(app, ["compare", str(folder / "c.png"), "-o", str(folder / "c.png"),
                            "--overwrite", "--model", tiny_model_file])
    assert r.exit_code == 2 and "input" in r.output and "Traceback" not in r.output
    assert (folder / "c.png").read_bytes() == before


def test_eval_json_never_replaces_an_input_or_a_foreign_file(folder: Path) -> None:
    """``drcn eval --json ds/a.png`` keeps the input; an existing non-drcn file needs --overwrite."""
    for i in range(2):
        rgb(32, 32, seed=i).save(folder / f"{i}.png")
    image = (folder / "0.png").read_bytes()
    ev = ["eval", "--dataset", str(folder), "--model", "bicubic", "--scale", "2"]
    r = runner.invoke(app, [*ev, "--json", str(folder / "0.png"), "--overwrite"])
    assert r.exit_code == 2 and (folder / "0.png").read_bytes() == image
    notes = folder.parent / "notes.json"
    notes.write_text('{"mine": 1}')
    r = runner.invoke(app, [*ev, "--json", str(notes)])
    assert r.exit_code == 2 and "not a drcn eval result" in r.output
    assert notes.read_text() == '{"mine": 1}'
    assert runner.invoke(app, [*ev, "--json", str(notes), "--overwrite"]).exit_code == 0
    assert runner.invoke(app, [*ev, "--json", str(notes)]).exit_code == 0, "own result replaced"


def test_dot_writes_beside_the_folder_and_is_not_rescanned(folder: Path, tiny_model_file: str,
                                                          monkeypatch) -> None:
    """``drcn upscale .`` (then ``. -r``) resolves the folder first."""
    rgb().save(folder / "a.png")
    monkeypatch.chdir(folder)
    r = upscale(".", "--model", tiny_model_file)
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in folder.iterdir()) == ["a.png"]
    assert (folder.parent / "in-drcn-x2" / "a.png").exists()
    r = upscale(".", "-r", "--model", tiny_model_file, "--overwrite")
    assert r.exit_code == 0 and "1 done" in r.output


def test_output_naming_the_input_folder_or_a_file_is_one_line(folder: Path,
                                                              tiny_model_file: str) -> None:
    """``-o`` naming the input folder or an existing file is one line."""
    rgb().save(folder / "a.png")
    (folder / "notes.txt").write_text("mine")
    r = upscale(str(folder), "-o", str(folder), "--model", tiny_model_file)
    assert r.exit_code == 2 and len(errors(r.output)) == 1 and "holds the inputs" in r.output
    r = upscale(str(folder), "-o", str(folder / "notes.txt"), "--model", tiny_model_file)
    assert r.exit_code == 2 and "existing file" in r.output and "Traceback" not in r.output
    r = upscale(str(folder), "-o", str(folder), "--suffix", "-x2", "--model", tiny_model_file)
    assert r.exit_code == 0 and (folder / "a-x2.png").exists(), "a suffix makes it explicit"


# -- one file must not abort the batch ------------------------------------------------------
def test_name_near_255_bytes(folder: Path, tiny_model_file: str) -> None:
    """The temporary name must fit the 255-byte limit too."""
    name = "é" * 120 + "x.png"  # 245 bytes
    rgb().save(folder / name)
    out = folder.parent / "out"
    r = upscale(str(folder), "-o", str(out), "--model", tiny_model_file)
    assert r.exit_code == 0, r.output
    assert [p.name for p in out.iterdir()] == [name]


def test_unwritable_output_folder_is_found_before_any_work(folder: Path, tiny_model_file: str,
                                                          monkeypatch) -> None:
    """A read-only output folder (simulated: tests may run as root) is one line, found while
    planning: no file is upscaled only to be lost. Where the folder is the default one, beside
    the inputs (a locked card, a read-only share), the line says how to choose another."""
    rgb().save(folder / "a.png")
    rgb().save(folder / "b.png")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    def never(*args, **kwargs):
        raise AssertionError("upscaled although nothing can be written")

    monkeypatch.setattr(writing, "_new_part", refuse)
    monkeypatch.setattr(engine.Upscaler, "upscale", never)
    r = upscale(str(folder), "--model", tiny_model_file)
    assert r.exit_code == 1 and "Traceback" not in r.output
    [line] = errors(r.output)
    assert "cannot write into" in line and line.endswith(
        "Permission denied (2 files not upscaled; -o names another output folder)"), line
    r = upscale(str(folder), "-o", str(folder.parent / "out"), "--model", tiny_model_file)
    [line] = errors(r.output)
    assert line.endswith("Permission denied (2 files not upscaled)"), line


def test_output_too_large_for_memory_is_refused_first(folder: Path, tiny_model_file: str,
                                                      monkeypatch) -> None:
    """A flat 1500x1500 PNG at x16 is refused before anything is allocated."""
    Image.new("L", (1500, 1500), 128).save(folder / "flat.png")
    rgb().save(folder / "small.png")
    monkeypatch.setattr(memory, "_available_memory", lambda device: 2 << 30)
    called = []
    real = engine.Upscaler.upscale
    monkeypatch.setattr(engine.Upscaler, "upscale",
                        lambda self, a, *k, **kw: called.append(a.shape) or real(self, a, *k, **kw))
    r = upscale(str(folder), "--scale", "16", "--model", tiny_model_file)
    assert r.exit_code == 1 and "GiB" in r.output and "1 done" in r.output, r.output
    assert called == [(16, 20, 3)], "the big one never reached the engine"


def test_unexpected_exception_is_one_line_and_debug_shows_it(folder: Path, tiny_model_file: str,
                                                             monkeypatch) -> None:
    """Any exception inside a file's job is that file's one line."""
    rgb().save(folder / "a.png")
    rgb().save(folder / "b.png")

    def boom(self, image, *args, **kwargs):
        if image.shape[1] == 20 and not boom.done:
            boom.done = True
            raise struct.error("unpack requires a buffer of 4 bytes")
        return real(self, image, *args, **kwargs)

    boom.done = False
    real = engine.Upscaler.upscale
    monkeypatch.setattr(engine.Upscaler, "upscale", boom)
    r = upscale(str(folder), "--model", tiny_model_file)
    assert r.exit_code == 1 and "1 done" in r.output and "1 failed" in r.output
    assert len(errors(r.output)) == 1 and "unexpected error" in r.output
    assert "Traceback" not in r.output
    boom.done = False
    r = upscale(str(folder), "--model", tiny_model_file, "--overwrite", "--debug")
    assert "Traceback" in r.output


# -- hangs ----------------------------------------------------------------------------------
def test_symlink_loops_are_walked_once(folder: Path, tiny_model_file: str) -> None:
    """Two self-symlinks with a ** glob and with a folder input."""
    rgb().save(folder / "a.png")
    (folder / "sub").mkdir()
    rgb().save(folder / "sub" / "b.png")
    os.symlink(".", folder / "loop1")
    os.symlink("..", folder / "sub" / "loop2")
    jobs, errs = collect_jobs([str(folder / "**" / "*.png")], 2, None, True, "", "same")
    assert sorted(j.source.name for j in jobs) == ["a.png", "b.png"] and not errs
    jobs, _ = collect_jobs([str(folder)], 2, None, True, "", "same")
    assert sorted(j.source.name for j in jobs) == ["a.png", "b.png"]
    r = upscale(str(folder / "**" / "*.png"), "-r", "--model", tiny_model_file)
    assert r.exit_code == 0 and "2 done" in r.output


# -- medium ---------------------------------------------------------------------------------
def test_nan_weights_and_0d_ensemble_are_refused(folder: Path, tmp_path: Path) -> None:
    """Loading validates values and shapes."""
    rgb().save(folder / "a.png")
    sd = DRCN(features=4, recursions=2).state_dict()
    sd["recursive.weight"][0, 0, 0, 0] = float("nan")
    save_file(sd, str(tmp_path / "nan.safetensors"))
    sd = DRCN(features=4, recursions=2).state_dict()
    sd["ensemble"] = sd["ensemble"][0].clone()
    save_file(sd, str(tmp_path / "zero.safetensors"))
    r = upscale(str(folder), "--model", str(tmp_path / "nan.safetensors"))
    assert r.exit_code == 2 and "NaN or infinite" in r.output
    r = upscale(str(folder), "--model", str(tmp_path / "zero.safetensors"))
    assert r.exit_code == 2 and "does not hold DRCN weights" in r.output
    assert "Traceback" not in r.output


def test_compare_bad_crops_and_small_images(folder: Path, tiny_model_file: str) -> None:
    """``--crop`` 0 or negative is one line; labels of small crops do not overlap."""
    rgb(9, 9).save(folder / "s.png")
    for crop in ("0", "-5"):
        r = runner.invoke(app, ["compare", str(folder / "s.png"), "--crop", crop,
                                "--model", tiny_model_file])
        assert r.exit_code == 2 and "--crop" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["compare", str(folder / "s.png"), "--crop", "4",
                            "--model", tiny_model_file])
    assert r.exit_code == 0, r.output
    from PIL import ImageFont

    from drcn_plugin.compare import label_columns

    font = ImageFont.load_default(size=16)
    tiles = [(f"panel {i}  33.33 dB", Image.new("RGB", (8, 8))) for i in range(4)]
    cols = label_columns(tiles, font)
    for (label, _), (left, right) in zip(tiles, cols, strict=True):
        assert right - left >= 4 + font.getlength(label)
    assert all(a[1] < b[0] for a, b in itertools.pairwise(cols)), "columns do not overlap"
    sheet = Image.open(folder / "s-compare-x3.png")
    assert sheet.width >= sum(r - l_ for l_, r in cols[:3])


# -- low ------------------------------------------------------------------------------------
def test_stale_parts_are_cleaned_and_live_ones_kept(folder: Path, tiny_model_file: str) -> None:
    """A killed run's hidden .part is removed on the next start."""
    rgb().save(folder / "a.png")
    out = folder.parent / "out"
    out.mkdir()
    stale = out / f".a.png.{dead_pid()}.abcd1234.part"
    live = out / f".a.png.{os.getppid()}.abcd1234.part"
    stale.write_bytes(b"half")
    live.write_bytes(b"busy")
    r = upscale(str(folder), "-o", str(out), "--skip-existing", "--model", tiny_model_file)
    assert r.exit_code == 0 and not stale.exists() and live.exists()


@pytest.mark.parametrize("name", ["SIGTERM", "SIGHUP"])
def test_sigterm_is_handled_like_ctrl_c(folder: Path, monkeypatch, name: str) -> None:
    """SIGTERM (a stop) or SIGHUP (the terminal closed) while writing leaves no temporary
    file."""
    from drcn_plugin.stops import take_stops

    sig = getattr(signal, name)
    old = signal.getsignal(sig)
    try:
        take_stops()

        def terminated(fd: int) -> None:
            os.kill(os.getpid(), sig)
            time.sleep(1)

        monkeypatch.setattr(writing.os, "fsync", terminated)
        with pytest.raises(KeyboardInterrupt):
            writing.atomic_write_bytes(folder / "x.json", b"{}")
        assert list(folder.iterdir()) == []
    finally:
        signal.signal(sig, old)


def test_concurrent_skip_existing_runs(folder: Path, tiny_model_file: str, monkeypatch) -> None:
    """Another run writes the output while this one works: skipped, not an error."""
    rgb().save(folder / "a.png")
    out = folder.parent / "out"
    real = engine.Upscaler.upscale

    def other_run_wins(self, image, *args, **kwargs):
        out.mkdir(exist_ok=True)
        (out / "a.png").write_bytes(b"theirs")
        return real(self, image, *args, **kwargs)

    monkeypatch.setattr(engine.Upscaler, "upscale", other_run_wins)
    r = upscale(str(folder), "-o", str(out), "--skip-existing", "--model", tiny_model_file)
    assert r.exit_code == 0 and "1 skipped" in r.output, r.output
    assert (out / "a.png").read_bytes() == b"theirs"


def test_suffix_cannot_escape_the_output_folder(folder: Path, tiny_model_file: str) -> None:
    """A suffix holding a path separator is refused; nothing is written outside the folder."""
    rgb().save(folder / "a.png")
    r = upscale(str(folder), "--suffix", "/../../x", "--model", tiny_model_file)
    assert r.exit_code == 2 and "path separator" in r.output
    assert sorted(p.name for p in folder.parent.iterdir()) == ["in"]


def test_outputs_keep_the_input_permissions(folder: Path, tiny_model_file: str) -> None:
    """Each output gets its input's permission bits."""
    rgb().save(folder / "a.png")
    os.chmod(folder / "a.png", 0o600)
    out = folder.parent / "out"
    assert upscale(str(folder), "-o", str(out), "--model", tiny_model_file).exit_code == 0
    assert stat.S_IMODE(os.stat(out / "a.png").st_mode) == 0o600


def test_run_job_never_raises_for_a_bad_file(tmp_path: Path, tiny_model_file: str) -> None:
    """Structural: the library boundary itself, for callers other than the CLI."""
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    up = engine.Upscaler(tiny_model_file, device="cpu")
    outcome = run_job(Job(bad, tmp_path / "out" / "bad.png"), up, 2.0)
    assert outcome.status == "failed" and str(bad) in outcome.message


_FULL_DISK = """
import resource, sys
import numpy as np
from PIL import Image
from drcn_plugin.writing import Encoded, atomic_save
from drcn_plugin.errors import WriteError
target, fmt = sys.argv[1], sys.argv[2]
image = Image.fromarray((np.random.default_rng(0).random((128, 160, 3)) * 255).astype(np.uint8))
resource.setrlimit(resource.RLIMIT_FSIZE, (20480, 20480))  # the file may grow to 20 KiB
try:
    options = {"JPEG": {"quality": 100}, "WEBP": {"lossless": True}}.get(fmt, {})
    atomic_save(Encoded(image, fmt, options), target, overwrite=True)
except WriteError as e:
    print(e)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
@pytest.mark.parametrize("fmt", ["JPEG", "BMP", "PNG", "WEBP", "TIFF"])
def test_a_file_size_limit_mid_encode_is_an_error_and_keeps_the_old_file(tmp_path: Path,
                                                                         fmt: str) -> None:
    # One encoder call that writes the whole 60 KB file and is cut short: JPEG and BMP encoders
    # writing to the descriptor in C ignored the short write, and the cut file looked saved.
    target = tmp_path / f"out.{fmt.lower()}"
    target.write_bytes(b"the earlier result")
    run = subprocess.run([sys.executable, "-c", _FULL_DISK, str(target), fmt],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert "File too large" in run.stdout, run.stdout + run.stderr
    assert target.read_bytes() == b"the earlier result"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no temporary file left


def test_a_line_break_in_a_file_name_keeps_the_reason(folder: Path, tiny_model_file: str) -> None:
    (folder / "bad\nname.png").write_bytes(b"junk")
    r = upscale(str(folder), "--model", tiny_model_file)
    assert r.exit_code == 1
    assert any("bad\\nname.png: not an image Pillow can read" in e for e in errors(r.output))


@pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")
def test_a_locked_part_of_a_pid_unknown_here_is_kept(tmp_path: Path) -> None:
    """A writer in another container or host has a PID that looks dead here; the lock it
    holds on its part keeps the part alive until it is done."""
    import fcntl

    part = tmp_path / f".a.png.{dead_pid()}.abcd1234.part"
    part.write_bytes(b"busy")
    with open(part, "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        assert writing.clean_stale_parts(tmp_path) == 0 and part.exists()
    assert writing.clean_stale_parts(tmp_path) == 1 and not part.exists()  # its writer died


def test_a_part_older_than_the_process_holding_its_pid_is_stale(tmp_path: Path) -> None:
    """In a container every run is PID 1, so a killed run's part names a PID that runs again,
    this process's own among them. A part last changed before that process started is not its
    own; a lock still keeps one that a writer elsewhere holds."""
    import fcntl

    week_ago = time.time() - 7 * 86400
    old_own = tmp_path / f".a.png.{os.getpid()}.abcd1234.part"
    old_other = tmp_path / f".b.png.{os.getppid()}.abcd1234.part"
    locked = tmp_path / f".c.png.{os.getppid()}.abcd1234.part"
    fresh_own = tmp_path / f".d.png.{os.getpid()}.abcd1234.part"
    for part in (old_own, old_other, locked, fresh_own):
        part.write_bytes(b"half")
        if part is not fresh_own:
            os.utime(part, (week_ago, week_ago))
    with open(locked, "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        assert writing.clean_stale_parts(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([locked.name, fresh_own.name])


def test_a_non_ascii_name_under_an_ascii_locale(tmp_path: Path) -> None:
    # The file system's encoding is ASCII there: names arrive with escaped bytes, and the
    # temporary name must give back those bytes, not re-decode them as UTF-8.
    code = ("import sys; from pathlib import Path; from drcn_plugin.writing import "
            "atomic_write_bytes; atomic_write_bytes(Path(sys.argv[1]), b'x')")
    target = tmp_path / "h\u00e9llo w\u00f6rld.json"
    env = {**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    run = subprocess.run([sys.executable, "-c", code, str(target)], env=env, timeout=120,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert target.read_bytes() == b"x" and len(list(tmp_path.iterdir())) == 1


def test_an_output_that_is_an_input_under_another_name_is_refused(folder: Path,
                                                                  tiny_model_file: str) -> None:
    """Where the file system ignores case, the output A_up.png is the input a_up.png. A hard
    link gives a file two names on any file system, so it stands in for that here."""
    rgb().save(folder / "A.png")
    rgb(seed=1).save(folder / "other.png")
    os.link(folder / "other.png", folder / "A_up.png")  # another name of the input other.png
    r = upscale(str(folder / "A.png"), str(folder / "other.png"), "-o", str(folder),
                "--suffix", "_up", "--overwrite", "--model", tiny_model_file)
    assert "A_up.png would replace an input" in r.output
    assert (folder / "A_up.png").read_bytes() == (folder / "other.png").read_bytes()


def test_an_output_under_a_file_is_not_called_existing(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("a file")
    with pytest.raises(writing.WriteError, match="cannot make its folder"):
        writing.atomic_save(writing.Encoded(Image.new("L", (1, 1)), "PNG"), tmp_path / "f" / "x.png")


def test_planning_makes_no_output_folder(folder: Path) -> None:
    rgb().save(folder / "a.png")
    out = folder.parent / "new" / "a" / "b"
    r = upscale(str(folder / "a.png"), "-o", str(out), "--model", "nosuch")
    assert r.exit_code == 2 and not (folder.parent / "new").exists()
