"""Edges of the Python API, the hub and eval's outputs found by a hostile pass: each is one
typed error or works, never a raw exception or a hang."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import cuda_gpus
from PIL import Image
from safetensors.torch import save_file
from typer.testing import CliRunner

from drcn_plugin import DRCNError, Upscaler, load_model
from drcn_plugin.cli import app
from drcn_plugin.errors import ModelLoadError, ProtocolError
from drcn_plugin.integrations.gimp_worker import parse_header


def _flat_dataset(tmp_path: Path) -> Path:
    folder = tmp_path / "flat"
    folder.mkdir()
    Image.new("RGB", (40, 40), (128, 128, 128)).save(folder / "f.png")
    return folder


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX FIFOs")
def test_eval_json_onto_a_fifo_is_refused_not_read(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")  # reading it to see whether it holds results would block
    r = CliRunner().invoke(app, ["eval", "--dataset", str(_flat_dataset(tmp_path)), "-s", "2",
                                 "-m", "bicubic", "--json", str(tmp_path / "fifo")])
    assert r.exit_code == 2 and "is not a regular file" in r.output


def test_eval_json_and_plot_on_one_file_is_refused(tmp_path: Path, tiny_model_file: str) -> None:
    target = tmp_path / "p.png"
    r = CliRunner().invoke(app, ["eval", "--dataset", str(_flat_dataset(tmp_path)), "-s", "2",
                                 "-m", tiny_model_file, "--plot", str(target), "--json",
                                 str(target)])
    assert r.exit_code == 2 and "same file as --json" in r.output and not target.exists()


def test_a_model_name_too_long_for_a_file_is_not_found() -> None:
    with pytest.raises(ModelLoadError):
        load_model("x" * 5000)
    with pytest.raises(ModelLoadError):
        load_model("folder/" + "x" * 5000)


@pytest.mark.parametrize("config", [{"features": "8", "recursions": 3},
                                    {"features": 8.0, "recursions": 3},
                                    {"features": 8, "recursions": True}])
def test_a_folder_config_of_the_wrong_types_is_refused(tmp_path: Path, tiny_model,
                                                       config: dict) -> None:
    tiny_model.save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="the weights are F=8, D=3"):
        load_model(str(tmp_path))


def test_a_file_declaring_too_many_recursions_is_refused(tmp_path: Path) -> None:
    # D=200,000 fits in 800 KB and would take minutes per tiny image
    sd = {k: v for k, v in torch.nn.Module.state_dict(_model(1, 1)).items()}
    sd["ensemble"] = torch.zeros(200_000)
    save_file(sd, str(tmp_path / "deep.safetensors"))
    with pytest.raises(ModelLoadError, match="D <= 1024"):
        load_model(str(tmp_path / "deep.safetensors"))


def _model(features: int, recursions: int) -> torch.nn.Module:
    from drcn_plugin.model import DRCN

    return DRCN(features, recursions)


def test_a_header_number_too_large_for_a_float_is_a_protocol_error() -> None:
    big = "1" + "0" * 400
    with pytest.raises(ProtocolError, match="too large"):
        parse_header(('{"width": 8, "height": 8, "channels": 3, "dtype": "u8", "scale": ' + big
                      + "}\n").encode())


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # numpy's view of np.matrix
def test_matrix_masked_and_big_endian_arrays_are_read_as_plain_images(tiny_model_file) -> None:
    up = Upscaler(tiny_model_file, device="cpu", precision="fp32")
    grey = np.random.default_rng(0).integers(0, 65536, (12, 12)).astype(np.uint16)
    expected = up.upscale(grey, 2)
    assert np.array_equal(up.upscale(grey.astype(">u2"), 2), expected)
    assert np.array_equal(up.upscale(np.ma.masked_array(grey, grey > 30000), 2), expected)
    as8 = (grey >> 8).astype(np.uint8)
    assert np.array_equal(up.upscale(np.asmatrix(as8), 2), up.upscale(as8, 2))
    with pytest.raises(DRCNError):
        up.upscale(np.zeros((4, 4, 7), np.uint8), 2)


def test_no_room_for_the_networks_output_plane_is_the_librarys_error(tiny_model_file, monkeypatch):
    from drcn_plugin.errors import OutOfMemoryError

    def no_room(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate "
                           "491520000 bytes")

    monkeypatch.setattr(torch, "empty_like", no_room)
    with pytest.raises(OutOfMemoryError, match="not enough memory"):
        Upscaler(tiny_model_file, device="cpu").upscale(np.zeros((8, 8), np.uint8), 2)


@pytest.mark.parametrize(("scale", "size", "words"), [
    ("2", None, "is not a number"), (True, None, "is not a number"), ([2], None, "not a number"),
    (16.0000001, None, "scale 16.0000001 is out of range"), (10**400, None, "scale inf is out"),
    (None, (24,), r"not \(height, width\)"),
    (None, (24.5, 20), r"not \(height, width\)"), (None, 24, r"not \(height, width\)"),
    (2.0, (24, 24), "not both"),
])
def test_odd_scales_and_sizes_are_one_typed_error(tiny_model_file, scale, size, words) -> None:
    from drcn_plugin.errors import BadOptionError

    with pytest.raises(BadOptionError, match=words):
        Upscaler(tiny_model_file, device="cpu").upscale(np.zeros((12, 12), np.uint8), scale,
                                                         size=size)


def test_a_size_of_whole_floats_is_taken_as_tile_and_target_width_are(tiny_model_file) -> None:
    """Every other count takes an API workflow's 24.0 (:func:`.sizing.whole_number`); the size
    refused it as "not (height, width) in whole pixels"."""
    up = Upscaler(tiny_model_file, device="cpu")
    image = np.zeros((12, 12), np.uint8)
    want = up.upscale(image, size=(24, 20))
    for size in [(24.0, 20.0), (np.float64(24), np.float32(20)), (np.int64(24), 20.0)]:
        assert np.array_equal(up.upscale(image, size=size), want)


def test_a_path_names_a_model_like_its_string(tmp_path: Path, tiny_model_file: str) -> None:
    path = Path(tiny_model_file)
    assert load_model(path).state_dict().keys() == load_model(str(path)).state_dict().keys()
    image = np.zeros((8, 8, 3), np.uint8)
    assert np.array_equal(Upscaler(path, device="cpu").upscale(image, 2),
                          Upscaler(str(path), device="cpu").upscale(image, 2))


@pytest.mark.parametrize("kwargs", [{"model": None}, {"model": 123}, {"device": None},
                                    {"device": 0}, {"denoise": "0.5"}, {"denoise": True}])
def test_arguments_of_the_wrong_type_are_one_typed_error(kwargs: dict) -> None:
    with pytest.raises(DRCNError) as err:
        Upscaler(**{"model": "drcn-lite", **kwargs})
    assert "\n" not in str(err.value)


def test_a_torch_device_and_a_numpy_strength_are_accepted() -> None:
    up = Upscaler("drcn-lite", device=torch.device("cpu"), denoise=np.float32(1.0))
    assert up.device.type == "cpu"


@pytest.mark.parametrize(("where", "error"), [("cuda:99", "no such CUDA GPU"),
                                              ("bogus", "unknown device 'bogus'")])
def test_from_pretrained_onto_a_device_not_here_is_a_typed_error(tmp_path: Path, tiny_model,
                                                                 where: str, error: str) -> None:
    """``map_location`` is checked as the engine's device is, before the weights are read: a
    typed error, not torch's AssertionError ("Torch not compiled with CUDA enabled")."""
    from drcn_plugin.model import DRCN

    tiny_model.save_pretrained(tmp_path)
    with pytest.raises(DRCNError, match=error):
        DRCN.from_pretrained(tmp_path, map_location=where)
    loaded = DRCN.from_pretrained(tmp_path, map_location=torch.device("cpu"))
    assert next(loaded.parameters()).device.type == "cpu"


def test_denoise_0_with_a_loaded_module_is_that_module(tiny_model_file: str) -> None:
    module = load_model(tiny_model_file)
    image = np.random.default_rng(0).integers(0, 256, (12, 12, 3), dtype=np.uint8)
    assert np.array_equal(Upscaler(module, device="cpu", denoise=0.0).upscale(image, 2),
                          Upscaler(module, device="cpu").upscale(image, 2))


def test_blending_mismatched_or_out_of_range_is_a_typed_error(tiny_model_file: str) -> None:
    from drcn_plugin.model import DRCN, interpolate

    a = load_model(tiny_model_file)
    with pytest.raises(ModelLoadError, match="cannot blend"):
        interpolate(a, DRCN(a.features + 1, a.recursions), 0.5)
    with pytest.raises(DRCNError, match="outside 0..1"):
        interpolate(a, a, float("nan"))


def test_auto_precision_reads_the_hardware_of_the_gpu_asked_for(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """bf16 where the GPU computes it (compute capability 8+), fp16 on a T4 or RTX 20xx beside
    it, read from each GPU's compute capability (torch 2.2's ``is_bf16_supported()`` takes no
    device)."""
    from drcn_plugin import devices

    cuda_gpus(monkeypatch, (7, 5), (8, 6))
    assert devices.pick_precision(torch.device("cuda", 0)) == torch.float16
    assert devices.pick_precision(torch.device("cuda", 1)) == torch.bfloat16
    assert devices.pick_precision(torch.device("cuda")) == torch.float16  # the current GPU, 0


@pytest.mark.parametrize("platform", ["win32", "darwin"])
@pytest.mark.parametrize("has_bf16", [True, False])
def test_bf16_on_any_os_whose_cpu_has_it(monkeypatch: pytest.MonkeyPatch, platform: str,
                                        has_bf16: bool) -> None:
    """A Windows or macOS CPU with AVX512-BF16 (a Ryzen 7040 laptop) gets the fast bf16 path,
    told by torch's CPUID check (Linux also reads its flags)."""
    from drcn_plugin import devices

    devices.cpu_has_fast_bf16.cache_clear()
    monkeypatch.setattr(devices.sys, "platform", platform)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: has_bf16, raising=False)
    try:
        want = torch.bfloat16 if has_bf16 else torch.float32
        assert devices.pick_precision(torch.device("cpu")) == want
    finally:
        devices.cpu_has_fast_bf16.cache_clear()


@pytest.mark.parametrize("platform", ["linux", "win32"])
def test_without_torchs_cpu_check_linux_reads_the_flags(monkeypatch: pytest.MonkeyPatch,
                                                        platform: str) -> None:
    from drcn_plugin import devices

    devices.cpu_has_fast_bf16.cache_clear()
    monkeypatch.setattr(devices.sys, "platform", platform)
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    try:
        flags = ""
        if platform == "linux" and os.path.exists("/proc/cpuinfo"):
            with open("/proc/cpuinfo") as f:
                flags = next((ln for ln in f if ln.startswith("flags")), "")
        assert devices.cpu_has_fast_bf16() == ("avx512_bf16" in flags.split()
                                               or "amx_bf16" in flags.split())
    finally:
        devices.cpu_has_fast_bf16.cache_clear()
