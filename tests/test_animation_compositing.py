"""Animation frames composited as browsers composite them where Pillow's own compositing
differs: an APNG frame blended over the one before, a GIF frame disposed to background."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
from helpers import upscale
from PIL import Image

from drcn_plugin import engine

pytestmark = pytest.mark.usefixtures("wide_console")


def shown(path: Path) -> list[np.ndarray]:
    """Each frame of ``path`` as RGBA."""
    with Image.open(path) as im:
        out = []
        for k in range(im.n_frames):
            im.seek(k)
            out.append(np.asarray(im.convert("RGBA")))
        return out


@pytest.mark.parametrize("mode", ["RGBA", "P"])
def test_an_apng_frame_blended_over_an_opaque_one_shows_both_opaque(
        tmp_path: Path, tiny_model_file: str, mode: str) -> None:
    """A half-transparent red APNG frame blended over an opaque one (blend_op OVER) shows red
    mixed into it, opaque, as browsers composite it: Pillow pasted it through its alpha, which
    left the pixels half-transparent (a palette frame's unmixed too)."""
    base = Image.fromarray(np.random.default_rng(7).integers(64, 192, (10, 12, 3), np.uint8))
    over = Image.new("RGBA", base.size, (255, 0, 0, 128))
    frames = [base.convert("RGBA"), over]
    save = {}
    if mode == "P":  # index 0 the half-transparent red, the others the base's colours
        indices = np.asarray(base.quantize(255)) + 1
        palette = [255, 0, 0, *base.quantize(255).getpalette()[:255 * 3]]
        frames = [Image.fromarray(a.astype(np.uint8), "P") for a in (indices, 0 * indices)]
        for frame in frames:
            frame.putpalette(palette)
        save = {"transparency": bytes([128])}
    source = tmp_path / "a.png"
    frames[0].save(source, save_all=True, append_images=frames[1:], duration=100, blend=[0, 1],
                   **save)
    r = upscale(str(source), "-o", str(tmp_path / "out"), "--model", tiny_model_file)
    assert r.exit_code == 0 and "2 frames upscaled" in r.output, r.output
    got = shown(tmp_path / "out" / "a.png")
    want = Image.alpha_composite(frames[0].convert("RGBA"), over)
    expected = engine.Upscaler(tiny_model_file, device="cpu").upscale(np.asarray(want), 2)
    assert got[1][..., 3].min() == 255, "opaque, as the frame under it"
    np.testing.assert_array_equal(got[1], expected)


def test_a_gif_frame_cleared_to_background_shows_through_as_browsers_show_it(
        tmp_path: Path, tiny_model_file: str) -> None:
    """An opaque GIF frame disposed to background (2) with no transparent index, then a 4x4
    frame: browsers clear to transparent, so only the square shows, where Pillow paints the
    background colour, opaque."""
    rng = np.random.default_rng(7)
    palette = rng.integers(0, 256, 768).tolist()
    parts = []
    for indices, (x, y), disposal in [(rng.integers(1, 64, (10, 12), np.uint8), (0, 0), 2),
                                      (np.full((4, 4), 5, np.uint8), (3, 2), 0)]:
        im = Image.fromarray(indices, "P")
        im.putpalette(palette)
        one = io.BytesIO()
        im.save(one, "GIF", duration=100, disposal=disposal, optimize=False)
        data = one.getvalue()
        at = data.index(b"\x21\xf9")  # its control block, image and pixels follow
        body = bytearray(data[at:-1])
        body[9:13] = struct.pack("<HH", x, y)  # the image's place, past the 8-byte control
        parts.append((data[:at], bytes(body)))
    source = tmp_path / "a.gif"
    source.write_bytes(parts[0][0] + parts[0][1] + parts[1][1] + b"\x3b")
    r = upscale(str(source), "-o", str(tmp_path / "out"), "--model", tiny_model_file)
    assert r.exit_code == 0 and "2 frames upscaled" in r.output, r.output
    want = np.zeros((10, 12, 4), np.uint8)
    want[2:6, 3:7] = (*palette[15:18], 255)
    got = shown(tmp_path / "out" / "a.png")[1]
    np.testing.assert_array_equal(got, engine.Upscaler(tiny_model_file, device="cpu").upscale(want, 2))
    assert got[..., 3].min() == 0


def test_a_gif_image_leaving_its_screen_bare_leaves_it_transparent(
        tmp_path: Path, tiny_model_file: str) -> None:
    """A GIF's only image, 4x4 at (2, 2) of an 8x8 screen, with no transparent index: browsers
    show the rest of the screen transparent, where Pillow fills it with palette colour 0."""
    im = Image.fromarray(np.full((4, 4), 1, np.uint8), "P")
    im.putpalette([10, 20, 30, 200, 0, 0] + [0] * 762)
    one = io.BytesIO()
    im.save(one, "GIF", optimize=False)
    data = bytearray(one.getvalue())
    data[6:10] = struct.pack("<HH", 8, 8)  # the screen
    at = data.index(b"\x2c\0\0\0\0\x04\0\x04\0")  # the image's descriptor
    data[at + 1:at + 5] = struct.pack("<HH", 2, 2)
    source = tmp_path / "a.gif"
    source.write_bytes(bytes(data))
    r = upscale(str(source), "-o", str(tmp_path / "out"), "--model", tiny_model_file)
    assert r.exit_code == 0, r.output
    want = np.zeros((8, 8, 4), np.uint8)
    want[2:6, 2:6] = (200, 0, 0, 255)
    got = shown(tmp_path / "out" / "a.png")[0]
    np.testing.assert_array_equal(got, engine.Upscaler(tiny_model_file, device="cpu").upscale(want, 2))


def test_a_gif_with_a_stray_byte_between_frames_keeps_all_its_frames(
        tmp_path: Path, tiny_model_file: str) -> None:
    """Pillow skips a byte between a GIF's blocks (an encoder's stray padding) and counts the
    frame after it: the canvas must read that frame too, not refuse it as damaged."""
    frames = [Image.new("P", (4, 4), i) for i in (1, 2)]
    for im in frames:
        im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0])
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100)
    data = buf.getvalue()
    cut = data.rindex(b"\x21\xf9")  # the second frame's graphic control block
    (tmp_path / "a.gif").write_bytes(data[:cut] + b"\0" + data[cut:])
    r = upscale(str(tmp_path / "a.gif"), "-m", tiny_model_file, "-f", "png", "-o",
                str(tmp_path / "out"))
    assert r.exit_code == 0, r.output
    out = shown(tmp_path / "out" / "a.png")
    means = [frame[..., :3].reshape(-1, 3).mean(axis=0) for frame in out]
    assert len(out) == 2 and means[0].argmax() == 0 and means[1].argmax() == 1  # red, green


def test_an_apngs_default_image_outside_its_animation_is_not_its_first_frame(
        tmp_path: Path, tiny_model_file: str) -> None:
    """An APNG may open with a default image that is no frame (the picture a viewer without APNG
    shows): a still result is the animation's first frame, not that picture, and the note
    does not count it as a frame."""
    red, green, blue = (Image.new("RGB", (16, 12), c) for c in
                        ((255, 0, 0), (0, 255, 0), (0, 0, 255)))  # the default image red
    red.save(tmp_path / "a.png", save_all=True, append_images=[green, blue], default_image=True,
             duration=[100, 100, 100], loop=0)
    r = upscale(str(tmp_path / "a.png"), "-m", tiny_model_file, "-f", "jpg", "-o",
                str(tmp_path / "still"))
    assert r.exit_code == 0 and "2 frames: only the first was upscaled" in r.output, r.output
    with Image.open(tmp_path / "still" / "a.jpg") as im:
        mean = np.asarray(im, np.float64).mean(axis=(0, 1))  # green, not the red default
        assert np.abs(mean - green.getpixel((0, 0))).max() < 20, mean
    r = upscale(str(tmp_path / "a.png"), "-m", tiny_model_file, "-o", str(tmp_path / "moving"))
    assert r.exit_code == 0, r.output
    frames = shown(tmp_path / "moving" / "a.png")
    assert [int(np.argmax(f[5, 5, :3])) for f in frames] == [1, 2]  # green, then blue
