"""Other platforms, simulated on Linux: Apple's MPS (no float64) stood in for by the meta device,
and a case-insensitive file system's second name for a file (macOS, Windows) by a hard link."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import random_rgb
from torch.overrides import TorchFunctionMode
from typer.testing import CliRunner

from drcn_plugin import devices
from drcn_plugin.cli import app
from drcn_plugin.evaluation import _depth_scores
from drcn_plugin.training.data import load_images, make_patches

MPS_FLOAT64 = "Cannot convert a MPS Tensor to float64 dtype as the MPS framework doesn't support"


class MetaAsMPS(TorchFunctionMode):
    """The meta device as Apple's MPS: an op that would make a float64 tensor there raises MPS's
    TypeError, and a tensor copied from it to the CPU arrives as zeros of its shape."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        src = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if src is not None and src.is_meta and func in (torch.Tensor.cpu, torch.Tensor.to):
            device, dtype, *_ = torch._C._nn._parse_to(*args[1:], **kwargs) \
                if func is torch.Tensor.to else (torch.device("cpu"), None)
            if device is not None and device.type == "cpu":
                return torch.zeros(src.shape, dtype=dtype or src.dtype)
        out = func(*args, **kwargs)
        if isinstance(out, torch.Tensor) and out.is_meta and out.dtype == torch.float64:
            raise TypeError(f"{MPS_FLOAT64} float64")
        return out


@pytest.fixture
def meta_as_mps(monkeypatch: pytest.MonkeyPatch) -> torch.device:
    """The meta device, taken by the library for a device without float64, as MPS is."""
    monkeypatch.setattr(devices, "NO_FLOAT64", {*devices.NO_FLOAT64, "meta"})
    with MetaAsMPS():
        yield torch.device("meta")


def test_the_simulation_refuses_float64_as_mps_does(meta_as_mps: torch.device) -> None:
    with pytest.raises(TypeError, match="float64"):
        torch.ones(2, dtype=torch.float64).to(meta_as_mps)
    assert torch.ones(2, device=meta_as_mps).cpu().tolist() == [0.0, 0.0]


def test_training_pairs_for_a_device_without_float64_are_cut_on_the_cpu(
        t12: Path, meta_as_mps: torch.device) -> None:
    """A Mac's ``drcn train`` (device auto: MPS) cuts its protocol pairs in float64 on the CPU,
    as MPS has no float64."""
    from drcn_plugin.training.data import image_files

    images = load_images(image_files([t12])[:2])
    patches = make_patches(images, [3], 32, 32, [1.0], device=meta_as_mps)
    assert patches.pairs.device == meta_as_mps and patches.pairs.dtype == torch.uint8
    assert len(patches.pairs) > 0


def test_per_depth_scores_of_a_model_on_a_device_without_float64(
        tiny_model, meta_as_mps: torch.device) -> None:
    """``drcn eval --per-depth`` (and a training's final test) on MPS turned each depth's
    prediction into float64 before taking it off the device."""
    engine = SimpleNamespace(model=tiny_model.to(meta_as_mps), device=meta_as_mps)
    hr = torch.full((24, 24), 128.0, dtype=torch.float64)
    depths, ensemble = _depth_scores(engine, hr.clone(), hr, 2)
    assert len(depths) == tiny_model.recursions and ensemble >= 0


@pytest.mark.parametrize("command", ["compare", "eval-json", "eval-plot"])
def test_a_target_that_is_an_input_under_another_name_is_refused(
        tmp_path: Path, tiny_model_file: str, command: str) -> None:
    """On macOS and Windows ``C.PNG`` names the input ``c.png``: ``--overwrite`` replaced it. A
    hard link is such a second name on Linux: the same file, which the check compares."""
    image, other = tmp_path / "ds" / "c.png", tmp_path / "C.PNG"  # not listed with the inputs
    image.parent.mkdir()
    random_rgb(32, 32).save(image)
    before = image.read_bytes()
    os.link(image, other)
    args = {"compare": ["compare", str(image), "-o", str(other), "--model", tiny_model_file],
            "eval-json": ["eval", "--dataset", str(image.parent), "--model", "bicubic",
                          "--scale", "2", "--json", str(other)],
            "eval-plot": ["eval", "--dataset", str(image.parent), "--model", tiny_model_file,
                          "--scale", "2", "--plot", str(other)]}[command]
    r = CliRunner().invoke(app, [*args, "--overwrite"])
    assert r.exit_code == 2 and "is an input of this command" in r.output, r.output
    assert image.read_bytes() == before


def test_a_run_never_writes_over_weights_it_reads_under_another_name(
        t12: Path, tmp_path: Path, tiny_model_file: str) -> None:
    """``--init run/DRCN-F8-D3-X3.safetensors`` is the run's own export name on macOS."""
    from helpers import tiny

    from drcn_plugin.errors import BadOptionError
    from drcn_plugin.training.trainer import train

    init = tmp_path / "elsewhere.safetensors"
    init.write_bytes(Path(tiny_model_file).read_bytes())
    (tmp_path / "run").mkdir()
    os.link(init, tmp_path / "run" / "drcn-f8-d3-x3.safetensors")
    with pytest.raises(BadOptionError, match="which it reads"):
        train(tiny(t12, tmp_path / "run", steps=4, init=str(init)), overwrite=True)
    assert init.read_bytes() == Path(tiny_model_file).read_bytes()


def test_a_volume_without_file_numbers_keeps_files_apart(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Some Windows volumes report file number 0 for every file: two files are then told apart
    by their paths, and an upscale beside its input is not refused as writing over it."""
    from drcn_plugin import writing

    a, b = tmp_path / "a.png", tmp_path / "b.png"
    random_rgb(8, 8).save(a)
    random_rgb(8, 8, seed=1).save(b)
    real_stat = os.stat

    def no_numbers(path, *args, **kwargs):
        st = real_stat(path, *args, **kwargs)
        return os.stat_result((st.st_mode, 0, *st[2:10]))

    monkeypatch.setattr(writing.os, "stat", no_numbers)
    assert not writing.same_file(a, b) and writing.same_file(a, tmp_path / "." / "a.png")
    writing.refuse_input_target(b, [a])
