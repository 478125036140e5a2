"""Factors below x2: the network runs at x2 and its result is shrunk to the size asked for (it
over-sharpens a bicubic image enlarged less than it was trained for); x1 is the input itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import DATA, seeded_drcn
from PIL import Image

from drcn_plugin import Upscaler
from drcn_plugin.engine import memory_needed, network_size
from drcn_plugin.imaging import imresize, protocol_y
from drcn_plugin.metrics import psnr


@pytest.fixture(scope="module")
def lite() -> Upscaler:
    return Upscaler("drcn-lite", device="cpu", precision="fp32")


def _y_psnr(a: np.ndarray, b: np.ndarray) -> float:
    to_y = lambda x: protocol_y(torch.from_numpy(x).permute(2, 0, 1).double())  # noqa: E731
    return psnr(to_y(a), to_y(b), border=3)


@pytest.mark.parametrize("scale", [1.1, 1.25, 1.5, 1.75])
def test_low_scales_beat_bicubic(lite: Upscaler, scale: float) -> None:
    hr = np.asarray(Image.open(DATA / "Set5" / "butterfly.png").convert("RGB"))[60:156, 60:156]
    h, w = hr.shape[:2]
    small = (round(h / scale), round(w / scale))
    t = torch.from_numpy(hr).permute(2, 0, 1).double()
    lr = imresize(t, size=small).round().clamp(0, 255)
    bicubic = imresize(lr, size=(h, w)).round().clamp(0, 255).permute(1, 2, 0).numpy()
    out = lite.upscale(lr.permute(1, 2, 0).numpy().astype(np.uint8), size=(h, w))
    assert _y_psnr(out, hr) > _y_psnr(bicubic.astype(np.uint8), hr) + 0.5


@pytest.mark.parametrize("image", [np.arange(60, dtype=np.uint8).reshape(5, 4, 3),
                                   np.linspace(-0.5, 2, 40, dtype=np.float32).reshape(5, 4, 2),
                                   np.arange(20, dtype=np.uint16).reshape(5, 4)])
def test_x1_is_the_input_itself(image: np.ndarray) -> None:
    up = Upscaler(seeded_drcn(), device="cpu")
    for out in (up.upscale(image, 1.0), up.upscale(image, size=image.shape[:2])):
        assert out.dtype == image.dtype and np.array_equal(out, image)
        assert not np.shares_memory(out, image)


def test_the_network_runs_at_x2_at_least_on_each_side() -> None:
    assert network_size(10, 20, 15, 25) == (20, 40)
    assert network_size(10, 20, 15, 60) == (20, 60)  # x3 across stays x3
    assert network_size(10, 20, 30, 60) == (30, 60)
    # the network's two float planes at 200x200 come on top of the 150x150 result's planes
    assert memory_needed(100, 100, 1, 1, scale=1.5) >= 8 * 200 * 200 + 150 * 150 * (4 * 4 + 3)
