"""What the host front ends are handed, hostile pass two: ComfyUI inputs that are not tensors, a
GIMP layer's levels on their way to the worker and back, a hand-edited worker record, a worker
that stops reading, paths as users paste them and counts in messages."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import seeded_drcn
from safetensors.torch import save_file
from test_comfyui_nodes import NODES, PKG
from test_gimp_worker import ENV, WORKER, client

from drcn_plugin.errors import counted
from drcn_plugin.model import DRCN
from drcn_plugin.pasting import pasted_path

UPSCALE = PKG.NODE_CLASS_MAPPINGS["DRCNUpscale"]()
MODELS = sys.modules[f"{PKG.__name__}.upscale_model"]


@pytest.fixture(scope="module")
def tiny() -> DRCN:
    return seeded_drcn()


# -- ComfyUI: an IMAGE or MASK that is not a tensor ------------------------------------------------

@pytest.mark.parametrize("bad", [np.zeros((1, 8, 8, 3), np.float32), [[0.5]]],
                         ids=["numpy", "list"])
def test_an_image_that_is_not_a_tensor_is_one_line(tiny: DRCN, bad: object) -> None:
    """Another pack's node that hands on a numpy array (or a list) as its IMAGE gets one line,
    not an AttributeError traceback ('numpy.ndarray' object has no attribute 'is_meta')."""
    kind = type(bad).__name__
    with pytest.raises(NODES.DRCNNodeError, match=f"^DRCN: the image is of type {kind}, not a "
                       "torch tensor: the node that made it does not give ComfyUI's IMAGE type$"):
        UPSCALE.upscale(bad, tiny, 2.0, 0, False)
    with pytest.raises(NODES.DRCNNodeError, match=f"^DRCN: the image is of type {kind}, not"):
        MODELS.DRCNUpscaleModule(tiny, 2)(bad)
    with pytest.raises(NODES.DRCNNodeError, match=f"^DRCN: the mask is of type {kind}, not a "
                       "torch tensor: the node that made it does not give ComfyUI's MASK type$"):
        UPSCALE.upscale(torch.rand(1, 8, 8, 3), tiny, 2.0, 0, False, mask=bad)


# -- GIMP: every level of a layer comes back -------------------------------------------------------

def _to_srgb(v: np.ndarray) -> np.ndarray:
    """sRGB's transfer curve, linear to perceptual (IEC 61966-2-1), as babl applies it."""
    return np.where(v <= 0.0031308, 12.92 * v, 1.055 * np.power(v, 1 / 2.4) - 0.055)


def _from_srgb(v: np.ndarray) -> np.ndarray:
    """sRGB's transfer curve, perceptual to linear."""
    return np.where(v <= 0.04045, v / 12.92, np.power((v + 0.055) / 1.055, 2.4))


@pytest.mark.parametrize("precision", ["u8-linear", "u8-non-linear", "u8-perceptual",
                                       "u16-linear", "u16-non-linear"])
def test_every_level_of_an_integer_layer_survives_the_trip(precision: str) -> None:
    """The plug-in reads a layer in a perceptual (R'G'B') format and writes the result back in
    it; babl converts a linear layer's levels there and back. Each integer layer travels in a
    format that keeps all its levels: as 8-bit R'G'B', which has fewer levels in the
    highlights, 73 of an 8-bit linear layer's 256 would come back as a neighbour (Scale this
    image at an unchanged size would alter the picture, upscaled highlights come back combed)."""
    fmt = client.pixel_format(False, False, precision)
    peak = 255 if precision.startswith("u8") else 65535
    levels = np.arange(peak + 1)
    linear = precision.partition("-")[2] == "linear"
    sent = _to_srgb(levels / peak) if linear else levels / peak
    if fmt.dtype == "f32":
        sent = sent.astype(np.float32).astype(np.float64)
    else:  # an integer format holds its own levels only
        top = {"u8": 255, "u16": 65535}[fmt.dtype]
        sent = np.round(sent * top) / top
    back = np.round((_from_srgb(sent) if linear else sent) * peak)
    assert np.array_equal(back, levels), f"{np.count_nonzero(back != levels)} levels changed"


# -- GIMP: the worker record and a worker that stops reading ---------------------------------------

@pytest.mark.parametrize("value", [123, None, ["/usr/bin/python3"], "", "  "])
def test_a_worker_record_without_a_python_path_is_one_line(tmp_path: Path, value: object) -> None:
    """A drcn-worker.json edited by hand to a number, null, a list or an empty path is one line
    saying it names no Python and how to mend it, not a TypeError traceback ('expected str,
    bytes or os.PathLike object, not int') nor 'the DRCN worker's Python  does not exist'."""
    (tmp_path / client.CONFIG_NAME).write_text(json.dumps({"python": value}))
    for environ in ({}, {"FLATPAK_ID": "org.gimp.GIMP"}):
        with pytest.raises(client.WorkerError) as e:
            client.worker_command(tmp_path, environ)
        assert f'names no Python for the worker ("python": {json.dumps(value)})' in str(e.value)
        assert "drcn gimp install" in str(e.value)


def test_a_worker_that_stops_reading_is_stopped_after_the_silence_timeout(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker wedged before it reads the pixels (a GPU driver hanging in its first call, a
    stopped process) is stopped after the silence timeout that covers the rest of a run, so
    the plug-in is not blocked in its write for good, GIMP's progress bar standing still."""
    monkeypatch.setattr(client, "SILENCE_TIMEOUT_S", 0.5)
    monkeypatch.setattr(client, "STOP_GRACE_S", 0.5)
    worker = client.Worker([sys.executable, "-c", "import time\nprint('ready 1', flush=True)\n"
                            "time.sleep(60)"], env=ENV)
    worker.start()
    errors: list[str] = []

    def run() -> None:  # more than a pipe holds, so a plain write blocks
        try:
            worker.upscale(bytes(3 << 20), 1024, 1024, client.PixelFormat("t", "u8", 3), 2.0, {})
        except client.WorkerError as e:
            errors.append(str(e))

    call = threading.Thread(target=run, daemon=True)
    call.start()
    call.join(60)  # a guard against the hang, not a timing check
    worker.close(graceful=False)
    assert errors and "did not answer for 0 s during run and was stopped" in errors[0]


# -- paths as a user pastes them, in either host -----------------------------------------------

PASTED = ['"{path}"', "  '{path}' ", "{uri}", ' "{uri}" ']


@pytest.mark.parametrize("form", PASTED)
def test_a_pasted_path_names_the_same_file(tmp_path: Path, form: str) -> None:
    weights = tmp_path / "my drcn 100%.safetensors"
    assert pasted_path(form.format(path=weights, uri=weights.as_uri())) == str(weights)
    assert pasted_path("  drcn-lite ") == "drcn-lite" and pasted_path("hf:a/b") == "hf:a/b"


@pytest.mark.parametrize("form", PASTED[1:])
def test_a_pasted_path_loads_in_comfyui_and_gimp(tiny: DRCN, tmp_path: Path, form: str) -> None:
    """A quoted path (Windows Explorer's "Copy as path") or a ``file://`` URL (what a file
    manager may copy) loads from GIMP's Custom model field and from ComfyUI's loader alike,
    read by the one rule for pasted paths."""
    weights = tmp_path / "my drcn.safetensors"
    save_file({k: v.contiguous() for k, v in tiny.state_dict().items()}, str(weights))
    spec = form.format(path=weights, uri=weights.as_uri())
    (model,) = NODES.DRCNModelLoader().load("drcn-lite", spec)
    assert (model.features, model.recursions) == (tiny.features, tiny.recursions)
    image = np.arange(6 * 5 * 3, dtype=np.uint8).reshape(6, 5, 3)
    with client.Worker(WORKER, env=ENV) as worker:
        _, w, h = worker.upscale(image.tobytes(), 5, 6, client.PixelFormat("t", "u8", 3), 2.0,
                                 {"model": spec})
    assert (w, h) == (10, 12)


# -- counts in messages -----------------------------------------------------------------------------

def test_counts_read_right() -> None:
    assert [counted(n, "image") for n in (0, 1, 2)] == ["0 images", "1 image", "2 images"]
    assert counted(1, "patch", "patches") == "1 patch" and counted(3, "patch", "patches") == \
        "3 patches"


def test_a_mask_count_for_one_image_reads_right(tiny: DRCN) -> None:
    """'2 masks for 1 images'."""
    with pytest.raises(NODES.DRCNNodeError, match=r"^DRCN: 2 masks for 1 image: give one mask "
                       "or one per image$"):
        UPSCALE.upscale(torch.rand(1, 8, 8, 3), tiny, 2.0, 0, False, mask=torch.rand(2, 8, 8))
