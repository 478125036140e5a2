"""Scores of a training's weights: its validations and the measurement of its exported file (fp32,
per folder and scale), summed up for the log and the model card."""

from __future__ import annotations

from pathlib import Path

import torch

from ..degrade import Recipe
from ..engine import Upscaler
from ..evaluation import ScaleResult, evaluate
from ..hub import load_model, sha256_of
from ..model import DRCN


def _scores(model: DRCN, folder: str, scales: list[int], device: torch.device,
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


def validation(model: DRCN, folder: str | None, scales: list[int], device: torch.device,
               degrade: Recipe | None) -> dict:
    """``val_psnr`` (mean over scales, None without a validation folder) and, if measured,
    ``val_psnr_per_scale`` (``{"3": dB, ...}``): the keys a history row gets."""
    if not folder:
        return {"val_psnr": None}
    res = _scores(model, folder, scales, device, strict_fp32=False, degrade=degrade)
    per_scale = {str(s): r.psnr for s, r in res.items()}
    return {"val_psnr": sum(per_scale.values()) / len(per_scale), "val_psnr_per_scale": per_scale}


def measured_export(weights: Path, folders: list[str], scales: list[int], device: torch.device,
                    degrade: Recipe | None, baseline: DRCN | None) -> dict:
    """The log's entries for exported ``weights``: its name and checksum, and the summed-up
    strict-fp32 scores of exactly what was written, and of ``baseline``, on ``folders``."""
    model = load_model(str(weights)).to(device)
    return {"weights": weights.name, "sha256": sha256_of(weights),
            "measured": _summary(_measure(model, folders, scales, device, degrade)),
            "baseline": _summary(_measure(baseline.to(device), folders, scales, device, degrade))
            if baseline is not None else {}}


def _measure(model: DRCN, folders: list[str], scales: list[int], device: torch.device,
             degrade: Recipe | None) -> dict[str, dict[int, ScaleResult]]:
    """Strict-fp32 scores on each folder, clean and (if validating so) degraded."""
    out = {f: _scores(model, f, scales, device, True) for f in folders}
    if degrade is not None:
        out |= {f"{f} [{degrade}]": _scores(model, f, scales, device, True, degrade)
                for f in folders}
    return out


def _summary(results: dict[str, dict[int, ScaleResult]]) -> dict:
    """Per dataset (its folder's name, or its path where two share a name) and scale: PSNR/SSIM
    and bicubic's, without the per-image rows."""
    keys = ("psnr", "ssim", "bicubic_psnr", "bicubic_ssim")
    names = [Path(ds).name for ds in results]
    return {name if names.count(name) == 1 else ds:
            {str(s): {k: getattr(r, k) for k in keys} for s, r in res.items()}
            for name, (ds, res) in zip(names, results.items(), strict=True)}
