"""``drcn upscale``: image files, folders and globs upscaled one file at a time, with a progress
bar, one line per file that fails and a summary; under torchrun the files are split across the
processes. :mod:`.batch` plans and runs each file; :mod:`.cli` registers the command."""

from __future__ import annotations

from collections import deque
from typing import Annotated

import typer

from .cli_options import MODEL_HELP, DeviceOpt, PrecisionOpt
from .encoding import DEFAULT_QUALITY
from .errors import (
    AmbiguousOutputError,
    BadOptionError,
    OutputBlockedError,
    OutputExistsError,
    counted,
)
from .hub import DEFAULT_MODEL, SourceChoice
from .scales import MAX_SCALE, MIN_SCALE
from .stops import stop_word, stopped_status, take_stops
from .terminal import (
    console,
    hint,
    note,
    output_value,
    print_error,
    print_plain,
    stopped_cleanly,
    user_errors,
)


def upscale(
    inputs: Annotated[list[str], typer.Argument(help="image files, folders or globs")],
    scale: Annotated[float | None, typer.Option(
        "--scale", "-s", help=f"any factor from {MIN_SCALE:g} to {MAX_SCALE:g}, e.g. 2, 2.5, 3 "
        "(default 2)")] = None,
    width: Annotated[int | None, typer.Option(
        min=1, help="output width in pixels; alone, keeps the aspect ratio")] = None,
    height: Annotated[int | None, typer.Option(
        min=1, help="output height in pixels; alone, keeps the aspect ratio")] = None,
    long_edge: Annotated[int | None, typer.Option(
        min=1, help="output length of the longer side, aspect ratio kept")] = None,
    output: Annotated[str | None, typer.Option("--output", "-o", parser=output_value,
                      help="output folder (default: beside the input, never inside it), or "
                      "for one image its file: big.png, whose extension sets the format")] = None,
    suffix: Annotated[str, typer.Option(help="added to each output file name, before its "
                      "extension (no path separator, control character or < > : \" | ? *)")] = "",
    fmt: Annotated[str, typer.Option(
        "--format", "-f", help="same, png, jpg, webp, avif, tiff or bmp")] = "same",
    quality: Annotated[int | None, typer.Option(
        min=1, max=100, help=f"JPEG/WebP/AVIF quality (default {DEFAULT_QUALITY}; a lossless WebP "
        "stays lossless unless a quality is given)")] = None,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="descend into subfolders "
                         "(but those of earlier results: drcn-x2, photos-drcn-x2, ...)")] = False,
    overwrite: Annotated[bool, typer.Option(help="replace existing output files")] = False,
    skip_existing: Annotated[bool, typer.Option(help="skip files already done (resume a batch)")]
    = False,
    model: Annotated[str | None, typer.Option(
        "--model", "-m", help=f"{MODEL_HELP} (default: chosen per file, see --denoise)")] = None,
    denoise: Annotated[float | None, typer.Option(
        help="0 = drcn-lite, 1 = drcn-lite-photo (JPEG and noisy photos), between: "
        "a blend (default: drcn-lite for lossless files, stronger for lower-quality JPEGs)")]
    = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    tile: Annotated[int, typer.Option(help="tile size in pixels (0 = measured once, cached)")] = 0,
    tta: Annotated[bool, typer.Option(help="self-ensemble of 8 flips/transposes (8x slower)")]
    = False,
    debug: Annotated[bool, typer.Option(help="print the traceback of unexpected failures")]
    = False,
) -> None:
    """Upscale images with DRCN.

    By --scale, or to --width/--height/--long-edge: DRCN runs at a whole factor from 2 to 4 and
    bicubic takes it to the exact size. Under torchrun, files are split across the processes."""
    from .batch import (
        check_quality,
        clean_stale_outputs,
        collect_jobs,
        gather_outcomes,
        per_source_chooser,
        run_job,
    )
    from .devices import join_torchrun
    from .engine import Upscaler
    from .progress import BatchProgress
    from .sizing import TargetSize
    from .writefailures import blocked_with

    take_stops()
    hints = {OutputExistsError: "use --overwrite or --skip-existing",
             AmbiguousOutputError: "move that file away, or redo all with --overwrite"}
    written: list[str] = []  # for a stop outside the loop: while planning, loading, summing up
    with user_errors(hints), stopped_cleanly(written):
        if overwrite and skip_existing:
            raise BadOptionError("--overwrite and --skip-existing contradict each other; pick one")
        sized = bool(width or height or long_edge)
        target = TargetSize(2.0 if scale is None and not sized else scale, width or 0,
                            height or 0, long_edge or 0)
        jobs, errors = collect_jobs(inputs, target, output, recursive, suffix, fmt)
        check_quality(jobs, quality)
        place, dev = join_torchrun(device, backend="gloo")  # only file lists travel between ranks
        mine = jobs[place.rank::place.world]
        mine_of = "" if place.world == 1 else f" (rank {place.rank}'s)"  # in counts of mine
        engine = {"device": str(dev) if place.world > 1 else device, "precision": precision,
                  "tile": tile, "tta": tta, "notify": note}
        upscaler = Upscaler(DEFAULT_MODEL if model is None else model, denoise=denoise, **engine)
        chooser = None if model is not None or denoise is not None else \
            per_source_chooser(upscaler, **engine)
        if place.main:
            clean_stale_outputs(jobs)
        for e in errors if place.main else []:
            print_error(e)
        outcomes = []
        try:  # the bar's last frame before the line that says it was interrupted
            with BatchProgress(console, len(mine), enabled=place.main and bool(jobs),
                               label=f"images{mine_of}") as bar:
                todo = deque(mine)  # less the files bound to a place found blocked
                while todo:
                    job = todo.popleft()
                    bar.start(job)
                    out = run_job(job, chooser or upscaler, target, fmt, quality, overwrite,
                                  skip_existing, progress=bar.tiles, sized=bar.sized)
                    bar.finish(out)
                    if out.status == "failed":
                        print_error(out.message + hint(out.error, hints))
                        if debug:
                            for line in out.detail.splitlines():
                                print_plain(line)
                    outcomes.append(out)
                    if out.status == "done":
                        written.append(str(out.job.target))
                    if isinstance(out.error, OutputBlockedError) and todo:  # each would fail
                        held = blocked_with(out.error, job.target)
                        going = deque(j for j in todo if not held(j.target))
                        then = f"{out.error.remedy}, then --skip-existing goes on from here"
                        if not going:
                            print_error(f"stopped: {out.error.state}; {len(written)} of "
                                        f"{len(mine)}{mine_of} files written, {len(todo)} not "
                                        f"started ({then})")
                            break
                        if refused := len(todo) - len(going):
                            print_error(f"not started: {counted(refused, 'more file')} there, as "
                                        f"{out.error.state} ({then}); the others go on")
                        todo = going
        except KeyboardInterrupt:
            done = sum(o.status == "done" for o in outcomes)
            print_error(f"{stop_word()}: {done} of {counted(len(mine), 'file')}{mine_of} written, "
                        "nothing of the one in progress (--skip-existing goes on from here)")
            raise typer.Exit(stopped_status()) from None
        outcomes = gather_outcomes(outcomes)
        if place.main and jobs:
            named = None if chooser else SourceChoice(model or DEFAULT_MODEL, denoise or 0.0).label
            BatchProgress.summary(console, outcomes, upscaler, named)
        if errors or any(o.status == "failed" for o in outcomes):
            raise typer.Exit(1)
