"""Side-by-side crops (nearest, bicubic, DRCN, original) labelled with PSNR, for people who look."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .degrade import Recipe
from .engine import Upscaler
from .errors import BadImageError, BadOptionError, path_name
from .hub import names_a_path
from .imaging import image_y, imresize
from .memory import refuse_over
from .metrics import psnr
from .planes import require_unit_range, to_planes
from .scales import MAX_SCALE, MIN_SCALE
from .sizing import output_size


def _y8(a: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.array(a[..., :3] if a.ndim == 3 else a, dtype=np.float64))
    return image_y(t.permute(2, 0, 1) if t.dim() == 3 else t)


def _busiest_crop(y: torch.Tensor, size: int) -> tuple[int, int]:
    """Top-left corner of the ``size`` square with the most gradient energy (where SR shows); on
    an image narrower or shorter than ``size``, the busiest window along its other side."""
    h, w = y.shape
    if (h <= size and w <= size) or min(h, w) < 2:
        return 0, 0
    g = (y[1:, :-1] - y[:-1, :-1]).abs() + (y[:-1, 1:] - y[:-1, :-1]).abs()
    step = max(1, size // 4)
    window = (min(size, h - 1), min(size, w - 1))
    pooled = torch.nn.functional.avg_pool2d(g[None, None], window, stride=step)[0, 0]
    r, c = divmod(int(pooled.argmax()), pooled.shape[1])
    return r * step, c * step


def panel_labels(specs: Sequence[str]) -> dict[str, str]:
    """A panel label for each model spec: a local file's or folder's own name (the sheet's
    columns stay narrow), the whole spec where two names would read the same."""
    short = {spec: path_name(spec) if names_a_path(spec) else spec for spec in specs}
    return short if len(set(short.values())) == len(short) else {spec: spec for spec in specs}


def check_compare_scale(scale: float) -> float:
    """An upscaling factor above 1 (at 1 every panel would be the image itself)."""
    if not MIN_SCALE < scale <= MAX_SCALE:
        raise BadOptionError(f"scale {scale:g} is out of range: use more than {MIN_SCALE:g}, "
                             f"at most {MAX_SCALE:g}", option="scale")
    return scale


def check_crop(crop: int) -> int:
    """A crop of at least one output pixel."""
    if crop < 1:
        raise BadOptionError(f"crop size {crop} is too small: at least 1 pixel", option="crop")
    return crop


def compare_panels(image: np.ndarray, scale: float, upscaler: Upscaler | Mapping[str, Upscaler],
                   from_original: bool, degrade: Recipe | None = None,
                   seed: int = 0) -> dict[str, np.ndarray]:
    """Whole-image panels ``{"nearest", "bicubic", "DRCN"[, "original"]}`` as 8-bit arrays.

    Several upscalers (a mapping from label to engine) give one panel each, under their labels.
    With ``from_original`` the input is the ground truth and is shrunk by ``scale`` first. With
    ``degrade``, the small image is degraded by the recipe (drawn from ``seed``, so the same
    command gives the same picture) before every method enlarges it.
    """
    check_compare_scale(scale)
    require_unit_range(image, "compare")
    planes, _ = to_planes(image)
    planes = planes[:3] if planes.shape[0] >= 3 else planes[:1]  # alpha plays no part here
    rgb = _u8(planes)
    if from_original:
        h, w = planes.shape[-2:]
        _check_shrinkable(h, w, scale)
        low = _u8(imresize(planes, size=_shrunk(h, w, scale)))
        size = (h, w)
    else:
        low = rgb
        size = _enlarged(*rgb.shape[:2], scale)
    if degrade is not None:
        low = _degraded(low, degrade, seed)
    models = {"DRCN": upscaler} if isinstance(upscaler, Upscaler) else upscaler
    panels = {
        "nearest": np.asarray(Image.fromarray(low).resize(size[::-1], Image.NEAREST)),
        "bicubic": _u8(imresize(to_planes(low)[0], size=size)),
        **{label: up.upscale(low, size=size) for label, up in models.items()},
    }
    if from_original:
        panels["original"] = rgb
    return panels


def _shrunk(h: int, w: int, scale: float) -> tuple[int, int]:
    """The original's size shrunk by ``scale``: rounded, but never so small that enlarging it
    back would pass the largest factor."""
    return max(round(h / scale), math.ceil(h / MAX_SCALE)), \
        max(round(w / scale), math.ceil(w / MAX_SCALE))


def _enlarged(h: int, w: int, scale: float) -> tuple[int, int]:
    """The size an image is enlarged to; refused where rounding leaves it as it is (x1.001 of a
    small image), since every panel would then be the image itself."""
    size = output_size(h, w, scale)
    _refuse_own_size(size, h, w, scale, "enlarges")
    return size


def _refuse_own_size(size: tuple[int, int], h: int, w: int, scale: float, goes: str) -> None:
    """Refuse a ``scale`` that rounding turns into no change of an h x w image's size: every
    panel would be the image itself."""
    if size == (h, w):
        raise BadOptionError(f"at x{scale:g} the {w}x{h} image {goes} to its own size: every "
                             "panel would be the image itself; use a larger scale", option="scale")


def _check_shrinkable(h: int, w: int, scale: float) -> None:
    """An original large enough to shrink by ``scale`` and score with the border shaved, and
    that the shrinking makes smaller (x1.001 of a small image rounds back to its own size)."""
    need = 2 * math.ceil(scale) + 1
    if min(h, w) < need:
        raise BadImageError(f"the image is {w}x{h}: too small to shrink x{scale:g} and score "
                            f"(at least {need}x{need} pixels)")
    _refuse_own_size(_shrunk(h, w, scale), h, w, scale, "shrinks")


_ZOOM = 2  # crops are shown at twice their size, pixels as blocks
_PAD, _LABEL_HEIGHT = 8, 28  # the sheet's margins and gaps, and the band under each tile
# Peak host bytes per pixel of the panels, besides the 8-bit panels: per channel (the float64
# copies of the crop search and the PSNR labels), and the original's planes and Y held with
# ``from_original``. Measured on Linux (peak RSS less the idle process's) within 5% for grey and
# RGB, one and two models, x16 from a 300x300 image and x4 from a 2400x2400 original.
_BYTES_PER_CHANNEL, _ORIGINAL_BYTES = 36, 32


def check_compare_input(image: np.ndarray, scale: float, models: int,
                        from_original: bool) -> None:
    """Refuse, before a model is loaded or anything allocated, an original too small to shrink
    and score, or a sheet whose whole-image panels (``models`` DRCN panels among them) cannot
    fit in the memory available: :class:`OutOfMemoryError`."""
    h, w = image.shape[:2]
    scale = check_compare_scale(scale)
    if from_original:
        _check_shrinkable(h, w, scale)
    oh, ow = (h, w) if from_original else _enlarged(h, w, scale)
    channels = 3 if image.ndim == 3 and image.shape[2] >= 3 else 1
    panels = models + 2 + from_original
    need = oh * ow * (channels * (_BYTES_PER_CHANNEL + panels) + _ORIGINAL_BYTES * from_original)
    refuse_over(need, f"a comparison of {ow}x{oh} panels",
                "compare a smaller image, or at a smaller scale")


def compare_image(image: np.ndarray, scale: float, upscaler: Upscaler | Mapping[str, Upscaler],
                  from_original: bool,
                  crop: int = 160, degrade: Recipe | None = None,
                  seed: int = 0) -> Image.Image:
    """One labelled PNG of matching crops of :func:`compare_panels`; with ``from_original`` every
    panel is scored against the original (PSNR on Y)."""
    check_crop(crop)
    check_compare_input(image, scale, 1 if isinstance(upscaler, Upscaler) else len(upscaler),
                        from_original)
    panels = compare_panels(image, scale, upscaler, from_original, degrade, seed)
    ref = _y8(panels["original"]) if from_original else None
    r, c = _busiest_crop(_y8(list(panels.values())[2]), crop)  # the first model's panel
    border = int(np.ceil(scale))
    tiles = []
    for name, arr in panels.items():
        label = f"{name} ({degrade})" if name == "nearest" and degrade is not None else name
        if ref is not None and name != "original" and min(ref.shape) > 2 * border:
            label += f"  {psnr(_y8(arr), ref, border):.2f} dB"
        piece = Image.fromarray(arr[r: r + crop, c: c + crop]).convert("RGB")
        piece = piece.resize((piece.width * _ZOOM, piece.height * _ZOOM), Image.NEAREST)
        tiles.append((label, piece))
    return _sheet(tiles)


def _degraded(a: np.ndarray, recipe: Recipe, seed: int) -> np.ndarray:
    """An 8-bit ``H x W [x 3]`` array degraded by ``recipe`` with a generator seeded by ``seed``."""
    t = torch.from_numpy(a).double()
    t = recipe.apply(t.permute(2, 0, 1) if t.dim() == 3 else t, torch.Generator().manual_seed(seed))
    return (t.permute(1, 2, 0) if t.dim() == 3 else t).round().clamp(0, 255).to(torch.uint8).numpy()


def _u8(planes: torch.Tensor) -> np.ndarray:
    """Float planes ``[C, H, W]`` (0..1) to an 8-bit ``H x W [x 3]`` array."""
    a = planes.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return a[..., 0] if a.shape[2] == 1 else a


def _sheet(tiles: list[tuple[str, Image.Image]]) -> Image.Image:
    """Tiles side by side, each labelled underneath; a column is as wide as its tile or its
    label, whichever is wider, so labels never run into each other on small crops."""
    font = ImageFont.load_default(size=16)
    columns = label_columns(tiles, font)
    w = columns[-1][1] + _PAD if columns else _PAD
    h = max(t.height for _, t in tiles) + _LABEL_HEIGHT + 2 * _PAD
    sheet = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(sheet)
    for (label, tile), (x, _) in zip(tiles, columns, strict=True):
        sheet.paste(tile, (x, _PAD))
        draw.text((x + 4, _PAD + tile.height + 5), label, fill="black", font=font)
    return sheet


def label_columns(tiles: list[tuple[str, Image.Image]],
                  font: ImageFont.ImageFont) -> list[tuple[int, int]]:
    """(left, right) of each column: the tile or its label (drawn 4 px in), whichever is wider."""
    x, out = _PAD, []
    for label, tile in tiles:
        width = max(tile.width, 4 + math.ceil(font.getlength(label)))
        out.append((x, x + width))
        x += width + _PAD
    return out
