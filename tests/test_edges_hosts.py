"""Edges of the Python API and the host front ends found by a hostile pass: each is one typed
error or works as the same value given as a plain Python number would."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import seeded_drcn

from drcn_plugin import ModelLoadError, Upscaler
from drcn_plugin.sizing import TargetSize


@pytest.mark.parametrize("scale", [np.uint8(3), np.int8(3), np.float16(3), np.float32(3)])
def test_a_numpy_scalar_scale_gives_the_size_of_its_value(tiny_model_file: str, scale) -> None:
    """100 * np.uint8(3) wrapped around to 44 (a result smaller than the input); float16
    overflowed in the rounding and raised a bare ValueError."""
    out = Upscaler(tiny_model_file, device="cpu").upscale(np.zeros((100, 90), np.uint8), scale)
    assert out.shape == (300, 270)


def test_numpy_integers_are_whole_numbers_of_pixels(tiny_model_file: str) -> None:
    up = Upscaler(tiny_model_file, device="cpu", tile=np.int64(16), batch=np.int32(2))
    assert (up.tile, up.batch) == (16, 2) and type(up.tile) is int
    target = TargetSize.of(2.0, width=np.int64(30))
    assert target.width == 30 and type(target.width) is int
    assert target.resolve(10, 15) == (20, 30)


def test_a_loaded_module_with_nan_weights_is_refused_not_a_black_image() -> None:
    """A diverged model held in memory gave an all-black uint8 image and an all-NaN float one;
    the same weights in a file were refused."""
    model = seeded_drcn()
    with torch.no_grad():
        model.ensemble[1] = float("nan")
    with pytest.raises(ModelLoadError, match=r"NaN or infinite weights \(ensemble\)"):
        Upscaler(model, device="cpu")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_module_that_is_not_drcn_is_one_typed_error(precision: str) -> None:
    """It raised a bare AttributeError from inside the engine."""
    with pytest.raises(ModelLoadError, match="a Linear module is not a DRCN model") as err:
        Upscaler(torch.nn.Linear(2, 2), device="cpu", precision=precision)
    assert "\n" not in str(err.value)
