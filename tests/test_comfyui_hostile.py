"""ComfyUI nodes against what ComfyUI itself and its users hand them: its GPUs' precision rules,
the mask layouts its own mask nodes accept and the paths its users paste (fakes of ComfyUI's
modules from test_comfyui_nodes)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import cuda_gpus, seeded_drcn
from safetensors.torch import save_file
from test_comfyui_nodes import NODES, PKG, FakeComfy

from drcn_plugin import memory
from drcn_plugin.devices import pick_precision
from drcn_plugin.engine import Upscaler
from drcn_plugin.model import DRCN

UPSCALE = PKG.NODE_CLASS_MAPPINGS["DRCNUpscale"]()
LOADER = PKG.NODE_CLASS_MAPPINGS["DRCNModelLoader"]()
MODELS = sys.modules[f"{PKG.__name__}.upscale_model"]


@pytest.fixture(scope="module")
def tiny() -> DRCN:
    return seeded_drcn()


def test_a_gpu_without_bf16_hardware_runs_in_fp16_as_comfyui_says(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A Tesla T4 (Colab's free GPU) or an RTX 20xx: ComfyUI's should_use_bf16 says no (compute
    capability under 8, comfy/model_management.py), yet ``torch.cuda.is_bf16_supported()``
    answers True there, as bf16 is emulated (slow; cuDNN has no bf16 convolutions below 8.0).
    The node leaves the choice to the engine, which must then pick fp16, not emulated bf16."""
    cuda_gpus(monkeypatch, (7, 5))
    fake = FakeComfy().install(monkeypatch)
    fake.half.update(fp16=True, bf16=False)
    asked = NODES.engine_precision(fake.mm, "cuda:0")
    assert pick_precision(torch.device("cuda", 0), asked) == torch.float16


@pytest.mark.parametrize("layout", [(2, 1, 8, 8), (1, 2, 8, 8), (2, 8, 8)])
def test_masks_in_the_layouts_comfyuis_mask_nodes_take(tiny: DRCN, layout: tuple) -> None:
    """ComfyUI's own mask nodes read a MASK as ``reshape(-1, H, W)`` (nodes_mask.py): a
    ``[B, 1, H, W]`` mask from a custom node is the same B masks, not a refusal."""
    image = torch.rand(2, 8, 8, 3, generator=torch.Generator().manual_seed(1))
    masks = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(2))
    want_image, want_mask = UPSCALE.upscale(image, tiny, 2.0, 0, False, mask=masks)
    out, out_mask = UPSCALE.upscale(image, tiny, 2.0, 0, False, mask=masks.reshape(layout))
    assert torch.equal(out, want_image) and torch.equal(out_mask, want_mask)


@pytest.mark.parametrize("quoted", ['"{}"', "  '{}' "])
def test_a_path_pasted_with_quotes_loads(tiny: DRCN, tmp_path: Path, quoted: str) -> None:
    """Windows Explorer's "Copy as path" wraps the path in double quotes, and users paste it
    into hub_or_path as it is (ComfyUI's video loaders strip them too)."""
    weights = tmp_path / "my drcn.safetensors"
    save_file({k: v.contiguous() for k, v in tiny.state_dict().items()}, str(weights))
    (model,) = LOADER.load("drcn-lite", quoted.format(weights))
    assert (model.features, model.recursions) == (tiny.features, tiny.recursions)


@pytest.mark.parametrize(("channels", "kind"), [(4, "an RGBA image"), (1, "a grey image"),
                                                 (2, "a grey image with alpha")])
def test_upscale_model_names_alpha_and_grey_not_a_tile_shape(tiny: DRCN, channels: int,
                                                               kind: str) -> None:
    """Join Image with Alpha (RGBA) or a grey image into Upscale Image (using Model): that node
    hands the model NCHW tiles and sizes its output for RGB, so the model refuses; the line says
    what the image is and which node keeps alpha, not the shape of a tile the artist never made."""
    with pytest.raises(NODES.DRCNNodeError) as info:
        MODELS.DRCNUpscaleModule(tiny, 2)(torch.rand(1, channels, 32, 48))
    text = str(info.value)
    assert text == f"DRCN: an upscale model takes RGB images, not {kind}: use DRCN Upscale, " \
                   "which keeps alpha and grey"


def test_a_soft_mask_leaves_the_colours_of_an_8_bit_image_as_they_are(tiny: DRCN) -> None:
    """A mask off the 8-bit grid (0.3, a feathered edge) sent the whole frame down the float path:
    RGB up to 1.08 levels off the same image without the mask. The colours choose their own path;
    the mask is still resized at float precision, as the engine resizes a float alpha."""
    g = torch.Generator().manual_seed(6)
    image = torch.randint(0, 256, (2, 12, 14, 3), generator=g).float() / 255.0  # Load Image's
    engine = Upscaler(tiny, device="cpu")
    for scale in (2.3, 1.0):
        plain, _ = UPSCALE.upscale(image, tiny, scale, 0, False)
        for mask in (torch.full((1, 12, 14), 0.3), torch.rand(2, 12, 14, generator=g)):
            out, out_mask = UPSCALE.upscale(image, tiny, scale, 0, False, mask=mask)
            assert (out - plain).abs().max() == 0
            for i in range(2):
                rgba = torch.cat([image[i], 1.0 - mask[i % len(mask), ..., None]], dim=-1)
                alpha = engine.upscale(rgba.numpy(), scale, fill_hidden=False)[..., 3]
                assert (out_mask[i] - (1.0 - torch.from_numpy(alpha))).abs().max() < 1e-6


def _metered(monkeypatch: pytest.MonkeyPatch, budget: int) -> list[torch.Tensor]:
    """Available memory as ``ulimit -v`` or a cgroup sees it: ``budget`` less the output tensors
    the node has allocated (returned)."""
    taken: list[int] = []
    metered = types.ModuleType("torch")
    vars(metered).update(vars(torch))
    for name in ("empty", "zeros"):
        make = getattr(torch, name)
        setattr(metered, name, lambda *a, make=make, **k: taken.append(make(*a, **k)) or taken[-1])
    monkeypatch.setattr(NODES, "torch", metered)
    monkeypatch.setattr(memory, "_available_memory",
                        lambda device: budget - sum(t.nbytes for t in taken))
    return taken


def test_a_float_batch_is_checked_before_its_outputs_are_taken(
        tiny: DRCN, monkeypatch: pytest.MonkeyPatch) -> None:
    """Frame 0 tells whether the batch is float (a VAE decode) before the outputs are allocated,
    and the 4-byte check counts them once: a frame with room for its output once is upscaled,
    one without that room is refused with nothing allocated."""
    outputs = 64 * 64 * (3 + 1) * 4  # image and mask planes, float32
    need = (memory.memory_needed(32, 32, 3, 4, size=(64, 64), encoded=False) + outputs
            + 32 * 32 * 3 * 4)  # and the frame read for the engine
    _metered(monkeypatch, need + outputs // 2)
    out, _ = UPSCALE.upscale(torch.rand(1, 32, 32, 3), tiny, 2.0, 0, False)
    assert out.shape == (1, 64, 64, 3)
    taken = _metered(monkeypatch, need - 1)
    with pytest.raises(NODES.DRCNNodeError, match="a batch of 1 frame of 64x64 needs about"):
        UPSCALE.upscale(torch.rand(1, 32, 32, 3), tiny, 2.0, 0, False)
    assert taken == []


def test_a_later_float_frame_counts_only_what_is_still_to_be_allocated(
        tiny: DRCN, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two 8-bit frames, then one off the grid: the recheck counts only what is still to be
    allocated (not the outputs, nor the step's results so far), so a batch that fits is not
    refused after two frames are upscaled."""
    frames = torch.randint(0, 256, (3, 32, 32, 3), generator=torch.Generator().manual_seed(4)) / 255
    frames[2] += 0.3 / 255
    outputs, made = 3 * 64 * 64 * (3 + 1) * 4, 2 * 64 * 64 * 3  # and two 8-bit results
    _metered(monkeypatch, memory.memory_needed(32, 32, 3, 4, size=(64, 64), encoded=False)
             + outputs + made)
    ran, real = [], Upscaler.upscale
    monkeypatch.setattr(Upscaler, "upscale",
                        lambda self, *a, **k: ran.append(1) or real(self, *a, **k))
    out, _ = UPSCALE.upscale(frames, tiny, 2.0, 0, False)
    assert len(ran) == 3 and out.shape == (3, 64, 64, 3)


def test_an_rgba_images_soft_alpha_leaves_its_8_bit_colours_as_they_are(tiny: DRCN) -> None:
    """Join Image with Alpha with a feathered mask: the colours go in as uint8 and the alpha is
    resized apart, as the engine resizes a float alpha; in one float array with the soft alpha
    they would come back 1.09 levels off the same pixels as image + mask."""
    g = torch.Generator().manual_seed(6)
    rgb = torch.randint(0, 256, (2, 12, 14, 3), generator=g) / 255
    alpha = torch.rand(2, 12, 14, 1, generator=g) * 0.98 + 0.01  # soft, nowhere transparent
    reference = Upscaler(tiny, device="cpu")
    for scale in (2.3, 1.0):
        plain, _ = UPSCALE.upscale(rgb, tiny, scale, 0, False)
        out, out_mask = UPSCALE.upscale(torch.cat([rgb, alpha], -1), tiny, scale, 0, False)
        assert (out[..., :3] - plain).abs().max() == 0
        for i in range(2):
            want = reference.upscale(torch.cat([rgb[i], alpha[i]], -1).numpy(), scale)[..., 3]
            assert (out[i, ..., 3] - torch.from_numpy(want)).abs().max() < 1e-6
            assert torch.equal(out_mask[i], 1.0 - out[i, ..., 3])


def test_an_rgba_images_transparent_colours_are_still_filled(tiny: DRCN) -> None:
    """Taken apart, a soft alpha still tells the engine which pixels are fully transparent, so
    their unseen colour is filled from the visible ones: whatever it is, the result is the same."""
    g = torch.Generator().manual_seed(8)
    rgb = torch.randint(0, 256, (1, 12, 14, 3), generator=g) / 255
    alpha = torch.rand(1, 12, 14, 1, generator=g)
    alpha[:, :, :6] = 0.0
    hidden = rgb.clone()
    hidden[:, :, :6] = 1.0 - hidden[:, :, :6]
    out, _ = UPSCALE.upscale(torch.cat([rgb, alpha], -1), tiny, 2.0, 0, False)
    again, _ = UPSCALE.upscale(torch.cat([hidden, alpha], -1), tiny, 2.0, 0, False)
    plain, _ = UPSCALE.upscale(rgb, tiny, 2.0, 0, False)
    assert torch.equal(out, again) and not torch.equal(out[..., :3], plain)


@pytest.mark.parametrize("per_batch", [2.0, np.float64(2.0)])
def test_a_whole_number_float_per_batch_is_that_many_frames(tiny: DRCN, per_batch: float) -> None:
    """An API workflow's 2.0 (or a math node's float) is that many frames, not 'not a whole
    number'."""
    frames = torch.rand(3, 8, 8, 3, generator=torch.Generator().manual_seed(9))
    want, _ = UPSCALE.upscale(frames, tiny, 2.0, 0, False, per_batch=2)
    out, _ = UPSCALE.upscale(frames, tiny, 2.0, 0, False, per_batch=per_batch)
    assert torch.equal(out, want)


@pytest.mark.parametrize("scale", [0, 0.5, 1, 1.5])
def test_an_upscale_models_range_says_2_to_16(tiny: DRCN, scale: float) -> None:
    """DRCN to Upscale Model names its own range, 2 to 16, for 0.5 and 1 alike (DRCN Upscale's
    is 1 to 16)."""
    with pytest.raises(NODES.DRCNNodeError) as info:
        MODELS.upscale_model(tiny, scale)
    assert str(info.value) == f"DRCN: scale {scale:g} is out of range: use 2 to 16"
    with pytest.raises(NODES.DRCNNodeError, match="^DRCN: scale 0.5 is out of range: use 1 to 16$"):
        UPSCALE.upscale(torch.rand(1, 8, 8, 3), tiny, 0.5, 0, False)


def _tile_batch_need(count: int, h: int, w: int) -> int:
    """Host memory an upscale model's batch of ``count`` float32 RGB tiles takes at x2: one
    unencoded upscale, beside it the tiles as the engine's inputs and the batch it fills."""
    return (memory.memory_needed(h, w, 3, 4, size=(2 * h, 2 * w), encoded=False)
            + count * 3 * 4 * (h * w + 4 * h * w))


def test_an_upscale_models_memory_check_counts_what_it_holds(
        tiny: DRCN, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tile's result is not encoded, and it goes straight into the batch returned: the check
    counted it three times as if encoded, then the results twice over (a list, and the batch
    stacked from it), and refused tiles that fit."""
    module = MODELS.DRCNUpscaleModule(tiny, 2)
    x = torch.rand(2, 3, 32, 32)
    want = module(x)
    monkeypatch.setattr(memory, "_available_memory", lambda device: _tile_batch_need(2, 32, 32))
    assert torch.equal(module(x), want)
    monkeypatch.setattr(memory, "_available_memory",
                        lambda device: _tile_batch_need(2, 32, 32) - 1)
    with pytest.raises(torch.cuda.OutOfMemoryError, match="^DRCN: a batch of 2 tiles of 64x64"):
        module(x)


def _frame_batch_need(count: int, planes: int, itemsize: int, step: int) -> int:
    """Host memory DRCN Upscale's batch of ``count`` 32x32 RGB frames takes at x2, ``step`` a step:
    one unencoded upscale of ``planes`` planes of ``itemsize`` bytes, beside it the float32
    outputs (image and mask), the rest of the step's results and the frame read for the engine."""
    return (memory.memory_needed(32, 32, planes, itemsize, size=(64, 64), encoded=False)
            + 64 * 64 * (count * (3 + 1) * 4 + (step - 1) * planes * itemsize)
            + 32 * 32 * planes * itemsize)


@pytest.mark.parametrize(("kind", "mask", "per_batch", "planes", "itemsize"), [
    ("8-bit", None, 2, 3, 1), ("float", None, 0, 3, 4),
    ("8-bit", "soft", 0, 4, 4), ("8-bit", "8-bit", 1, 4, 1)])
def test_the_upscale_nodes_memory_check_counts_what_it_holds(
        tiny: DRCN, monkeypatch: pytest.MonkeyPatch, kind: str, mask: str | None,
        per_batch: int, planes: int, itemsize: int) -> None:
    """Each result is written straight into the outputs, never encoded: the check counted it
    three times as if encoded (a formula made for files) and refused batches that fit."""
    g = torch.Generator().manual_seed(8)
    image = torch.rand(3, 32, 32, 3, generator=g) if kind == "float" \
        else torch.randint(0, 256, (3, 32, 32, 3), generator=g) / 255
    masks = {None: None, "soft": torch.rand(3, 32, 32, generator=g),
             "8-bit": torch.randint(0, 256, (3, 32, 32), generator=g) / 255}[mask]

    def run() -> tuple[torch.Tensor, torch.Tensor]:
        return UPSCALE.upscale(image, tiny, 2.0, 0, False, mask=masks, per_batch=per_batch)

    want_image, want_mask = run()
    need = _frame_batch_need(3, planes, itemsize, min(per_batch or 3, 3))
    monkeypatch.setattr(memory, "_available_memory", lambda device: need)
    out, out_mask = run()
    assert torch.equal(out, want_image) and torch.equal(out_mask, want_mask)
    monkeypatch.setattr(memory, "_available_memory", lambda device: need - 1)
    with pytest.raises(NODES.DRCNNodeError, match="^DRCN: a batch of 3 frames of 64x64 needs "):
        run()


def test_an_upscale_model_short_of_memory_lets_comfyuis_node_retry_with_smaller_tiles(
        tiny: DRCN, monkeypatch: pytest.MonkeyPatch) -> None:
    """ComfyUI's Upscale Image (using Model) halves its tile (512 down to 128) and tries again on
    its OOM_EXCEPTION, torch.cuda.OutOfMemoryError (ComfyUI 0.3.64 comfy_extras/
    nodes_upscale_model.py; later ones through model_management.is_oom), and re-raises anything
    else: a tile the memory left cannot take must raise that type, still as one DRCN line."""
    module = MODELS.DRCNUpscaleModule(tiny, 2)
    small = _tile_batch_need(1, 32, 32)
    monkeypatch.setattr(memory, "_available_memory", lambda device: small)
    x = torch.rand(1, 3, 64, 64)
    with pytest.raises(torch.cuda.OutOfMemoryError) as info:
        module(x)
    assert isinstance(info.value, NODES.DRCNNodeError) and "\n" not in str(info.value)
    assert str(info.value).startswith("DRCN: a batch of 1 tile of 128x128 needs about")
    assert module(x[..., :32, :32]).shape == (1, 3, 64, 64)  # the host's next, halved tile


def _gpu_full(monkeypatch: pytest.MonkeyPatch, fake: FakeComfy, until_unloaded: bool) -> None:
    """The engine's forward passes meet the GPU allocator's out-of-memory error at every tile
    size: until ComfyUI's models are unloaded, or for good."""
    forward = Upscaler._forward

    def full(self: Upscaler, x: torch.Tensor) -> torch.Tensor:
        if until_unloaded and ("unload",) in fake.calls:
            return forward(self, x)
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(Upscaler, "_forward", full)


def test_a_gpu_short_of_memory_runs_again_once_comfyuis_models_are_unloaded(
        tiny: DRCN, monkeypatch: pytest.MonkeyPatch) -> None:
    """Other models ComfyUI keeps on the GPU (a checkpoint, a VAE) can leave too little for even
    the engine's smallest tile: as ComfyUI does after an out-of-memory error, they are unloaded,
    here before the node fails, and the frame runs again."""
    fake = FakeComfy().install(monkeypatch)
    image = torch.rand(2, 16, 16, 3)
    want, _ = UPSCALE.upscale(image, tiny, 2.0, 16, False)
    fake.calls.clear()
    _gpu_full(monkeypatch, fake, until_unloaded=True)
    out, _ = UPSCALE.upscale(image, tiny, 2.0, 16, False)
    assert torch.equal(out, want)
    kinds = [call[0] for call in fake.calls if call[0] in ("free", "unload")]
    assert kinds == ["free", "unload"]  # once, after the node's own request


def test_a_gpu_still_short_after_unloading_is_comfyuis_out_of_memory(
        tiny: DRCN, monkeypatch: pytest.MonkeyPatch) -> None:
    """After the engine's tile halving and one run with ComfyUI's models unloaded, the node raises
    ComfyUI's OOM_EXCEPTION type (torch.cuda.OutOfMemoryError): execution.py's ``execute`` then
    adds its out-of-memory tips and unloads all models (it was a plain node error before). A
    host memory refusal stays a plain one: unloading models onto the host takes host memory."""
    fake = FakeComfy().install(monkeypatch)
    _gpu_full(monkeypatch, fake, until_unloaded=False)
    with pytest.raises(torch.cuda.OutOfMemoryError) as info:
        UPSCALE.upscale(torch.rand(2, 16, 16, 3), tiny, 2.0, 16, False)
    assert isinstance(info.value, NODES.DRCNNodeError)
    assert str(info.value) == "DRCN: out of memory on cpu even with the smallest tile"
    assert fake.calls.count(("unload",)) == 1  # once for the node, not once a frame
    fake.calls.clear()
    monkeypatch.setattr(memory, "_available_memory", lambda device: 1 << 20)
    with pytest.raises(NODES.DRCNNodeError, match="^DRCN: a batch of 2 frames of 32x32 needs") \
            as info:
        UPSCALE.upscale(torch.rand(2, 16, 16, 3), tiny, 2.0, 16, False)
    assert not isinstance(info.value, torch.cuda.OutOfMemoryError)
    assert ("unload",) not in fake.calls
