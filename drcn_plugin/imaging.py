"""Image maths shared by evaluation, training and the engine.

MATLAB-compatible bicubic ``imresize`` (antialiased when shrinking), BT.601 studio-swing colour
conversion, modcrop, and the evaluation protocol's pair making. Everything works on torch tensors
shaped ``[..., H, W]`` so the same code runs on CPU and GPU, in float32 or float64.
"""

from __future__ import annotations

import math

import torch

# ITU-R BT.601 studio swing on 0..1 values (MATLAB rgb2ycbcr divided by 255).
_RGB2YCC = torch.tensor([[65.481, 128.553, 24.966],
                         [-37.797, -74.203, 112.0],
                         [112.0, -93.786, -18.214]], dtype=torch.float64) / 255.0
_YCC_OFFSET = torch.tensor([16.0, 128.0, 128.0], dtype=torch.float64) / 255.0
_YCC2RGB = torch.linalg.inv(_RGB2YCC)


def _cubic(x: torch.Tensor) -> torch.Tensor:
    """Keys' cubic kernel with a = -0.5, as MATLAB's imresize uses."""
    ax = x.abs()
    ax2, ax3 = ax * ax, ax * ax * ax
    return ((1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
            + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2)))


def _contributions(in_len: int, out_len: int, scale: float, device: torch.device,
                   dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Tap indices and normalised weights, ``[out_len, taps]`` each, for one dimension."""
    width = 4.0 / scale if scale < 1 else 4.0
    x = torch.arange(1, out_len + 1, dtype=torch.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = torch.floor(u - width / 2)
    taps = int(math.ceil(width)) + 2
    idx = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]
    dist = u[:, None] - idx
    weights = scale * _cubic(dist * scale) if scale < 1 else _cubic(dist)
    weights = weights / weights.sum(dim=1, keepdim=True)
    idx = idx.long() - 1  # to 0-based
    # Symmetric padding: mirror with the edge pixel repeated.
    period = 2 * in_len
    idx = torch.remainder(idx, period)
    idx = torch.where(idx >= in_len, period - 1 - idx, idx)
    keep = weights.abs().sum(dim=0) > 0
    return idx[:, keep].to(device), weights[:, keep].to(device=device, dtype=dtype)


def _resize_dim(x: torch.Tensor, dim: int, out_len: int, scale: float,
                part: slice = slice(None)) -> torch.Tensor:
    """Resize one dimension to ``out_len``, computing only the outputs in ``part``."""
    idx, w = _contributions(x.shape[dim], out_len, scale, x.device, x.dtype)
    idx, w = idx[part], w[part]
    # The resized dimension second to last, in memory too: each tap then copies whole rows,
    # several times faster than gathering samples along the last dimension, with the same sums.
    x = x.movedim(dim, -2).contiguous()
    # Taps weigh differences from the nearest source pixel, which the weights summing to one
    # makes the same sum, and a constant (an opaque alpha, a neutral chroma) stays exact.
    base = x.index_select(-2, idx.gather(1, w.argmax(1, keepdim=True))[:, 0])
    out = base.clone()
    for t in range(idx.shape[1]):  # one tap at a time keeps memory at one output's size
        out.add_(x.index_select(-2, idx[:, t]).sub_(base).mul_(w[:, t, None]))
    return out.movedim(-2, dim).contiguous()  # contiguous: its rows in memory order


def imresize(x: torch.Tensor, scale: float | None = None,
             size: tuple[int, int] | None = None,
             rows: tuple[int, int] | None = None) -> torch.Tensor:
    """MATLAB ``imresize(x, scale, 'bicubic')`` on the last two dimensions of a float tensor.

    Give ``scale`` (output size ``ceil(in * scale)``) or ``size`` = (height, width); with a size,
    each dimension uses its own exact ratio. Height first, then width, as MATLAB does. ``rows`` =
    (start, stop) returns only those output rows, bit-identical to slicing the whole result, so
    big outputs can be made in bounded memory on any device.
    """
    if not x.is_floating_point():
        raise TypeError("imresize needs a floating-point tensor")
    h, w = x.shape[-2:]
    if size is None:
        if scale is None or scale <= 0:
            raise ValueError("give a positive scale or an output size")
        size = (math.ceil(h * scale), math.ceil(w * scale))
        sh = sw = float(scale)
    else:
        sh, sw = size[0] / h, size[1] / w
    if size[0] < 1 or size[1] < 1:
        raise ValueError(f"output size {size} is empty")
    part = slice(*rows) if rows is not None else slice(None)
    if x.shape[-2] != size[0] or sh != 1:
        x = _resize_dim(x, -2, size[0], sh, part)
    else:
        x = x[..., part, :]
    if x.shape[-1] != size[1] or sw != 1:
        x = _resize_dim(x, -1, size[1], sw)
    return x


def rgb_to_ycbcr(rgb: torch.Tensor) -> torch.Tensor:
    """``[..., 3, H, W]`` RGB in 0..1 to BT.601 studio-swing YCbCr in 0..1 (MATLAB rgb2ycbcr)."""
    m = _RGB2YCC.to(rgb.device, rgb.dtype)
    off = _YCC_OFFSET.to(rgb.device, rgb.dtype)[:, None, None]
    ycc = torch.einsum("ij,...jhw->...ihw", m, rgb).add_(off)
    # Cb and Cr from R - G and B - G (their rows sum to zero): a neutral colour's are then
    # exactly the offset, so grey comes back with R = G = B.
    diff = rgb[..., 0::2, :, :] - rgb[..., 1:2, :, :]
    ycc[..., 1:, :, :] = torch.einsum("ij,...jhw->...ihw", m[1:, 0::2], diff).add_(off[1:])
    return ycc


def ycbcr_to_rgb(ycc: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_ycbcr` (no clipping: callers decide how to quantise)."""
    m = _YCC2RGB.to(ycc.device, ycc.dtype)
    off = _YCC_OFFSET.to(ycc.device, ycc.dtype)
    return torch.einsum("ij,...jhw->...ihw", m, ycc - off[:, None, None])


def quantize8(x: torch.Tensor) -> torch.Tensor:
    """Round values on the 0..255 scale and clip to 0..255, as the protocol does at each step."""
    return x.round().clamp_(0, 255)


def protocol_y(rgb8: torch.Tensor) -> torch.Tensor:
    """Protocol step 1: 8-bit RGB ``[3, H, W]`` (0..255) to the rounded studio-swing Y (0..255)."""
    return quantize8(rgb_to_ycbcr(rgb8 / 255.0)[..., 0, :, :] * 255.0)


def image_y(image: torch.Tensor) -> torch.Tensor:
    """The protocol's Y of an 8-bit ``[3, H, W]`` image; a grey ``[H, W]`` plane as it is."""
    return image if image.dim() == 2 else protocol_y(image)


def modcrop(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Crop height and width down to multiples of ``scale``."""
    h, w = x.shape[-2:]
    return x[..., : h - h % scale, : w - w % scale]


def make_pair(hr_y: torch.Tensor, scale: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Protocol steps 2-3 on a 0..255 Y plane: returns (modcropped HR, LR, ILR), all 0..255."""
    hr = modcrop(hr_y, scale)
    lr = quantize8(imresize(hr, size=(hr.shape[-2] // scale, hr.shape[-1] // scale)))
    ilr = quantize8(imresize(lr, size=tuple(hr.shape[-2:])))
    return hr, lr, ilr
