"""Scores of a training's weights: validation and the final measurement (fp32, per folder and
scale), and their summary for the log and the model card."""

from __future__ import annotations

from pathlib import Path

import torch

from ..degrade import Recipe
from ..engine import Upscaler
from ..evaluation import ScaleResult, evaluate
from ..model import DRCN


def scores(model: DRCN, folder: str, scales: list[int], device: torch.device,
           strict_fp32: bool, degrade: Recipe | None = None) -> dict[int, ScaleResult]:
    """``evaluation.evaluate`` on the bare model in fp32 (TF32 off when ``strict_fp32``).

    cuDNN autotuning is off meanwhile: every image size would otherwise be tuned anew.
    """
    flags = torch.backends.cudnn
    saved = (flags.benchmark, flags.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    flags.benchmark = False
    if strict_fp32:
        flags.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        return evaluate(Upscaler(model, device=str(device), precision="fp32"), Path(folder), scales,
                        degrade=degrade)
    finally:
        flags.benchmark, flags.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def measure(model: DRCN, folders: list[str], scales: list[int], device: torch.device,
            degrade: Recipe | None) -> dict[str, dict[int, ScaleResult]]:
    """Strict-fp32 scores on each folder, clean and (if validating so) degraded."""
    out = {f: scores(model, f, scales, device, True) for f in folders}
    if degrade is not None:
        out |= {f"{f} [{degrade}]": scores(model, f, scales, device, True, degrade)
                for f in folders}
    return out


def summary(results: dict[str, dict[int, ScaleResult]]) -> dict:
    """Per dataset (its folder's name, or its path where two share a name) and scale: PSNR/SSIM
    and bicubic's, without the per-image rows."""
    keys = ("psnr", "ssim", "bicubic_psnr", "bicubic_ssim")
    names = [Path(ds).name for ds in results]
    return {name if names.count(name) == 1 else ds:
            {str(s): {k: getattr(r, k) for k in keys} for s, r in res.items()}
            for name, (ds, res) in zip(names, results.items(), strict=True)}
