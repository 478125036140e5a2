"""Odd files and metadata through `drcn upscale`: values an output format's fields cannot hold."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import pytest
from helpers import random_rgb, upscale
from PIL import Image, TiffImagePlugin

pytestmark = pytest.mark.usefixtures("wide_console")


@pytest.mark.parametrize("fmt", ["jpg", "png", "bmp", "tiff"])
def test_a_resolution_the_output_cannot_hold_is_dropped_not_wrapped_or_fatal(
        folder: Path, tiny_model_file: str, fmt: str) -> None:
    # x2 makes 80,000 dpi (a microscope's scan), over JPEG's 16-bit density, which Pillow wraps
    # (to 14,464 dpi). 6e9 dpi (an odd TIFF rational) overflows PNG's and BMP's pixels per metre,
    # where Pillow refuses to write, and TIFF's rational, where it writes NaN.
    random_rgb().save(folder / "scan.png", dpi=(40000, 40000))
    exif = Image.Exif()
    exif[0x011A] = exif[0x011B] = TiffImagePlugin.IFDRational(3_000_000_000, 1)
    exif[0x0128] = 2
    random_rgb().save(folder / "odd.tif", dpi=(3e9, 3e9), exif=exif)
    out = folder.parent / "out"
    r = upscale(str(folder), "-o", str(out), "--format", fmt, "--model", tiny_model_file)
    assert r.exit_code == 0, r.output
    suffix = {"jpg": ".jpg", "png": ".png", "bmp": ".bmp", "tiff": ".tif"}[fmt]
    for name, stated in (("scan", 80000.0), ("odd", None)):
        with Image.open(out / (name + suffix)) as im:
            dpi = im.info.get("dpi")
            x_res = im.getexif().get(0x011A)
        assert dpi is None or all(math.isfinite(v) for v in dpi), dpi
        if stated is not None and dpi is not None:  # stated right, or not at all (JPEG)
            assert dpi == pytest.approx((stated, stated), rel=1e-4)
        if name == "scan" and fmt == "jpg":
            assert dpi is None
        if name == "odd" and fmt != "bmp":  # BMP: no place for the resolution of 6e9 dpi
            assert x_res is None, x_res  # not NaN, not clamped to 4294967295
    assert "dpi dropped" in r.output


def test_a_jpeg_comment_travels_byte_for_byte_and_one_too_long_costs_nothing(
        folder: Path, tiny_model_file: str) -> None:
    # A comment states no encoding; older software wrote Latin-1. Decoded as UTF-8 with
    # replacement characters, "Café" would come back as "Caf\ufffd", and 30,000 such bytes would
    # grow to 90,000, over a JPEG segment, which Pillow refuses ("Comment is too long"), as it
    # does a PNG's Comment text over 64 KB.
    from PIL.PngImagePlugin import PngInfo

    latin1 = "Café au lait, ©2003".encode("latin-1")
    random_rgb().save(folder / "old.jpg", comment=latin1)
    random_rgb().save(folder / "long.jpg", comment=b"\xe9" * 30000)
    text = PngInfo()
    text.add_text("Comment", "x" * 70000)
    random_rgb().save(folder / "huge.png", pnginfo=text)
    out = folder.parent / "out"
    r = upscale(str(folder), "-o", str(out), "--format", "jpg", "--model", tiny_model_file)
    assert r.exit_code == 0, r.output
    assert Image.open(out / "old.jpg").info["comment"] == latin1
    assert Image.open(out / "long.jpg").info["comment"] == b"\xe9" * 30000
    assert "comment" not in Image.open(out / "huge.jpg").info
    assert "comment (over JPEG's 64 KB) dropped" in r.output
    r = upscale(str(folder / "old.jpg"), "-o", str(out), "--format", "png",
                "--model", tiny_model_file)
    assert r.exit_code == 0, r.output
    assert Image.open(out / "old.png").text["Comment"] == "Café au lait, ©2003"


@pytest.mark.parametrize(("fmt", "width"), [("webp", 4096), ("jpg", 16376)])
def test_a_result_too_large_for_its_format_is_refused_before_the_upscale(
        folder: Path, tiny_model_file: str, monkeypatch: pytest.MonkeyPatch, fmt: str,
        width: int) -> None:
    # x4 gives 16384 (over WebP's 16383) and 65504 pixels (over libjpeg's 65500): the encoders
    # refuse them only once the whole upscale is done (hours for a photo), libjpeg in words that
    # do not say why ("broken data stream").
    from drcn_plugin import engine

    Image.new("RGB", (width, 2)).save(folder / "wide.png")
    Image.new("RGB", (2, 2)).save(folder / "small.png")
    upscaled: list[tuple[int, ...]] = []
    real = engine.Upscaler.upscale

    def counted(self, image, *args, **kwargs):
        upscaled.append(image.shape)
        return real(self, image, *args, **kwargs)

    monkeypatch.setattr(engine.Upscaler, "upscale", counted)
    out = folder.parent / "out"
    r = upscale(str(folder), "-o", str(out), "--format", fmt, "--scale", "4",
                "--model", tiny_model_file)
    assert r.exit_code == 1
    assert upscaled == [(2, 2, 3)], "only the file that fits was upscaled"
    assert f"pixels a side, the result would be {width * 4}x8" in r.output
    assert sorted(p.name for p in out.iterdir()) == [f"small.{fmt}"]


_STOPPED_MID_UPSCALE = """
import atexit, os, signal, sys, time
from drcn_plugin import engine
from drcn_plugin.__main__ import main

STOP, TWICE = getattr(signal, sys.argv[1]), sys.argv[2] == "twice"

def stopped(self, *args, **kwargs):
    if TWICE:  # the second comes as the interpreter ends (atexit: last in, first)
        atexit.register(lambda: (os.kill(os.getpid(), STOP), time.sleep(1)))
    os.kill(os.getpid(), STOP)
    time.sleep(5)

engine.Upscaler.__init__ = lambda self, *args, **kwargs: None
engine.Upscaler.upscale = stopped
sys.argv = ["drcn", "upscale", *sys.argv[3:]]
main()
"""


@pytest.mark.parametrize(("name", "status", "times"), [
    ("SIGINT", 130, "once"), ("SIGTERM", 143, "once"), ("SIGHUP", 129, "once"),
    ("SIGINT", 130, "twice"), ("SIGTERM", 143, "twice")])
def test_the_exit_status_names_the_signal_that_stopped_the_batch(
        folder: Path, name: str, status: int, times: str) -> None:
    # A stop is 128 + the signal's number, as the shell reports a process that signal ended:
    # 130 would tell a scheduler that the user pressed Ctrl-C. Ctrl-C pressed twice, the second
    # while the stopped command's process ends, is no traceback from an exit handler.
    import os
    import signal
    import subprocess
    import sys

    if not hasattr(signal, name):
        pytest.skip(f"no {name} here")
    random_rgb().save(folder / "a.png")
    out = folder.parent / "out"
    run = subprocess.run([sys.executable, "-c", _STOPPED_MID_UPSCALE, name, times, str(folder),
                          "-o", str(out)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "1"},
                         start_new_session=True)  # SIGINT not ignored as in a background job
    assert run.returncode == status, run.stderr
    assert "interrupted: 0 of 1 file written" in run.stderr
    assert "Traceback" not in run.stderr
    assert not out.exists() or list(out.iterdir()) == []


def test_an_icc_profile_over_what_jpeg_holds_is_dropped_with_a_note(
        folder: Path, tiny_model_file: str) -> None:
    # JPEG numbers its ICC segments in one byte: past 255 of them Pillow wraps the numbers and
    # writes a 17 MB profile that no reader takes back, without a word.
    cms = pytest.importorskip("PIL.ImageCms")
    srgb = cms.ImageCmsProfile(cms.createProfile("sRGB")).tobytes()
    big = srgb + bytes(17 << 20)  # a profile a viewer can use, over 255 segments (16.7 MB)
    random_rgb().save(folder / "lut.tif", icc_profile=struct.pack(">I", len(big)) + big[4:])
    out = folder.parent / "out"
    r = upscale(str(folder), "-o", str(out), "--format", "jpg", "--model", tiny_model_file)
    assert r.exit_code == 0, r.output
    assert "ICC profile (over JPEG's 255 segments) dropped" in r.output
    assert (out / "lut.jpg").stat().st_size < 1 << 20
