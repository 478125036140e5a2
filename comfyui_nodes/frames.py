"""ComfyUI's IMAGE frames (and a MASK beside them) checked, as the engine's input, and its results
back: 8-bit frames go in as uint8, as ``drcn upscale`` reads them, and an alpha off the 8-bit
grid beside 8-bit colours (a soft mask, or an RGBA image's own soft alpha) goes to the engine
apart, so it cannot take the colours down the float path."""

from __future__ import annotations

import numpy as np
import torch

from drcn_plugin.errors import BadImageError, counted

_GRID_TOLERANCE = 1e-3  # in 8-bit levels: float32 round trips like 1 - (1 - a / 255) stay on it


def readable(tensor: torch.Tensor, what: str) -> torch.Tensor:
    """``tensor`` if it holds values to read as 0..1 (float, or bool), else one line naming it: a
    'meta' tensor has a shape but no data, integer levels would read as far above 1, and another
    pack's node may hand on a numpy array or a list where ComfyUI passes tensors."""
    if not isinstance(tensor, torch.Tensor):
        raise BadImageError(f"the {what} is of type {type(tensor).__name__}, not a torch tensor: "
                            f"the node that made it does not give ComfyUI's {what.upper()} type")
    if tensor.is_meta:
        raise BadImageError(f"the {what} is a 'meta' tensor: it has a shape but no values")
    if not (tensor.is_floating_point() or tensor.dtype == torch.bool):
        raise BadImageError(f"the {what} holds {str(tensor.dtype).removeprefix('torch.')} "
                            f"values: {'an IMAGE' if what == 'image' else 'a MASK'} holds "
                            "floats in 0..1")
    return tensor


def mask_alpha(image: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor | None:
    """``1 - mask`` as ``[1 or B, H, W]`` alpha planes to upscale with the image, or None.

    An all-zero mask of another size (LoadImage's "no alpha" mask) counts as no mask. Leading
    dimensions are read as ComfyUI's own mask nodes read them (``reshape(-1, H, W)``), so a
    ``[B, 1, H, W]`` mask is B masks.
    """
    if mask is None:
        return None
    mask = readable(mask, "mask")
    b, h, w, c = image.shape
    if mask.ndim < 2:
        raise BadImageError(f"the mask has shape {tuple(mask.shape)}: a MASK is [H, W] or "
                            "[B, H, W]")
    mask = mask.reshape(-1, *mask.shape[-2:])
    if tuple(mask.shape[-2:]) != (h, w):
        if not mask.any():
            return None
        raise BadImageError(f"the mask is {mask.shape[-1]}x{mask.shape[-2]} but the image is "
                            f"{w}x{h}")
    if mask.shape[0] not in (1, b):
        raise BadImageError(f"{counted(mask.shape[0], 'mask')} for {counted(b, 'image')}: give "
                            "one mask or one per image")
    if mask.is_floating_point() and not torch.isfinite(mask).all():
        raise BadImageError("the mask has NaN or infinite values")
    if c in (2, 4):
        raise BadImageError("connect a mask or an image with alpha, not both")
    return 1.0 - mask.float()  # not in the image's dtype: a bfloat16 image would round it


def finite_frames(image: torch.Tensor) -> None:
    """Refuse a batch with NaN or infinite values (a half-precision VAE decode can give them)
    before any frame is upscaled, naming the first such frame."""
    count = image.shape[0]
    for i in range(count):
        if not bool(torch.isfinite(image[i]).all()):
            raise BadImageError(f"frame {i + 1} of {count} has NaN or infinite values"
                                if count > 1 else "the image has NaN or infinite values")


def eight_bit(values: torch.Tensor) -> torch.Tensor | None:
    """Float ``values`` (0..1) as uint8 levels when every one sits on the 8-bit grid (an image from
    Load Image), else None."""
    levels = values * 255.0
    in_range = bool(levels.min() >= 0) and bool(levels.max() <= 255)
    if in_range and torch.allclose(levels, levels.round(), rtol=0.0, atol=_GRID_TOLERANCE):
        return levels.round().to(torch.uint8)
    return None


def to_engine(image: torch.Tensor) -> np.ndarray:
    """One ``[H, W, C]`` image as the engine's input: uint8 when it is on the 8-bit grid, so the
    engine treats it exactly as ``drcn upscale`` treats the file; float32 otherwise."""
    image = image.detach().cpu().float()
    levels = eight_bit(image)
    return (image if levels is None else levels).numpy()


def frame_input(image: torch.Tensor,
                mask_alpha: torch.Tensor | None) -> tuple[np.ndarray, np.ndarray | None]:
    """One ``[H, W, C]`` image with its alpha (its own, or ``mask_alpha`` ``[H, W]`` appended) as
    the engine's input, and the alpha apart (float32, for ``Upscaler.upscale_with_alpha``) when
    it is off the 8-bit grid beside 8-bit colours: in one array it would take them to float."""
    own = mask_alpha is None and image.shape[-1] in (2, 4)
    colour = to_engine(image[..., :-1] if own else image)
    alpha = image[..., -1] if own else mask_alpha
    if alpha is None:
        return colour, None
    alpha = alpha.detach().cpu().float()
    levels = eight_bit(alpha) if colour.dtype == np.uint8 else alpha
    if levels is None:
        return colour, alpha.numpy()
    return np.concatenate([colour, levels.numpy()[..., None]], axis=-1), None


def from_engine(array: np.ndarray, out: torch.Tensor | None = None) -> torch.Tensor:
    """The engine's output back as ComfyUI's float 0..1 image; written into ``out`` (float32, of
    its shape) when given, with no float copy of it made beside."""
    pixels = torch.from_numpy(array)
    if out is None:
        return pixels.float() / 255.0 if array.dtype == np.uint8 else pixels
    out.copy_(pixels)
    return out.div_(255.0) if array.dtype == np.uint8 else out
