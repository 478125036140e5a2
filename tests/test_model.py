"""The DRCN network: reference weights load unchanged, depth ensemble, skip, receptive field."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from drcn_plugin.errors import BadImageError, DRCNError
from drcn_plugin.model import DRCN

REFERENCE = [("drcn-f64-d16-x234.safetensors", 64, 112_017),
             ("drcn-f256-d16-x234.safetensors", 256, 1_775_121)]


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("filename", "features", "count"), REFERENCE)
def test_reference_weights_load_unchanged(reference_weights, filename, features, count):
    sd = load_file(str(reference_weights / filename))
    model = DRCN(features=features, recursions=16)
    own = model.state_dict()
    assert set(sd) == set(own)
    assert all(sd[k].shape == own[k].shape for k in sd)
    model.load_state_dict(sd, strict=True)
    assert all(torch.equal(v, sd[k]) for k, v in model.state_dict().items())
    assert n_params(model) == count == sum(t.numel() for t in sd.values())


def test_recursive_weights_are_shared():
    # One conv serves every depth: only the ensemble grows with D.
    assert n_params(DRCN(16, 9)) - n_params(DRCN(16, 1)) == 8


def test_bad_size_refused():
    with pytest.raises(ValueError):
        DRCN(features=0, recursions=16)
    with pytest.raises(ValueError):
        DRCN(features=8, recursions=0)


def test_all_depths_weighted_sum_is_the_ensemble(tiny_model):
    model = tiny_model.double()
    x = torch.rand(2, 1, 12, 15, dtype=torch.float64)
    with torch.no_grad():
        out, preds = model(x, all_depths=True)
    assert len(preds) == model.recursions == 3
    assert all(p.shape == x.shape for p in preds)
    assert not torch.allclose(preds[0], preds[-1])  # the depths really differ
    expected = sum(w * p for w, p in zip(model.ensemble, preds, strict=True))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


def test_inference_path_equals_all_depths_path(tiny_model):
    model = tiny_model.double()
    x = torch.rand(1, 1, 17, 11, dtype=torch.float64)
    with torch.no_grad():
        fast = model(x)
        full, _ = model(x, all_depths=True)
    torch.testing.assert_close(fast, full, rtol=0, atol=1e-12)


def test_skip_connection_adds_the_input(tiny_model):
    # With the last reconstruction conv zeroed every depth predicts x: output = x * sum(w).
    model = tiny_model.double()
    with torch.no_grad():
        model.reconstruct[2].weight.zero_()
        model.reconstruct[2].bias.zero_()
        x = torch.rand(1, 1, 9, 9, dtype=torch.float64)
        torch.testing.assert_close(model(x), x * model.ensemble.sum(), rtol=0, atol=1e-12)


def _positive_linear(features: int, recursions: int) -> DRCN:
    """Positive weights and zero biases: every ReLU passes, every tap of every conv contributes."""
    torch.manual_seed(1)
    model = DRCN(features=features, recursions=recursions).double()
    with torch.no_grad():
        for conv in model.modules():
            if isinstance(conv, torch.nn.Conv2d):
                conv.weight.uniform_(0.5, 1.5).div_(9 * conv.in_channels)
                conv.bias.zero_()
    return model.eval()


@pytest.mark.parametrize("recursions", [3, 16])
def test_receptive_radius_is_exact(recursions):
    model = _positive_linear(features=4, recursions=recursions)
    r = model.receptive_radius
    assert r == recursions + 4
    size, c = 2 * r + 9, r + 4
    x = torch.zeros(1, 1, size, size, dtype=torch.float64)
    x[..., c, c] = 1.0  # the response to one pixel, with nothing else to cancel against
    with torch.no_grad():
        resp = model(x)[0, 0].abs()
    inside = torch.zeros_like(resp, dtype=torch.bool)
    inside[c - r: c + r + 1, c - r: c + r + 1] = True
    assert resp[~inside].max() == 0
    # ... and the influence really reaches the edge of the window, corners included.
    for dy, dx in [(0, r), (r, 0), (-r, -r), (r, r), (-r, r)]:
        assert resp[c + dy, c + dx] > 0


def test_shipped_lite_sees_20_pixels(reference_weights):
    model = DRCN(features=64, recursions=16)
    model.load_state_dict(load_file(str(reference_weights / REFERENCE[0][0])))
    assert model.receptive_radius == 20
    torch.manual_seed(2)
    x = torch.rand(1, 1, 50, 50)
    y = x.clone()
    y[..., 25, 25] += 0.5
    with torch.no_grad():
        diff = (model.eval()(y) - model(x))[0, 0].abs()
    outside = torch.ones_like(diff, dtype=torch.bool)
    outside[5:46, 5:46] = False
    assert diff[outside].max() == 0
    assert diff[25, 25] > 0


def test_flops_per_pixel_matches_the_documented_cost():
    # The model cards (weights/drcn-*.md): about 39 MFLOP per output pixel for F=256, 2.45 for F=64.
    assert 38.5e6 < DRCN(256, 16).flops_per_pixel() < 39.5e6
    assert 2.35e6 < DRCN(64, 16).flops_per_pixel() < 2.5e6


def test_interpolate_gives_each_end_exactly_and_the_mean_between() -> None:
    from drcn_plugin.model import interpolate

    torch.manual_seed(1)
    a, b = DRCN(features=8, recursions=3), DRCN(features=8, recursions=3)
    for t, want in ((0.0, a), (1.0, b)):
        got = interpolate(a, b, t)
        assert all(torch.equal(got.state_dict()[k], v) for k, v in want.state_dict().items())
    mid = interpolate(a, b, 0.5).state_dict()
    for k, v in a.state_dict().items():
        assert torch.allclose(mid[k], (v + b.state_dict()[k]) / 2)
    with pytest.raises(DRCNError, match="cannot blend"):
        interpolate(a, DRCN(features=4, recursions=3), 0.5)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.bool])
@pytest.mark.parametrize("all_depths", [False, True])
def test_an_integer_input_is_refused_not_answered_with_zeros(tiny_model, dtype, all_depths):
    """An integer tensor would run (cast to the weights' dtype on the way in) with the depth
    weights cast to its dtype, all 0: an all-zero answer. It is refused instead."""
    x = (torch.rand(1, 1, 8, 8) * 255).to(dtype)
    with pytest.raises(BadImageError, match=f"^DRCN takes a float image in 0..1, got {dtype}"):
        tiny_model(x, all_depths=all_depths)
