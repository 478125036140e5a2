"""The colour pipeline around the network runs on the engine's device in row blocks; on the CPU it
must give what whole-plane bicubic and colour conversion give."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch

from drcn_plugin import planes
from drcn_plugin.engine import Upscaler
from drcn_plugin.imaging import imresize, rgb_to_ycbcr, ycbcr_to_rgb
from drcn_plugin.model import DRCN
from drcn_plugin.sizing import network_size


def reference(up: Upscaler, image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The plain path: whole planes on the CPU, one bicubic per plane, then convert and round."""
    x, kind = planes.to_planes(image)
    planes.fill_transparent(x)
    peak = planes.PEAKS.get(np.dtype(kind))
    ycc = torch.cat([rgb_to_ycbcr(x[:3]), x[3:]])
    work = network_size(*x.shape[1:], *size)
    ilr = imresize(ycc[0], size=work)
    if peak is not None:
        ilr = (ilr * peak).round().clamp(0, peak) / peak
    y = up.run_y(ilr)
    y = imresize(y, size=size) if work != size else y
    out = torch.stack([y] + [imresize(p, size=size) for p in ycc[1:]])
    out = torch.cat([ycbcr_to_rgb(out[:3]), out[3:]]).permute(1, 2, 0)
    if peak is None:  # float: colour held to the input's range widened to 0..1, alpha to 0..1
        lo, hi = min(0.0, float(x[:3].min())), max(1.0, float(x[:3].max()))
        return torch.cat([out[..., :3].clamp(lo, hi), out[..., 3:].clamp(0, 1)], -1).numpy()
    return (out.clamp(0, 1) * peak).round().numpy().astype(kind)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("block", [planes.BLOCK_PIXELS, 300])
@pytest.mark.parametrize(("scale", "size"), [(2.5, (73, 93)), (3.0, (87, 111))])
def test_blocks_on_the_device_equal_whole_planes(monkeypatch: pytest.MonkeyPatch, dtype,
                                                 block: int, scale: float,
                                                 size: tuple[int, int]) -> None:
    monkeypatch.setattr(planes, "BLOCK_PIXELS", block)  # 300: blocks of 3-4 rows
    torch.manual_seed(0)
    up = Upscaler(DRCN(features=8, recursions=3), device="cpu", precision="fp32", tile=24)
    rng = np.random.default_rng(0)
    image = rng.random((29, 37, 4))
    if dtype != np.float32:
        image = (image * np.iinfo(dtype).max).round().astype(dtype)
    else:
        image = image.astype(np.float32)
    out = up.upscale(image, scale)
    want = reference(up, image, size)
    assert out.dtype == want.dtype and out.shape == (*size, 4)
    if dtype == np.float32:
        assert np.abs(out - want).max() <= 1e-6
    else:
        assert np.abs(out.astype(int) - want).max() <= 1 and (out == want).mean() >= 0.9999


def test_row_blocks_cover_the_plane_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(planes, "BLOCK_PIXELS", 1000)
    blocks = planes.row_blocks(101, 300)
    assert blocks[0] == (0, 3) and blocks[-1] == (99, 101)
    assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:], strict=False))
    assert planes.row_blocks(5, 10_000) == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]


def test_hidden_pixels_take_a_mean_of_the_visible_colours_whatever_the_alpha() -> None:
    # float alpha a little under 0 or over 1 (ringing from an earlier resize) weighed the
    # means with negative weights: hidden pixels got colours far outside the visible ones
    # (-0.7..1.8 from colours in 0..1), which bicubic then spread into the visible edge
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((4, 16, 16), dtype=np.float32))
    x[3, :, :8] = torch.from_numpy(rng.choice([1.0, 1.02], (16, 8)).astype(np.float32))
    x[3, :, 8:] = torch.from_numpy(rng.choice([-1e-3, 2e-3, 0.0], (16, 8)).astype(np.float32))
    visible = x[:3][:, x[3] > 0]
    filled = planes.fill_transparent(x.clone())[:3]
    low, high = visible.min(dim=1).values, visible.max(dim=1).values
    assert ((filled >= low[:, None, None]) & (filled <= high[:, None, None])).all()


@pytest.mark.parametrize("dtype", [np.uint16, np.float32, np.float64])
@pytest.mark.parametrize("within", [None, (0.1, 0.8)])
def test_levels_made_by_row_blocks_are_the_whole_image_formulas(
        monkeypatch: pytest.MonkeyPatch, dtype, within) -> None:
    """Quantising a block of rows at a time gives the levels of the whole-image formulas:
    16-bit divided by 257, floats clipped (to ``within``, then 0..1), scaled and rounded."""
    monkeypatch.setattr(planes, "CONVERT_SAMPLES", 1000)  # blocks of 2 rows, the last 1
    rng = np.random.default_rng(0)
    if dtype == np.uint16:  # every 16-bit value
        image = rng.permutation(np.arange(1 << 16, dtype=np.uint16)).reshape(-1, 128, 2)
        assert (planes.to_8bit(image) == (image / 257.0).round()).all()
        return
    image = rng.uniform(-0.2, 1.2, (37, 150, 3)).astype(dtype)
    image[0, :, 0] = (np.arange(150) + 0.5) / 255  # halfway between levels
    clipped = image if within is None else np.clip(image, *within)
    for kind, peak in ((np.uint8, 255.0), (np.uint16, 65535.0)):
        got = planes.quantised(image, np.dtype(kind), within)
        assert got.dtype == kind
        assert (got == (np.clip(clipped, 0, 1) * peak).round().astype(kind)).all()


def test_a_float_colour_result_becomes_8_bit_without_whole_image_float_copies() -> None:
    """Float colour becomes 8-bit a block of rows at a time, beside the result only, not
    through whole-image float temporaries (clipped, scaled, rounded: 24 bytes a pixel beside a
    float32 RGB result, over a GiB for a 48 MP one)."""
    image = np.random.default_rng(1).uniform(0, 1, (1000, 2000, 3)).astype(np.float32)
    tracemalloc.start()
    try:
        out = planes.to_8bit(image)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.dtype == np.uint8 and peak < out.nbytes + image.nbytes / 4, peak
