"""The ``drcn`` command line: upscale, eval and compare, plus the sub-apps of training and the
host integrations (each declared in its own package and only added here)."""

from __future__ import annotations

if __name__ == "__main__":  # python -m drcn_plugin.cli: the drcn script, whose Ctrl-C guard
    from drcn_plugin.__main__ import main  # covers the imports below (torch takes seconds)
    raise SystemExit(main())

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from PIL import Image
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from .encoding import DEFAULT_QUALITY
from .errors import (
    BadImageError,
    BadOptionError,
    DiskFullError,
    OutputExistsError,
    path_name,
    reason,
)
from .hub import DEFAULT_MODEL, SHIPPED, SourceChoice
from .imagefile import memory_pixel_limit
from .integrations.cli import comfyui_app, gimp_app
from .scales import MAX_SCALE, MAX_TRAIN_SCALE, MIN_SCALE, MIN_TRAIN_SCALE, check_train_scales
from .stops import stopped_status
from .terminal import (
    OVERWRITE_HINT,
    PIPE_EXIT,
    ReaderGone,
    console,
    hint,
    note,
    path_value,
    print_error,
    print_plain,
    reader_gone,
    require_stdout,
    result_console,
    signals_interrupt,
    silence,
    stopped_cleanly,
    unencodable_escaped,
    user_errors,
)
from .training.cli import app as train_app

if TYPE_CHECKING:
    from .evaluation import ScaleResult

MULTI_SCALE_COMMANDS = {"eval", "train"}


def expand_multi_scale(argv: list[str]) -> list[str]:
    """Let ``eval``/``train`` take ``--scale 2 3 4`` (click wants ``--scale 2 --scale 3 ...``)."""
    if not MULTI_SCALE_COMMANDS.intersection(argv[:1]):
        return argv
    out: list[str] = []
    flag, values = None, 0
    for tok in argv:
        if flag is not None and (values == 0 or tok.isdigit()):
            out += [tok] if values == 0 else [flag, tok]
            values += 1
            continue
        if tok.startswith("--scale="):  # its first value is attached
            flag, values = "--scale", 1
        else:
            flag, values = (tok if tok in ("--scale", "-s") else None), 0
        out.append(tok)
    return out


class _Group(TyperGroup):
    """Typer's group, with ``--scale 2 3 4`` expanded before click parses it."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, expand_multi_scale(args))


app = typer.Typer(cls=_Group, add_completion=False, no_args_is_help=True,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  pretty_exceptions_enable=False, rich_markup_mode=None)



def _print_version(value: bool) -> None:
    if value:
        from . import __version__

        result_console.print(f"drcn-plugin {__version__}", markup=False, highlight=False)
        raise typer.Exit()


@app.callback()
def _options(version: Annotated[bool | None, typer.Option(
        "--version", callback=_print_version, is_eager=True,
        help="print the version and exit")] = None) -> None:
    """DRCN super-resolution: upscale images, evaluate and train models."""


MODEL_HELP = f"{', '.join(SHIPPED)}, a .safetensors file, a model folder or hf:owner/name"
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps")]
PrecisionOpt = Annotated[str, typer.Option(help="auto, fp32, bf16 or fp16")]


@app.command("eval")
def eval_cmd(
    dataset: Annotated[Path, typer.Option(parser=path_value, help="folder of ground-truth images")],
    scale: Annotated[list[int], typer.Option("--scale", "-s", help=(
        f"integer scales from {MIN_TRAIN_SCALE} to {MAX_TRAIN_SCALE}, e.g. --scale 2 3 4"))]
    = [2, 3, 4],  # noqa: B006
    model: Annotated[str, typer.Option("--model", "-m", help=(
        f"{MODEL_HELP}; bicubic scores the interpolation alone"))] = DEFAULT_MODEL,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "fp32",
    per_depth: Annotated[bool, typer.Option(help="also score every depth and the ensemble")]
    = False,
    tta: Annotated[bool, typer.Option(help="self-ensemble of 8 flips/transposes")] = False,
    json_out: Annotated[Path | None, typer.Option(
        "--json", parser=path_value, help="write results here")] = None,
    overwrite: Annotated[bool, typer.Option(
        help="let --json replace a file drcn did not write, and --plot an existing file")]
    = False,
    degrade: Annotated[str, typer.Option(
        help="degrade the LR first, e.g. jpeg:75 or noise:5,jpeg:85 (seeded per image)")] = "",
    denoise: Annotated[float | None, typer.Option(
        help="blend --model toward its photo variant, as drcn upscale does")]
    = None,
    plot: Annotated[Path | None, typer.Option(
        parser=path_value, help="draw PSNR against recursion depth, one line per scale, the "
        "ensemble as a dashed level, into this PNG (implies --per-depth; needs matplotlib)")]
    = None,
) -> None:
    """Score a model with the paper's protocol (PSNR/SSIM on Y).

    The ground truth is shrunk with MATLAB-style bicubic and a border of s pixels is shaved. Files
    asked for are written before the tables are printed, so a stdout that fails loses none."""
    from .charts import check_png_target, recursion_chart
    from .degrade import Recipe
    from .engine import Upscaler
    from .evaluation import evaluate, is_results_file, results_json
    from .imagefile import list_images
    from .writing import probe_folder, refuse_input_target

    signals_interrupt()
    written: list[str] = []
    with user_errors(OVERWRITE_HINT), stopped_cleanly(written):
        require_stdout()
        check_train_scales(scale)
        if json_out is not None:  # checked before the (long) evaluation
            refuse_input_target(json_out, list_images(dataset))
            if json_out.is_dir():
                raise BadOptionError(f"{json_out} is a folder; give a file name", option="json")
            if json_out.exists() and not overwrite and not is_results_file(json_out):
                raise OutputExistsError(f"{json_out} exists and is not a drcn eval result",
                                        path=json_out)
            probe_folder(json_out.parent)
        recipe = Recipe.parse(degrade) if degrade else None
        if plot is not None and json_out is not None and \
                os.path.abspath(plot) == os.path.abspath(json_out):
            raise BadOptionError("it names the same file as --json: give two", option="plot")
        if plot is not None:  # checked before the (long) evaluation
            if model == "bicubic":
                raise BadOptionError("it draws each recursion depth of a DRCN model; bicubic "
                                     "has none", option="plot")
            check_png_target(plot, list_images(dataset), overwrite, option="plot")
        if model == "bicubic" and denoise is not None:
            raise BadOptionError("a denoise strength blends two DRCN models; bicubic has none",
                                 option="denoise")
        for flag, given in (("tta", tta), ("per_depth", per_depth)):
            if model == "bicubic" and given:
                raise BadOptionError("it works on a DRCN model; bicubic has no network",
                                     option=flag)
        upscaler = None if model == "bicubic" else Upscaler(
            model, device=device, tta=tta, precision=precision, denoise=denoise, notify=note)
        per_depth = (per_depth or plot is not None) and upscaler is not None
        printed_only = json_out is None and plot is None

        def on_image(s: int, name: str) -> None:
            if printed_only and reader_gone():  # no one reads the tables: stop working for them
                raise ReaderGone
            status.update(escape(f"evaluating {model} on {dataset}: x{s} {name} done"))

        with console.status(escape(f"evaluating {model} on {dataset}")) as status:
            results = evaluate(upscaler, dataset, scale, per_depth=per_depth, degrade=recipe,
                              on_image=on_image, notify=note)
        label = (model if denoise is None else SourceChoice(model, denoise).label) + \
            (" with tta" if tta and upscaler is not None else "")
        title = f"{label} on {path_name(dataset)}" + \
            (f", LR degraded by {recipe}" if recipe else "")
        if json_out is not None:
            from .writing import atomic_write_bytes

            about = {"model": label, "degrade": str(recipe) if recipe else None}
            atomic_write_bytes(json_out, json.dumps(results_json(results, about), indent=2,
                                                    allow_nan=False).encode())
            written.append(str(json_out))
        if plot is not None:
            recursion_chart(results, plot, f"{title}: each recursion depth and the ensemble")
            written.append(str(plot))
            console.print(f"wrote {plot}", markup=False, highlight=False)
        _print_eval(label, title, results)


def _print_eval(model: str, title: str, results: dict[int, ScaleResult]) -> None:
    table = Table(title=escape(f"{title} (PSNR dB / SSIM, Y, shave = scale)"))
    for col in ("scale", "bicubic", model, "gain", "s/image"):
        table.add_column(col, justify="right")
    for s, r in results.items():
        table.add_row(f"x{s}", f"{r.bicubic_psnr:.2f} / {r.bicubic_ssim:.4f}",
                      f"{r.psnr:.2f} / {r.ssim:.4f}", f"{r.gain:+.2f}",
                      f"{r.seconds_per_image:.2f}")
    result_console.print(table)
    for s, r in results.items():
        if r.depth_psnr is not None:
            depth = Table(title=f"x{s}: each depth's prediction vs the ensemble (PSNR dB)")
            for d in range(len(r.depth_psnr)):
                depth.add_column(f"d{d + 1}", justify="right")
            depth.add_column("ensemble", justify="right", style="bold")
            depth.add_row(*[f"{v:.2f}" for v in r.depth_psnr], f"{r.ensemble_psnr:.2f}")
            result_console.print(depth)


@app.command()
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
    output: Annotated[Path | None, typer.Option("--output", "-o", parser=path_value,
                      help="output folder (default: beside the input, never inside it)")] = None,
    suffix: Annotated[str, typer.Option(help="added to each output file name, before its "
                      "extension (no path separator, control character or < > : \" | ? *)")] = "",
    fmt: Annotated[str, typer.Option(
        "--format", "-f", help="same, png, jpg, webp, avif, tiff or bmp")] = "same",
    quality: Annotated[int | None, typer.Option(
        min=1, max=100, help=f"JPEG/WebP/AVIF quality (default {DEFAULT_QUALITY}; a lossless WebP "
        "stays lossless unless a quality is given)")] = None,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="descend into subfolders")]
    = False,
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

    signals_interrupt()
    hints = {OutputExistsError: "use --overwrite or --skip-existing"}
    written: list[str] = []  # for a stop outside the loop: while planning, loading, summing up
    with user_errors(hints), stopped_cleanly(written):
        if overwrite and skip_existing:
            raise BadOptionError("--overwrite and --skip-existing contradict each other; pick one")
        sized = bool(width or height or long_edge)
        target = TargetSize(2.0 if scale is None and not sized else scale, width or 0,
                            height or 0, long_edge or 0)
        jobs, errors = collect_jobs(inputs, target, output, recursive, suffix, fmt)
        place, dev = join_torchrun(device, backend="gloo")  # only file lists travel between ranks
        mine = jobs[place.rank::place.world]
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
        with BatchProgress(console, len(mine), enabled=place.main and bool(jobs)) as bar:
            try:
                for job in mine:
                    bar.start(job)
                    out = run_job(job, chooser or upscaler, target, fmt, quality, overwrite,
                                  skip_existing, progress=bar.tiles)
                    bar.finish(out)
                    if out.status == "failed":
                        print_error(out.message + hint(out.error, hints))
                        if debug and out.detail:
                            print_plain(out.detail)
                    outcomes.append(out)
                    if out.status == "done":
                        written.append(str(out.job.target))
                    left = len(mine) - len(outcomes)
                    if isinstance(out.error, DiskFullError) and left:  # each would fail too
                        mine_of = "" if place.world == 1 else f" (rank {place.rank}'s)"
                        print_error(f"stopped: the disk is full; {len(written)} of {len(mine)}"
                                    f"{mine_of} files written, {left} not started (free space, "
                                    "then --skip-existing goes on from here)")
                        break
            except KeyboardInterrupt:
                done = sum(o.status == "done" for o in outcomes)
                print_error(f"interrupted: {done} of {len(mine)} files written, nothing of the "
                            "one in progress (--skip-existing goes on from here)")
                raise typer.Exit(stopped_status()) from None
        outcomes = gather_outcomes(outcomes)
        if place.main and jobs:
            BatchProgress.summary(console, outcomes, upscaler)
        if errors or any(o.status == "failed" for o in outcomes):
            raise typer.Exit(1)


@app.command()
def compare(
    image: Annotated[Path, typer.Argument(parser=path_value, help="an image file")],
    scale: Annotated[float, typer.Option("--scale", "-s", help=(
        f"upscaling factor, above {MIN_SCALE:g} and at most {MAX_SCALE:g}, e.g. 2, 2.5, 3"))] = 3.0,
    output: Annotated[Path | None, typer.Option("--output", "-o", parser=path_value,
                      help="PNG to write (default: IMAGE-compare-xS.png beside it)")] = None,
    from_original: Annotated[bool, typer.Option(
        help="IMAGE is the original: shrink it first and score each panel against it")] = True,
    crop: Annotated[int, typer.Option(help="crop size in output pixels")] = 160,
    model: Annotated[list[str], typer.Option(
        "--model", "-m", help="model spec; repeat for one panel per model, e.g. -m drcn-lite "
        "-m drcn")] = [DEFAULT_MODEL],  # noqa: B006
    device: DeviceOpt = "auto",
    overwrite: Annotated[bool, typer.Option(help="replace an existing output")] = False,
    degrade: Annotated[str, typer.Option(
        help="degrade the small image before it is enlarged, e.g. jpeg:75 or noise:5,jpeg:85")]
    = "",
    seed: Annotated[int, typer.Option(min=0, max=2**63 - 1,
                                      help="seed of the degradation's random draws")] = 0,
) -> None:
    """Write one PNG of matching crops, each with its PSNR.

    Nearest, bicubic and DRCN side by side, and the original when it is known."""
    from .compare import check_compare_scale, compare_image, panel_labels
    from .degrade import Recipe
    from .engine import Upscaler
    from .imagefile import read_image
    from .writing import atomic_save, probe_folder, refuse_input_target

    signals_interrupt()
    with user_errors(OVERWRITE_HINT), stopped_cleanly([]):  # its one file is written last
        check_compare_scale(scale)
        recipe = Recipe.parse(degrade) if degrade else None
        if image.is_dir():  # "." has no name to build the sheet's from
            raise BadImageError(f"{image}: a folder, not an image file")
        default = f"{image.stem}-compare-x{scale:g}.png"
        target = image.with_name(default) if output is None else \
            output / default if output.is_dir() else output
        if target.suffix.lower() != ".png":
            raise BadOptionError(f"{target.name}: the sheet is written as PNG (lossless, so the "
                                 "panels show the methods, not an encoder); name it .png",
                                 option="output")
        refuse_input_target(target, [image])
        if target.exists() and not overwrite:
            raise OutputExistsError(f"{target} exists", path=target)
        probe_folder(target.parent)  # before the (long) work, not after it
        array, _ = read_image(image)
        engines = {label: Upscaler(m, device=device) for m, label in panel_labels(model).items()}
        upscaler = engines if len(engines) > 1 else next(iter(engines.values()))
        sheet = compare_image(array, scale, upscaler, from_original, crop, degrade=recipe,
                              seed=seed)
        atomic_save(sheet, target, "PNG", overwrite=overwrite)
        console.print(f"wrote {target}", markup=False, highlight=False)


app.add_typer(train_app)
app.add_typer(gimp_app, name="gimp")
app.add_typer(comfyui_app, name="comfyui")


def _command_path(args: list[str]) -> str:
    """``drcn`` and the (sub)commands that ``args`` name, for errors click raises without a
    context (an option missing its value)."""
    command, path = typer.main.get_command(app), ["drcn"]
    for arg in args:
        command = getattr(command, "commands", {}).get(arg)
        if command is None:
            break
        path.append(arg)
    return " ".join(path)


def main() -> None:
    """Entry point of the ``drcn`` console script: a usage mistake is one line, like the
    library's errors, with the command's help named."""
    limit = Image.MAX_IMAGE_PIXELS  # put back on return: a caller in-process keeps its own
    Image.MAX_IMAGE_PIXELS = memory_pixel_limit()  # not Pillow's fixed one: what memory holds
    try:
        with unencodable_escaped(sys.stdout):
            code = app(standalone_mode=False, prog_name="drcn")
        if code == 130:  # typer's status for an interrupt; a stop signal names its own
            code = stopped_status()
    except ReaderGone:  # quietly, as SIGPIPE ends git or grep; a file the command wrote stays
        silence(sys.stdout)
        code = PIPE_EXIT
    except SystemExit as e:  # click ends a help whose reader left with status 1
        if e.code != 1 or not reader_gone():
            raise
        code = PIPE_EXIT
    except OSError as e:  # stdout failed outside a command's own checks (help to /dev/full)
        silence(sys.stdout)
        print_error(f"cannot write to stdout: {reason(e)}")
        code = 2
    except typer.Abort:
        print_error("aborted")
        code = 1
    except typer.TyperException as e:
        if type(e).__name__ != "NoArgsIsHelpError":  # the help it stands for is printed
            ctx = getattr(e, "ctx", None)
            path = ctx.command_path if ctx else _command_path(sys.argv[1:])
            print_error(f"{e.format_message()} (see {path} --help)")
        code = e.exit_code
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    sys.exit(code if isinstance(code, int) else 0)
