"""Batch upscaling of image files: which inputs, where outputs go, and one file end to end.

Rules a photographer can rely on: results go to a separate folder (never mixed into the input
folder), an existing file is never replaced unless asked, an input is never replaced at all, and
every write is atomic. A failing file is reported and the batch goes on.
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .engine import CancelFn, ProgressFn, Upscaler
from .errors import BadImageError, BadOptionError, DRCNError, OutputExistsError
from .imagefile import (
    FORMATS,
    IMAGE_SUFFIXES,
    SUFFIX,
    ImageInfo,
    atomic_save,
    encode,
    read_image,
    save_options,
)

Status = Literal["done", "skipped", "failed"]
ChooseFn = Callable[[ImageInfo], tuple[Upscaler, str]]


@dataclass
class Job:
    """One input file and where its result goes."""

    source: Path
    target: Path


@dataclass
class Outcome:
    """What happened to one job, for the summary table."""

    job: Job
    status: Status
    message: str = ""
    in_size: tuple[int, int] | None = None
    out_size: tuple[int, int] | None = None
    seconds: float = 0.0
    error: DRCNError | None = None  # why it failed, for front ends that add their own hints
    model: str = ""  # the model this file got, when it was chosen per file


def collect_jobs(inputs: list[str], scale: float, output: Path | None, recursive: bool,
                 suffix: str, fmt: str) -> tuple[list[Job], list[str]]:
    """Expand files, folders and globs into jobs; returns (jobs, one-line errors).

    Default output: ``photos/`` -> ``photos-drcn-x3/`` beside it (subfolders kept); a file or a
    glob's matches -> a ``drcn-x3/`` folder beside them. ``output`` replaces that folder.
    """
    if fmt != "same" and fmt not in FORMATS:
        raise BadOptionError(f"unknown format {fmt!r}: use same, png, jpg, webp, tiff or bmp",
                             option="format")
    tag = f"drcn-x{scale:g}"
    jobs: list[Job] = []
    errors: list[str] = []
    seen: set[Path] = set()
    for spec in inputs:
        path = Path(spec).expanduser()
        try:
            if path.is_dir():
                files = [p for p in path.glob("**/*" if recursive else "*") if p.is_file()]
                root, default_out = path, path.parent / f"{path.resolve().name}-{tag}"
            elif path.is_file():
                files, root = [path], path.parent
                default_out = root / tag
            else:
                files = [Path(p) for p in glob.glob(spec, recursive=recursive)]
                files = [p for p in files if p.is_file()]
                root = Path(os.path.commonpath([str(p.parent) for p in files])) if files else path
                default_out = root / tag
        except OSError as e:
            errors.append(f"{spec}: cannot read ({e.strerror or e})")
            continue
        images = sorted(p for p in files if p.suffix.lower() in IMAGE_SUFFIXES or p == path)
        if not images:
            errors.append(f"{spec}: no image files found")
            continue
        out_root = output if output is not None else default_out
        for f in images:
            resolved = f.resolve()
            if resolved in seen or (f != path and _inside(resolved, out_root)):
                continue  # earlier results found while scanning a folder or a glob
            seen.add(resolved)
            rel = f.relative_to(root)
            target = out_root / rel.parent / (f.stem + suffix + _out_suffix(f, fmt))
            jobs.append(Job(f, target))
    return jobs, errors


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder.resolve())
        return True
    except (ValueError, OSError):
        return False


def _out_format(source: Path, fmt: str, detected: str | None = None) -> str:
    if fmt != "same":
        return FORMATS[fmt]
    name = detected or FORMATS.get(source.suffix.lower().lstrip("."))
    return name if name in SUFFIX else "PNG"


def _out_suffix(source: Path, fmt: str) -> str:
    pil = _out_format(source, fmt)
    keep = source.suffix.lower()
    return source.suffix if FORMATS.get(keep.lstrip(".")) == pil else SUFFIX[pil]


def run_job(job: Job, upscaler: Upscaler | ChooseFn, scale: float, fmt: str = "same",
            quality: int = 95, overwrite: bool = False, skip_existing: bool = False,
            progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> Outcome:
    """Read, upscale and atomically write one file; never raises for a bad file.

    ``upscaler`` is one engine for every file, or a function choosing one from what the file is
    (its :class:`ImageInfo`), returning the engine and the model's name for the report.
    """
    t0 = time.perf_counter()
    try:
        if job.target.resolve() == job.source.resolve():
            raise BadOptionError(f"{job.target} is the input itself; choose another output folder "
                                 "or suffix", option="output")
        if job.target.exists():
            if skip_existing:
                return Outcome(job, "skipped", "already exists")
            if not overwrite:
                raise OutputExistsError(f"{job.target} exists", path=job.target)
        array, info = read_image(job.source)
        label = ""
        if not isinstance(upscaler, Upscaler):
            upscaler, label = upscaler(info)
        try:
            result = upscaler.upscale(array, scale, progress=progress, cancel=cancel)
        except MemoryError as e:
            raise BadImageError(f"{job.source}: too large for this machine's memory") from e
        out_fmt = _out_format(job.source, fmt, info.format)
        image = encode(result, out_fmt, info)
        atomic_save(image, job.target, out_fmt, overwrite=overwrite,
                    **save_options(out_fmt, info, scale, quality))
        h, w = array.shape[:2]
        oh, ow = result.shape[:2]
        note = "; ".join(info.notes)
        return Outcome(job, "done", note, (w, h), (ow, oh), time.perf_counter() - t0, model=label)
    except DRCNError as e:
        msg = str(e)
        if str(job.source) not in msg and str(job.target) not in msg:
            msg = f"{job.source}: {msg}"
        return Outcome(job, "failed", msg, seconds=time.perf_counter() - t0, error=e)


def gather_outcomes(outcomes: list[Outcome]) -> list[Outcome]:
    """Every rank's outcomes on every rank (the identity outside torchrun)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return outcomes
    parts: list[list[Outcome]] = [[] for _ in range(dist.get_world_size())]
    dist.all_gather_object(parts, outcomes)
    dist.destroy_process_group()
    return [o for part in parts for o in part]
