"""The paper's evaluation protocol over a folder of images (what ``drcn eval`` and training run)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from .degrade import Recipe, degraded_pair, image_y, seed_for
from .engine import Upscaler
from .errors import BadImageError, DRCNError
from .imagefile import read_image
from .imaging import make_pair, quantize8
from .metrics import psnr, ssim

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    if not folder.is_dir():
        raise DRCNError(f"dataset folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DRCNError(f"no images in {folder}")
    return files


def load_image8(path: Path) -> torch.Tensor:
    """An image file as 8-bit levels (0..255, float64): ``[3, H, W]`` RGB, or ``[H, W]`` if grey.

    16-bit and float files are reduced to 8 bits by scaling (never clipping); alpha is ignored.
    """
    array, _ = read_image(path)
    if array.dtype == np.uint16:
        array = np.round(array / 257.0)
    elif array.dtype != np.uint8:
        array = np.round(np.clip(array, 0, 1) * 255.0)
    if array.ndim == 3:
        array = array[..., :3] if array.shape[2] >= 3 else array[..., 0]
    a = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64))
    return a if a.dim() == 2 else a.permute(2, 0, 1)


def load_y(path: Path) -> torch.Tensor:
    """Protocol step 1: an image file as its 8-bit Y plane (0..255, float64); grey stays as is."""
    return image_y(load_image8(path))


def is_results_file(path: Path) -> bool:
    """True when ``path`` holds results as :func:`evaluate` returns them (safe to replace)."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and bool(data) and all(
        isinstance(v, dict) and "psnr" in v for v in data.values())


def _check_size(name: str, image: torch.Tensor, scale: int) -> None:
    """The protocol shaves ``scale`` pixels and SSIM needs an 11x11 window in what is left."""
    need = 2 * scale + 11
    h, w = image.shape[-2:]
    if min(h - h % scale, w - w % scale) < need:
        raise BadImageError(f"{name} is {w}x{h}: too small to score at x{scale} "
                            f"(at least {need}x{need} pixels)")


def evaluate(upscaler: Upscaler | None, folder: Path, scales: Sequence[int],
             per_depth: bool = False,
             on_image: Callable[[int, str], None] | None = None,
             degrade: Recipe | None = None) -> dict[str, dict]:
    """PSNR/SSIM (dataset means) per scale; ``upscaler=None`` scores bicubic alone.

    With ``degrade``, each low-resolution image is degraded by the recipe (seeded by image name
    and scale, so the table is reproducible) before it is enlarged; see :mod:`.degrade`.

    Returns ``{"3": {"psnr", "ssim", "bicubic_psnr", "bicubic_ssim", "seconds_per_image",
    "images": {name: {...}}, ["depth_psnr": [...], "ensemble_psnr": ...]}}``.
    """
    files = list_images(folder)
    hrs = [(p.stem, load_y(p) if degrade is None else load_image8(p)) for p in files]
    for (_, image), p in zip(hrs, files):
        for s in scales:
            _check_size(str(p), image, s)
    results: dict[str, dict] = {}
    for s in scales:
        rows: dict[str, dict] = {}
        for name, image in hrs:
            if degrade is None:
                hr, _, ilr = make_pair(image, s)
            else:
                gen = torch.Generator().manual_seed(seed_for(name, s))
                hr, ilr = degraded_pair(image, s, degrade, gen)
            row = {"bicubic_psnr": psnr(ilr, hr, s), "bicubic_ssim": ssim(ilr, hr, s)}
            if upscaler is None:
                row.update(psnr=row["bicubic_psnr"], ssim=row["bicubic_ssim"], seconds=0.0)
            else:
                t0 = time.perf_counter()
                sr = quantize8(upscaler.run_y(ilr / 255.0).double() * 255.0)
                row.update(psnr=psnr(sr, hr, s), ssim=ssim(sr, hr, s),
                           seconds=time.perf_counter() - t0)
                if per_depth:
                    row.update(_depth_scores(upscaler, ilr, hr, s))
            rows[name] = row
            if on_image is not None:
                on_image(s, name)
        keys = [k for k in next(iter(rows.values())) if k not in ("seconds",)]
        summary = {k: _mean([r[k] for r in rows.values()]) for k in keys}
        summary["seconds_per_image"] = float(np.mean([r["seconds"] for r in rows.values()]))
        summary["images"] = rows
        results[str(s)] = summary
    return results


def _mean(values: list):
    if isinstance(values[0], list):
        return [float(np.mean(col)) for col in zip(*values)]
    return float(np.mean(values))


@torch.inference_mode()
def _depth_scores(upscaler: Upscaler, ilr: torch.Tensor, hr: torch.Tensor, s: int) -> dict:
    """PSNR of every depth's prediction and of the ensemble (the paper's recursion study)."""
    model = upscaler.model
    x = (ilr / 255.0).float()[None, None].to(upscaler.device)
    ens, preds = model(x, all_depths=True)
    to8 = lambda t: quantize8(t[0, 0].double().cpu() * 255.0)  # noqa: E731
    return {"depth_psnr": [psnr(to8(p), hr, s) for p in preds],
            "ensemble_psnr": psnr(to8(ens), hr, s)}
