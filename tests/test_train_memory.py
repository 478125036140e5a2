"""Training's memory check: options whose patches or batch cannot fit are one line before either is
allocated (a new run names the option to change, a resume keeps its run), and the patch count the
check relies on is the patch set's."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from helpers import tiny
from typer.testing import CliRunner

from drcn_plugin import devices
from drcn_plugin.cli import app
from drcn_plugin.errors import OutOfMemoryError
from drcn_plugin.training.data import image_files, load_images, make_patches
from drcn_plugin.training.memory import images_bytes, patch_set_bytes
from drcn_plugin.training.trainer import train

CLI = ["train", "-s", "3", "--patch", "32", "--downscale", "1", "--steps", "2", "--warmup", "1",
       "--device", "cpu", "--no-curves"]


@pytest.mark.parametrize(("args", "free", "message"), [
    (["--batch", "100000", "--stride", "64"], None,
     "invalid value for --batch: the images need ~"),  # F=64, D=16: terabytes
    (["-F", "4", "-D", "2", "--batch", "64", "--stride", "64"], 8 << 20,
     "invalid value for --batch: the images need ~5.4 MiB (then freed), the patches ~164.1 KiB and one "
     "step of a batch of 64 ~12.0 MiB; 8.0 MiB is free: lower the batch (or the patch size, features or "
     "recursions)"),
    (["-F", "4", "-D", "2", "--batch", "4", "--stride", "4"], 8 << 20,
     "invalid value for --stride: the images need ~5.4 MiB (then freed), the patches ~27.8 MiB and one "
     "step of a batch of 4 ~768.0 KiB; 8.0 MiB is free: raise the stride or use fewer training folders"),
])
def test_options_that_cannot_fit_are_one_line_before_anything_is_allocated(
        t12: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str],
        free: int | None, message: str) -> None:
    if free is not None:
        monkeypatch.setattr(devices, "host_available_memory", lambda: free)
    r = CliRunner().invoke(app, [*CLI, "--data", str(t12), "--out", str(tmp_path / "run"), *args])
    assert r.exit_code == 2 and message in r.output, r.output
    assert "Traceback" not in r.output and not (tmp_path / "run").exists()


def test_a_resume_that_cannot_fit_keeps_its_run(t12: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny(t12, tmp_path, steps=8, stop_at=4)
    train(cfg)
    files = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    monkeypatch.setattr(devices, "host_available_memory", lambda: 1 << 20)
    message = r"the images need ~[\d.]+ MiB \(then freed\), the patches ~[\d.]+ [KM]iB and one step of a batch of 16 " \
              r"~[\d.]+ MiB; 1.0 MiB is free: a resumed run keeps its options"
    with pytest.raises(OutOfMemoryError, match=message):
        train(replace(cfg, stop_at=0), resume=True)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == files


@pytest.mark.parametrize("degrade", ["", "jpeg:40"])
def test_the_patch_estimate_is_the_patch_set(t12: Path, degrade: str) -> None:
    cfg = tiny(t12, Path("unused"), scales=[2, 3], stride=24, downscales=[1.0, 0.7],
               degrade=degrade, degrade_copies=2)
    images = load_images(image_files([t12]))
    patches = make_patches(images, cfg.scales, cfg.patch, cfg.stride, cfg.downscales, "cpu",
                           cfg.recipes()[0], cfg.degrade_copies)
    need = patch_set_bytes(cfg, [y.shape for _, y in images])
    assert need == patches.pairs.numel() + patches.clean.numel()
    assert patches.pixel_sum() == int(patches.pairs.sum(dtype=torch.int64))


def test_images_that_cannot_fit_are_refused_from_their_headers(
        t12: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder of images larger than the memory is one line naming --data, found from the files'
    headers before any pixel is decoded; what the check counts is what loading holds, and the
    work of cutting the largest image."""
    from PIL import ImageFile

    from drcn_plugin import imagefile
    from drcn_plugin.training import memory

    images = load_images(image_files([t12]))
    held = sum(y.numel() * y.element_size() for _, y in images)
    largest = max(y.shape[-2] * y.shape[-1] for _, y in images)
    shapes = [imagefile.image_shape8(Path(n)) for n, _ in images]
    assert images_bytes(shapes) == held + memory._CUT_BYTES_PER_PIXEL[False] * largest
    assert all(y.dtype == torch.uint8 for _, y in images)

    decoded, load = [], ImageFile.ImageFile.load

    def counted(im: ImageFile.ImageFile) -> object:
        decoded.append(im.filename)
        return load(im)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counted)
    monkeypatch.setattr(devices, "host_available_memory", lambda: held // 2)
    r = CliRunner().invoke(app, [*CLI, "-F", "4", "-D", "2", "--batch", "2", "--stride", "64",
                                 "--data", str(t12), "--out", str(tmp_path / "run")])
    assert r.exit_code == 2, r.output
    assert "invalid value for --data: the images need ~" in r.output
    assert r.output.rstrip().endswith("is free: train on fewer or smaller images")
    assert "Traceback" not in r.output and not (tmp_path / "run").exists()
    assert not decoded, "sizes come from the headers: no pixel is decoded before the check"


@pytest.mark.parametrize(("mode", "suffix"), [
    ("1", "png"), ("L", "png"), ("LA", "png"), ("I;16", "png"), ("I", "tif"), ("F", "tif"),
    ("P", "png"), ("RGB", "jpg"), ("RGBA", "webp"), ("CMYK", "jpg")])
def test_the_header_shape_is_the_loaded_shape(tmp_path: Path, mode: str, suffix: str) -> None:
    from PIL import Image

    from drcn_plugin.imagefile import image_shape8, read_image8

    path = tmp_path / f"a.{suffix}"
    Image.new(mode, (7, 5)).save(path)
    assert image_shape8(path) == tuple(read_image8(path).shape)
