"""Edges of the Python API and the host front ends found by a hostile pass: each is one typed
error or works as the same value given as a plain Python number would."""

from __future__ import annotations

import numpy as np
import pytest

from drcn_plugin import Upscaler
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
