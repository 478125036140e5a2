"""The memory a training run needs, estimated before its patches and batches are allocated.

Images or options that cannot fit (a folder of large photos, a huge ``--batch``, ``--stride 1``
on a real folder) would otherwise allocate until the system kills the process with no message;
:func:`check_fits` refuses them in one line naming what to change. The estimate leans low, so
that a run that fits is never refused: measured on a CPU, making the patches takes what
:func:`patch_set_bytes` says (1.00x), and a step of F=8..64, D=3..16 takes 1.0-1.8x
:func:`step_bytes` (near 1.0x for large batches, more for small ones, whose convolution scratch
is left out).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from ..devices import available_memory
from ..errors import BadOptionError, OutOfMemoryError, memory_size
from ..imagefile import image_shape8
from .config import TrainConfig
from .data import PatchSet, check_sizes, count_patches, image_files, load_images, make_patches


def patch_set_bytes(cfg: TrainConfig, shapes: Sequence[Sequence[int]]) -> int:
    """Bytes of the patch set cut from images of these shapes: uint8 ILR and HR patches and one
    clean flag each (``--degrade-copies`` draws of every pair with ``--degrade``)."""
    copies = cfg.degrade_copies if cfg.degrade else 1
    n = count_patches(shapes, cfg.scales, cfg.patch, cfg.stride, cfg.downscales, copies)
    return n * (2 * cfg.patch**2 + 1)


def step_bytes(cfg: TrainConfig, batch: int, itemsize: int) -> int:
    """Bytes one training step of ``batch`` patches holds at least: per pixel, the F-channel maps
    backward keeps (two per recursion, three more) and the gradients it holds at once (three),
    in ``itemsize`` bytes (2 under bf16 autocast), and a few float planes (each depth's
    prediction, the batch). The convolutions' own scratch, which depends on torch's choice of
    kernel, is left out."""
    per_pixel = itemsize * cfg.features * (2 * cfg.recursions + 6) + 4 * (cfg.recursions + 6)
    return batch * cfg.patch**2 * per_pixel


# Working memory of cutting one image's pairs (float64 copies, resizes, the degradation), per
# pixel of the largest image: measured 117 (clean) and 190 (degraded colour) bytes on a 6 MP
# RGB image, counted a little low so that a run that fits is never refused.
_CUT_BYTES_PER_PIXEL = {False: 110, True: 180}


def images_bytes(shapes: Sequence[Sequence[int]], degrade: bool = False) -> int:
    """Bytes the training images take while the patches are cut: the 8-bit levels as loaded,
    and the work of cutting the largest one."""
    largest = max((math.prod(shape[-2:]) for shape in shapes), default=0)
    return sum(math.prod(shape) for shape in shapes) + _CUT_BYTES_PER_PIXEL[degrade] * largest


def check_fits(cfg: TrainConfig, shapes: Sequence[Sequence[int]], device: torch.device,
               world: int, bf16: bool, resumed: bool = False) -> None:
    """Refuse a run whose images (``shapes`` as :func:`.data.load_images` gives them), patch set
    and one step (this process's share of the batch) need more memory than ``device`` has free,
    in one line naming the option to change.

    A new run gets a :class:`BadOptionError` naming ``batch``, ``stride`` or ``data`` (whichever
    needs the most); a resumed run keeps its checkpoint's options, so it gets an
    :class:`OutOfMemoryError` saying so. On the CPU every process of a torchrun job on this host
    holds its own images and patch set; on a GPU the images stay in host memory.
    """
    patches = patch_set_bytes(cfg, shapes)
    step = step_bytes(cfg, -(-cfg.batch // world), 2 if bf16 else 4)
    images = images_bytes(shapes, bool(cfg.degrade))
    host = available_memory(torch.device("cpu")) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if device.type != "cpu" and images > host:  # a GPU run holds its images in host memory
        message = (f"the images need ~{memory_size(images)} of host memory, "
                   f"{memory_size(host)} is free")
        if resumed:
            raise OutOfMemoryError(f"{message}: free memory or resume on another machine")
        raise BadOptionError(f"{message}: train on fewer or smaller images", option="data")
    free, held = (host, images) if device.type == "cpu" else (available_memory(device), 0)
    if patches + max(held, step) <= free:  # the images are gone before the first step
        return
    parts = [f"the images ~{memory_size(held)} (then freed)"] * bool(held) + [
        f"the patches ~{memory_size(patches)}",
        f"one step of a batch of {cfg.batch} ~{memory_size(step)}"]
    need = f"{', '.join(parts[:-1])} and {parts[-1]}".replace(" ~", " need ~", 1) + \
        f"; {memory_size(free)} is free"
    if resumed:
        raise OutOfMemoryError(f"{need}: a resumed run keeps its options; free memory, resume on "
                               "another device, or start a new run with a larger stride or a "
                               "smaller batch")
    if held >= max(step, patches):
        raise BadOptionError(f"{need}: train on fewer or smaller images", option="data")
    if step > patches:
        raise BadOptionError(f"{need}: lower the batch (or the patch size, features or "
                             "recursions)", option="batch")
    fewer = "fewer training folders" + (" or degraded copies" if cfg.degrade else "")
    raise BadOptionError(f"{need}: raise the stride or use {fewer}", option="stride")


def fitting_patches(cfg: TrainConfig, device: torch.device, world: int, bf16: bool,
                    resumed: bool = False) -> PatchSet:
    """The run's patch set on ``device``, made once :func:`check_fits` has found room for it and
    for the images, whose sizes are read from the files' headers first (an image smaller than
    a patch is named before the memory a patch that large would take)."""
    files = image_files([Path(p) for p in cfg.data])
    shapes = [image_shape8(p) for p in files]
    check_sizes([(str(p), shape) for p, shape in zip(files, shapes, strict=True)], cfg.patch,
                cfg.scales)
    check_fits(cfg, shapes, device, world, bf16, resumed)
    return make_patches(load_images(files), cfg.scales, cfg.patch, cfg.stride, cfg.downscales,
                        device, cfg.recipes()[0], cfg.degrade_copies, cfg.seed)
