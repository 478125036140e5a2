"""Small files that claim far more than they hold: each costs what a viewer shows of it, or is
refused in one line, fast, with nothing written; never minutes or gigabytes in silence."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import PEAK_KIB, upscale
from PIL import Image

from drcn_plugin import devices
from drcn_plugin.compositing import GifCanvas
from drcn_plugin.errors import DamagedImageError
from drcn_plugin.headercheck import read_header
from drcn_plugin.imagefile import read_image

pytestmark = pytest.mark.usefixtures("wide_console")
ROOT = Path(__file__).resolve().parent.parent
_PALETTE = bytes([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255])  # black, red, green, blue


def _image_data(w: int, h: int, index: int) -> bytes:
    """The LZW code size and sub-blocks of a ``w x h`` GIF image of palette ``index``: 3-bit
    codes, a clear code before every two pixels (the code table never grows)."""
    codes = [4, index, index] * (w * h // 2) + [4, index] * (w * h % 2) + [5]
    bits = sum(code << 3 * k for k, code in enumerate(codes))
    packed = bits.to_bytes((3 * len(codes) + 7) // 8, "little")
    blocks = b"".join(bytes([len(packed[k:k + 255])]) + packed[k:k + 255]
                      for k in range(0, len(packed), 255))
    return b"\x02" + blocks + b"\0"


def gif(screen: tuple[int, int], frames: list[tuple[int, int, int, int, int]]) -> bytes:
    """A looping GIF of a ``screen`` (width, height) and ``frames`` (x, y, width, height and
    palette index of each), 100 ms each."""
    out = b"GIF89a" + struct.pack("<HHBBB", *screen, 0x81, 0, 0) + _PALETTE \
        + b"\x21\xff\x0bNETSCAPE2.0\x03\x01\0\0\0"
    for x, y, w, h, index in frames:
        out += b"\x21\xf9\x04\x00\x0a\x00\x00\x00" + b"\x2c" + struct.pack("<4HB", x, y, w, h, 0) \
            + _image_data(w, h, index)
    return out + b"\x3b"


def test_a_gif_frame_off_its_screen_is_clipped_as_browsers_show_it(
        tmp_path: Path, tiny_model_file: str) -> None:
    """A 17x24 GIF whose first frame lies at y = 65511 came back 34x131070 (Pillow grows its
    canvas to hold the frame) after a minute (here at y = 1000, 34x2048): browsers clip frames
    to the logical screen, and so does drcn: a bare screen, then the red second frame."""
    source = tmp_path / "far.gif"
    source.write_bytes(gif((17, 24), [(0, 1000, 17, 24, 2), (0, 0, 17, 24, 1)]))
    r = upscale(str(source), "-o", str(tmp_path / "out.png"), "--model", tiny_model_file)
    assert r.exit_code == 0 and "2 frames upscaled" in r.output, r.output
    with Image.open(tmp_path / "out.png") as out:
        assert (out.size, out.n_frames) == ((34, 48), 2)
        assert np.asarray(out.convert("RGBA"))[..., 3].max() == 0
        out.seek(1)
        second = np.asarray(out.convert("RGBA"))
    Image.new("RGBA", (17, 24), (255, 0, 0, 255)).save(tmp_path / "red.png")  # as a still
    r = upscale(str(tmp_path / "red.png"), "-o", str(tmp_path / "want.png"), "--model",
                tiny_model_file)
    assert r.exit_code == 0, r.output
    np.testing.assert_array_equal(second, np.asarray(Image.open(tmp_path / "want.png")))


def test_a_gif_first_frame_off_its_screen_leaves_it_transparent(tmp_path: Path) -> None:
    """A first frame wholly below the screen is read (and sized from the header) as the bare
    17x24 screen a browser shows: transparent, not a 17x65535 strip."""
    source = tmp_path / "far.gif"
    source.write_bytes(gif((17, 24), [(0, 65511, 17, 24, 1)]))
    header = read_header(source)
    assert header is not None and header.size == (24, 17)
    array, _ = read_image(source)
    assert array.shape[:2] == (24, 17) and array[..., -1].max() == 0


def test_a_gif_first_frame_taller_than_its_screen_is_the_screen_in_its_corner(
        tmp_path: Path) -> None:
    """A 17x25 first frame at y = 65511 on a 17x24 screen, one row taller than it, still grew
    into a 17x65536 strip: Firefox takes such a frame as the screen, in its corner, and so does
    drcn (still and header alike); a later frame is clipped to it."""
    source = tmp_path / "tall.gif"
    source.write_bytes(gif((17, 24), [(0, 65511, 17, 25, 1), (15, 20, 4, 8, 2)]))
    header = read_header(source)
    assert header is not None and header.size == (25, 17)
    array, _ = read_image(source)
    assert array.shape == (25, 17, 3) and (array == (255, 0, 0)).all()
    with open(source, "rb") as f, Image.open(f) as im:
        canvas = GifCanvas(im, f)
        canvas.frame(0)
        second = np.asarray(canvas.frame(1)[0])
    want = np.full((25, 17, 3), (255, 0, 0), np.uint8)
    want[20:, 15:] = (0, 255, 0)
    np.testing.assert_array_equal(second, want)


def test_later_gif_frames_off_the_screen_cost_only_the_screen(
        tmp_path: Path, tiny_model_file: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Frames of one pixel at (19999, 19999) grew Pillow's canvas to 400 million pixels, which
    it decoded each frame on: a 176-byte file took 31 s and 3.8 GB. Under a pixel limit of 1000
    (Pillow refuses 2000) it is upscaled: nothing is decoded past the screen."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    source = tmp_path / "mid.gif"
    source.write_bytes(gif((17, 24), [(0, 0, 17, 24, 3)] + [(19999, 19999, 1, 1, 1)] * 3))
    r = upscale(str(source), "-o", str(tmp_path / "out.png"), "--model", tiny_model_file)
    assert r.exit_code == 0 and "4 frames upscaled" in r.output, r.output
    monkeypatch.undo()  # the result's 1632 pixels are the test's to open
    with Image.open(tmp_path / "out.png") as out:
        assert (out.size, out.n_frames, out.info["duration"]) == ((34, 48), 4, 100)


def test_a_jpeg_declaring_far_more_pixels_than_its_data_holds_is_refused(
        tmp_path: Path, tiny_model_file: str) -> None:
    """A 16x16 JPEG whose frame header is made to say 2000x2000 decoded without a word as the
    16x16 corner and grey (libjpeg fills in what its data lacks), then took minutes to upscale
    to 4000x4000: one line says why, and nothing is written."""
    f = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 10, 10)).save(f, "JPEG")
    data = bytearray(f.getvalue())
    at = data.index(b"\xff\xc0")  # SOF0: length, precision, then height and width
    data[at + 5:at + 9] = struct.pack(">2H", 2000, 2000)
    source = tmp_path / "grey.jpg"
    source.write_bytes(bytes(data))
    with pytest.raises(DamagedImageError) as caught:
        read_image(source)
    assert str(caught.value).startswith(f"{source}: damaged JPEG: its coded data ends early (")
    assert str(caught.value).endswith(" bytes, where its 2000x2000 pixels need at least 23438; "
                                      "the rest would be grey)")
    r = upscale(str(source), "-o", str(tmp_path / "out.png"), "--model", tiny_model_file)
    assert r.exit_code == 1 and "damaged JPEG: its coded data ends early" in r.output, r.output
    assert not (tmp_path / "out.png").exists()


def test_a_jpeg_compressed_tiff_whose_strip_ends_early_is_refused(
        tmp_path: Path, tiny_model_file: str) -> None:
    """Each strip of a JPEG-compressed TIFF is a JPEG stream, which libtiff's libjpeg fills with
    grey where its data ends: one cut to 25 bytes of a 72-row strip's coded data was upscaled
    without a word, a grey band in the result. It is refused as a JPEG is; a whole one reads."""
    rng = np.random.default_rng(5)
    Image.fromarray(rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)).save(
        tmp_path / "whole.tif", compression="jpeg", quality=90)
    assert read_image(tmp_path / "whole.tif")[0].shape == (200, 300, 3)
    data = bytearray((tmp_path / "whole.tif").read_bytes())
    with Image.open(tmp_path / "whole.tif") as im:
        strip = im.tag_v2[273][1]  # the second strip (StripOffsets), 72 rows
    data[strip + 60:strip + 62] = b"\xff\xd9"  # EOI 25 bytes into its scan
    source = tmp_path / "cut.tif"
    source.write_bytes(bytes(data))
    with pytest.raises(DamagedImageError) as caught:
        read_image(source)
    assert str(caught.value) == (f"{source}: damaged JPEG-compressed TIFF: a strip's or tile's "
                                 "coded data ends early (25 bytes, where its 300x72 pixels need "
                                 "at least 257; the rest would be grey)")
    r = upscale(str(source), "-o", str(tmp_path / "out.png"), "--model", tiny_model_file)
    assert r.exit_code == 1 and "damaged JPEG-compressed TIFF" in r.output, r.output
    assert not (tmp_path / "out.png").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_a_gif_frame_larger_than_its_screen_costs_only_the_screen(tmp_path: Path) -> None:
    """A 16x16 GIF whose second frame declares 20000x20000 pixels and is disposed of by putting
    back what it covers: 1.8 GB went to a copy of the canvas under all of it before its data was
    found short. Only its part on the screen is kept: the frame is refused as damaged, the peak
    memory of the process that draws it half a copy's (1.6 GB) or less."""
    data = bytearray(gif((16, 16), [(0, 0, 16, 16, 1), (0, 0, 1, 1, 2), (0, 0, 16, 16, 3)]))
    at = data.index(b"\x2c" + struct.pack("<4H", 0, 0, 1, 1))
    data[at + 5:at + 9] = struct.pack("<2H", 20000, 20000)
    data[data.rindex(b"\x21\xf9\x04", 0, at) + 3] = 3 << 2  # disposal 3: put back what it covers
    source = tmp_path / "big.gif"
    source.write_bytes(bytes(data))
    draw = ("import sys\nfrom PIL import Image\nfrom drcn_plugin.compositing import "
            "GifCanvas\nImage.MAX_IMAGE_PIXELS = 10**9  # as the CLI sets it on 32 GB\n"
            "f = open(sys.argv[1], 'rb')\ncanvas = GifCanvas(Image.open(f), f)\n"
            "canvas.frame(0)\ntry:\n    canvas.frame(1)\nexcept OSError as e:\n    print(e)\n"
            f"print({PEAK_KIB})\n")
    done = subprocess.run([sys.executable, "-c", draw, str(source)], capture_output=True,
                          text=True, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    said, peak_kb = done.stdout.splitlines()
    assert said.startswith("image file is truncated"), done.stdout
    assert int(peak_kb) < 800_000, done.stdout  # 1_601_504 before; 264_604 now


def test_a_gif_clipped_to_its_screen_is_not_refused_for_pillows_grown_canvas(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 17x24 GIF whose one frame lies at (4999, 4999) grows Pillow's canvas to 5000x5000
    palette bytes (25 MB): with 100 MB free it was refused as needing 0.7 GiB (32 bytes a pixel
    of that canvas); it reads as the bare screen."""
    monkeypatch.setattr(devices, "host_available_memory", lambda: 100 << 20)
    source = tmp_path / "corner.gif"
    source.write_bytes(gif((17, 24), [(4999, 4999, 1, 1, 1)]))
    array, _ = read_image(source)
    assert array.shape[:2] == (24, 17) and array[..., -1].max() == 0
