"""The commands that measure a model: ``drcn eval`` (the paper's protocol over a folder of
ground truth, PSNR/SSIM on Y per scale, as tables, JSON and a chart) and ``drcn compare`` (one
image's crops side by side, each with its PSNR). :mod:`.cli` registers them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from .cli_options import MODEL_HELP, DeviceOpt, PrecisionOpt
from .errors import BadImageError, BadOptionError, path_name, single_line
from .hub import DEFAULT_MODEL, SourceChoice, model_loader
from .scales import MAX_SCALE, MAX_TRAIN_SCALE, MIN_SCALE, MIN_TRAIN_SCALE, check_train_scales
from .stops import take_stops
from .terminal import (
    OVERWRITE_HINT,
    ReaderGone,
    console,
    note,
    path_value,
    print_plain,
    print_table,
    reader_gone,
    require_stdout,
    result_console,
    stopped_cleanly,
    user_errors,
)

if TYPE_CHECKING:
    from .evaluation import ScaleResult


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
    from .devices import pick_device, pick_precision
    from .engine import Upscaler
    from .evaluation import (
        check_depth_options,
        check_scoring_memory,
        dataset_files,
        evaluate,
        is_results_file,
        results_json,
    )
    from .model import blend_weight
    from .names import refuse_dash
    from .writing import check_file_target, probe_folder, refuse_input_target, same_file

    take_stops()
    written: list[str] = []
    with user_errors(OVERWRITE_HINT), stopped_cleanly(written):
        require_stdout()
        check_train_scales(scale)
        recipe = Recipe.parse(degrade) if degrade else None
        # every refusal that needs no model comes before it is loaded (a Hub download)
        if model == "bicubic" and denoise is not None:
            raise BadOptionError("a denoise strength blends two DRCN models; bicubic has none",
                                 option="denoise")
        if denoise is not None:
            blend_weight(denoise, "denoise strength")
        if model == "bicubic" and plot is not None:
            raise BadOptionError("it draws each recursion depth of a DRCN model; bicubic has "
                                 "none", option="plot")
        for flag, given in (("tta", tta), ("per_depth", per_depth)):
            if model == "bicubic" and given:
                raise BadOptionError("it works on a DRCN model; bicubic has no network",
                                     option=flag)
        if plot is not None and tta:  # --plot implies --per-depth: named as the user wrote it
            raise BadOptionError("it draws the plain network's depths, without the "
                                 "self-ensemble (--tta): ask for one of the two", option="plot")
        check_depth_options(per_depth, tta)
        pick_precision(pick_device(device), precision)  # a typo is refused for bicubic too
        if model != "bicubic":  # named without a download; the Upscaler loads it below
            model_loader(model)
        files = dataset_files(dataset, scale)
        inputs = [f.path for f in files]
        if json_out is not None:  # checked before the (long) evaluation
            refuse_dash(json_out, "json", "a file", "a file")
            refuse_input_target(json_out, inputs)
            if json_out.is_dir():
                raise BadOptionError(f"{json_out} is a folder; give a file name", option="json")
            # an earlier result is replaced without --overwrite; is_results_file reads no pipe
            check_file_target(json_out, "json", overwrite or is_results_file(json_out),
                              "exists and is not a drcn eval result")
            probe_folder(json_out.parent)
        if plot is not None and json_out is not None and \
                os.path.abspath(plot) == os.path.abspath(json_out):
            raise BadOptionError("it names the same file as --json: give two", option="plot")
        if plot is not None:
            check_png_target(plot, inputs, overwrite, option="plot")
            if same_file(plot.parent, dataset):  # a PNG there is one more image of the dataset
                raise BadOptionError(f"{plot} is in the dataset folder: the next eval would "
                                     "score the chart as one of its images; write it elsewhere",
                                     option="plot")
        check_scoring_memory(files, recipe is not None)
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
                              on_image=on_image, notify=note, files=files)
        label = SourceChoice(model, denoise or 0.0).label + \
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
            print_plain(f"wrote {plot}")
        _print_eval(None if upscaler is None else label, title, results)


def _print_eval(model: str | None, title: str, results: dict[int, ScaleResult]) -> None:
    """The scores per scale; ``model`` None: bicubic alone, without a model column or gain."""
    table = Table()
    against = () if model is None else (escape(single_line(model)), "gain")
    for col in ("scale", "bicubic", *against, "s/image"):
        table.add_column(col, justify="right")
    for s, r in results.items():
        scores = () if model is None else (f"{r.psnr:.2f} / {r.ssim:.4f}", f"{r.gain:+.2f}")
        table.add_row(f"x{s}", f"{r.bicubic_psnr:.2f} / {r.bicubic_ssim:.4f}", *scores,
                      f"{r.seconds_per_image:.2f}")
    print_table(result_console, table, f"{title} (PSNR dB / SSIM, Y, shave = scale)")
    scored = {s: r for s, r in results.items() if r.depth_psnr is not None}
    if scored:  # a row per depth, a column per scale: 16 depths fit any terminal's width
        depth = Table(title="PSNR (dB) by depth")  # one line over a single scale's column
        for col in ("depth", *(f"x{s}" for s in scored)):
            depth.add_column(col, justify="right")
        depths = len(next(iter(scored.values())).depth_psnr)
        names = [*(f"d{d + 1}" for d in range(depths)), "ensemble"]
        rows = zip(*([*r.depth_psnr, r.ensemble_psnr] for r in scored.values()), strict=True)
        for name, row in zip(names, rows, strict=True):
            depth.add_row(name, *(f"{v:.2f}" for v in row),
                          style="bold" if name == "ensemble" else None)
        print_table(result_console, depth)


def compare(
    image: Annotated[Path, typer.Argument(parser=path_value, help="an image file")],
    scale: Annotated[float, typer.Option("--scale", "-s", help=(
        f"upscaling factor, above {MIN_SCALE:g} and at most {MAX_SCALE:g}, e.g. 2, 2.5, 3"))] = 3.0,
    output: Annotated[Path | None, typer.Option("--output", "-o", parser=path_value,
                      help="PNG to write (default: beside IMAGE, named after it: "
                           "photo-compare-x3.png for photo.jpg at x3)")] = None,
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
    from .compare import (
        check_compare_input,
        check_compare_scale,
        check_crop,
        compare_image,
        panel_labels,
    )
    from .degrade import Recipe
    from .engine import Upscaler
    from .imagefile import read_image, read_in_part
    from .writing import Encoded, atomic_save, check_file_target, probe_folder, refuse_input_target

    take_stops()
    with user_errors(OVERWRITE_HINT), stopped_cleanly([]):  # its one file is written last
        check_compare_scale(scale)
        check_crop(crop)
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
        check_file_target(target, "output", overwrite)
        probe_folder(target.parent)  # before the (long) work, not after it
        array, info = read_image(image)
        if line := read_in_part(image, array, info):  # as eval and training say of it
            note(line)
        labels = panel_labels(model)
        check_compare_input(array, scale, len(labels), from_original)  # before any download
        engines = {label: Upscaler(m, device=device) for m, label in labels.items()}
        upscaler = engines if len(engines) > 1 else next(iter(engines.values()))
        sheet = compare_image(array, scale, upscaler, from_original, crop, degrade=recipe,
                              seed=seed)
        atomic_save(Encoded(sheet, "PNG"), target, overwrite=overwrite)
        print_plain(f"wrote {target}")
