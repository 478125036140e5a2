"""ComfyUI nodes against what ComfyUI itself and its users hand them: its GPUs' precision rules,
the mask layouts its own mask nodes accept and the paths its users paste (fakes of ComfyUI's
modules from test_comfyui_nodes)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from helpers import cuda_gpus, seeded_drcn
from safetensors.torch import save_file
from test_comfyui_nodes import NODES, PKG, FakeComfy

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
