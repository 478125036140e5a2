"""A hostile pass over ``Upscaler(...).upscale(...)`` as a library user calls it: each odd
argument is one typed error or a right result, never a raw exception or a wrong image."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
from helpers import seeded_drcn

from drcn_plugin import BadImageError, BadOptionError, Cancelled, ModelLoadError, Upscaler
from drcn_plugin.tuning import balanced_core


@pytest.fixture
def up(one_thread: None) -> Upscaler:
    return Upscaler(seeded_drcn(), device="cpu", precision="fp32")


def test_float64_results_stay_exactly_within_the_inputs_range(up: Upscaler) -> None:
    # Bounds taken in float32 would turn 1.1 into 1.100000023841858 in a float64 result.
    image = np.full((12, 12), 1.1)
    image[:, 6:], image[::3, ::3] = -0.05, 0.5
    for layout in (image, np.dstack([image] * 3), np.dstack([image, np.ones_like(image)])):
        out = up.upscale(layout, 2)
        body = out if out.ndim == 2 else out[..., :3] if out.shape[2] > 2 else out[..., :1]
        assert out.dtype == np.float64 and body.min() == -0.05 and body.max() == 1.1


def test_finite_float64_beyond_float32_is_named_as_too_large(up: Upscaler) -> None:
    with pytest.raises(BadImageError, match="beyond"):  # not "NaN or infinite", nor a warning
        up.upscale(np.full((4, 4), 1e300), 2)


class _Broken(torch.nn.Module):
    """A DRCN whose output has NaN or infinite pixels, as fp16 overflow gives."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.inner, self.value = seeded_drcn(), value
        self.features, self.recursions = self.inner.features, self.inner.recursions
        self.receptive_radius = self.inner.receptive_radius

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.inner(x)
        y[..., 2, 2] = self.value
        return y


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_a_non_finite_network_output_is_an_error_not_black_or_nan_pixels(
        one_thread: None, value: float, dtype: type) -> None:
    up = Upscaler(_Broken(value), device="cpu", precision="fp32")
    with pytest.raises(BadImageError, match="NaN or infinite values"):
        up.upscale(np.ones((10, 10, 3), dtype), 2)


class _OverflowsInHalf(torch.nn.Module):
    """A DRCN that gives infinities while its convolutions run in a half precision."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = seeded_drcn()
        for name in ("features", "recursions", "receptive_radius", "embed", "recursive",
                     "reconstruct"):
            setattr(self, name, getattr(self.inner, name))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.inner(x)
        return y if self.recursive.weight.dtype == torch.float32 else y + float("inf")


def test_an_overflow_in_a_precision_the_engine_chose_reruns_in_fp32(
        one_thread: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from drcn_plugin import engine

    monkeypatch.setattr(engine, "pick_precision", lambda device, p: torch.bfloat16)
    monkeypatch.setattr(engine, "cpu_bf16_unproven", lambda: False)
    said: list[str] = []
    image = np.random.default_rng(0).random((12, 12))
    up = Upscaler(_OverflowsInHalf(), device="cpu", notify=said.append)
    out = up.upscale(image, 2)
    assert np.isfinite(out).all() and said == ["bfloat16 overflowed on this image: running in "
                                               "fp32 from here"]
    weight = up.model.recursive.weight  # a model of its own, usable outside inference mode
    assert weight.dtype == torch.float32 and not weight.is_inference()
    assert weight.is_contiguous() and np.array_equal(up.upscale(image, 2), out)
    chosen = Upscaler(_OverflowsInHalf(), device="cpu", precision="bf16")
    with pytest.raises(BadImageError, match="in bfloat16: use precision fp32"):
        chosen.upscale(image, 2)


@pytest.mark.parametrize(("name", "value", "words"), [
    ("progress", True, "must be a function"), ("cancel", True, "must be a function"),
    ("fill_hidden", "false", "must be True or False"), ("fill_hidden", None, "must be True or False")])
def test_a_callback_or_switch_of_the_wrong_kind_is_refused_before_any_work(
        up: Upscaler, name: str, value: object, words: str) -> None:
    """A string "false" for ``fill_hidden`` would otherwise turn the filling on."""
    with pytest.raises(BadOptionError, match=f"{name} {words}"):
        up.upscale(np.zeros((8, 8, 4), np.uint8), 2, **{name: value})


@pytest.mark.parametrize("kwargs", [{"tta": "no"}, {"tta": 1}, {"tta": None},
                                    {"notify": "stderr"}])
def test_tta_must_be_a_bool_and_notify_a_function(one_thread: None, kwargs: dict) -> None:
    with pytest.raises(BadOptionError, match=next(iter(kwargs))):  # "no" does not turn it on
        Upscaler(seeded_drcn(), device="cpu", **kwargs)


def test_a_tile_larger_than_any_float_is_one_window(one_thread: None) -> None:
    image = np.random.default_rng(0).integers(0, 256, (20, 20), np.uint8)
    huge = Upscaler(seeded_drcn(), device="cpu", precision="fp32", tile=10**400)
    assert np.array_equal(huge.upscale(image, 2),  # no ZeroDivisionError
                          Upscaler(seeded_drcn(), device="cpu", precision="fp32").upscale(image, 2))
    assert balanced_core(40, 10**400) == 40 and balanced_core(40, 16) == 14


def test_a_module_without_weight_values_is_a_model_error(one_thread: None) -> None:
    with pytest.raises(ModelLoadError, match="meta tensors"):  # not Tensor.item()'s RuntimeError
        Upscaler(seeded_drcn().to("meta"), device="cpu")


def test_tiled_equals_untiled_and_the_input_is_left_alone(up: Upscaler) -> None:
    rng = np.random.default_rng(0)
    image = rng.random((30, 26, 4)).astype(np.float32)
    image[..., 3][image[..., 3] < 0.3] = 0  # transparent pixels get filled, on a copy
    image = image[::-1]  # negative strides, and read-only
    image.flags.writeable = False
    before = image.copy()
    whole = up.upscale(image, 2.5)
    for tile in (16, 17, 23):
        tiled = Upscaler(up.model, device="cpu", precision="fp32", tile=tile, batch=3)
        assert np.abs(tiled.upscale(image, 2.5) - whole).max() <= 1e-6
    assert np.array_equal(image, before) and whole.shape == (75, 65, 4)


def test_17x13_at_x2_5_is_43x33_halves_rounded_up(up: Upscaler) -> None:
    assert up.upscale(np.zeros((17, 13, 3), np.uint8), 2.5).shape == (43, 33, 3)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_a_module_in_another_dtype_runs_in_the_precision_asked_for(one_thread: None,
                                                                   dtype: torch.dtype) -> None:
    # a bfloat16 module ran its convolutions in bfloat16 under precision="fp32" (2.6 levels off)
    module = seeded_drcn().to(dtype)
    image = np.random.default_rng(0).random((20, 24, 3)).astype(np.float32)
    up = Upscaler(module, device="cpu", precision="fp32")
    same = Upscaler(seeded_drcn().to(dtype).float(), device="cpu", precision="fp32")
    assert np.array_equal(up.upscale(image, 2), same.upscale(image, 2))
    assert {p.dtype for p in up.model.parameters()} == {torch.float32}
    assert {p.dtype for p in module.parameters()} == {dtype}  # the caller's module as it was


@pytest.mark.parametrize("with_alpha", [False, True])
def test_a_copy_at_x1_too_big_for_memory_is_the_librarys_error(up: Upscaler,
                                                                with_alpha: bool) -> None:
    """At x1 the result is a copy of the input: one that cannot be allocated (a huge memmap or
    broadcast view; here 4 EiB, beyond any address space) is the library's OutOfMemoryError."""
    from drcn_plugin.errors import OutOfMemoryError

    side = 1 << 30
    image = np.broadcast_to(np.uint8(7), (side, side, 1 if with_alpha else 4))
    with pytest.raises(OutOfMemoryError, match=f"^not enough memory for a {side}x{side} result on cpu"):
        if with_alpha:
            up.upscale_with_alpha(image, np.broadcast_to(np.uint8(9), (side, side)), 1.0)
        else:
            up.upscale(image, 1.0)


def test_long_double_results_stay_exactly_within_the_inputs_range(up: Upscaler) -> None:
    # Bounds read as Python floats round 1.1 (long double) up to the double 1.1, above it.
    image = np.full((12, 12), np.longdouble("1.1"))
    image[:, 6:], image[::3, ::3] = np.longdouble("-0.05"), 0.5
    for layout in (image, np.dstack([image] * 3)):
        out = up.upscale(layout, 2)
        assert out.dtype == np.longdouble
        assert out.min() == np.longdouble("-0.05") and out.max() == np.longdouble("1.1")


@pytest.mark.parametrize("scale", [Fraction(5, 2), np.float16(2.5), np.longdouble("2.5")])
def test_a_scale_of_any_real_number_type_is_taken(up: Upscaler, scale: object) -> None:
    """A Fraction is a real number, taken as the denoise strength takes one."""
    image = np.zeros((6, 5, 3), np.uint8)
    assert up.upscale(image, scale).shape == (15, 13, 3)


@pytest.mark.parametrize("answer", [np.array([True, False]), torch.tensor([1, 0]),
                                    np.array([])])
@pytest.mark.parametrize("scale", [2.0, 1.0])
def test_a_cancel_answer_without_one_truth_value_is_a_typed_error(
        up: Upscaler, answer: object, scale: float) -> None:
    """An answer without one truth value is refused naming cancel, not with numpy's or
    torch's "truth value is ambiguous" from the engine's own line."""
    with pytest.raises(BadOptionError, match="^cancel must return True or False; its "
                                             f"{type(answer).__name__} answer has no single"):
        up.upscale(np.zeros((8, 8), np.uint8), scale, cancel=lambda: answer)
    with pytest.raises(Cancelled):  # one value: its truth, as before
        up.upscale(np.zeros((8, 8), np.uint8), scale, cancel=lambda: np.array([True]))
    assert up.upscale(np.zeros((8, 8), np.uint8), scale, cancel=np.bool_).shape[0] == 8 * scale
