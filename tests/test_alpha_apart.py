"""``Upscaler.upscale_with_alpha``: an alpha finer than the image's levels (a host's soft mask
beside 8-bit colours) goes through the engine beside the image, not in it."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import seeded_drcn

from drcn_plugin.engine import Upscaler
from drcn_plugin.errors import BadImageError


@pytest.fixture(scope="module")
def engine() -> Upscaler:
    return Upscaler(seeded_drcn(), device="cpu", precision="fp32", tile=64)


def _image(channels: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = (12, 14) if channels == 1 else (12, 14, channels)
    return rng.integers(0, 256, shape, dtype=np.uint8), rng.random((12, 14), dtype=np.float32)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("scale", [2.3, 3.0, 1.0])
@pytest.mark.parametrize("fill_hidden", [True, False])
def test_colours_keep_their_own_path_and_the_alpha_is_the_float_one(
        engine: Upscaler, channels: int, scale: float, fill_hidden: bool) -> None:
    """The colours are those of the image upscaled alone when nothing is hidden (8-bit levels,
    bit for bit); the alpha is the one the whole image in float gives, in float32."""
    image, alpha = _image(channels)
    alpha = alpha * 0.98 + 0.01  # nowhere fully transparent: no colour is filled
    out, out_alpha = engine.upscale_with_alpha(image, alpha, scale, fill_hidden=fill_hidden)
    assert out.dtype == np.uint8 and out.shape[:2] == out_alpha.shape
    assert np.array_equal(out, engine.upscale(image, scale))
    whole = np.dstack([image / 255.0, alpha]).astype(np.float32)
    want = engine.upscale(whole, scale, fill_hidden=fill_hidden)[..., -1]
    assert out_alpha.dtype == np.float32 and np.abs(out_alpha - want).max() < 1e-6
    assert out_alpha.min() >= 0.0 and out_alpha.max() <= 1.0


def test_colours_hidden_by_an_alpha_apart_are_filled_from_the_visible_ones(
        engine: Upscaler) -> None:
    """Under alpha 0 the colour is not seen: whatever it is, the result is the same, and it is
    not the unfilled image's."""
    image, alpha = _image(3, seed=1)
    alpha[:, :6] = 0.0
    other = image.copy()
    other[:, :6] = 255 - other[:, :6]
    out, _ = engine.upscale_with_alpha(image, alpha, 2.0)
    again, _ = engine.upscale_with_alpha(other, alpha, 2.0)
    assert np.array_equal(out, again) and not np.array_equal(out, engine.upscale(image, 2.0))
    kept, _ = engine.upscale_with_alpha(image, alpha, 2.0, fill_hidden=False)
    assert not np.array_equal(out, kept)  # a mask's hidden colour is content: kept


@pytest.mark.parametrize(("image", "alpha", "message"), [
    (np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9), np.float32),
     "the alpha must be one 8x8 plane, as the image; got shape (8, 9)"),
    (np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 2), np.float32),
     "the alpha must be one 8x8 plane, as the image; got shape (8, 8, 2)"),
    (np.zeros((8, 8, 4), np.uint8), np.zeros((8, 8), np.float32),
     "the image has an alpha of its own: pass it in the image or apart"),
    (np.zeros((8, 8, 3), np.uint8), np.full((8, 8), np.nan, np.float32),
     "the alpha has NaN or infinite values"),
])
def test_an_alpha_that_does_not_fit_the_image_is_refused_in_one_line(
        engine: Upscaler, image: np.ndarray, alpha: np.ndarray, message: str) -> None:
    with pytest.raises(BadImageError) as info:
        engine.upscale_with_alpha(image, alpha, 2.0)
    assert str(info.value) == message
