"""Training data: folders of images to (ILR, HR) patch pairs made with the evaluation protocol.

Every pair comes from :func:`drcn_plugin.imaging.make_pair`, the same bicubic ``drcn eval`` uses.
Augmentation: each image is also shrunk (0.9 .. 0.6 by default) before pairs are made, and batches
get random flips and transposes. Patches are kept as one ``uint8`` tensor on the training device,
so drawing a batch is one indexing operation (no data loader); it is counted first and allocated
once, so making it never holds more than the set itself, the 8-bit images and one image's pairs.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..datasets import list_images
from ..degrade import Recipe, degraded_pair
from ..devices import float64_device
from ..errors import BadOptionError, DatasetError
from ..imagefile import read_levels8
from ..imaging import image_y, imresize, make_pair, quantize8
from .config import DOWNSCALES

logger = logging.getLogger(__name__)


@dataclass
class PatchSet:
    """``pairs[i, 0]`` is the ILR patch, ``pairs[i, 1]`` the HR patch; uint8, ``[N, 2, P, P]``.

    ``clean[i]`` is True where the ILR patch was not degraded (every patch of a clean run).
    """

    pairs: torch.Tensor
    clean: torch.Tensor
    images: int
    per_scale: dict[int, int]

    def __len__(self) -> int:
        return self.pairs.shape[0]

    def pixel_sum(self) -> int:
        """The sum of every patch's pixels, in slices: summing the whole set as int64 at once
        would first copy it at eight times its size."""
        return sum(int(part.sum(dtype=torch.int64)) for part in self.pairs.view(-1).split(1 << 24))


def load_images(files: Sequence[Path]) -> list[tuple[str, torch.Tensor]]:
    """The training images as 8-bit levels in uint8 (``[3, H, W]`` RGB, ``[H, W]`` grey): 3/8 of
    a float64 Y plane's memory for colour, 1/8 for grey. :func:`make_patches` takes the protocol's
    Y, or degrades the colour image, one image at a time. A file read only in part (an
    animation's first frame) is named in a warning."""
    left_out: list[str] = []
    images = [(str(p), read_levels8(p, left_out)) for p in files]
    for line in left_out:
        logger.warning(line)
    return images


def image_files(folders: Sequence[Path]) -> list[Path]:
    """The image files of the training folders, in order (a folder given twice counts twice);
    clear errors when a folder is unusable."""
    if not folders:
        raise DatasetError("no training folder given")
    return [p for folder in folders for p in list_images(Path(folder))]


def _fits(side: int, patch: int, scale: int) -> bool:
    """Whether a side still holds one patch once cropped to a multiple of the scale (as pairs
    are)."""
    return side // scale * scale >= patch


def check_sizes(images: Sequence[tuple[str, Sequence[int]]], patch: int,
                scales: Sequence[int]) -> None:
    """Refuse images (name and shape) too small to give one patch at full size (a likely mistake
    in the folder)."""
    for name, shape in images:
        h, w = shape[-2:]
        small = [s for s in scales if not _fits(min(h, w), patch, s)]
        if small:
            crop = f" once cropped to a multiple of scale {max(small)}" if min(h, w) >= patch \
                else ""
            raise DatasetError(f"training image {name} is {w}x{h}, smaller than one "
                               f"{patch}x{patch} patch{crop}: remove it or use a smaller patch")


def _shrunk(shape: Sequence[int], f: float) -> tuple[int, int]:
    """The size of an image shrunk by ``f`` (``imresize``'s, which rounds up)."""
    h, w = shape[-2:]
    return (h, w) if f == 1 else (math.ceil(h * f), math.ceil(w * f))


def _grid(size: tuple[int, int], patch: int, stride: int, scale: int) -> tuple[int, int]:
    """Patches down and across an image of ``size`` cropped to a multiple of ``scale``."""
    h, w = (side // scale * scale for side in size)
    return (h - patch) // stride + 1, (w - patch) // stride + 1


def _cuts(shapes: Sequence[Sequence[int]], scales: Sequence[int], patch: int, stride: int,
          downscales: Sequence[float]) -> Iterator[tuple[int, float, list[tuple[int, int, int]]]]:
    """Per image and shrink factor: (image index, factor, [(scale, patches down, patches
    across)] for each scale whose pair still holds a patch), as :func:`make_patches` cuts."""
    for i, shape in enumerate(shapes):
        for f in downscales:
            size = _shrunk(shape, f)
            yield i, f, [(s, *_grid(size, patch, stride, s)) for s in scales
                         if _fits(min(size), patch, s)]


def count_patches(shapes: Sequence[Sequence[int]], scales: Sequence[int], patch: int, stride: int,
                  downscales: Sequence[float] = DOWNSCALES, copies: int = 1) -> int:
    """How many patches :func:`make_patches` cuts from images of these shapes, without cutting."""
    cuts = _cuts(shapes, scales, patch, stride, downscales)
    return copies * sum(nh * nw for *_, grids in cuts for _, nh, nw in grids)


def _tiles(plane: torch.Tensor, patch: int, stride: int) -> torch.Tensor:
    """All ``patch x patch`` windows of ``[C, H, W]`` at ``stride``, as a ``[nh, nw, C, P, P]``
    view (no copy)."""
    return plane.unfold(1, patch, stride).unfold(2, patch, stride).permute(1, 2, 0, 3, 4)


@torch.no_grad()
def make_patches(images: Sequence[tuple[str, torch.Tensor]], scales: Sequence[int], patch: int,
                 stride: int, downscales: Sequence[float] = DOWNSCALES,
                 device: torch.device | str = "cpu", degrade: Recipe | None = None,
                 copies: int = 1, seed: int = 0) -> PatchSet:
    """Protocol pairs of every (image, down-scale, scale), cut into patches, kept on ``device``.

    With ``degrade``, each pair is made ``copies`` times, each copy's low-resolution image
    degraded with its own draw of the recipe (whole images, so JPEG sees its real block grid).
    """
    check_sizes([(name, y.shape) for name, y in images], patch, scales)
    if stride < 1:
        raise BadOptionError("the patch stride must be at least 1", option="stride")
    copies = copies if degrade is not None else 1
    n = count_patches([y.shape for _, y in images], scales, patch, stride, downscales, copies)
    if not n:
        raise DatasetError("no training patches: every image is smaller than one patch after "
                           "shrinking; use larger images, a smaller patch or milder shrink "
                           "factors")
    out = torch.empty((n, 2, patch, patch), dtype=torch.uint8, device=device)
    clean = torch.empty(n, dtype=torch.bool, device=device)
    gen = torch.Generator().manual_seed(seed)
    per_scale, at = {s: 0 for s in scales}, 0
    for i, f, grids in _cuts([y.shape for _, y in images], scales, patch, stride, downscales):
        if not grids:
            continue
        im = images[i][1].double()
        im = im if degrade is not None else image_y(im)
        im = im if f == 1 else quantize8(imresize(im, scale=f))
        for s, nh, nw in grids:
            if degrade is None:
                hr, _, ilr = make_pair(im.to(float64_device(device)), s)
                pairs = [(hr, ilr, True)]
            else:
                pairs = [degraded_pair(im, s, degrade, gen) for _ in range(copies)]
            for hr, ilr, untouched in pairs:
                tiles = _tiles(torch.stack([ilr, hr]).to(torch.uint8).to(device), patch, stride)
                out[at:at + nh * nw].view(tiles.shape).copy_(tiles)
                clean[at:at + nh * nw] = untouched
                per_scale[s] += nh * nw
                at += nh * nw
    return PatchSet(pairs=out, clean=clean, images=len(images), per_scale=per_scale)


def augment(batch: torch.Tensor, flags: torch.Tensor) -> torch.Tensor:
    """Per-sample flips and transpose of square patches ``[B, C, P, P]``; ``flags``: ``[B, 3]``."""
    f = flags.bool()[:, :, None, None, None]
    batch = torch.where(f[:, 0], batch.flip(-1), batch)
    batch = torch.where(f[:, 1], batch.flip(-2), batch)
    return torch.where(f[:, 2], batch.transpose(-2, -1), batch)
