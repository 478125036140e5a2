"""Animated GIF, PNG, WebP and AVIF inputs: every frame upscaled as a still of it would be,
written animated with its durations, playing as many times as the source; refused in one line,
with nothing written, when its frames cannot be held or are too many; a stop between frames
leaves nothing; the summary's output Mpx counts every frame."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from helpers import upscale, upscaled_plays
from PIL import Image, features
from rich.console import Console

from drcn_plugin import engine, memory
from drcn_plugin.av1header import avif_plays
from drcn_plugin.batch import Job, run_job
from drcn_plugin.errors import Cancelled
from drcn_plugin.progress import BatchProgress

pytestmark = pytest.mark.usefixtures("wide_console")
needs_avif = pytest.mark.skipif(not features.check("avif"), reason="this Pillow has no AVIF codec")

DURATIONS = [100, 150, 200, 250]
ERROR_BOUND = 8  # mean levels from an AVIF result frame to its still (2.5; to another, 47-53)
SAVE = {"gif": {}, "png": {}, "webp": {"lossless": True}, "avif": {"quality": 90}}


def noise_frames(mode: str = "RGB", count: int = 4, size: tuple[int, int] = (12, 10)) -> list:
    """``count`` different seeded noise frames (every pixel differs from frame to frame)."""
    rng = np.random.default_rng(7)
    shape = (size[1], size[0], len(mode))[:2 if len(mode) == 1 else 3]
    return [Image.fromarray(rng.integers(0, 256, shape, np.uint8), mode) for _ in range(count)]


def animation(path: Path, frames: list, loop: int = 3, **save) -> Path:
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=DURATIONS[:len(frames)],
                   loop=loop, **SAVE[path.suffix[1:]], **save)
    return path


def shown(path: Path, mode: str) -> list[np.ndarray]:
    """Each frame of ``path`` as a viewer shows it, in ``mode``."""
    with Image.open(path) as im:
        out = []
        for k in range(im.n_frames):
            im.seek(k)
            out.append(np.asarray(im.convert(mode)))
        return out


def durations_and_loop(path: Path) -> tuple[list[int], int | None]:
    with Image.open(path) as im:
        durations = []
        for k in range(im.n_frames):
            im.seek(k)
            im.load()
            durations.append(round(im.info["duration"]))
        return durations, im.info.get("loop")


@pytest.mark.parametrize(("ext", "out_name", "fmt"), [("gif", "a.png", "PNG"),
                                                     ("png", "a.png", "PNG"),
                                                     ("webp", "a.webp", "WEBP")])
def test_every_frame_is_upscaled_as_a_still_of_it_would_be(tmp_path: Path, tiny_model_file: str,
                                                           ext: str, out_name: str,
                                                           fmt: str) -> None:
    source = animation(tmp_path / f"a.{ext}", noise_frames())
    r = upscale(str(source), "-o", str(tmp_path / "out"), "--model", tiny_model_file)
    assert r.exit_code == 0, r.output
    label = "animated WebP" if fmt == "WEBP" else "animated PNG"
    assert f"4 frames upscaled ({label})" in r.output and "only the first" not in r.output
    result = tmp_path / "out" / out_name
    with Image.open(result) as im:
        assert (im.format, im.n_frames, im.size) == (fmt, 4, (24, 20))
    assert durations_and_loop(result) == (DURATIONS, 4 if ext == "gif" else 3)  # plays, as GIF's
    still = engine.Upscaler(tiny_model_file, device="cpu")
    expected = [still.upscale(frame, scale=2) for frame in shown(source, "RGB")]
    got = shown(result, "RGB")
    assert len({f.tobytes() for f in got}) == 4, "four different frames"
    for k, (want, have) in enumerate(zip(expected, got, strict=True)):
        np.testing.assert_array_equal(have, want, err_msg=f"frame {k}")


def test_a_gif_whose_later_frames_are_see_through_comes_back_with_alpha(
        tmp_path: Path, tiny_model_file: str) -> None:
    """Frames 1 and 2 of a GIF are cleared to its transparent index (disposal 2) on the left,
    frame 0 is opaque: every frame comes back RGBA, as the viewer composites it."""
    rng = np.random.default_rng(7)
    palette = rng.integers(0, 256, 768).tolist()
    frames = []
    for k in range(3):
        indices = rng.integers(1, 64, (10, 12), np.uint8)
        indices[:, :6 if k else 0] = 0  # index 0 is the transparent one
        frames.append(Image.fromarray(indices, "P"))
        frames[-1].putpalette(palette)
    source = animation(tmp_path / "a.gif", frames, transparency=0, disposal=2, optimize=False)
    r = upscale(str(source), "-o", str(tmp_path / "out"), "--model", tiny_model_file)
    assert r.exit_code == 0, r.output
    got = shown(tmp_path / "out" / "a.png", "RGBA")
    assert got[1][..., 3].min() == 0 and got[0][..., 3].min() == 255
    still = engine.Upscaler(tiny_model_file, device="cpu")
    for k, frame in enumerate(shown(source, "RGBA")):
        want = still.upscale(frame, scale=2)
        np.testing.assert_array_equal(got[k][..., 3], want[..., 3], err_msg=f"frame {k}")
        seen = want[..., 3] > 0  # under alpha 0 the colour is nobody's
        np.testing.assert_array_equal(got[k][seen], want[seen], err_msg=f"frame {k}")


def reaching_past(path: Path, x: int) -> Path:
    """A 12x10 GIF of 3 frames whose last, 4 columns wide, starts at column ``x``: past 8 it
    reaches past the first frame's right edge."""
    base = np.asarray(noise_frames(count=1)[0])
    frames = [base.copy() for _ in range(3)]
    for k in (1, 2):
        frames[k][2:6, 3:7] = (255 * (k - 1), 0, 200)
    source = animation(path, [Image.fromarray(f) for f in frames], optimize=False)
    data = bytearray(source.read_bytes())
    at = data.index(b"\x2c" + struct.pack("<4H", 3, 2, 4, 4), 20)  # frame 2's descriptor
    data[at + 1:at + 3] = struct.pack("<H", x)
    source.write_bytes(bytes(data))
    return source


def test_a_gif_frame_reaching_past_the_first_is_cut_to_it_not_squeezed(
        tmp_path: Path, tiny_model_file: str) -> None:
    """A later frame placed past the first frame's right edge grows Pillow's canvas from 12 to
    14 pixels: that frame comes back as a still of the first 12 columns would, not squeezed."""
    source = reaching_past(tmp_path / "a.gif", 10)  # its 4 columns start at x = 10 of 12
    with Image.open(source) as im:
        im.seek(2)
        im.load()
        assert im.size == (14, 10), "Pillow grows its canvas"
        last = np.asarray(im.convert("RGB"))[:, :12]
    r = upscale(str(source), "-o", str(tmp_path / "out"), "--model", tiny_model_file)
    assert r.exit_code == 0 and "3 frames upscaled" in r.output, r.output
    got = shown(tmp_path / "out" / "a.png", "RGB")
    want = engine.Upscaler(tiny_model_file, device="cpu").upscale(last, scale=2)
    np.testing.assert_array_equal(got[2], want)


def test_a_later_frame_over_the_pixel_limit_is_refused_as_such_not_as_damage(
        tmp_path: Path, tiny_model_file: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A GIF frame whose own rectangle (60x60 on a 12x10 screen, its data 16 pixels) is over
    twice PIL.Image.MAX_IMAGE_PIXELS: a decompression bomb's refusal, said as that, not as a
    damaged frame (one placed far off the screen is clipped: tests/test_input_bombs.py)."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    source = reaching_past(tmp_path / "a.gif", 3)
    data = bytearray(source.read_bytes())
    at = data.index(b"\x2c" + struct.pack("<4H", 3, 2, 4, 4), 20)  # frame 2's descriptor
    data[at + 5:at + 9] = struct.pack("<2H", 60, 60)
    source.write_bytes(bytes(data))
    r = upscale(str(source), "-o", str(tmp_path / "out"), "--model", tiny_model_file)
    line = " ".join(r.output.split())
    assert r.exit_code == 1 and f"{source}: more pixels than PIL.Image.MAX_IMAGE_PIXELS" in line, \
        r.output
    assert "damaged" not in line and "Traceback" not in line, r.output
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_a_gif_whose_first_frame_is_grey_and_others_colour_comes_back_colour(
        tmp_path: Path, tiny_model_file: str) -> None:
    """Pillow reads such a GIF's first frame as grey, its last as RGB: every frame comes back
    RGB, the grey one as a still of it in RGB would, the second in its own palette's colours
    (Pillow shows that one up to 192 levels off)."""
    frames = noise_frames("L", count=1) + [Image.fromarray(np.asarray(f) // 64 * 64)
                                           for f in noise_frames(count=3)[1:]]
    source = animation(tmp_path / "a.gif", frames, optimize=False)
    with Image.open(source) as im:
        assert im.mode == "L"
    r = upscale(str(source), "-o", str(tmp_path / "out"), "--model", tiny_model_file)
    assert r.exit_code == 0, r.output
    got = shown(tmp_path / "out" / "a.png", "RGB")
    still = engine.Upscaler(tiny_model_file, device="cpu")
    assert len(got) == 3
    for k, frame in enumerate(frames):
        want = still.upscale(np.asarray(frame.convert("RGB")), scale=2)
        np.testing.assert_array_equal(got[k], want, err_msg=f"frame {k}")


@needs_avif
def test_avif_asked_for_is_an_animated_avif_that_keeps_the_loop_count(
        tmp_path: Path, tiny_model_file: str) -> None:
    """Pillow writes animated AVIF with each frame's duration but no loop count: drcn writes
    the count into its edit list as libavif does (a GIF's loop 3 plays 4 times)."""
    source = animation(tmp_path / "a.gif", noise_frames())
    r = upscale(str(source), "-o", str(tmp_path / "out"), "-f", "avif", "--model",
                tiny_model_file)
    assert r.exit_code == 0, r.output
    assert "4 frames upscaled (animated AVIF)" in r.output
    assert "loop count" not in r.output
    with Image.open(tmp_path / "out" / "a.avif") as im:
        assert (im.n_frames, im.size) == (4, (24, 20))
    with open(tmp_path / "out" / "a.avif", "rb") as f:
        assert avif_plays(f) == 4
    assert durations_and_loop(tmp_path / "out" / "a.avif")[0] == DURATIONS


@needs_avif
def test_an_animated_avif_is_upscaled_frame_by_frame(tmp_path: Path,
                                                     tiny_model_file: str) -> None:
    """An AVIF's frames are whole: as an APNG, frame k is a still of the source's frame k
    upscaled, shown for its duration, looping for ever as Pillow's AVIF writer has it."""
    source = animation(tmp_path / "a.avif", noise_frames())
    r = upscale(str(source), "-o", str(tmp_path / "out"), "-f", "png", "--model", tiny_model_file)
    assert r.exit_code == 0 and "4 frames upscaled (animated PNG)" in r.output, r.output
    assert "loop count" not in r.output
    result = tmp_path / "out" / "a.png"
    with Image.open(result) as im:
        assert (im.n_frames, im.size) == (4, (24, 20))
    assert durations_and_loop(result) == (DURATIONS, 0)
    still = engine.Upscaler(tiny_model_file, device="cpu")
    got = shown(result, "RGB")
    for k, frame in enumerate(shown(source, "RGB")):
        np.testing.assert_array_equal(got[k], still.upscale(frame, scale=2), err_msg=f"frame {k}")


@needs_avif
def test_an_animated_avif_comes_back_an_animated_avif(tmp_path: Path,
                                                      tiny_model_file: str) -> None:
    """AVIF is lossy both ways: each frame of the result is nearest a still of its own source
    frame upscaled."""
    source = animation(tmp_path / "a.avif", noise_frames())
    r = upscale(str(source), "-o", str(tmp_path / "out"), "--model", tiny_model_file)
    assert r.exit_code == 0 and "4 frames upscaled (animated AVIF)" in r.output, r.output
    result = tmp_path / "out" / "a.avif"
    with Image.open(result) as im:
        assert (im.format, im.n_frames, im.size) == ("AVIF", 4, (24, 20))
    assert durations_and_loop(result)[0] == DURATIONS
    still = engine.Upscaler(tiny_model_file, device="cpu")
    want = [still.upscale(frame, scale=2).astype(int) for frame in shown(source, "RGB")]
    for k, have in enumerate(shown(result, "RGB")):
        errors = [float(np.abs(have.astype(int) - w).mean()) for w in want]
        assert np.argmin(errors) == k and errors[k] < ERROR_BOUND, (k, errors)


PLAYS = [("gif", None, 1), ("gif", 0, 0), ("gif", 3, 4), ("png", 0, 0), ("png", 3, 3),
         ("webp", 0, 0), ("webp", 3, 3), pytest.param("avif", None, 0, marks=needs_avif)]


@pytest.mark.parametrize("out", ["png", "webp", pytest.param("avif", marks=needs_avif)])
@pytest.mark.parametrize(("ext", "loop", "plays"), PLAYS)
def test_the_result_plays_as_many_times_as_the_source(tmp_path: Path, tiny_model_file: str,
                                                      ext: str, loop: int | None, plays: int,
                                                      out: str) -> None:
    """A GIF's loop count is of repeats after the first play (browsers play loop 3 four times,
    and a GIF without one once), APNG's and WebP's of plays (0: for ever): the count written
    plays the result as often; an AVIF's is in its edit list (test_avif_loops.py), read and
    written as libavif does (Pillow writes none)."""
    source = animation(tmp_path / f"a.{ext}", noise_frames(count=2, size=(6, 4)), loop=loop)
    with Image.open(source) as im:
        assert im.info.get("loop") == loop
    got, message = upscaled_plays(source, out, tiny_model_file)
    assert got == plays
    assert "loop count" not in message, message


def test_the_summary_counts_the_output_pixels_of_every_frame(tmp_path: Path,
                                                             tiny_model_file: str) -> None:
    """Four frames of 120x100 are 0.048 output Mpx (one of them 0.012), in the live rate and
    the summary's total alike."""
    source = animation(tmp_path / "a.gif", noise_frames(size=(60, 50)))
    job = Job(source, tmp_path / "out" / "a.png")
    console = Console(file=io.StringIO(), width=200)
    upscaler = engine.Upscaler(tiny_model_file, device="cpu")
    live = BatchProgress(console, total=1, enabled=False)
    live.start(job)
    outcome = run_job(job, upscaler, 2.0)
    live.finish(outcome)
    assert (outcome.status, outcome.out_size, live.out_pixels) == ("done", (120, 100), 48_000)
    BatchProgress.summary(console, [outcome], upscaler)
    assert "1 done, 0 skipped, 0 failed; 0.05 output Mpx in" in console.file.getvalue()


def test_an_apng_first_image_outside_the_animation_is_left_out(tmp_path: Path,
                                                                tiny_model_file: str) -> None:
    """An APNG's first image may be only for viewers of stills (no fcTL before its IDAT): the
    animation is the frames after it, as an APNG viewer shows them."""
    frames = noise_frames(count=3)
    source = animation(tmp_path / "a.png", frames, default_image=True)
    r = upscale(str(source), "-o", str(tmp_path / "out"), "--model", tiny_model_file)
    assert r.exit_code == 0 and "2 frames upscaled (animated PNG)" in r.output, r.output
    assert durations_and_loop(tmp_path / "out" / "a.png") == (DURATIONS[:2], 3)
    still = engine.Upscaler(tiny_model_file, device="cpu")
    got = shown(tmp_path / "out" / "a.png", "RGB")
    for k, frame in enumerate(frames[1:]):
        np.testing.assert_array_equal(got[k], still.upscale(np.asarray(frame), scale=2))


def test_a_format_that_cannot_animate_gets_the_first_frame_with_a_note(
        tmp_path: Path, tiny_model_file: str) -> None:
    source = animation(tmp_path / "a.png", noise_frames())
    r = upscale(str(source), "-o", str(tmp_path / "out"), "-f", "bmp", "--model", tiny_model_file)
    assert r.exit_code == 0, r.output
    assert "4 frames: only the first was upscaled" in r.output
    still = engine.Upscaler(tiny_model_file, device="cpu")
    with Image.open(tmp_path / "out" / "a.bmp") as im:
        assert getattr(im, "n_frames", 1) == 1
        np.testing.assert_array_equal(np.asarray(im), still.upscale(shown(source, "RGB")[0], 2))


@pytest.mark.parametrize("ext", ["webp", pytest.param("avif", marks=needs_avif)])
def test_an_animation_whose_frames_cannot_be_held_is_one_line_and_nothing_written(
        tmp_path: Path, tiny_model_file: str, monkeypatch: pytest.MonkeyPatch, ext: str) -> None:
    """Room for one frame's upscale and two results: a still of the first frame would fit, the
    four frames do not."""
    source = animation(tmp_path / f"a.{ext}", noise_frames(size=(40, 30)))
    room = memory.memory_needed(30, 40, 3, 1, size=(60, 80)) + 2 * 80 * 60 * 3
    monkeypatch.setattr(memory, "_available_memory", lambda device: room)
    upscaled = []
    real = engine.Upscaler.upscale
    monkeypatch.setattr(engine.Upscaler, "upscale",
                        lambda self, *a, **k: upscaled.append(1) or real(self, *a, **k))
    r = upscale(str(source), "-o", str(tmp_path / "out"), "--model", tiny_model_file)
    assert r.exit_code == 1
    failed = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(failed) == 1 and "an animation of 4 frames of 80x60" in failed[0], r.output
    assert "Traceback" not in r.output and not upscaled
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


@needs_avif
def test_an_avif_of_more_frames_than_drcn_takes_is_one_line(
        tmp_path: Path, tiny_model_file: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("drcn_plugin.animation.MAX_FRAMES", 3)
    source = animation(tmp_path / "a.avif", noise_frames())
    r = upscale(str(source), "-o", str(tmp_path / "out"), "--model", tiny_model_file)
    assert r.exit_code == 1, r.output
    assert "4 frames; drcn upscales animations of at most 3" in r.output, r.output
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def _claiming(path: Path, frames: int) -> Path:
    """``path``, an APNG, with its acTL chunk claiming ``frames`` frames."""
    data = bytearray(path.read_bytes())
    at = data.index(b"acTL")
    data[at + 4:at + 8] = struct.pack(">I", frames)
    data[at + 12:at + 16] = struct.pack(">I", zlib.crc32(bytes(data[at:at + 12])))
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(("frames", "size", "said"), [
    (100_000, (12, 10), "100000 frames; drcn upscales animations of at most 10000"),
    (9_000, (3000, 2000), "an animation of 9000 frames of 6000x4000 needs about")])
def test_an_animation_claiming_absurd_frames_is_one_line_before_any_work(
        tmp_path: Path, tiny_model_file: str, frames: int, size: tuple[int, int],
        said: str) -> None:
    """An APNG says how many frames it holds: a claim of 100,000, or of 9,000 large ones (a bomb
    of frames), is refused from it, at once, before a frame is decoded past the first."""
    source = _claiming(animation(tmp_path / "a.png", [Image.new("RGB", size, c)
                                                      for c in ("red", "blue")]), frames)
    r = upscale(str(source), "-o", str(tmp_path / "out"), "--model", tiny_model_file)
    assert r.exit_code == 1 and said in r.output and "Traceback" not in r.output, r.output
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_an_animation_holding_fewer_frames_than_it_claims_is_one_line(
        tmp_path: Path, tiny_model_file: str) -> None:
    source = _claiming(animation(tmp_path / "a.png", noise_frames(count=2)), 5)
    r = upscale(str(source), "-o", str(tmp_path / "out"), "--model", tiny_model_file)
    assert r.exit_code == 1 and f"{source}: frame 3 of 5 is damaged or cut short" in r.output, r.output
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


@pytest.mark.parametrize("stop", ["cancel", "ctrl-c"])
def test_a_stop_during_the_third_frame_leaves_nothing_written(tmp_path: Path,
                                                              tiny_model_file: str,
                                                              stop: str) -> None:
    source = animation(tmp_path / "a.gif", noise_frames())
    job = Job(source, tmp_path / "out" / "a.png")
    seen: list[tuple[int, int]] = []

    def progress(done: int, total: int) -> None:
        seen.append((done, total))
        if done * 4 > total * 2:  # a tile of the third frame
            raise Cancelled("cancelled") if stop == "cancel" else KeyboardInterrupt

    with pytest.raises(Cancelled if stop == "cancel" else KeyboardInterrupt):
        run_job(job, engine.Upscaler(tiny_model_file, device="cpu"), 2.0, progress=progress)
    assert not job.target.exists()
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    assert seen[-1][1] % 4 == 0 and seen[-1][0] <= seen[-1][1], "progress counts all 4 frames"


def test_an_apng_named_so_stays_an_apng_without_a_note(tmp_path: Path,
                                                      tiny_model_file: str) -> None:
    """.apng is a PNG's own extension: the result keeps it, animated, and no note says the
    content is not what the name says."""
    frames = noise_frames()
    frames[0].save(tmp_path / "a.apng", "PNG", save_all=True, append_images=frames[1:],
                   duration=DURATIONS[:len(frames)], loop=0)
    r = upscale(str(tmp_path / "a.apng"), "-m", tiny_model_file, "-o", str(tmp_path / "out"))
    assert r.exit_code == 0, r.output
    assert "name says" not in r.output and "not an output format" not in r.output
    assert durations_and_loop(tmp_path / "out" / "a.apng") == (DURATIONS[:len(frames)], 0)
