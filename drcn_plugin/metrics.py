"""PSNR and SSIM exactly as the evaluation protocol defines them (Y only, shaved border)."""

from __future__ import annotations

import math

import torch


def shave(x: torch.Tensor, border: int) -> torch.Tensor:
    """Drop ``border`` pixels on every side (the protocol ignores a border of s pixels)."""
    return x[..., border: x.shape[-2] - border, border: x.shape[-1] - border] if border else x


def psnr(a: torch.Tensor, b: torch.Tensor, border: int = 0, peak: float = 255.0) -> float:
    """PSNR in dB between two planes on the 0..peak scale, ignoring ``border`` pixels."""
    d = shave(a.double(), border) - shave(b.double(), border)
    mse = float((d * d).mean())
    return math.inf if mse == 0 else 10 * math.log10(peak * peak / mse)


def _gaussian_taps() -> list[float]:
    """SSIM's window: 11 taps of a Gaussian of sigma 1.5, summing to 1."""
    size, sigma = 11, 1.5
    g = torch.exp(-((torch.arange(size, dtype=torch.float64) - size // 2) ** 2) / (2 * sigma**2))
    return (g / g.sum()).tolist()


def _blur(x: torch.Tensor, taps: list[float]) -> torch.Tensor:
    """Valid-region separable Gaussian as sums of shifted views: memory stays a few planes, where a
    dense 11x11 convolution unfolds each pixel 121 times (23 GB for a 24 MP float64 plane)."""
    n = len(taps)
    rows = sum(t * x[..., k: x.shape[-2] - n + 1 + k, :] for k, t in enumerate(taps))
    return sum(t * rows[..., k: rows.shape[-1] - n + 1 + k] for k, t in enumerate(taps))


def ssim(a: torch.Tensor, b: torch.Tensor, border: int = 0, peak: float = 255.0) -> float:
    """Wang et al. SSIM: 11x11 Gaussian (sigma 1.5), K1 0.01, K2 0.03, valid region, mean."""
    x, y = shave(a.double(), border), shave(b.double(), border)
    taps = _gaussian_taps()
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    mx, my = _blur(x, taps), _blur(y, taps)
    sxx = _blur(x * x, taps) - mx * mx
    syy = _blur(y * y, taps) - my * my
    sxy = _blur(x * y, taps) - mx * my
    m = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(m.mean())
