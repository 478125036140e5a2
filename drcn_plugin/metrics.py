"""PSNR and SSIM exactly as the evaluation protocol defines them (Y only, shaved border)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def shave(x: torch.Tensor, border: int) -> torch.Tensor:
    """Drop ``border`` pixels on every side (the protocol ignores a border of s pixels)."""
    return x[..., border: x.shape[-2] - border, border: x.shape[-1] - border] if border else x


def psnr(a: torch.Tensor, b: torch.Tensor, border: int = 0, peak: float = 255.0) -> float:
    """PSNR in dB between two planes on the 0..peak scale, ignoring ``border`` pixels."""
    d = shave(a.double(), border) - shave(b.double(), border)
    mse = float((d * d).mean())
    return math.inf if mse == 0 else 10 * math.log10(peak * peak / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    g = torch.exp(-((torch.arange(size, dtype=torch.float64) - size // 2) ** 2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(a: torch.Tensor, b: torch.Tensor, border: int = 0, peak: float = 255.0) -> float:
    """Wang et al. SSIM: 11x11 Gaussian (sigma 1.5), K1 0.01, K2 0.03, valid region, mean."""
    x = shave(a.double(), border)[None, None] if a.dim() == 2 else shave(a.double(), border)
    y = shave(b.double(), border)[None, None] if b.dim() == 2 else shave(b.double(), border)
    w = _gaussian_window().to(x.device)
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    mx, my = F.conv2d(x, w), F.conv2d(y, w)
    sxx = F.conv2d(x * x, w) - mx * mx
    syy = F.conv2d(y * y, w) - my * my
    sxy = F.conv2d(x * y, w) - mx * my
    m = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(m.mean())
