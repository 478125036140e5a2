"""MATLAB imresize, BT.601 studio-swing colour, modcrop and the protocol's LR/ILR pairs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from drcn_plugin.imaging import imresize, make_pair, modcrop, protocol_y, rgb_to_ycbcr, ycbcr_to_rgb

# Keys' cubic (a = -0.5) by hand: k(0.25) = 1.5/64 - 2.5/16 + 1 = 0.8671875,
# k(0.75) = 1.5*27/64 - 2.5*9/16 + 1 = 0.2265625, k(1.25) = -0.5*125/64 + 2.5*25/16 - 5 + 2 =
# -0.0703125, k(1.75) = -0.5*343/64 + 2.5*49/16 - 7 + 2 = -0.0234375.
K025, K075, K125, K175 = 0.8671875, 0.2265625, -0.0703125, -0.0234375


def row(values) -> torch.Tensor:
    return torch.tensor([values], dtype=torch.float64)


def test_hand_kernel_values_sum_to_one():
    assert K025 + K075 + K125 + K175 == 1.0


def test_upscale_x2_of_an_impulse_is_the_cubic_kernel():
    # Output i (1-based) maps to u = i/2 + 0.25; the impulse at 4 contributes k(u - 4).
    x = row([0, 0, 0, 1, 0, 0, 0, 0])
    expected = row([0, 0, 0, K175, K125, K075, K025, K025, K075, K125, K175, 0, 0, 0, 0, 0])
    torch.testing.assert_close(imresize(x, size=(1, 16)), expected, rtol=0, atol=1e-15)


def test_shrink_x2_of_an_impulse_uses_the_stretched_kernel():
    # Antialiased: weight = 0.5 * k(0.5 * d) at u = 2i - 0.5; the impulse at 8 sits at
    # d = -2.5, -0.5, 1.5, 3.5 from outputs 3..6. Plain cubic would give k(0.5) = 0.5625.
    x = torch.zeros(1, 16, dtype=torch.float64)
    x[0, 7] = 1
    expected = row([0, 0, K125 / 2, K025 / 2, K075 / 2, K175 / 2, 0, 0])
    torch.testing.assert_close(imresize(x, size=(1, 8)), expected, rtol=0, atol=1e-15)


def test_symmetric_padding_repeats_the_edge_pixel():
    # Ramp 1..8, x2: output 1 uses taps -1, 0, 1, 2 -> mirrored to pixels 2, 1, 1, 2;
    # output 2 uses taps 0..3 -> pixels 1, 1, 2, 3. (Linear extrapolation would give 0.75, 1.25.)
    out = imresize(torch.arange(1, 9, dtype=torch.float64)[None], size=(1, 16))[0]
    assert out[0].item() == pytest.approx(K175 * 2 + K075 * 1 + K025 * 1 + K125 * 2, abs=1e-14)
    assert out[0].item() == pytest.approx(0.90625, abs=1e-14)
    assert out[1].item() == pytest.approx(K125 * 1 + K025 * 1 + K075 * 2 + K175 * 3, abs=1e-14)
    assert out[-1].item() == pytest.approx(9 - 0.90625, abs=1e-14)  # same at the far edge


def test_height_and_width_resized_alike():
    x = torch.zeros(8, 1, dtype=torch.float64)
    x[3, 0] = 1
    col = imresize(x, size=(16, 1))[:, 0]
    r = imresize(x.T, size=(1, 16))[0]
    torch.testing.assert_close(col, r, rtol=0, atol=0)


@pytest.mark.parametrize("scale", [3, 2.5, 0.5, 0.25])
def test_interior_matches_torch_antialiased_bicubic(scale):
    # PyTorch's antialiased bicubic uses the same a = -0.5 kernel and stretching; only the
    # border handling differs, so away from the border the two must agree.
    n = 40 if scale > 1 else 64
    x = torch.rand(1, 1, n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ours = imresize(x, scale)
    ref = F.interpolate(x, size=ours.shape[-2:], mode="bicubic", antialias=True,
                        align_corners=False)
    m = 8 if scale > 1 else 4
    assert ours.shape[-2:] == (round(n * scale),) * 2
    torch.testing.assert_close(ours[..., m:-m, m:-m], ref[..., m:-m, m:-m], rtol=0, atol=1e-12)


@pytest.mark.parametrize(("scale", "size"), [(1 / 3, None), (0.7, None), (None, (7, 5)),
                                             (None, (13, 4)), (1.37, None)])
def test_constant_image_stays_constant(scale, size):
    # The normalised weights keep a constant exactly, shrinking (antialiased) or growing.
    x = torch.full((2, 10, 10), 0.3, dtype=torch.float64)
    out = imresize(x, scale=scale, size=size)
    torch.testing.assert_close(out, torch.full_like(out, 0.3), rtol=0, atol=1e-14)


def test_output_sizes():
    x = torch.rand(10, 10, dtype=torch.float64)
    assert imresize(x, 1 / 3).shape == (4, 4)  # MATLAB: ceil(10 / 3)
    assert imresize(x, 0.7).shape == (7, 7)
    assert imresize(x, 1.37).shape == (14, 14)
    assert imresize(x, size=(13, 4)).shape == (13, 4)
    assert imresize(torch.rand(3, 2, 6, 9), 2).shape == (3, 2, 12, 18)  # leading dims kept


def test_non_integer_upscale_follows_the_coordinate_map():
    # Keys' cubic reproduces a linear ramp exactly, so away from the borders output i
    # (1-based) equals its input coordinate u = i / s + 0.5 * (1 - 1 / s).
    s = 1.5
    x = torch.arange(1, 21, dtype=torch.float64)[None]
    out = imresize(x, size=(1, 30))[0]
    i = torch.arange(1, 31, dtype=torch.float64)
    u = i / s + 0.5 * (1 - 1 / s)
    torch.testing.assert_close(out[4:-4], u[4:-4], rtol=0, atol=1e-12)


def test_bad_resize_arguments():
    with pytest.raises(TypeError):
        imresize(torch.zeros(4, 4, dtype=torch.uint8), 2)
    with pytest.raises(ValueError):
        imresize(torch.zeros(4, 4), None)
    with pytest.raises(ValueError):
        imresize(torch.zeros(4, 4), size=(0, 3))


def _rgb(*colour: float) -> torch.Tensor:
    return torch.tensor(colour, dtype=torch.float64)[:, None, None]


@pytest.mark.parametrize(("rgb", "ycc"), [
    ((1, 1, 1), (235, 128, 128)),
    ((0, 0, 0), (16, 128, 128)),
    ((1, 0, 0), (16 + 65.481, 128 - 37.797, 240)),
    ((0, 0, 1), (16 + 24.966, 240, 128 - 18.214)),
])
def test_rgb_to_ycbcr_known_colours(rgb, ycc):
    out = rgb_to_ycbcr(_rgb(*rgb))[:, 0, 0] * 255
    torch.testing.assert_close(out, torch.tensor(ycc, dtype=torch.float64), rtol=0, atol=1e-9)


def test_ycbcr_round_trip():
    rgb = torch.rand(2, 3, 7, 5, dtype=torch.float64)
    torch.testing.assert_close(ycbcr_to_rgb(rgb_to_ycbcr(rgb)), rgb, rtol=0, atol=1e-12)
    ycc = rgb_to_ycbcr(rgb)
    torch.testing.assert_close(rgb_to_ycbcr(ycbcr_to_rgb(ycc)), ycc, rtol=0, atol=1e-12)


def test_protocol_y_rounds_studio_swing_luma():
    # Mid grey 128: 16 + 128 * 219 / 255 = 125.93 -> 126; white -> 235; black -> 16.
    rgb8 = torch.tensor([[[128.0, 255.0, 0.0]]] * 3, dtype=torch.float64)
    assert protocol_y(rgb8).tolist() == [[126.0, 235.0, 16.0]]


def test_modcrop():
    x = torch.arange(10 * 13, dtype=torch.float64).reshape(10, 13)
    out = modcrop(x, 3)
    assert out.shape == (9, 12)
    assert torch.equal(out, x[:9, :12])  # the top-left corner is kept
    assert modcrop(x[:8, :8], 4).shape == (8, 8)
    assert modcrop(torch.zeros(3, 11, 7), 2).shape == (3, 10, 6)


def test_make_pair_shapes_and_rounding():
    hr = torch.rand(31, 26, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 255
    hr = hr.round()
    cropped, lr, ilr = make_pair(hr, 3)
    assert cropped.shape == (30, 24) and lr.shape == (10, 8) and ilr.shape == (30, 24)
    for plane in (lr, ilr):
        assert torch.equal(plane, plane.round())
        assert plane.min() >= 0 and plane.max() <= 255
    torch.testing.assert_close(lr, imresize(cropped, 1 / 3).round().clamp(0, 255))


@pytest.mark.parametrize("size", [(37, 23), (9, 13), (20, 11), (14, 30)])
def test_row_ranges_equal_slices_of_the_whole_result(size):
    """Row blocks (the engine's bounded-memory path) are bit-identical to the whole resize."""
    torch.manual_seed(0)
    x = torch.rand(2, 14, 11)
    whole = imresize(x, size=size)
    for start, stop in [(0, 1), (0, 5), (3, 8), (size[0] - 2, size[0]), (0, size[0])]:
        assert torch.equal(imresize(x, size=size, rows=(start, stop)), whole[..., start:stop, :])


@pytest.mark.parametrize("value", [1.0, 128 / 255, 0.3, 1 / 3])
def test_a_float32_constant_stays_exactly_constant(value):
    # float32 weights do not sum to exactly one: a weighted sum of the values would turn an
    # opaque alpha of 1.0 into 0.9999999
    x = torch.full((2, 9, 11), value, dtype=torch.float32)
    for scale, size in ((None, (23, 27)), (None, (5, 4)), (2.5, None), (3.99, None)):
        out = imresize(x, scale=scale, size=size)
        assert torch.equal(out, torch.full_like(out, value))


def test_neutral_colours_have_exactly_neutral_chroma():
    grey = torch.rand(1, 64, 64, generator=torch.Generator().manual_seed(0)).expand(3, -1, -1)
    ycc = rgb_to_ycbcr(grey)
    assert torch.equal(ycc[1:], torch.full_like(ycc[1:], 128 / 255))
    rgb = ycbcr_to_rgb(ycc)
    assert torch.equal(rgb[0], rgb[1]) and torch.equal(rgb[1], rgb[2])
