"""Reliability in the other front ends and commands: the GIMP worker, eval, train, and the
acceptance run over a folder that mixes every hostile case (torchrun: test_cli_upscale)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import random_rgb
from PIL import Image
from typer.testing import CliRunner

from drcn_plugin import memory
from drcn_plugin.cli import app
from drcn_plugin.errors import DRCNError
from drcn_plugin.imagefile import read_y
from drcn_plugin.integrations.gimp_worker import EXIT_ERROR, serve
from drcn_plugin.training.data import make_patches

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("wide_console")
rgb = random_rgb



# -- 14: GIMP worker headers ----------------------------------------------------------------
def _serve(stdin: bytes) -> tuple[int, list[str]]:
    """Run the worker's loop in this process (as the worker process does), checking that it
    leaves this process's signal handlers as they were."""
    import signal

    before = [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)]
    out = io.BytesIO()
    code = serve(io.BytesIO(stdin), out)
    assert [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)] == before
    return code, out.getvalue().decode().splitlines()


@pytest.mark.parametrize("header", [
    b'{"width": 30000, "height": 25000, "channels": 4, "dtype": "f32", "scale": 2}',
    b'{"width": %d, "height": 2, "channels": 1, "dtype": "u8", "scale": 2}' % 10**30,
    b"[" * 60000,
    b'{"width": 4, "height": 4, "channels": 1, "dtype": "u8", "scale": Infinity}',
], ids=["12GB", "10**30", "nested", "inf"])
def test_worker_refuses_hostile_headers_in_one_line(header: bytes) -> None:
    code, lines = _serve(header + b"\n")
    assert code == EXIT_ERROR
    assert lines[0].startswith("ready") and lines[-1].startswith("error ")
    assert "unexpected" not in lines[-1], "refused by a check, not caught by the boundary"


def test_worker_allocates_what_arrives_not_what_is_declared() -> None:
    """A 2000x2000x4 f32 header (64 MB) with 10 bytes behind it: no 64 MB buffer."""
    header = b'{"width": 2000, "height": 2000, "channels": 4, "dtype": "f32", "scale": 1}\n'
    tracemalloc.start()
    try:
        code, lines = _serve(header + b"\0" * 10)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert code == EXIT_ERROR and "truncated pixel data" in lines[-1]
    assert peak < 8 << 20, peak


# -- 16: eval -------------------------------------------------------------------------------
def test_eval_16bit_grey_is_scaled_not_clipped(tmp_path: Path) -> None:
    ramp = np.linspace(0, 65535, 40 * 40).reshape(40, 40).round().astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    y = read_y(tmp_path / "g16.png")
    assert y.min() == 0 and y.max() == 255
    assert abs(float(y.mean()) - 127.5) < 1, "a clipped ramp would sit near 255"


def test_eval_tiny_images_and_bombs_are_one_line(tmp_path: Path, monkeypatch) -> None:
    for side in (1, 3, 5):
        ds = tmp_path / f"ds{side}"
        ds.mkdir()
        rgb(side, side).save(ds / "t.png")
        r = runner.invoke(app, ["eval", "--dataset", str(ds), "--model", "bicubic", "--scale", "4"])
        assert r.exit_code == 2 and "too small" in r.output and "Traceback" not in r.output
    ds = tmp_path / "bomb"
    ds.mkdir()
    rgb(40, 40).save(ds / "b.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    r = runner.invoke(app, ["eval", "--dataset", str(ds), "--model", "bicubic", "--scale", "2"])
    assert r.exit_code == 2 and "MAX_IMAGE_PIXELS" in r.output and "Traceback" not in r.output


# -- 18: train ------------------------------------------------------------------------------
def test_train_small_images_with_strong_downscale_is_one_line() -> None:
    images = [("small.png", torch.full((50, 50), 100.0))]
    with pytest.raises(DRCNError, match="no training patches"):
        make_patches(images, [2], patch=41, stride=21, downscales=[0.5])


def test_train_out_naming_an_existing_file(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "runfile").write_text("mine")
    r = runner.invoke(app, ["train", "--data", str(tmp_path / "data"), "--out",
                            str(tmp_path / "runfile"), "--steps", "1"])
    assert r.exit_code == 2 and "existing file" in r.output
    assert (tmp_path / "runfile").read_text() == "mine"


# -- acceptance -----------------------------------------------------------------------------
def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


def _mixed_folder(root: Path) -> tuple[list[str], list[str]]:
    """Every hostile case in one folder; returns (good names, bad names)."""
    d = root / "mixed"
    d.mkdir()
    good, bad = [], []

    def add(name: str, im: Image.Image, ok: bool = True, **kw) -> None:
        im.save(d / name, **kw)
        (good if ok else bad).append(name)

    sub = Image.Exif()
    sub[0x8769] = {0x8827: 100}
    add("subifd.jpg", rgb(), exif=sub)
    wrong = b"Exif\0\0MM\0\x2a" + struct.pack(">IHHHI", 8, 1, 0x011A, 2, 3) + b"72\0\0" + b"\0" * 4
    add("wrongtype.jpg", rgb(), exif=wrong)
    big = Image.Exif()
    big[0x8769] = {0x927C: b"m" * 70000}
    add("bigexif.webp", rgb(), exif=big.tobytes())
    add("photo.png", rgb())
    add("photo.gif", rgb().convert("P"))
    add("jpeg-named.png", rgb(), format="JPEG")
    add("a" * 240 + ".png", rgb())
    add("rgba.bmp", Image.fromarray(np.dstack([np.asarray(rgb()), np.full((16, 20), 9, np.uint8)])))
    add("g16.png", Image.fromarray(np.arange(320, dtype=np.uint16).reshape(16, 20) * 200))
    add("float.tif", Image.fromarray(np.random.default_rng(0).random((16, 20), np.float32)))
    add("la.png", Image.new("LA", (20, 16), (10, 200)))
    add("huge.png", Image.new("L", (300, 300)), ok=False)  # refused by the memory estimate
    icc = np.random.default_rng(1).integers(0, 256, 2_000_000, np.uint8).tobytes()
    add("bigicc.png", rgb(), ok=False, icc_profile=icc)
    (d / "empty.png").write_bytes(b"")
    (d / "text.jpg").write_text("not an image")
    good_png = (d / "photo.png").read_bytes()
    (d / "truncated.png").write_bytes(good_png[: len(good_png) // 2])
    (d / "garbage.tif").write_bytes(b"II*\0" + os.urandom(200))
    bad += ["empty.png", "text.jpg", "truncated.png", "garbage.tif"]
    (d / "deeper").mkdir()
    rgb().save(d / "deeper" / "inner.png")
    good.append("inner.png")
    os.symlink(".", d / "loop")
    os.symlink("..", d / "deeper" / "loop")
    return good, bad


def test_acceptance_mixed_folder(tmp_path: Path, tiny_model_file: str, monkeypatch) -> None:
    """Every good file processed, one line per bad one, exit 1, no temporary file left, every
    input byte-identical afterwards."""
    from drcn_plugin import terminal

    monkeypatch.setattr(terminal.console, "width", 400)
    good, bad = _mixed_folder(tmp_path)
    monkeypatch.setattr(memory, "_available_memory",
                        lambda device: memory.memory_needed(300, 300, 1, 1, (600, 600)) - 1)
    before = _hashes(tmp_path)
    r = runner.invoke(app, ["upscale", str(tmp_path / "mixed"), "-r", "--model", tiny_model_file])
    assert r.exit_code == 1, r.output
    lines = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == len(bad), lines
    for name in bad:
        assert sum(name in ln for ln in lines) == 1, name
    assert "Traceback" not in r.output
    out = tmp_path / "mixed-drcn-x2"
    written = {p.name for p in out.rglob("*") if p.is_file()}
    assert len(written) == len(good), (written, good)
    assert {"photo.png", "photo.gif.png", "inner.png", "rgba.bmp"} <= written
    assert f"{len(good)} done" in r.output
    assert not [p for p in tmp_path.rglob("*.part")], "no temporary file left"
    assert _hashes(tmp_path / "mixed") == {k[len("mixed/"):]: v for k, v in before.items()}
    assert json.dumps(sorted(written))  # names are plain strings (no surrogates)
