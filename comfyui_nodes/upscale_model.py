"""A DRCN model as ComfyUI's ``UPSCALE_MODEL``: a spandrel ``ImageModelDescriptor``, so ComfyUI's
"Upscale Image (using Model)", Ultimate SD Upscale and other packs that take an upscale model run
DRCN through their own tiling.

The descriptor's module is the engine on one tile: each RGB image of an NCHW batch (0..1) goes
through ``Upscaler.upscale`` (Y through the network, CbCr by bicubic, the ILR rounded to the
8-bit levels when the tile sits on the 8-bit grid), at a fixed integer scale. spandrel is
ComfyUI's own dependency; it is imported only when this node runs.
"""

from __future__ import annotations

from functools import cache
from types import ModuleType

import torch
from torch import nn

from drcn_plugin.engine import Upscaler
from drcn_plugin.errors import BadImageError, BadOptionError, MissingDependencyError, counted
from drcn_plugin.hub import from_state_dict, looks_like_drcn
from drcn_plugin.memory import check_memory
from drcn_plugin.model import DRCN
from drcn_plugin.scales import MAX_SCALE, check_scale

from .drcn_nodes import (
    CATEGORY,
    MODEL_TYPE,
    comfy_modules,
    engine_device,
    engine_precision,
    interrupt_check,
    user_errors,
)
from .frames import finite_frames, from_engine, readable, to_engine

ARCH_ID = "DRCN"
MIN_MODEL_SCALE = 2
MAX_MODEL_SCALE = int(MAX_SCALE)


def _spandrel() -> ModuleType:
    """The spandrel package, or one line saying how to get it."""
    try:
        import spandrel
    except ImportError as e:
        raise MissingDependencyError("this node needs the spandrel package, which ComfyUI "
                                     "installs with its requirements: run `pip install "
                                     "spandrel` in ComfyUI's Python") from e
    return spandrel


def _not_rgb(channels: int) -> str:
    """Why an upscale model refuses a tile of ``channels`` channels, and what to use instead: the
    host node sizes its output for RGB, so alpha or grey cannot ride along through it."""
    kind = {1: "a grey image", 2: "a grey image with alpha", 4: "an RGBA image"}.get(channels)
    if kind is None:
        return f"an upscale model takes RGB batches [N, 3, H, W], not {channels} channels"
    return (f"an upscale model takes RGB images, not {kind}: use DRCN Upscale, which keeps "
            "alpha and grey")


class DRCNUpscaleModule(nn.Module):
    """The engine on one tile: ``[N, 3, H, W]`` RGB in 0..1 to ``[N, 3, H*s, W*s]``.

    The engine (its device, half-precision copy and tiling) is built on the first call for the
    input's device and dropped whenever the module is moved or cast.
    """

    def __init__(self, drcn: DRCN, scale: int) -> None:
        super().__init__()
        self.drcn = drcn
        self.scale = scale
        self._engine: Upscaler | None = None

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001, ANN202 (torch's signature)
        self._engine = None
        return super()._apply(fn, recurse)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Upscale each image of the batch as ``drcn upscale`` would upscale that tile."""
        with user_errors(host_tiles=True):
            if readable(x, "image").ndim != 4:
                raise BadImageError(f"expected an RGB batch [N, 3, H, W], got {tuple(x.shape)}")
            count, channels, h, w = x.shape
            if channels != 3:
                raise BadImageError(_not_rgb(channels))
            if x.numel() == 0:
                raise BadImageError(f"the batch is empty ({counted(count, 'image')} of {w}x{h} "
                                    "pixels)")
            finite_frames(x)  # before the first tile, not after some
            tiles = [to_engine(frame.permute(1, 2, 0)) for frame in x]
            itemsize = max(tile.itemsize for tile in tiles)
            oh, ow = h * self.scale, w * self.scale
            # held beside one upscale (whose result is not encoded): the engine's inputs, the
            # float32 batch it fills and, after the last, that batch's copy in the tile's dtype
            # where that is another one on the host
            copy = x.element_size() if x.device.type == "cpu" and x.dtype != torch.float32 else 0
            held = count * 3 * (itemsize * h * w + (4 + copy) * oh * ow)
            check_memory(h, w, 3, itemsize, size=(oh, ow), held=held, encoded=False,
                         what=f"a batch of {counted(count, 'tile')} of {ow}x{oh}")
            device = torch.device(engine_device(x.device))
            mm, _ = comfy_modules()
            # the whole batch on one engine: another thread may move the module meanwhile,
            # which drops or replaces ``_engine``
            engine = self._engine
            if engine is None or engine.device != device:
                engine = self._engine = Upscaler(self.drcn, device=str(device),
                                                 precision=engine_precision(mm, str(device)))
            cancel = interrupt_check(mm) if mm is not None else None
            out = torch.empty((count, oh, ow, 3))
            for tile, into in zip(tiles, out, strict=True):
                from_engine(engine.upscale(tile, float(self.scale), cancel=cancel), into)
        return out.permute(0, 3, 1, 2).to(device=x.device, dtype=x.dtype)


@cache
def architecture(scale: int) -> object:
    """A spandrel ``Architecture`` that loads DRCN state dicts as descriptors at ``scale``."""
    spandrel = _spandrel()

    class DRCNArchitecture(spandrel.Architecture):
        """DRCN (Kim, Lee & Lee, CVPR 2016) through drcn-plugin's engine, at a fixed scale."""

        def __init__(self) -> None:
            super().__init__(id=ARCH_ID, name="DRCN", detect=looks_like_drcn)

        def load(self, state_dict: dict) -> spandrel.ImageModelDescriptor:
            """The descriptor of a DRCN state dict (spandrel's loading hook)."""
            drcn = from_state_dict(state_dict, "the state dict")
            module = DRCNUpscaleModule(drcn, scale)
            return spandrel.ImageModelDescriptor(
                module, module.state_dict(), self, purpose="SR",
                tags=[f"{drcn.features}nf", f"{drcn.recursions}r", f"x{scale}"],
                supports_half=False, supports_bfloat16=False,  # the engine picks the precision
                scale=scale, input_channels=3, output_channels=3)

    return DRCNArchitecture()


def attach_patcher(descriptor: object) -> object:
    """``descriptor`` with ComfyUI's model patcher as ``.patcher``, built as ComfyUI's Load Upscale
    Model builds it: newer ComfyUI's Upscale Image (using Model) loads the model and picks its
    device through ``upscale_model.patcher``. Outside ComfyUI the descriptor is left bare."""
    mm, _ = comfy_modules()
    if mm is None:
        return descriptor
    import comfy.model_patcher as mp  # in every ComfyUI that has comfy.model_management

    patcher = getattr(mp, "CoreModelPatcher", None) or mp.ModelPatcher
    descriptor.patcher = patcher(descriptor.model, load_device=mm.get_torch_device(),
                                 offload_device=mm.unet_offload_device())
    return descriptor


def upscale_model(drcn: DRCN, scale: int) -> object:
    """A spandrel descriptor for ``drcn`` at ``scale`` (its own copy of the weights, so ComfyUI can
    move it between devices without touching the loader's model)."""
    with user_errors():
        # from 2: the engine gives the input back at x1, a no-op labelled 'Restoration'
        value = check_scale(scale, lowest=MIN_MODEL_SCALE)
        if value != int(value):
            raise BadOptionError(f"an upscale model's scale is a whole number, not {value:g}",
                                 option="scale")
        return attach_patcher(architecture(int(value)).load(
            {k: v.detach().cpu() for k, v in drcn.state_dict().items()}))


class DRCNToUpscaleModel:
    """Turn a DRCN model into an UPSCALE_MODEL for ComfyUI's own upscale nodes."""

    CATEGORY = CATEGORY
    RETURN_TYPES = ("UPSCALE_MODEL",)
    RETURN_NAMES = ("upscale_model",)
    FUNCTION = "convert"
    DESCRIPTION = ("Wraps a DRCN model and a whole-number scale as an UPSCALE_MODEL for "
                   "\"Upscale Image (using Model)\" and other nodes that take one; each tile "
                   "they pass gets what DRCN Upscale does to an image.")

    @classmethod
    def INPUT_TYPES(cls) -> dict:  # noqa: N802 (ComfyUI's name)
        """The DRCN model and the fixed scale (an upscale model's scale is a whole number)."""
        return {
            "required": {
                "drcn_model": (MODEL_TYPE,),
                "scale": ("INT", {"default": 2, "min": MIN_MODEL_SCALE, "max": MAX_MODEL_SCALE,
                                  "tooltip": "the model's fixed factor; for 2.5x or exact sizes "
                                             "use DRCN Upscale"}),
            },
        }

    def convert(self, drcn_model: DRCN, scale: int) -> tuple[object]:
        """The descriptor; see ``upscale_model``."""
        return (upscale_model(drcn_model, scale),)


NODE_CLASS_MAPPINGS = {"DRCNToUpscaleModel": DRCNToUpscaleModel}
NODE_DISPLAY_NAME_MAPPINGS = {"DRCNToUpscaleModel": "DRCN to Upscale Model"}
