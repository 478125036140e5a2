"""Hostile input and output places during ``drcn upscale``: an animation replaced while it is
upscaled, an output disk that goes read-only, over quota or away mid-batch, a stop while a part
file is made, a PNG of only its signature, pipes and devices in a scanned folder."""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from helpers import upscale
from PIL import Image

from drcn_plugin import engine, writefailures, writing
from drcn_plugin.batch import Job, Outcome, run_job
from drcn_plugin.errors import DamagedImageError
from drcn_plugin.imagefile import read_image

pytestmark = pytest.mark.usefixtures("wide_console")
posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX pipes and devices")


def _gif(path: Path, count: int, seed: int) -> Path:
    """An animated GIF of ``count`` 12x10 noise frames."""
    rng = np.random.default_rng(seed)
    frames = [Image.fromarray(rng.integers(0, 256, (10, 12, 3), np.uint8)) for _ in range(count)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return path


def _errors(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


def _changed_during_frame_0(tmp_path: Path, tiny_model_file: str, change: str) -> Outcome:
    """The job of a 4-frame GIF whose file ``change`` alters during frame 0's upscale."""
    source = _gif(tmp_path / "in.gif", 4, seed=1)
    other = _gif(tmp_path / "other.gif", 3 if change == "fewer frames" else 4, seed=2)
    job = Job(source, tmp_path / "out" / "in.png")
    swapped: list[bool] = []

    def progress(done: int, total: int) -> None:
        if not swapped:  # during frame 0's upscale, as the finder did
            swapped.append(True)
            data = source.read_bytes()
            if change == "rewritten in place":
                source.write_bytes(other.read_bytes() + b"\0")  # same file, new content
            elif change == "same size in place":  # one byte of the last frame's pixels
                source.write_bytes(data[:-3] + bytes([data[-3] ^ 1]) + data[-2:])
            elif change == "touched":  # a sync tool's or backup's touch
                st = source.stat()
                os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns + 5 * 10**9))
            elif change == "replaced by a copy":  # a sync tool's atomic rewrite of the same
                other.write_bytes(data)
                os.replace(other, source)
            else:
                os.replace(other, source)

    out = run_job(job, engine.Upscaler(tiny_model_file, device="cpu"), 2.0, progress=progress)
    assert swapped
    return out


@pytest.mark.parametrize("change", ["same size", "fewer frames", "rewritten in place",
                                    "same size in place"])
def test_an_animation_changed_during_its_upscale_is_refused_and_nothing_written(
        tmp_path: Path, tiny_model_file: str, change: str) -> None:
    """Frame 0 of one file and the rest of another, or a broken APNG whose acTL counts frames it
    does not hold, is refused with nothing written: each later opening must be of the file
    first read."""
    out = _changed_during_frame_0(tmp_path, tiny_model_file, change)
    assert out.status == "failed", (out.status, out.message)
    assert out.message == f"{out.job.source} changed while it was being upscaled: nothing written"
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


@pytest.mark.parametrize("change", ["touched", "replaced by a copy"])
def test_an_animation_whose_bytes_stay_the_same_is_upscaled_whole(
        tmp_path: Path, tiny_model_file: str, change: str) -> None:
    """A sync tool or backup that only touches the file, or rewrites it with the same bytes,
    during the upscale changed no frame: the job goes on, every frame in the result."""
    out = _changed_during_frame_0(tmp_path, tiny_model_file, change)
    assert (out.status, out.frames) == ("done", 4), (out.status, out.message)
    with Image.open(out.job.target) as im:
        assert (im.n_frames, im.size) == (4, (24, 20))


@pytest.fixture
def two(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        Image.new("RGB", (12, 10), (90, 30, 200)).save(folder / name)
    return folder


@pytest.mark.parametrize(("code", "state", "remedy", "line"), [
    (errno.EROFS, "the output disk is read-only", "make it writable", "Read-only file system"),
    (errno.EDQUOT, "the disk quota is exceeded", "free space", "quota exceeded while writing"),
    (errno.EIO, "the output disk fails to write (an input/output error: was it unplugged?)",
     "reconnect it", "Input/output error"),
])
def test_a_batch_stops_at_the_first_file_its_output_disk_cannot_take(
        two: Path, tiny_model_file: str, monkeypatch: pytest.MonkeyPatch, code: int, state: str,
        remedy: str, line: str) -> None:
    """Only a full disk stopped a batch; a disk gone read-only, over quota or unplugged failed
    every file, each after its whole upscale."""
    def fails(fd: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(writing.os, "fsync", fails)
    out = two.parent / "out"
    r = upscale(str(two), "-o", str(out), "--model", tiny_model_file)
    assert r.exit_code == 1 and "Traceback" not in r.output
    first, stop = _errors(r.output)
    assert line in first and first.endswith("; nothing was written"), first
    assert stop == f"error: stopped: {state}; 0 of 2 files written, 1 not started ({remedy}, " \
        "then --skip-existing goes on from here)", stop
    assert list(out.iterdir()) == [], "no half-written file, no part left behind"


def test_a_batch_stops_when_its_output_folder_stops_taking_files(
        two: Path, tiny_model_file: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder made unwritable after planning refuses every part file: one stop, not a failure
    per file after its upscale."""
    real_open = os.open

    def refuse_parts(path, *args, **kwargs):  # noqa: ANN001, ANN202 - os.open's own arguments
        if str(path).endswith(".part") and "write-check" not in str(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(writing.os, "open", refuse_parts)
    out = two.parent / "out"
    r = upscale(str(two), "-o", str(out), "--model", tiny_model_file)
    first, stop = _errors(r.output)
    assert first.endswith("Permission denied; nothing was written"), first
    assert stop == f"error: stopped: {out} takes no new files (Permission denied); 0 of 2 files " \
        "written, 1 not started (make it writable, then --skip-existing goes on from here)", stop
    assert list(out.iterdir()) == []


@pytest.fixture
def days(tmp_path: Path) -> list[Path]:
    """Two input folders of three files each: their results go to two output folders."""
    folders = [tmp_path / "day1", tmp_path / "day2"]
    for folder in folders:
        folder.mkdir()
        for name in ("a.png", "b.png", "c.png"):
            Image.new("RGB", (12, 10), (90, 30, 200)).save(folder / name)
    return folders


def _upscales(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per upscale the engine runs, from now on."""
    calls: list[int] = []
    real = engine.Upscaler.upscale

    def counted(self, *args, **kwargs):  # noqa: ANN001, ANN202 - Upscaler.upscale's arguments
        calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(engine.Upscaler, "upscale", counted)
    return calls


def _watch_opens(monkeypatch: pytest.MonkeyPatch, seen: Callable[[str], None]) -> None:
    """Show ``seen`` each path the writer opens, before it is opened; it may refuse it."""
    real_open = os.open

    def opened(path, *args, **kwargs):  # noqa: ANN001, ANN202 - os.open's own arguments
        seen(str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(writing.os, "open", opened)


def _blocked_run(days: list[Path], model: str, monkeypatch: pytest.MonkeyPatch,
                 why: str) -> tuple[str, list[int]]:
    """Upscale ``days`` where the first write fails for ``why``: the stop's line and the
    upscales run."""
    calls = _upscales(monkeypatch)
    r = upscale(*map(str, days), "--model", model)
    assert r.exit_code == 1 and "Traceback" not in r.output
    first, stop = _errors(r.output)
    assert first.endswith(f"{why}; nothing was written"), first
    return stop, calls


def _written(tmp_path: Path) -> list[str]:
    return sorted(str(p.relative_to(tmp_path)) for p in tmp_path.glob("*-drcn-x2/*"))


def test_a_folder_that_refuses_new_files_stops_only_the_files_bound_there(
        days: list[Path], tiny_model_file: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``day1 day2`` with day1-drcn-x2 unwritable: day1's other files are not started, and
    day2's go on into day2-drcn-x2, which takes files (not "stopped: 0 of 6 files written")."""
    def refuse_parts(path: str) -> None:
        if path.endswith(".part") and "day1-drcn-x2" in path:
            raise PermissionError(errno.EACCES, "Permission denied", path)

    _watch_opens(monkeypatch, refuse_parts)
    skipped, calls = _blocked_run(days, tiny_model_file, monkeypatch, "Permission denied")
    tmp = days[0].parent
    assert skipped == f"error: not started: 2 more files there, as {tmp / 'day1-drcn-x2'} takes " \
        "no new files (Permission denied) (make it writable, then --skip-existing goes on from " \
        "here); the others go on", skipped
    assert len(calls) == 4, "day1's b and c were not upscaled"
    assert _written(tmp) == [f"day2-drcn-x2/{n}" for n in ("a.png", "b.png", "c.png")]


@pytest.mark.parametrize("disks", ["one", "two"])
def test_a_disk_that_fails_stops_the_files_bound_to_it(
        days: list[Path], tiny_model_file: str, monkeypatch: pytest.MonkeyPatch,
        disks: str) -> None:
    """A read-only disk stops only the files bound to it when another output folder is on
    another disk; with both on the read-only one, the batch stops."""
    real_fsync = os.fsync
    failing: list[int] = []

    def fails(fd: int) -> None:
        if failing:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        real_fsync(fd)

    def day1_fails(path: str) -> None:
        failing[:] = [1] if "day1-drcn-x2" in path else []

    monkeypatch.setattr(writing.os, "fsync", fails)
    _watch_opens(monkeypatch, day1_fails)
    if disks == "two":
        monkeypatch.setattr(writefailures, "file_system",
                            lambda folder: 2 if "day2" in str(folder) else 1)
    stop, calls = _blocked_run(days, tiny_model_file, monkeypatch, "Read-only file system")
    tmp = days[0].parent
    if disks == "one":
        assert stop == "error: stopped: the output disk is read-only; 0 of 6 files written, 5 " \
            "not started (make it writable, then --skip-existing goes on from here)", stop
        assert len(calls) == 1 and _written(tmp) == []
    else:
        assert stop == "error: not started: 2 more files there, as the output disk is " \
            "read-only (make it writable, then --skip-existing goes on from here); the others " \
            "go on", stop
        assert len(calls) == 4
        assert _written(tmp) == [f"day2-drcn-x2/{n}" for n in ("a.png", "b.png", "c.png")]


@pytest.mark.parametrize("stop", [KeyboardInterrupt, SystemExit])
def test_a_stop_while_the_part_file_is_made_leaves_none(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        stop: type[BaseException]) -> None:
    """A signal landing after ``os.open`` makes the part but before its name is kept leaves no
    hidden 0-byte ``.part`` behind: in a result folder, nor in a folder only probed."""
    real_open = os.open

    def made_then_stopped(path, *args, **kwargs):  # noqa: ANN001, ANN202 - os.open's arguments
        os.close(real_open(path, *args, **kwargs))
        raise stop

    monkeypatch.setattr(writing.os, "open", made_then_stopped)
    with pytest.raises(stop):
        writing.atomic_write_bytes(tmp_path / "log.json", b"{}")
    with pytest.raises(stop):
        writing.probe_folder(tmp_path)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("size", [8, 33])  # the signature alone; with a whole IHDR
def test_a_png_that_ends_before_its_pixels_is_damaged_or_cut_short(tmp_path: Path,
                                                                   size: int) -> None:
    """Said as damaged or cut short, not as Pillow's own reason ("unpack_from requires a buffer
    of at least 4 bytes")."""
    whole = tmp_path / "whole.png"
    Image.new("RGB", (4, 4)).save(whole)
    cut = tmp_path / "cut.png"
    cut.write_bytes(whole.read_bytes()[:size])
    with pytest.raises(DamagedImageError) as caught:
        read_image(cut)
    assert str(caught.value) == f"{cut}: the PNG is damaged or cut short (no pixel data in its " \
        f"{size} bytes)"


@posix_only
@pytest.mark.parametrize("spec", ["folder", "glob"])
def test_a_pipe_or_device_in_a_scanned_folder_is_named_not_skipped(
        tmp_path: Path, tiny_model_file: str, spec: str) -> None:
    """Six entries, four reported: a pipe or a link to /dev/zero named as an image went without
    a word. Each is one line, as when named alone; nothing waits on the pipe."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        Image.new("RGB", (12, 10), (20, 160, 40)).save(folder / name)
    os.mkfifo(folder / "c.png")
    (folder / "d.png").symlink_to("/dev/zero")
    (folder / "notes.txt").write_text("not an image")
    r = upscale(str(folder) if spec == "folder" else str(folder / "*.png"), "-o",
                str(tmp_path / "out"), "--model", tiny_model_file)
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert _errors(r.output) == [
        f"error: {folder / name}: not a regular file (a pipe, device or socket)"
        for name in ("c.png", "d.png")], r.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png"]
