"""The paper's evaluation protocol over a folder of images (what ``drcn eval`` and training run)."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .datasets import list_images
from .degrade import Recipe, degraded_pair, seed_for
from .devices import allocating
from .engine import Upscaler
from .errors import BadImageError, BadOptionError
from .imagefile import image_shape8, read_image8, read_y
from .imaging import make_pair, quantize8
from .memory import refuse_over
from .metrics import psnr, ssim


@dataclass
class ImageScore:
    """One image at one scale: the model's and bicubic's PSNR (dB) and SSIM, and seconds taken."""

    bicubic_psnr: float
    bicubic_ssim: float
    psnr: float
    ssim: float
    seconds: float
    depth_psnr: list[float] | None = None  # with per_depth: each depth's prediction
    ensemble_psnr: float | None = None

    def to_json(self) -> dict:
        """The ``drcn eval --json`` form: the fields in order, depth scores only when measured."""
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class ScaleResult:
    """Dataset means at one scale, and every image's own score."""

    scale: int
    bicubic_psnr: float
    bicubic_ssim: float
    psnr: float
    ssim: float
    seconds_per_image: float
    images: dict[str, ImageScore]
    depth_psnr: list[float] | None = None
    ensemble_psnr: float | None = None

    @property
    def gain(self) -> float:
        """PSNR over bicubic in dB: 0 where both are equal, both exact (infinite) among them."""
        return 0.0 if self.psnr == self.bicubic_psnr else self.psnr - self.bicubic_psnr

    def to_json(self) -> dict:
        """The ``drcn eval --json`` form of one scale."""
        out = {"bicubic_psnr": self.bicubic_psnr, "bicubic_ssim": self.bicubic_ssim,
               "psnr": self.psnr, "ssim": self.ssim}
        if self.depth_psnr is not None:
            out.update(depth_psnr=self.depth_psnr, ensemble_psnr=self.ensemble_psnr)
        out.update(seconds_per_image=self.seconds_per_image,
                   images={name: row.to_json() for name, row in self.images.items()})
        return out


def results_json(results: dict[int, ScaleResult],
                 about: dict[str, str | None] | None = None) -> dict[str, dict]:
    """``drcn eval --json``'s ``{"3": {...}}``, each scale repeating ``about`` (model,
    degradation); an infinite PSNR (an exact reconstruction) is null, as JSON has no infinity."""
    return _finite_or_null({str(s): {**(about or {}), **r.to_json()} for s, r in results.items()})


def _finite_or_null(value: object) -> object:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_null(v) for v in value]
    return value


def is_results_file(path: Path) -> bool:
    """True when ``path`` holds results as :func:`evaluate` returns them (safe to replace)."""
    try:  # a FIFO would block the read, a huge file fill memory: neither is a results file
        if not os.path.isfile(path) or os.path.getsize(path) > 64 << 20:
            return False
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and bool(data) and all(
        isinstance(v, dict) and "psnr" in v for v in data.values())


def _check_size(name: str, shape: Sequence[int], scale: int) -> None:
    """The protocol shaves ``scale`` pixels and SSIM needs an 11x11 window in what is left, of
    the image cropped to a multiple of ``scale``: 16 pixels at x2, not 15."""
    need = -(-(2 * scale + 11) // scale) * scale
    h, w = shape[-2:]
    if min(h, w) < need:
        raise BadImageError(f"{name} is {w}x{h}: too small to score at x{scale} "
                            f"(at least {need}x{need} pixels)")


@dataclass(frozen=True)
class DatasetFile:
    """One image of a dataset: its name in the results, its file, and the shape
    :func:`.imagefile.read_image8` gives it (read from the header)."""

    name: str
    path: Path
    shape: tuple[int, ...]

    @property
    def seed_name(self) -> str:
        """What its degradation is seeded by: the file's stem, whatever else the folder holds
        (``name`` turns into the file name when another file shares the stem), so that adding
        an image never changes another's draws."""
        return self.path.stem


def dataset_files(folder: Path, scales: Sequence[int]) -> list[DatasetFile]:
    """Every image of ``folder``, its size read from its header and checked for every scale, so
    that a file too small (or not an image) is refused before any is scored.

    An image is named by its file's stem (``baby``), or, when two files share a stem (``a.png``
    and ``a.jpg``), every image by its file name, so that no score replaces another's."""
    paths = list_images(folder)
    shapes = [image_shape8(p) for p in paths]
    for path, shape in zip(paths, shapes, strict=True):
        for s in scales:
            _check_size(str(path), shape, s)
    unique = len({p.stem for p in paths}) == len(paths)
    return [DatasetFile(p.stem if unique else p.name, p, shape)
            for p, shape in zip(paths, shapes, strict=True)]


def read_dataset(files: Sequence[DatasetFile], colour: bool = False,
                 left_out: list[str] | None = None) -> Iterator[tuple[DatasetFile, torch.Tensor]]:
    """(file, 8-bit image) of each of ``files``, decoded one at a time as it is asked for, so
    that a folder of any size holds one image: Y planes, or colour (to degrade, as
    :mod:`.degrade` does). Files read only in part are named in ``left_out`` (see
    :func:`.imagefile.read_levels8`)."""
    read = read_image8 if colour else read_y
    for file in files:
        yield file, read(file.path, left_out)


def check_decodes(files: Sequence[DatasetFile], colour: bool = False,
                  left_out: list[str] | None = None) -> None:
    """Decode each of ``files`` once, holding one at a time: a file whose header reads but whose
    pixels do not (one cut short) is named before any image is scored, not after the images
    before it were. Files read only in part are named in ``left_out``, as
    :func:`read_dataset` does."""
    images = read_dataset(files, colour, left_out)
    while next(images, None) is not None:  # each dropped before the next is read
        pass


# Peak host bytes per ground-truth pixel of scoring one image (decoding, the float64 planes of
# HR, ILR and SSIM's blurs; the colour image and its draws with a degradation), bicubic's or a
# model's (whose tiled run stays under SSIM's peak: drcn-lite's 111 at 5 MP). Measured as peak
# RSS on Linux: 112 clean and 132 degraded at 5 MP, 142 and 163 at 1.3 MP; counted low, so an
# image that fits is never refused.
_SCORING_BYTES_PER_PIXEL = {False: 104, True: 120}


def _depth_bytes_per_pixel(upscaler: Upscaler) -> int:
    """``--per-depth`` runs the network on the whole image: three F-channel maps live at once in
    the compute dtype, and every depth's fp32 prediction and the ensemble are held to the end
    (peak RSS over plain scoring at 2.25 MP in fp32: 12 F + 4 D bytes, for F/D 64/16, 128/4
    and 32/32)."""
    itemsize = torch.finfo(upscaler.dtype).bits // 8
    return 3 * upscaler.model.features * itemsize + 4 * (upscaler.model.recursions + 1)


def check_scoring_memory(files: Sequence[DatasetFile], degrade: bool,
                         per_depth: Upscaler | None = None) -> None:
    """Refuse, before any image is scored, one whose scoring cannot fit in the memory available
    (:class:`.errors.OutOfMemoryError`): a folder is scored one image at a time. With
    ``per_depth`` (the engine whose every depth is scored) its whole-image run is counted too,
    in host memory or on its device."""
    for file in files:
        h, w = file.shape[-2:]
        what, host = f"scoring {file.path} ({w}x{h})", _SCORING_BYTES_PER_PIXEL[degrade] * h * w
        if per_depth is not None:
            what += " at every depth"
            net = _depth_bytes_per_pixel(per_depth) * h * w
            if per_depth.device.type == "cpu":
                host += net
            else:
                refuse_over(net, what, "score smaller images", per_depth.device)
        refuse_over(host, what, "score smaller images")


def check_depth_options(per_depth: bool, tta: bool) -> None:
    """The per-depth scores are of the plain network: refuse them with the self-ensemble."""
    if per_depth and tta:
        raise BadOptionError("the per-depth scores are of the plain network, without the "
                             "self-ensemble: ask for one of the two", option="per_depth")


def evaluate(upscaler: Upscaler | None, folder: Path, scales: Sequence[int],
             per_depth: bool = False,
             on_image: Callable[[int, str], None] | None = None,
             degrade: Recipe | None = None,
             notify: Callable[[str], None] | None = None,
             files: Sequence[DatasetFile] | None = None) -> dict[int, ScaleResult]:
    """PSNR/SSIM per scale over the images of ``folder``; ``upscaler=None`` scores bicubic alone.
    ``notify`` hears of each file read only in part (an animation's first frame, say), once.

    Each image is decoded once first (:func:`check_decodes`), then read, scored and dropped in
    turn (and read again for each scale), so memory holds one image whatever the folder's size.
    With ``degrade``, each low-resolution image is degraded by the recipe (seeded by
    :attr:`DatasetFile.seed_name` and scale, so the table is reproducible) before it is
    enlarged; see :mod:`.degrade`.
    ``files``: ``folder``'s, as :func:`dataset_files` gave them for ``scales``, where the caller
    listed them already (to refuse before it loads a model).
    """
    per_depth = per_depth and upscaler is not None
    check_depth_options(per_depth, upscaler is not None and upscaler.tta)
    scales = list(dict.fromkeys(scales))  # --scale 2 3 2: each scale's table once
    files = dataset_files(folder, scales) if files is None else files
    check_scoring_memory(files, degrade is not None, upscaler if per_depth else None)
    left_out: list[str] = []
    check_decodes(files, degrade is not None, left_out)
    if notify is not None:
        for line in left_out:
            notify(line)
    results: dict[int, ScaleResult] = {}
    for s in scales:
        rows: dict[str, ImageScore] = {}
        for file, image in read_dataset(files, degrade is not None):
            rows[file.name] = _score(upscaler, image, file.seed_name, s, per_depth, degrade)
            del image
            if on_image is not None:
                on_image(s, file.name)
        results[s] = _summarise(s, rows)
    return results


def _score(upscaler: Upscaler | None, image: torch.Tensor, seed_name: str, s: int,
           per_depth: bool, degrade: Recipe | None) -> ImageScore:
    """One image's scores at scale ``s``: bicubic's, and the model's unless ``upscaler`` is None;
    a degradation is drawn from ``seed_name`` and ``s``."""
    if degrade is None:
        hr, _, ilr = make_pair(image, s)
    else:
        gen = torch.Generator().manual_seed(seed_for(seed_name, s))
        hr, ilr, _ = degraded_pair(image, s, degrade, gen)
    bic_psnr, bic_ssim = psnr(ilr, hr, s), ssim(ilr, hr, s)
    if upscaler is None:
        return ImageScore(bic_psnr, bic_ssim, bic_psnr, bic_ssim, 0.0)
    t0 = time.perf_counter()
    sr = quantize8(upscaler.run_y(ilr / 255.0).double() * 255.0)
    row = ImageScore(bic_psnr, bic_ssim, psnr(sr, hr, s), ssim(sr, hr, s),
                     time.perf_counter() - t0)
    if per_depth:
        row.depth_psnr, row.ensemble_psnr = _depth_scores(upscaler, ilr, hr, s)
    return row


def _summarise(scale: int, rows: dict[str, ImageScore]) -> ScaleResult:
    """Dataset means of every score (depth scores per depth)."""
    scores = list(rows.values())
    mean = lambda key: float(np.mean([getattr(r, key) for r in scores]))  # noqa: E731
    depth = None
    if scores[0].depth_psnr is not None:
        depth = [float(np.mean(col)) for col in zip(*(r.depth_psnr for r in scores), strict=True)]
    return ScaleResult(scale, mean("bicubic_psnr"), mean("bicubic_ssim"), mean("psnr"),
                       mean("ssim"), mean("seconds"), rows, depth,
                       mean("ensemble_psnr") if depth is not None else None)


@torch.inference_mode()
def _depth_scores(upscaler: Upscaler, ilr: torch.Tensor, hr: torch.Tensor,
                  s: int) -> tuple[list[float], float]:
    """PSNR of every depth's prediction and of the ensemble (the paper's recursion study)."""
    with allocating(*ilr.shape, upscaler.device, "image at every depth"):
        x = (ilr / 255.0).float()[None, None].to(upscaler.device)
        ens, preds = upscaler.model(x, all_depths=True)
    to8 = lambda t: quantize8(t[0, 0].cpu().double() * 255.0)  # noqa: E731 (MPS: no float64)
    return [psnr(to8(p), hr, s) for p in preds], psnr(to8(ens), hr, s)
