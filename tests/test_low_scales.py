"""Factors the shipped models were not trained at: the network runs at the next whole factor up
within x2-x4 and bicubic takes its result to the size (run at x1.5 or x6 itself, it is no
better than bicubic); x1 is the input itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import DATA, seeded_drcn

from drcn_plugin import Upscaler
from drcn_plugin.imagefile import read_y
from drcn_plugin.imaging import imresize, quantize8
from drcn_plugin.memory import memory_needed
from drcn_plugin.metrics import psnr
from drcn_plugin.planes import interpolated_y
from drcn_plugin.sizing import network_size


@pytest.fixture(scope="module")
def lite() -> Upscaler:
    return Upscaler("drcn-lite", device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def butterfly_y() -> torch.Tensor:
    return read_y(DATA / "Set5" / "butterfly.png")[40:184, 40:184]


@pytest.mark.parametrize(("scale", "over_at_factor"), [(1.25, 3.0), (1.75, 0.5), (2.5, 0.5),
                                                       (6.0, 1.0)])
def test_untrained_factors_beat_bicubic_and_the_network_run_at_them(
        lite: Upscaler, butterfly_y: torch.Tensor, scale: float, over_at_factor: float) -> None:
    hr = butterfly_y
    size = tuple(hr.shape)
    lr = quantize8(imresize(hr, size=(round(size[0] / scale), round(size[1] / scale))))
    bicubic = quantize8(imresize(lr, size=size))
    at_factor = quantize8(lite.run_y(interpolated_y(lr / 255.0, size, 255.0)).double() * 255.0)
    out = torch.from_numpy(lite.upscale(lr.numpy().astype(np.uint8), size=size)).double()
    assert psnr(out, hr, 3) > psnr(bicubic, hr, 3) + 0.5
    assert psnr(out, hr, 3) > psnr(at_factor, hr, 3) + over_at_factor


@pytest.mark.parametrize("image", [np.arange(60, dtype=np.uint8).reshape(5, 4, 3),
                                   np.linspace(-0.5, 2, 40, dtype=np.float32).reshape(5, 4, 2),
                                   np.arange(20, dtype=np.uint16).reshape(5, 4)])
def test_x1_is_the_input_itself(image: np.ndarray) -> None:
    up = Upscaler(seeded_drcn(), device="cpu")
    want = image.copy()
    if image.dtype == np.float32:  # float alpha is held to 0..1, as at every other size
        want[..., -1] = want[..., -1].clip(0, 1)
    calls: list[tuple[int, int]] = []
    for out in (up.upscale(image, 1.0, progress=lambda *a: calls.append(a)),
                up.upscale(image, size=image.shape[:2])):
        assert out.dtype == image.dtype and np.array_equal(out, want)
        assert not np.shares_memory(out, image)
    assert calls == [(1, 1)]  # a host's progress bar still completes


def test_the_network_runs_at_the_next_whole_factor_within_2_to_4() -> None:
    assert network_size(10, 20, 15, 25) == (20, 40)
    assert network_size(10, 20, 15, 60) == (20, 60)  # x3 across stays x3
    assert network_size(10, 20, 30, 60) == (30, 60)
    assert network_size(10, 20, 25, 50) == (30, 60)  # x2.5 runs at x3
    assert network_size(10, 20, 41, 160) == (40, 80)  # past x4: x4, bicubic the rest
    assert network_size(100, 100, 205, 206) == (200, 300)  # up to 0.05 over x2 stays at x2
    assert network_size(256, 255, 512, 512) == (512, 510)  # an odd side's exact x2 target
    # the network's two float planes at 200x200 come on top of the 150x150 result's planes
    assert memory_needed(100, 100, 1, 1, (150, 150)) >= 8 * 200 * 200 + 150 * 150 * (4 * 4 + 3)
