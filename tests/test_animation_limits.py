"""Animations whose later frames are damaged or cut short: refused in one line that names the
frame and says why, not with Pillow's internal reason; a still of the first frame is noted."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from helpers import upscale
from PIL import Image

from drcn_plugin import animation
from drcn_plugin.errors import DamagedImageError
from drcn_plugin.imagefile import read_image

pytestmark = pytest.mark.usefixtures("wide_console")


@pytest.mark.parametrize("ext", ["gif", "png"])
def test_a_cut_short_animation_names_its_damaged_frame(tmp_path: Path, tiny_model_file: str,
                                                       ext: str) -> None:
    rng = np.random.default_rng(1)
    frames = [Image.fromarray(rng.integers(0, 256, (24, 20, 3), np.uint8)) for _ in range(6)]
    whole = tmp_path / f"whole.{ext}"
    frames[0].save(whole, save_all=True, append_images=frames[1:], duration=100)
    data = whole.read_bytes()
    source = tmp_path / f"cut.{ext}"
    source.write_bytes(data[:int(len(data) * 0.6)])  # frame 0 whole, a later one cut
    r = upscale(str(source), "-o", str(tmp_path / "out"), "--model", tiny_model_file)
    assert r.exit_code != 0
    line = " ".join(r.output.split())
    assert re.search(r"frame [2-6] of [2-6] is damaged or cut short", line), r.output
    assert "Traceback" not in r.output
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


@pytest.mark.parametrize("frames", [4, 1])
def test_a_cut_short_webp_is_said_to_be_so(tmp_path: Path, frames: int) -> None:
    """libwebp refuses a WebP cut short (an animated one, or a still) as a whole, before any
    frame, where Pillow says only "could not create decoder object": the line names the cause."""
    rng = np.random.default_rng(2)
    images = [Image.fromarray(rng.integers(0, 256, (24, 20, 3), np.uint8)) for _ in range(frames)]
    whole = tmp_path / "whole.webp"
    images[0].save(whole, save_all=frames > 1, append_images=images[1:], duration=100,
                   lossless=True)
    source = tmp_path / "cut.webp"
    source.write_bytes(whole.read_bytes()[:int(whole.stat().st_size * 0.6)])
    with pytest.raises(DamagedImageError) as caught:
        read_image(source)
    assert str(caught.value) == f"{source}: the WebP is damaged or cut short (libwebp cannot " \
                                "read it)"


def test_a_webp_damaged_inside_its_data_is_said_to_be_so(tmp_path: Path) -> None:
    """libwebp fails on a still's garbled data only when its pixels are decoded, where Pillow
    says only "cannot decode image (failed to read next frame)": the line is a cut WebP's."""
    image = Image.fromarray(np.random.default_rng(2).integers(0, 256, (30, 40, 3), np.uint8))
    image.save(tmp_path / "whole.webp")
    data = bytearray((tmp_path / "whole.webp").read_bytes())
    assert data[12:16] == b"VP8 "
    data[30:60] = b"\xff" * 30  # past the frame's header, into its first partition
    source = tmp_path / "damaged.webp"
    source.write_bytes(bytes(data))
    with pytest.raises(DamagedImageError) as caught:
        read_image(source)
    assert str(caught.value) == f"{source}: the WebP is damaged or cut short (libwebp cannot " \
                                "read it)"


def test_a_gif_cut_in_a_later_frames_header_is_refused_not_read_as_one_frame(
        tmp_path: Path, tiny_model_file: str) -> None:
    """Cut at each byte past its first frame, a 6-frame GIF is refused where Pillow's count of
    its frames fails (a later frame's header cut off: it says 1 frame, the rest lost without a
    word, or a raw IndexError when surveyed), and read whole where the count stands."""
    rng = np.random.default_rng(3)
    frames = [Image.fromarray(rng.integers(0, 4, (4, 3), np.uint8) * 80) for _ in range(6)]
    frames[0].save(tmp_path / "whole.gif", save_all=True, append_images=frames[1:], duration=100)
    data = (tmp_path / "whole.gif").read_bytes()
    source, refused = tmp_path / "cut.gif", []
    for end in range(len(data) // 4, len(data)):
        source.write_bytes(data[:end])
        with Image.open(source) as im:
            try:
                counted = im.n_frames
            except Exception:  # noqa: BLE001 - Pillow's, for a header cut off
                counted = None
        try:
            info = read_image(source)[1]
            survey = animation._survey(source, info.state)
        except DamagedImageError as e:
            assert counted is None or "is damaged or cut short" in str(e), (end, str(e))
            if counted is None:
                assert str(e) == f"{source}: a frame after the first is damaged or cut short"
                refused.append(end)
            continue
        assert counted is not None and info.frames == counted == len(survey.durations), end
    assert len(refused) >= 6  # a cut in each later frame's header, at least
    source.write_bytes(data[:refused[-1]])
    r = upscale(str(source), "-o", str(tmp_path / "out"), "--model", tiny_model_file)
    assert r.exit_code != 0 and "a frame after the first is damaged or cut short" in \
        " ".join(r.output.split()), r.output
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_a_still_of_a_gif_with_a_damaged_later_frame_is_its_first_frame_with_a_note(
        tmp_path: Path, tiny_model_file: str) -> None:
    """A JPEG or TIFF result holds the first frame alone: a GIF cut in a later frame's header
    gives the intact GIF's result, with a note saying so; kept animated (a PNG result), it is
    refused."""
    frames = [Image.fromarray(np.random.default_rng(k).integers(0, 256, (10, 12, 3), np.uint8))
              for k in range(4)]
    frames[0].save(tmp_path / "whole.gif", save_all=True, append_images=frames[1:], duration=90)
    data = (tmp_path / "whole.gif").read_bytes()
    source = tmp_path / "cut.gif"
    for end in range(len(data) - 1, 0, -1):  # the last cut Pillow's count fails at
        source.write_bytes(data[:end])
        with Image.open(source) as im:
            try:
                assert im.n_frames > 0
            except IndexError:  # Pillow's, for a header cut off
                break
    for name in ("whole.gif", "cut.gif"):
        r = upscale(str(tmp_path / name), "-o", str(tmp_path / "tiff"), "-f", "tiff", "--model",
                    tiny_model_file)
        assert r.exit_code == 0 and "1 done" in r.output, r.output
    assert "frames after the first are damaged or cut short: only the first was upscaled" in \
        " ".join(r.output.split()), r.output
    assert np.array_equal(np.asarray(Image.open(tmp_path / "tiff" / "cut.tif")),
                          np.asarray(Image.open(tmp_path / "tiff" / "whole.tif")))
    r = upscale(str(source), "-o", str(tmp_path / "png"), "--model", tiny_model_file)
    assert r.exit_code == 1 and "a frame after the first is damaged or cut short" in r.output
    assert not (tmp_path / "png").exists() or not list((tmp_path / "png").iterdir())
