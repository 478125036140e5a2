"""PSNR, SSIM and shave as the evaluation protocol defines them."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from helpers import PEAK_KIB

from drcn_plugin.metrics import psnr, shave, ssim


def image(seed: int = 0, shape=(40, 48)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    smooth = torch.nn.functional.avg_pool2d(torch.rand(1, 1, *shape, generator=g, dtype=torch.float64),
                                            5, 1, 2)[0, 0]
    return (smooth * 255).round()


def test_psnr_of_a_known_mse():
    a = torch.zeros(10, 10)
    b = a.clone()
    b[:, :5] = 2  # half the pixels off by 2: MSE = 2
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 2), abs=1e-12)
    assert psnr(a, a + 1) == pytest.approx(20 * math.log10(255), abs=1e-12)  # 48.13 dB
    assert psnr(a, a + 1, peak=1.0) == pytest.approx(0.0, abs=1e-12)


def test_psnr_identical_is_inf():
    x = image()
    assert psnr(x, x) == math.inf


def test_psnr_border_is_shaved():
    a = torch.zeros(12, 12)
    b = a.clone()
    b[:2, :] = 50  # errors only within 2 px of the edge
    b[:, -1] = 50
    assert math.isfinite(psnr(a, b, border=1))
    assert psnr(a, b, border=2) == math.inf
    c = b.clone()
    c[6, 6] = 3  # one error inside: MSE = 9 / 64 over the 8 x 8 centre
    assert psnr(a, c, border=2) == pytest.approx(10 * math.log10(255**2 * 64 / 9), abs=1e-12)


def test_shave_shapes():
    x = torch.arange(10 * 12).reshape(10, 12)
    assert torch.equal(shave(x, 2), x[2:8, 2:10])
    assert shave(x, 0) is x
    assert shave(torch.zeros(3, 9, 9), 3).shape == (3, 3, 3)


def test_ssim_identical_is_one():
    x = image()
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-12)
    assert ssim(x, x, border=3) == pytest.approx(1.0, abs=1e-12)


def test_ssim_of_constant_planes():
    # No variance: SSIM = (2 mx my + C1) / (mx^2 + my^2 + C1), C1 = (0.01 * 255)^2.
    c1 = (0.01 * 255) ** 2
    expected = (2 * 100 * 110 + c1) / (100**2 + 110**2 + c1)
    assert ssim(torch.full((20, 20), 100.0), torch.full((20, 20), 110.0)) == pytest.approx(
        expected, abs=1e-12)


def test_ssim_decreases_with_noise():
    x = image()
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(x.shape, generator=g, dtype=torch.float64)
    scores = [ssim(x, (x + sigma * noise).clamp(0, 255)) for sigma in (2, 8, 25)]
    assert 1 > scores[0] > scores[1] > scores[2] > 0


def test_ssim_is_symmetric_and_ignores_the_shaved_border():
    x, y = image(0), image(1)
    assert ssim(x, y) == pytest.approx(ssim(y, x), abs=1e-12)
    z = x.clone()
    z[:4, :] = 0
    assert ssim(x, z) < 1
    assert ssim(x, z, border=4) == pytest.approx(1.0, abs=1e-12)


def test_ssim_is_the_dense_11x11_gaussian_window_of_the_protocol():
    # The protocol's definition written out with a dense 2-D window, on an uneven shape.
    x, y = image(2, (37, 52)), image(3, (37, 52))
    t = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-t * t / (2 * 1.5**2))
    w = (g[:, None] * g[None, :] / g.sum() ** 2)[None, None]
    blur = lambda p: torch.nn.functional.conv2d(p[None, None], w)[0, 0]  # noqa: E731
    a, b = shave(x, 2), shave(y, 2)
    mx, my = blur(a), blur(b)
    sxx, syy, sxy = blur(a * a) - mx**2, blur(b * b) - my**2, blur(a * b) - mx * my
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    expected = ((2 * mx * my + c1) * (2 * sxy + c2)
                / ((mx**2 + my**2 + c1) * (sxx + syy + c2))).mean()
    assert ssim(x, y, border=2) == pytest.approx(float(expected), abs=1e-12)


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="reads /proc/self/status")
def test_ssim_of_a_large_plane_needs_a_few_planes_of_memory():
    # A dense 11x11 window unfolds every pixel 121 times (about 23 GB for a 24 MP ground truth).
    code = ("import torch; from drcn_plugin.metrics import ssim; torch.set_num_threads(1);"
            "x = torch.rand(1500, 2000, dtype=torch.float64) * 255; y = x.flip(0);"
            f"before = {PEAK_KIB}; ssim(x, y, 4); print({PEAK_KIB} - before)")
    grown_kib = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                   check=True).stdout)
    plane_kib = 1500 * 2000 * 8 / 1024
    assert grown_kib < 16 * plane_kib
