"""Colour planes around the network: numpy image to float planes, bicubic and colour back.

Input-sized planes go to the engine's device once; everything output-sized (bicubic of Y, Cb, Cr
and alpha, YCbCr to RGB, quantising) is made there block by block of rows, so memory stays
bounded for any output and a GPU is not held back by CPU work. Row blocks of ``imresize`` are
bit-identical to slicing the whole result, so the block size never changes the pixels.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .errors import BadImageError
from .imaging import imresize, ycbcr_to_rgb

PEAKS = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
BLOCK_PIXELS = 1 << 22  # output pixels per row block (16 MiB per float plane)
CONVERT_SAMPLES = 1 << 18  # samples quantised at a time (1 MiB per float32 temporary)
FLOAT_LIMIT = 1e30  # colour conversion and interpolation stay finite in float32 below this


def to_planes(image: np.ndarray) -> tuple[torch.Tensor, np.dtype]:
    """``H x W [x C]`` uint8/uint16/float array to float32 planes ``[C, H, W]`` in 0..1."""
    image = checked_image(image)
    return float_planes(image), image.dtype


def checked_image(image: np.ndarray, what: str = "image") -> np.ndarray:
    """``image`` as a native-order ``H x W x C`` array, refused with one line naming it ``what``
    unless it is an upscalable image; its size is then known before any float copy is made."""
    if not isinstance(image, np.ndarray):
        raise BadImageError(f"expected a numpy image array, got {type(image).__name__}")
    image = np.asarray(image)  # a matrix or masked array as its plain values
    if not image.dtype.isnative:
        image = image.astype(image.dtype.newbyteorder("="))
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 2, 3, 4):
        raise BadImageError(f"unsupported image shape {image.shape}: need H x W x 1..4 channels")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise BadImageError(f"the {what} is empty ({image.shape[1]}x{image.shape[0]} pixels)")
    peak = PEAKS.get(image.dtype)
    if peak is None and not np.issubdtype(image.dtype, np.floating):
        raise BadImageError(f"unsupported pixel type {image.dtype}: use uint8, uint16 or float")
    if peak is None:  # checked in the image's own dtype: float64 beyond float32 is no NaN
        if not np.isfinite(image).all():
            raise BadImageError(f"the {what} has NaN or infinite values")
        if max(-float(image.min()), float(image.max())) > FLOAT_LIMIT:
            raise BadImageError(f"the {what} has values beyond ±{FLOAT_LIMIT:g}, which overflow "
                                "the float32 arithmetic")
    return image


def checked_alpha(alpha: np.ndarray, image: np.ndarray) -> np.ndarray:
    """An alpha kept apart from the :func:`checked_image` ``image`` as a checked ``H x W x 1``
    array, refused with one line unless it is one plane of the image's size beside no alpha."""
    shape = np.shape(alpha)
    alpha = checked_image(alpha, "alpha")
    if alpha.shape[2] != 1 or alpha.shape[:2] != image.shape[:2]:
        raise BadImageError(f"the alpha must be one {image.shape[1]}x{image.shape[0]} plane, as "
                            f"the image; got shape {shape}")
    if image.shape[2] in (2, 4):
        raise BadImageError("the image has an alpha of its own: pass it in the image or apart")
    return alpha


def float_planes(image: np.ndarray) -> torch.Tensor:
    """A :func:`checked_image` as float32 planes ``[C, H, W]`` in 0..1."""
    t = torch.from_numpy(image.astype(np.float32, copy=True))
    peak = PEAKS.get(image.dtype)
    if peak is not None:
        t.div_(peak)
    return t.permute(2, 0, 1).contiguous()


def kept_range(image: np.ndarray) -> tuple[np.floating, np.floating]:
    """The range a float image's result keeps: its colour (or grey) values' range widened to
    0..1, as scalars of the image's own dtype (a long double's bounds are not Python floats),
    not through float32."""
    image = np.asarray(image)
    body = image if image.ndim == 2 else image[..., :3] if image.shape[2] > 2 else image[..., :1]
    zero, one = body.dtype.type(0), body.dtype.type(1)
    return min(zero, body.min()), max(one, body.max())


def require_unit_range(image: np.ndarray, purpose: str) -> None:
    """Refuse a float image outside 0..1 (or not finite) where it must become 8-bit levels
    (scoring, comparing): clipping would score or show something else than the file holds."""
    if np.issubdtype(image.dtype, np.floating) and image.size:
        if not np.isfinite(image).all():
            raise BadImageError("the image has NaN or infinite values")
        low, high = float(image.min()), float(image.max())
        if low < 0 or high > 1:
            raise BadImageError(f"the float values span {low:g}..{high:g}; {purpose} reads "
                                "float images as 0..1")


def to_8bit(array: np.ndarray, within: tuple[float, float] | None = None) -> np.ndarray:
    """An image array as 8-bit levels: uint8 as it is, 16-bit divided by 257, floats (0..1)
    clipped (first to ``within``, where given) and scaled; rounded to the nearest level."""
    return array if array.dtype == np.uint8 else quantised(array, np.dtype(np.uint8), within)


def quantised(array: np.ndarray, dtype: np.dtype,
              within: tuple[float, float] | None = None) -> np.ndarray:
    """Float samples (0..1, first clipped to ``within`` where given) as ``dtype`` levels, or
    16-bit ones as 8-bit, rounded to the nearest; a block of rows at a time, so that no
    whole-image float copy is made beside the result (a 48 MP result's would be a GiB)."""
    dtype = np.dtype(dtype)
    out = np.empty(array.shape, dtype)
    step = max(1, CONVERT_SAMPLES // max(1, array[:1].size))  # rows a block
    for r in range(0, len(array), step):
        block = array[r:r + step]
        if block.dtype == np.uint16:  # round(v / 257), exactly, in integers wide enough for
            block = (block.astype(np.uint32) + 128) // 257  # v + 128 under any NumPy's promotion
        else:
            block = np.clip(block, *within) if within is not None else block
            block = (np.clip(block, 0, 1) * PEAKS[dtype]).round()
        out[r:r + step] = block
    return out


def row_blocks(height: int, width: int) -> list[tuple[int, int]]:
    """(start, stop) row ranges of about ``BLOCK_PIXELS`` output pixels each."""
    rows = max(1, BLOCK_PIXELS // max(1, width))
    return [(r, min(r + rows, height)) for r in range(0, height, rows)]


def interpolated_y(y: torch.Tensor, size: tuple[int, int], peak: float | None) -> torch.Tensor:
    """Bicubic of the Y plane to ``size`` (antialiased when shrinking), computed on ``y``'s
    device, as a CPU float32 plane.

    With a ``peak`` (integer sources) it is rounded to the source's levels, as the evaluation
    protocol does.
    """
    out = torch.empty(size, dtype=torch.float32)
    for r0, r1 in row_blocks(*size):
        block = imresize(y, size=size, rows=(r0, r1))
        if peak is not None:
            block = block.mul_(peak).round_().clamp_(0, peak).div_(peak)
        out[r0:r1] = block
    return out


def resized_alpha(alpha: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """A ``[1, H, W]`` float alpha bicubic to ``size`` on its device, a row block at a time (as
    :func:`merge` resizes the planes it holds), clamped to 0..1, as a float32 array."""
    out = np.empty(size, dtype=np.float32)
    for r0, r1 in row_blocks(*size):
        out[r0:r1] = imresize(alpha, size=size, rows=(r0, r1))[0].clamp_(0, 1).cpu().numpy()
    return out


def fill_transparent(planes: torch.Tensor) -> torch.Tensor:
    """Give fully transparent pixels of ``[C, H, W]`` planes with alpha the colour of the visible
    ones around them (in place), so their unseen colour cannot fringe the enlarged edge."""
    # push-pull: alpha-weighted means at halving sizes, pulled back up where nothing is visible
    visible = planes[-1] > 0 if planes.shape[0] in (2, 4) else None
    if visible is None or bool(visible.all()) or not bool(visible.any()):
        return planes
    # alpha as it is shown (0..1): a float one under 0 would weigh the means negatively
    colour, alpha = planes[None, :-1], planes[None, -1:].clamp(0, 1)
    levels = [(colour * alpha, alpha)]
    while max(h := levels[-1][1].shape[-2], w := levels[-1][1].shape[-1]) > 1:
        kernel = (min(h, 2), min(w, 2))
        levels.append(tuple(F.avg_pool2d(t, kernel, ceil_mode=True) for t in levels[-1]))
    fill = torch.zeros_like(levels[-1][0])
    for weighted, weight in reversed(levels):
        up = F.interpolate(fill, size=weight.shape[-2:], mode="nearest")
        fill = torch.where(weight > 0, weighted / weight.clamp(min=1e-12), up)
    planes[:-1] = torch.where(alpha > 0, colour, fill)[0]
    return planes


def merge(y_out: torch.Tensor, rest: torch.Tensor, colour: bool, dtype: np.dtype,
          float_range: tuple[float | np.floating, float | np.floating] = (0.0, 1.0)) -> np.ndarray:
    """The network's Y (``[H, W]``) with ``rest`` = input-sized [Cb, Cr][, alpha] planes, bicubic
    to the output size on ``rest``'s device, as an ``H x W x C`` array of ``dtype``.

    Integer results are clamped to their levels; float colour to ``float_range`` (the input's
    range, widened to 0..1, so overshoot never leaves it) and float alpha to 0..1."""
    size = tuple(y_out.shape)
    n = 3 if colour else 1
    out = np.empty((*size, 1 + rest.shape[0]), dtype=dtype)
    for r0, r1 in row_blocks(*size):
        block = y_out[r0:r1].to(rest.device, non_blocking=True)[None]
        if rest.shape[0]:
            block = torch.cat([block, imresize(rest, size=size, rows=(r0, r1))])
        if colour:
            block = torch.cat([ycbcr_to_rgb(block[:3]), block[3:]])
        t = block.permute(1, 2, 0)
        if dtype == np.uint8:
            t = t.clamp(0, 1).mul_(255).round_().to(torch.uint8)
        elif dtype == np.uint16:
            t = t.clamp(0, 1).mul_(65535).round_().to(torch.int32)
        else:
            low, high = map(float, float_range)
            t = torch.cat([t[..., :n].clamp(low, high), t[..., n:].clamp(0, 1)], dim=-1)
        out[r0:r1] = t.cpu().numpy().astype(dtype, copy=False)
        if out.dtype.kind == "f":  # float32 bounds can round past the input's range: clip again
            np.clip(out[r0:r1, :, :n], *float_range, out=out[r0:r1, :, :n])
    return out
