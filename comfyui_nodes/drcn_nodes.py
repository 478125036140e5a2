"""ComfyUI nodes for DRCN super-resolution: a model loader and an upscaler on the shared engine.

All image maths (colour split, interpolation to any scale, seamless tiling, device, precision and
out-of-memory back-off) happens in ``drcn_plugin.engine.Upscaler``. This module only adapts
ComfyUI's tensors (through ``frames``: 8-bit images go in as uint8, as ``drcn upscale`` reads
them; a soft alpha beside them goes to the engine apart), memory manager, progress bar and
interrupt to it. Outside ComfyUI (no ``comfy`` module) the nodes still import and run:
automatic device, no progress bar, no interrupt.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import TypeVar

import numpy as np
import torch

from drcn_plugin.devices import DEVICE_TYPES, Precision
from drcn_plugin.engine import Upscaler
from drcn_plugin.errors import (
    BadImageError,
    BadOptionError,
    DRCNError,
    ModelLoadError,
    OutOfMemoryError,
    counted,
    one_line,
)
from drcn_plugin.hub import (
    DEFAULT_MODEL,
    SHIPPED,
    load_denoised,
    load_model,
    load_weights_file,
    local_path,
)
from drcn_plugin.integrations.comfyui_install import MODELS_SUBDIR
from drcn_plugin.memory import check_memory
from drcn_plugin.model import DRCN
from drcn_plugin.pasting import pasted_path
from drcn_plugin.scales import MAX_SCALE, MIN_SCALE
from drcn_plugin.sizing import TargetSize, whole_number

from .frames import finite_frames, frame_input, from_engine, mask_alpha, readable

CATEGORY = "image/upscaling/DRCN"
MODEL_TYPE = "DRCN_MODEL"
MODELS_FOLDER = MODELS_SUBDIR  # ComfyUI/models/drcn, made by `drcn comfyui install`
MAX_SIDE = 16384  # ComfyUI's own largest image side (nodes.MAX_RESOLUTION)
T = TypeVar("T")
_WORKING_PIXELS = 1 << 20  # memory asked of ComfyUI: about a 1024x1024 tile of activations


class DRCNNodeError(RuntimeError):
    """A DRCNError re-raised for ComfyUI: one line, without the engine's traceback chained."""


class DRCNNodeOutOfMemoryError(DRCNNodeError, torch.cuda.OutOfMemoryError):
    """A DRCN OutOfMemoryError as ComfyUI's OOM_EXCEPTION (torch.cuda.OutOfMemoryError), which its
    Upscale Image (using Model) catches to try again with smaller tiles."""


def device_short(e: BaseException) -> bool:
    """Whether ``e`` is the engine giving up on the device's memory (its allocator's out-of-memory
    even at the smallest tile), not a host memory refusal: ComfyUI's answer to that, unloading
    its models onto the host, helps the one and takes host memory from the other. The cause's
    type is ComfyUI's OOM_EXCEPTION (the same class as torch.OutOfMemoryError since torch 2.5)."""
    cause = torch.cuda.OutOfMemoryError
    return isinstance(e, OutOfMemoryError) and isinstance(e.__cause__, cause)


@contextmanager
def user_errors(host_tiles: bool = False) -> Iterator[None]:
    """Turn a DRCNError into a one-line DRCNNodeError that ComfyUI shows as the node's error. The
    device's memory running out raises ComfyUI's out-of-memory type (it then shows its tips and
    unloads its models); with ``host_tiles`` (a tile from another node) any memory shortage
    does, so that node halves its tile instead of failing."""
    try:
        yield
    except DRCNError as e:
        oom = isinstance(e, OutOfMemoryError) and (host_tiles or device_short(e))
        raise (DRCNNodeOutOfMemoryError if oom else DRCNNodeError)(f"DRCN: {one_line(e)}") \
            from None


class FreeOnce:
    """Runs jobs on ComfyUI's GPU; the first that runs out of its memory, even at the engine's
    smallest tile, runs again once ComfyUI's models are unloaded from it (what ComfyUI itself
    does after an out-of-memory error, otherwise only once the node has failed)."""

    def __init__(self, mm: ModuleType | None) -> None:
        self.mm, self.left = mm, mm is not None

    def run(self, job: Callable[..., T], *args: object, **kwargs: object) -> T:
        """``job(*args, **kwargs)``, run a second time after the unloading where that can help."""
        while True:
            try:
                return job(*args, **kwargs)
            except OutOfMemoryError as e:
                if not (self.left and device_short(e)):
                    raise
            # out of the except block: the error no longer holds the failed run's tensors
            self.left = False
            self.mm.unload_all_models()
            self.mm.soft_empty_cache()


def comfy_modules() -> tuple[ModuleType | None, ModuleType | None]:
    """ComfyUI's ``comfy.model_management`` and ``comfy.utils``, or (None, None) outside it."""
    try:
        import comfy.model_management as mm
        import comfy.utils as cu
    except ImportError:
        return None, None
    return mm, cu


def engine_device(device: torch.device | str) -> str:
    """ComfyUI's device for the engine; one the engine does not run on (Intel XPU, DirectML,
    Ascend NPU) falls back to the CPU, said once per kind in ComfyUI's log."""
    kind = torch.device(device).type
    if kind in DEVICE_TYPES:
        return str(device)
    if kind not in _FALLBACKS_SAID:
        _FALLBACKS_SAID.add(kind)
        print(f"DRCN: ComfyUI runs on {kind}, which drcn-plugin does not support: DRCN runs on "
              "the CPU", file=sys.stderr, flush=True)
    return "cpu"


_FALLBACKS_SAID: set[str] = set()


def engine_precision(mm: ModuleType | None, device: str) -> Precision:
    """The engine's own choice, or fp32 where ComfyUI rules out both half precisions on its GPU
    (``--force-fp32``; GTX 16xx cards, whose fp16 is broken). On the CPU the engine decides."""
    if mm is None or torch.device(device).type == "cpu":
        return "auto"
    gpu = torch.device(device)
    return "auto" if mm.should_use_fp16(gpu) or mm.should_use_bf16(gpu) else "fp32"


def _folder_paths() -> ModuleType | None:
    """ComfyUI's ``folder_paths`` with ``models/drcn`` registered beside any ``drcn:`` folders of
    extra_model_paths.yaml, listing .safetensors files only; None outside ComfyUI."""
    try:
        import folder_paths
    except ImportError:
        return None
    own = os.path.join(folder_paths.models_dir, MODELS_FOLDER)
    # once: older ComfyUI appends a folder it holds again, and this runs at every model list
    if own not in folder_paths.folder_names_and_paths.get(MODELS_FOLDER, ([], None))[0]:
        folder_paths.add_model_folder_path(MODELS_FOLDER, own)
    paths, _ = folder_paths.folder_names_and_paths[MODELS_FOLDER]
    folder_paths.folder_names_and_paths[MODELS_FOLDER] = (paths, {".safetensors"})
    return folder_paths


def resolve_model(model_name: str, hub_or_path: str = "") -> DRCN:
    """Load ``hub_or_path`` if given, else a shipped name or a file from ComfyUI's models/drcn."""
    spec = pasted_path(hub_or_path)
    if spec:
        return load_model(spec)
    if model_name in SHIPPED or _folder_paths() is None:
        return load_model(model_name)
    found = _in_models_folder(model_name)
    if found is None:
        raise ModelLoadError(f"weights file {model_name!r} not found in models/{MODELS_FOLDER}")
    return load_weights_file(found)


def _in_models_folder(model_name: str) -> Path | None:
    """The file ``model_name`` names in ComfyUI's models/drcn folders, None where there is none
    (or outside ComfyUI)."""
    fp = _folder_paths()
    found = fp.get_full_path(MODELS_FOLDER, model_name) if fp is not None else None
    return Path(found) if found else None


def _file_stamp(path: Path | None) -> tuple[tuple[str, int, int], ...]:
    """Name, size and modification time of the weights file ``path``, or of each file in the
    model folder it is; empty for none (a shipped name, a Hub spec) or an unreadable one."""
    if path is None:
        return ()
    try:
        files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
        return tuple((p.name, (st := p.stat()).st_size, st.st_mtime_ns) for p in files)
    except OSError:
        return ()


class DRCNModelLoader:
    """Pick a DRCN model: shipped, a .safetensors file in models/drcn, or a Hub spec or path."""

    CATEGORY = CATEGORY
    RETURN_TYPES = (MODEL_TYPE,)
    RETURN_NAMES = ("drcn_model",)
    FUNCTION = "load"
    DESCRIPTION = ("Loads a DRCN super-resolution model: drcn-lite (fast, default), "
                   "drcn-lite-photo (JPEG and noisy photos), drcn (the paper's size), your "
                   ".safetensors files in models/drcn, or hf:owner/name.")

    @classmethod
    def INPUT_TYPES(cls) -> dict:  # noqa: N802 (ComfyUI's name)
        """The model list: shipped names, then the files in ComfyUI's models/drcn folder."""
        fp = _folder_paths()
        files = fp.get_filename_list(MODELS_FOLDER) if fp is not None else []
        return {
            "required": {
                "model_name": (list(SHIPPED) + files, {
                    "default": DEFAULT_MODEL,
                    "tooltip": "a shipped model or a .safetensors file from models/drcn"}),
            },
            "optional": {
                "hub_or_path": ("STRING", {
                    "default": "",
                    "tooltip": "hf:owner/name[@revision], a .safetensors file or a model folder; "
                               "overrides model_name when set"}),
                "denoise": ("FLOAT", {
                    "default": 0.0, "min": 0.0, "max": 1.0, "step": 0.05,
                    "tooltip": "0 = the model as chosen; above 0 blends a clean model toward its "
                               "photo variant (1 = the photo model), for JPEG and noisy photos"}),
            },
        }

    @classmethod
    def IS_CHANGED(cls, model_name: str | None, hub_or_path: str | None = "",  # noqa: N802
                   denoise: float | None = 0.0) -> str | float:
        """What ComfyUI compares between runs to reuse the loaded model: the choice and its local
        weights file's size and time, so a file written anew under its name (a model trained
        further) is loaded again, not the one cached at the first run."""
        # ComfyUI passes None for an input wired from another node: the file it names is unknown
        # here, so NaN (never equal to itself) reloads at each run
        if hub_or_path is None or (model_name is None and not pasted_path(hub_or_path)):
            return float("nan")
        spec = pasted_path(hub_or_path)
        path = local_path(spec) if spec \
            else _in_models_folder(model_name) if model_name not in SHIPPED else None
        return repr((model_name, spec, denoise, _file_stamp(path)))

    def load(self, model_name: str, hub_or_path: str = "", denoise: float = 0.0) -> tuple[DRCN]:
        """Resolve the choice to a DRCN module (on the CPU until the upscaler moves it)."""
        with user_errors():
            if denoise == 0:  # a negative or NaN strength goes on to load_denoised's refusal
                return (resolve_model(model_name, hub_or_path),)
            if pasted_path(hub_or_path):
                raise BadOptionError("a denoise strength blends a shipped model with its "
                                     "photo variant; clear hub_or_path or set denoise to 0")
            return (load_denoised(denoise, model_name),)


def upscale_batch(image: torch.Tensor, model: DRCN, scale: float, tile: int = 0,
                  self_ensemble: bool = False, mask: torch.Tensor | None = None,
                  width: int = 0, height: int = 0,
                  per_batch: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Upscale a ComfyUI IMAGE batch ``[B, H, W, C]`` (0..1) image by image through the engine.

    The output tensors are allocated once and filled ``per_batch`` frames at a time (0 = all), so
    a long video batch holds its upscaled frames once plus one step's worth. Returns
    ``(image, mask)``: the image keeps its channels (alpha included); the mask is the upscaled
    input mask, else ``1 - alpha`` of an RGBA image, else zeros.
    """
    if readable(image, "image").ndim != 4:
        raise BadImageError(f"expected an IMAGE batch [batch, height, width, channels], "
                            f"got shape {tuple(image.shape)}")
    if image.numel() == 0:
        raise BadImageError(f"the image is empty ({image.shape[2]}x{image.shape[1]} pixels, "
                            f"batch of {image.shape[0]})")
    if whole_number(per_batch) is None:
        raise BadOptionError(f"per_batch {per_batch!r} must be 0 (all frames) or a whole number "
                             "of frames", option="per_batch")
    count, h, w, channels = image.shape
    oh, ow = TargetSize.of(scale, width, height).resolve(h, w)
    alpha = mask_alpha(image, mask)
    has_mask = alpha is not None or channels in (2, 4)  # else the mask output is zeros
    step = min(whole_number(per_batch) or count, count)
    planes = channels + (alpha is not None)

    def frame(i: int) -> tuple[np.ndarray, np.ndarray | None]:
        return frame_input(image[i], None if alpha is None else alpha[i % len(alpha)])

    def fits(itemsize: int, held: int | None = None) -> None:
        # ``held``: bytes kept beside one upscale (its result is not encoded), by default the
        # whole output batch (image and mask planes, float32), the rest of one step's engine
        # results and the frame read for the engine (the mask's alpha is taken already)
        if held is None:
            held = (oh * ow * (count * (channels + 1) * 4 + (step - 1) * planes * itemsize)
                    + h * w * planes * itemsize)
        check_memory(h, w, planes, itemsize, size=(oh, ow), held=held, encoded=False,
                     what=f"a batch of {counted(count, 'frame')} of {ow}x{oh}")

    def wide(source: np.ndarray, apart: np.ndarray | None) -> bool:
        return source.dtype != np.uint8 or apart is not None  # float32 in the engine, or beside it

    fits(1)  # the least a batch takes: one that cannot fit is refused before a frame is read
    finite_frames(image)
    first = [frame(0)]  # read before the outputs are allocated: does the batch start at 4 bytes?
    widened = wide(*first[0])  # whether the batch has been checked at 4 bytes a value
    if widened:
        fits(4)
    out_image = torch.empty((count, oh, ow, channels))
    # a plane per frame even when unused: nodes downstream may write into a MASK in place
    out_mask = torch.empty((count, oh, ow)) if has_mask else torch.zeros((count, oh, ow))
    mm, cu = comfy_modules()
    comfy_device = mm.get_torch_device() if mm is not None else None
    device = engine_device(comfy_device) if comfy_device is not None else "auto"
    cancel = interrupt_check(mm) if mm is not None else None
    upscaler = None
    try:
        upscaler = Upscaler(model, device=device, precision=engine_precision(mm, device),
                            tile=tile, tta=self_ensemble)
        if mm is not None and device == str(comfy_device):  # not fallen back to the CPU
            mm.free_memory(mm.module_size(model) + upscaler.working_bytes_per_pixel()
                           * min(oh * ow, _WORKING_PIXELS), comfy_device)
        bar = cu.ProgressBar(count) if cu is not None else None
        retry = FreeOnce(mm if device == str(comfy_device) else None)
        for start in range(0, count, step):
            frames = range(start, min(start + step, count))
            results = []
            for i in frames:
                # read as it is upscaled, not in a pass over all frames first (no progress, no
                # Cancel); the first frame off the 8-bit grid rechecks the batch at its width
                source, apart = first.pop() if first else frame(i)
                if not widened and wide(source, apart):
                    # the outputs and this step's 8-bit results so far are taken already: count
                    # the rest of this step's results, or a later step's (which frees those)
                    made, later = i - start, step - 1 if frames.stop < count else 0
                    fits(4, oh * ow * planes * max(4 * (frames.stop - 1 - i), 4 * later - made))
                    widened = True
                job = {"size": (oh, ow), "progress": _batch_progress(bar, i, count),
                       "cancel": cancel, "fill_hidden": alpha is None}  # under a mask: content
                results.append((retry.run(upscaler.upscale, source, **job), None)
                               if apart is None
                               else retry.run(upscaler.upscale_with_alpha, source, apart, **job))
            for i, (result, apart) in zip(frames, results, strict=True):
                # written straight into the outputs: no float copy of the result beside them
                shown = min(channels, result.shape[-1])  # an alpha apart is not among them
                pixels = from_engine(result[..., :shown], out_image[i, ..., :shown]).clamp_(0, 1)
                if apart is not None:
                    alpha_out = torch.from_numpy(apart)
                elif shown < result.shape[-1]:  # the mask, carried as the result's last plane
                    alpha_out = from_engine(result[..., -1], out_mask[i]).clamp_(0.0, 1.0)
                else:
                    alpha_out = pixels[..., -1]
                if shown < channels:  # the image's own alpha came back apart
                    out_image[i, ..., -1] = alpha_out
                if has_mask:
                    torch.sub(1.0, alpha_out, out=out_mask[i])
            del results
    finally:
        del upscaler  # its half-precision copy of the model lives on the device
        if mm is not None:
            mm.soft_empty_cache()
    return out_image, out_mask


def _batch_progress(bar: object | None, index: int,
                    count: int) -> Callable[[int, int], None] | None:
    """The engine's progress hook for image ``index`` of ``count``, on one ComfyUI ProgressBar."""
    if bar is None:
        return None
    return lambda done, total: bar.update_absolute(index * total + done, count * total)


def interrupt_check(mm: ModuleType) -> Callable[[], bool]:
    """The engine's cancel hook: raises ComfyUI's own interrupt exception when Cancel is pressed."""
    def check() -> bool:
        mm.throw_exception_if_processing_interrupted()
        return False
    return check


class DRCNUpscale:
    """Upscale an IMAGE batch by any factor from 1 to 16 with DRCN (seamless tiles, any size)."""

    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("image", "mask")
    FUNCTION = "upscale"
    DESCRIPTION = ("Super-resolves the luminance with DRCN and resizes colour and alpha with "
                   "bicubic; any scale from 1 to 16, tiled to fit memory, Cancel stops between "
                   "tiles.")

    @classmethod
    def INPUT_TYPES(cls) -> dict:  # noqa: N802 (ComfyUI's name)
        """Image, model, scale, tile size and self-ensemble; optional: a mask that rides along,
        an exact width/height, and frames per step for long batches."""
        return {
            "required": {
                "image": ("IMAGE",),
                "drcn_model": (MODEL_TYPE,),
                "scale": ("FLOAT", {"default": 2.0, "min": MIN_SCALE, "max": MAX_SCALE,
                                    "step": 0.05, "round": False,  # typed: 3.3333 stays
                                    "tooltip": "output size = input size x scale, halves "
                                               "rounded up; "
                                               "ignored when width or height is set"}),
                "tile": ("INT", {"default": 0, "min": 0, "max": 4096,
                                 "tooltip": "tile size in pixels; 0 = measured once, cached"}),
                "self_ensemble": ("BOOLEAN", {"default": False,
                                              "tooltip": "average 8 flips/transposes (8x slower)"}),
            },
            "optional": {
                "mask": ("MASK", {"tooltip": "resized with the image (bicubic), returned as mask"}),
                "width": ("INT", {"default": 0, "min": 0, "max": MAX_SIDE, "step": 1,
                                  "tooltip": "exact output width; 0 = from scale (or from height, "
                                             "keeping the aspect ratio)"}),
                "height": ("INT", {"default": 0, "min": 0, "max": MAX_SIDE, "step": 1,
                                   "tooltip": "exact output height; 0 = from scale (or from "
                                              "width, keeping the aspect ratio)"}),
                "per_batch": ("INT", {"default": 16, "min": 0, "max": 4096,
                                      "tooltip": "frames upscaled per step before they are "
                                                 "written to the output (bounds memory on long "
                                                 "video batches); 0 = all at once"}),
            },
        }

    def upscale(self, image: torch.Tensor, drcn_model: DRCN, scale: float, tile: int,
                self_ensemble: bool, mask: torch.Tensor | None = None, width: int = 0,
                height: int = 0, per_batch: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the engine on every image of the batch; see ``upscale_batch``."""
        with user_errors():
            return upscale_batch(image, drcn_model, scale, tile, self_ensemble, mask, width,
                                 height, per_batch)


NODE_CLASS_MAPPINGS = {"DRCNModelLoader": DRCNModelLoader, "DRCNUpscale": DRCNUpscale}
NODE_DISPLAY_NAME_MAPPINGS = {"DRCNModelLoader": "DRCN Model Loader",
                              "DRCNUpscale": "DRCN Upscale"}
