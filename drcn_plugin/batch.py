"""Batch upscaling of image files: which inputs, where outputs go, and one file end to end.

Rules a photographer can rely on: results go to a separate folder (never mixed into the input
folder), an existing file is never replaced unless asked, an input is never replaced at all, and
every write is atomic. A failing file is reported and the batch goes on.
"""

from __future__ import annotations

import glob
import itertools
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from .animation import animated, animates
from .compression import jpeg_history
from .devices import is_out_of_memory
from .encoding import check_writable, encode, require_encoder
from .engine import ProgressFn, Upscaler
from .errors import (
    EMPTY_PATH,
    AmbiguousOutputError,
    BadOptionError,
    Cancelled,
    DRCNError,
    InputConflictError,
    OutputExistsError,
    WriteError,
    counted,
    one_line,
    reason,
    single_line,
)
from .headercheck import refuse_early
from .hub import DEFAULT_MODEL, choose_for_source
from .imagefile import FORMATS, IMAGE_SUFFIXES, SUFFIX, ImageInfo, read_image
from .memory import check_memory
from .names import check_name_part, check_output_file, windows_device
from .planes import checked_image
from .progressivejpeg import coefficient_bytes
from .resultnames import Job, earlier_results, out_format, result_name, unique_targets
from .scanning import absolute_pattern, broken_link, glob_files, matched_folders, walk
from .sizing import TargetSize
from .targets import check_replaceable, permission_bits
from .writing import (
    Encoded,
    atomic_save,
    clean_stale_parts,
    file_id,
    probe_folder,
    same_file,
)

OUTPUT_FORMATS = ("same", "png", "jpg", "webp", "avif", "tiff", "bmp")
QUALITY_FORMATS = ("JPEG", "WEBP", "AVIF")  # the output formats whose encoder takes a quality
Status = Literal["done", "skipped", "failed"]
ChooseFn = Callable[[ImageInfo, np.ndarray], tuple[Upscaler, str]]
SizedFn = Callable[[tuple[int, int], tuple[int, int], int], None]  # (w, h), result's, frames


@dataclass
class Outcome:
    """What happened to one job, for the summary table."""

    job: Job
    status: Status
    message: str = ""
    in_size: tuple[int, int] | None = None
    out_size: tuple[int, int] | None = None
    frames: int = 1  # the result's, each of ``out_size`` (an animation's, else one)
    seconds: float = 0.0
    error: DRCNError | None = None  # why it failed, for front ends that add their own hints
    model: str = ""  # the model this file got, when it was chosen per file
    detail: str = ""  # the traceback of an unexpected failure, for --debug


def collect_jobs(inputs: list[str], target: TargetSize | float, output: Path | str | None,
                 recursive: bool, suffix: str, fmt: str) -> tuple[list[Job], list[str]]:
    """Expand files, folders and globs into jobs, every output path planned before any work;
    returns (jobs, one-line errors).

    Default output: ``photos/`` -> ``photos-drcn-x3/`` beside it (subfolders kept); a file or a
    glob's matching files -> a ``drcn-x3/`` folder beside them (``drcn-w1000/`` etc. for a target
    size), the folders it matches as if each were named.
    ``output`` replaces that folder, or names the one result's file (:func:`_output_file`).
    Two inputs that would share an output name get names that keep their source extension
    (``photo.gif.png``); an output that would land on an input is refused. Results of an earlier
    run found while scanning for an output folder are not inputs: the files that sit where
    another input's result would be written.
    """
    fmt = fmt.lower()
    if fmt not in OUTPUT_FORMATS and fmt not in FORMATS:
        raise BadOptionError(f"unknown format {fmt!r}: use {', '.join(OUTPUT_FORMATS)}",
                             option="format")
    if fmt != "same":
        require_encoder(FORMATS[fmt])
    check_name_part(suffix, "suffix")
    out_file = _output_file(output, suffix, fmt)
    out_dir = Path(os.path.abspath(output)) if output is not None and out_file is None else None
    if out_dir is not None and os.path.lexists(out_dir) and not os.path.isdir(out_dir):
        kind = "an existing file" if os.path.exists(out_dir) else "a broken link"
        raise BadOptionError(f"{output} is {kind}, not an output folder", option="output")
    tag = f"drcn-{TargetSize.from_value(target).tag()}"
    jobs: list[Job] = []
    errors: list[str] = []
    seen: set[str] = set()  # every input's real path, a hard link's too
    first: dict[object, Job] = {}  # each input file's job by its identity (or real path)
    again: dict[object, list[Path]] = {}  # the names an input file was given again by
    queue = list(inputs)
    for spec in queue:  # the folders a glob matches join the queue as inputs of their own
        if not spec:  # Path("") is the current folder
            errors.append(f"'': {EMPTY_PATH}")
            continue
        path = Path(os.path.abspath(os.path.expanduser(spec)))
        try:
            if path.is_dir():
                files, root = walk(path, recursive, errors), path
                default_out = path.parent / f"{path.name}-{tag}"
            elif path.is_file() or broken_link(path):  # a broken link fails as its job
                files, root = [path], path.parent
                default_out = root / tag
            elif os.path.lexists(path) or not glob.has_magic(spec):
                what = "not a file or folder (a pipe, device or socket)" \
                    if os.path.lexists(path) else "no such file or folder"
                errors.append(f"{spec}: {what}")
                continue
            else:
                pattern = absolute_pattern(spec)
                files = glob_files(pattern, recursive, errors)
                root = Path(os.path.commonpath([str(p.parent) for p in files])) if files else path
                default_out = root / tag
                folders = matched_folders(pattern)
                queue += [str(f) for f in folders]
                if folders and not files:
                    continue
        except OSError as e:
            errors.append(f"{spec}: cannot read ({reason(e)})")
            continue
        images = sorted(p for p in files if p.suffix.lower() in IMAGE_SUFFIXES or p == path)
        if not images:
            errors.append(f"{spec}: no image files found")
            continue
        out_root = out_dir if out_dir is not None else default_out
        if out_dir is not None and not suffix and same_file(out_dir, root):
            raise BadOptionError(f"{output} holds the inputs: results would mix with them "
                                 "(choose another folder, or a name suffix)", option="output")
        earlier = earlier_results(images, root, out_root, suffix, fmt) if out_file is None \
            else set()  # where one file's result goes, every file found is an input
        before = len(jobs)
        for f in images:
            if f in earlier and f != path:
                continue  # earlier results found while scanning a folder or a glob
            real = os.path.realpath(f)
            seen.add(real)
            ident = file_id(f) or real  # a link, a hard link, another path: one file
            if ident in first:
                again.setdefault(ident, []).append(f)
                continue
            rel = f.relative_to(root)
            target = out_file or out_root / rel.parent / result_name(f, f.stem, suffix, fmt)
            first[ident] = Job(f, target, fmt=target.suffix[1:].lower() if out_file else "")
            jobs.append(first[ident])
        if len(jobs) == before and not seen.intersection(map(os.path.realpath, images)):
            errors.append(f"{spec}: only earlier results found, no inputs")
    for ident, names in again.items():
        _given_again(first[ident], names)
    if out_file is not None and len(jobs) > 1:
        raise BadOptionError(f"{output} names a file, but {len(jobs)} images were given: name a "
                             "folder for their results", option="output")
    unique_targets(jobs, suffix, fmt, seen)
    if out_file is not None and jobs and jobs[0].problem:
        raise BadOptionError(f"{jobs[0].source}: {jobs[0].problem}", option="output")
    device = next((j for j in jobs if suffix and windows_device(j.target.name)
                   and not windows_device(j.source.name)), None)  # only a suffix makes one
    if device is not None:
        raise BadOptionError(f"{suffix!r} would name {device.source}'s result "
                             f"{device.target.name}, which Windows reserves for a device",
                             option="suffix")
    return _writable(jobs, errors, chosen=output is not None)


def _given_again(job: Job, names: list[Path]) -> None:
    """Note on ``job`` that its input was given again (the same path, a link to it, a hard
    link): one job serves them all, and the other names do not vanish from the summary."""
    others = list(dict.fromkeys(p for p in names if p != job.source))
    shown = ", ".join(map(str, others[:3])) + (f" and {len(others) - 3} more" if others[3:] else "")
    job.note = f"also given as {shown}" if others else "given more than once"


def _output_file(output: Path | str | None, suffix: str, fmt: str) -> Path | None:
    """The file ``output`` names when it ends in an output format's extension (``big.png``) and
    is no folder (an existing folder named so stays the output folder); None for a folder.
    Refuses a ``fmt`` other than the extension's and a ``suffix`` (the name is the user's), and
    a name of an image format drcn does not write (``big.gif``), which would become a folder.
    A name ending in a separator (``big.png/``) is a folder."""
    if output is None or os.path.isdir(output) or str(output).endswith(("/", os.sep)):
        return None
    output = Path(output)
    check_output_file(output, IMAGE_SUFFIXES)
    ext = output.suffix.lower()
    if ext in IMAGE_SUFFIXES and ext[1:] not in FORMATS:
        raise BadOptionError(f"{output} names a {ext[1:].upper()} file, which drcn does not "
                             f"write: name a {', '.join(OUTPUT_FORMATS[1:-1])} or "
                             f"{OUTPUT_FORMATS[-1]} file, or a folder", option="output")
    if ext[1:] not in FORMATS:
        return None
    require_encoder(FORMATS[ext[1:]])
    if fmt != "same" and FORMATS[fmt] != FORMATS[ext[1:]]:
        raise BadOptionError(f"{fmt} contradicts the output file {output}, whose extension says "
                             f"{FORMATS[ext[1:]]}: drop one or make them agree", option="format")
    if suffix:
        raise BadOptionError(f"'{suffix}' has no place when the output names the file itself "
                             f"({output}): put it in that name", option="suffix")
    return Path(os.path.abspath(output))


def check_quality(jobs: list[Job], quality: int | None) -> None:
    """Refuse a quality that no result of the batch takes (every one PNG, TIFF or BMP, which
    are lossless), rather than ignore it without a word."""
    formats = {FORMATS.get(j.target.suffix.lower().lstrip("."), "PNG") for j in jobs}
    if quality is not None and formats and not formats.intersection(QUALITY_FORMATS):
        raise BadOptionError(f"no result takes a quality: {' and '.join(sorted(formats))} "
                             f"{'is' if len(formats) == 1 else 'are'} lossless (it sets JPEG, "
                             "WebP and AVIF quality)", option="quality")


def _writable(jobs: list[Job], errors: list[str], chosen: bool) -> tuple[list[Job], list[str]]:
    """The jobs whose output folder takes files, and one error per folder that does not (only
    folders with something left to write are tried); where the user ``chosen`` no folder (the
    default beside a read-only card or share), the error says how to."""
    bad: dict[Path, str] = {}
    for folder in dict.fromkeys(j.target.parent for j in jobs if not os.path.lexists(j.target)):
        try:
            probe_folder(folder)
        except WriteError as e:
            bad[folder] = one_line(e)
    for folder, message in bad.items():
        count = sum(j.target.parent == folder for j in jobs)
        errors.append(f"{message} ({counted(count, 'file')} not upscaled"
                      f"{'' if chosen else '; -o names another output folder'})")
    return [j for j in jobs if j.target.parent not in bad], errors


def per_source_chooser(clean: Upscaler, **engine: object) -> ChooseFn:
    """Each file's engine by its compression (:func:`.hub.choose_for_source`) when no model is
    named, one engine per choice, built on first use. The pixels count too
    (:func:`.compression.jpeg_history`): a lossless file holding a JPEG's pixels, or a JPEG
    re-saved from a stronger one, is upscaled as that JPEG; ``clean`` is for the rest."""
    engines = {DEFAULT_MODEL: clean}

    def choose(info: ImageInfo, levels: np.ndarray) -> tuple[Upscaler, str]:
        choice = choose_for_source(info.lossy, info.jpeg_quality, info.webp_quantizer,
                                   info.av1_q_index, info.format, info.hevc_qp)
        seen = jpeg_history(levels)
        by_pixels = None if seen is None else choose_for_source(True, seen)
        if by_pixels is not None and by_pixels.denoise > choice.denoise:
            info.notes.append(f"JPEG q{seen} blocks in its pixels: upscaled as that JPEG")
            choice = by_pixels
        if choice.label not in engines:
            engines[choice.label] = Upscaler(choice.spec, denoise=choice.denoise, **engine)
        return engines[choice.label], choice.label

    return choose


def clean_stale_outputs(jobs: list[Job]) -> int:
    """Remove temporary files that killed earlier runs left in these jobs' output folders."""
    folders = {Path(os.path.realpath(j.target)).parent for j in jobs}  # parts go beside targets
    return sum(clean_stale_parts(folder) for folder in folders)


def run_job(job: Job, upscaler: Upscaler | ChooseFn, target: TargetSize | float, fmt: str = "same",
            quality: int | None = None, overwrite: bool = False, skip_existing: bool = False,
            progress: ProgressFn | None = None, sized: SizedFn | None = None) -> Outcome:
    """Read, upscale and atomically write one file. This is the boundary of a file's job: any
    exception (but a :class:`Cancelled` from ``progress``) becomes this file's one-line failure,
    and the batch goes on.

    ``upscaler`` is one engine for every file, or a function choosing one from what the file is
    (its :class:`ImageInfo`), returning the engine and the model's name for the report.
    ``quality``: JPEG/WebP quality the user gave (None: the default, lossless WebP kept).
    ``fmt`` is the batch's format; a job's own (its named output file's) comes first.
    ``sized`` is told the file's size, its result's and its frames once it is decoded, before
    the upscale: a front end can say why a job takes long (a 68-byte GIF can be 25 MP).
    """
    t0 = time.perf_counter()
    try:
        return _run(job, upscaler, TargetSize.from_value(target), (job.fmt or fmt).lower(), quality,
                    overwrite, skip_existing, progress, sized, t0)
    except Cancelled:
        raise
    except OutputExistsError as e:
        if skip_existing:  # another run wrote it meanwhile
            return _skipped(job, "written meanwhile by another run")
        return _failed(job, e, t0)
    except Exception as e:  # noqa: BLE001 - the file job's boundary: any failure is one line
        return _failed(job, e, t0)


def _skipped(job: Job, why: str) -> Outcome:
    """``job`` skipped for ``why``, its own note kept (the other names its input was given by)."""
    return Outcome(job, "skipped", "; ".join(filter(None, [why, job.note])))


def _failed(job: Job, e: Exception, t0: float) -> Outcome:
    if isinstance(e, DRCNError):
        msg, detail = one_line(e), ""
    else:
        kind = "not enough memory" if isinstance(e, MemoryError) or is_out_of_memory(e) else \
            f"unexpected {type(e).__name__}"
        msg, detail = f"{kind}: {one_line(e)}", traceback.format_exc()
    if not any(p in msg for p in (str(job.source), str(job.target), single_line(str(job.source)))):
        msg = f"{job.source}: {msg}"
    return Outcome(job, "failed", msg, seconds=time.perf_counter() - t0, detail=detail,
                   error=e if isinstance(e, DRCNError) else None)


def _run(job: Job, upscaler: Upscaler | ChooseFn, target: TargetSize, fmt: str,
         quality: int | None, overwrite: bool, skip_existing: bool, progress: ProgressFn | None,
         sized: SizedFn | None, t0: float) -> Outcome:
    if job.problem:
        raise InputConflictError(job.problem)
    if skip_existing and job.held:  # written now, the next run would take that file for another's
        raise AmbiguousOutputError(f"{job.source}: its result may be {job.held}, there under "
                                   "another input's name: not written")
    if os.path.lexists(job.target):
        if skip_existing and job.rivals:  # the file may be a rival's result
            others = " or ".join(map(str, job.rivals[:3])) + (" or more" if job.rivals[3:] else "")
            raise AmbiguousOutputError(f"{job.target} exists but may be another input's result "
                                       f"({others}), which can have that name and has none of "
                                       "its own yet: not skipped")
        if skip_existing:
            return _skipped(job, "already exists")
        if not overwrite:
            raise OutputExistsError(f"{job.target} exists", path=job.target)
        check_replaceable(job.target)  # before the upscale, as the write would
    out_fmt = out_format(job.source, fmt)
    refuse_early(job.source, out_fmt, target)  # what the header alone condemns: no decoding
    array, info = read_image(job.source)
    checked_image(array)  # the engine's refusals (NaN, infinite values) before any work on them
    mode = permission_bits(job.source)  # read now: the input may go during the upscale
    label = ""
    if not isinstance(upscaler, Upscaler):
        upscaler, label = upscaler(info, array)
    named = FORMATS.get(job.source.suffix.lower().lstrip("."))
    if fmt == "same" and info.format in SUFFIX and job.source.suffix and info.format != named:
        info.notes.append(f"content is {info.format}, not {named or job.source.suffix} as the "
                          f"name says: written as {out_fmt}")
    elif fmt == "same" and named != out_fmt:
        info.notes.append(f"{job.source.suffix or 'a name without an extension'} is not an "
                          f"output format: written as {out_fmt}")
    h, w = array.shape[:2]
    oh, ow = target.resolve(h, w)
    scale = (ow / w, oh / h)  # per axis, for the DPI
    check_writable(array, out_fmt, info, scale, quality, size=(oh, ow))

    def upscaled(a: np.ndarray, about: ImageInfo, report: ProgressFn | None) -> Encoded:
        """A still, or an animation's frame, upscaled and encoded as the result."""
        return encode(upscaler.upscale(a, size=(oh, ow), progress=report),
                      out_fmt, about, scale, quality)

    moving = animates(info, out_fmt)
    if sized is not None:
        sized((w, h), (ow, oh), info.frames if moving else 1)
    if moving:
        encoded, frames = animated(job.source, array, info, out_fmt, (oh, ow), upscaled,
                                   progress)
    else:
        channels = 1 if array.ndim == 2 else array.shape[2]
        coded = coefficient_bytes((oh, ow), channels) if out_fmt == "JPEG" and \
            info.progressive else 0  # what libjpeg holds as it writes the result
        check_memory(h, w, channels, array.itemsize, size=(oh, ow), held=coded)
        encoded, frames = upscaled(array, info, progress), 1
    atomic_save(encoded, job.target, overwrite=overwrite, mode=mode)
    note = "; ".join(dict.fromkeys([job.note, *info.notes] if job.note else info.notes))
    return Outcome(job, "done", note, (w, h), (ow, oh), frames, time.perf_counter() - t0,
                   model=label)


def gather_outcomes(outcomes: list[Outcome]) -> list[Outcome]:
    """Every rank's outcomes on every rank, in the batch's order (rank r took files r, r + world,
    ...); the identity outside torchrun."""
    import torch.distributed as dist

    from .devices import peers_lost

    if not (dist.is_available() and dist.is_initialized()):
        return outcomes
    parts: list[list[Outcome]] = [[] for _ in range(dist.get_world_size())]
    done = sum(o.status == "done" for o in outcomes)
    try:
        with peers_lost(f"this process wrote {counted(done, 'file')}; --skip-existing goes on "
                        "with the others"):
            dist.all_gather_object(parts, outcomes)
    finally:
        dist.destroy_process_group()
    return [o for row in itertools.zip_longest(*parts) for o in row if o is not None]
