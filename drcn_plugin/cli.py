"""The ``drcn`` command line: a thin Typer front end over the engine, evaluation and training."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import click
import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from .errors import DRCNError
from .hub import DEFAULT_MODEL

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
        flag, values = (tok if tok in ("--scale", "-s") else None), 0
        out.append(tok)
    return out


class _Group(TyperGroup):
    """Typer's group, with ``--scale 2 3 4`` expanded before click parses it."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, expand_multi_scale(args))


app = typer.Typer(cls=_Group, add_completion=False, no_args_is_help=True,
                  pretty_exceptions_enable=False, help="DRCN super-resolution: upscale images, evaluate and train models.")
console = Console(stderr=True)

ModelOpt = Annotated[str, typer.Option("--model", "-m",
                     help="drcn-lite, drcn, a .safetensors file, a model folder or hf:owner/name")]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps")]
PrecisionOpt = Annotated[str, typer.Option(help="auto, fp32, bf16 or fp16")]


@contextmanager
def user_errors():
    """Turn a DRCNError into one red line and exit code 2 (never a traceback)."""
    try:
        yield
    except DRCNError as e:
        console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


@app.command("eval")
def eval_cmd(
    dataset: Annotated[Path, typer.Option(help="folder of ground-truth images")],
    scale: Annotated[list[int], typer.Option("--scale", "-s", help="scales, e.g. --scale 2 3 4")]
    = [2, 3, 4],  # noqa: B006
    model: ModelOpt = DEFAULT_MODEL,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "fp32",
    per_depth: Annotated[bool, typer.Option(help="also score every depth and the ensemble")] = False,
    tta: Annotated[bool, typer.Option(help="self-ensemble of 8 flips/transposes")] = False,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="write results here")] = None,
) -> None:
    """Score a model with the paper's protocol (Y, MATLAB bicubic, shave s, PSNR/SSIM)."""
    from .engine import Upscaler
    from .evaluation import evaluate

    with user_errors():
        if any(s < 2 or s > 8 for s in scale):
            raise DRCNError("--scale takes integer factors from 2 to 8")
        upscaler = None if model == "bicubic" else Upscaler(model, device=device,
                                                            precision=precision, tta=tta)
        with console.status(f"evaluating {model} on {dataset}"):
            results = evaluate(upscaler, dataset, scale, per_depth=per_depth and upscaler is not None)
        _print_eval(model, dataset, results)
        if json_out is not None:
            from .imagefile import atomic_write_bytes

            atomic_write_bytes(json_out, json.dumps(results, indent=2).encode())


def _print_eval(model: str, dataset: Path, results: dict) -> None:
    table = Table(title=f"{model} on {dataset.name} (PSNR dB / SSIM, Y, shave = scale)")
    for col in ("scale", "bicubic", model, "gain", "s/image"):
        table.add_column(col, justify="right")
    for s, r in results.items():
        table.add_row(f"x{s}", f"{r['bicubic_psnr']:.2f} / {r['bicubic_ssim']:.4f}",
                      f"{r['psnr']:.2f} / {r['ssim']:.4f}",
                      f"{r['psnr'] - r['bicubic_psnr']:+.2f}", f"{r['seconds_per_image']:.2f}")
    Console().print(table)
    for s, r in results.items():
        if "depth_psnr" in r:
            depth = Table(title=f"x{s}: each depth's prediction vs the ensemble (PSNR dB)")
            for d in range(len(r["depth_psnr"])):
                depth.add_column(f"d{d + 1}", justify="right")
            depth.add_column("ensemble", justify="right", style="bold")
            depth.add_row(*[f"{v:.2f}" for v in r["depth_psnr"]], f"{r['ensemble_psnr']:.2f}")
            Console().print(depth)


@app.command()
def upscale(
    inputs: Annotated[list[str], typer.Argument(help="image files, folders or globs")],
    scale: Annotated[float, typer.Option("--scale", "-s", help="any factor from 1 to 16, e.g. 2, 2.5, 3")] = 2.0,
    output: Annotated[Optional[Path], typer.Option("--output", "-o",
                      help="output folder (default: beside the input, never inside it)")] = None,
    suffix: Annotated[str, typer.Option(help="added to each output file name")] = "",
    fmt: Annotated[str, typer.Option("--format", "-f", help="same, png, jpg, webp, tiff or bmp")] = "same",
    quality: Annotated[int, typer.Option(min=1, max=100, help="JPEG/WebP quality")] = 95,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="descend into subfolders")] = False,
    overwrite: Annotated[bool, typer.Option(help="replace existing output files")] = False,
    skip_existing: Annotated[bool, typer.Option(help="skip files already done (resume a batch)")] = False,
    model: ModelOpt = DEFAULT_MODEL,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    tile: Annotated[int, typer.Option(help="tile size in pixels (0 = measured once, then cached)")] = 0,
    tta: Annotated[bool, typer.Option(help="self-ensemble of 8 flips/transposes (8x slower)")] = False,
) -> None:
    """Upscale images with DRCN. Under torchrun, files are split across the processes."""
    from .batch import collect_jobs, distributed, gather_outcomes, run_job
    from .engine import MAX_SCALE, Upscaler
    from .progress import BatchProgress

    with user_errors():
        if not 1 <= scale <= MAX_SCALE:
            raise DRCNError(f"--scale {scale:g} is out of range: use 1 to {MAX_SCALE:g}")
        if overwrite and skip_existing:
            raise DRCNError("--overwrite and --skip-existing contradict each other; pick one")
        jobs, errors = collect_jobs(inputs, scale, output, recursive, suffix, fmt)
        rank, world, local = distributed()
        mine = jobs[rank::world]
        if device == "auto" and world > 1:
            import torch

            device = f"cuda:{local % torch.cuda.device_count()}" if torch.cuda.is_available() \
                else "cpu"
        upscaler = Upscaler(model, device=device, precision=precision, tile=tile, tta=tta,
                            notify=lambda m: console.print(f"[dim]{m}[/]", highlight=False))
        for e in errors if rank == 0 else []:
            console.print(f"[red]error:[/] {e}", highlight=False, soft_wrap=True)
        outcomes = []
        with BatchProgress(console, len(mine), enabled=rank == 0) as bar:
            for job in mine:
                bar.start(job)
                out = run_job(job, upscaler, scale, fmt, quality, overwrite, skip_existing,
                              progress=bar.tiles)
                bar.finish(out)
                if out.status == "failed":
                    console.print(f"[red]error:[/] {out.message}", highlight=False, soft_wrap=True)
                outcomes.append(out)
        outcomes = gather_outcomes(outcomes)
        if rank == 0:
            BatchProgress.summary(console, outcomes, upscaler)
        if errors or any(o.status == "failed" for o in outcomes):
            raise typer.Exit(1)


@app.command()
def compare(
    image: Annotated[Path, typer.Argument(help="an image file")],
    scale: Annotated[float, typer.Option("--scale", "-s")] = 3.0,
    output: Annotated[Optional[Path], typer.Option("--output", "-o",
                      help="PNG to write (default: IMAGE-compare-xS.png beside it)")] = None,
    from_original: Annotated[bool, typer.Option(
        help="IMAGE is the original: shrink it first and score each panel against it")] = True,
    crop: Annotated[int, typer.Option(help="crop size in output pixels")] = 160,
    model: ModelOpt = DEFAULT_MODEL,
    device: DeviceOpt = "auto",
    overwrite: Annotated[bool, typer.Option(help="replace an existing output")] = False,
) -> None:
    """Write one PNG with matching crops: nearest, bicubic, DRCN (and the original), with PSNR."""
    from .compare import compare_image
    from .engine import MAX_SCALE, Upscaler
    from .imagefile import atomic_save, read_image

    with user_errors():
        if not 1 < scale <= MAX_SCALE:
            raise DRCNError(f"--scale {scale:g} is out of range: use more than 1, at most {MAX_SCALE:g}")
        array, _ = read_image(image)
        sheet = compare_image(array, scale, Upscaler(model, device=device), from_original, crop)
        target = output or image.with_name(f"{image.stem}-compare-x{scale:g}.png")
        atomic_save(sheet, target, "PNG", overwrite=overwrite)
        console.print(f"wrote {target}")


gimp_app = typer.Typer(no_args_is_help=True, help="The GIMP 3 plug-in.")
app.add_typer(gimp_app, name="gimp")


@gimp_app.command("install")
def gimp_install_cmd(
    gimp_dir: Annotated[Optional[Path], typer.Option(
        help="GIMP 3 user folder (default: the platform's, e.g. ~/.config/GIMP/3.0)")] = None,
) -> None:
    """Install the GIMP 3 plug-in; its worker will run on this Python."""
    import sys

    from .gimp_install import install

    with user_errors():
        dest = install(gimp_dir)
    console.print(f"installed {dest} (worker Python: {sys.executable}); restart GIMP to load it",
                  soft_wrap=True, highlight=False)


comfyui_app = typer.Typer(no_args_is_help=True, help="The ComfyUI custom nodes.")
app.add_typer(comfyui_app, name="comfyui")


@comfyui_app.command("install")
def comfyui_install_cmd(
    comfyui_dir: Annotated[Path, typer.Option(help="the ComfyUI folder (main.py, custom_nodes/)")],
    python: Annotated[Optional[Path], typer.Option(
        help="ComfyUI's Python (default: its venv/ or .venv/, else this one)")] = None,
    copy: Annotated[bool, typer.Option(help="copy the nodes instead of linking them")] = False,
) -> None:
    """Put the DRCN nodes into ComfyUI and install drcn-plugin into its Python (torch kept)."""
    from .comfyui_install import install

    with user_errors():
        console.print(str(install(comfyui_dir, python, copy)), soft_wrap=True, highlight=False)


@app.command("train")
def train_cmd(
    data: Annotated[list[Path], typer.Option(help="training image folder (repeat for several)")],
    out: Annotated[Path, typer.Option(help="run folder: checkpoints, log, exported weights")]
    = Path("runs/drcn"),
    scale: Annotated[list[int], typer.Option("--scale", "-s", help="repeat for multi-scale")]
    = [2, 3, 4],  # noqa: B006
    features: Annotated[int, typer.Option("--features", "-F")] = 64,
    recursions: Annotated[int, typer.Option("--recursions", "-D")] = 16,
    patch: Annotated[int, typer.Option(help="patch side (paper: 41)")] = 41,
    stride: Annotated[int, typer.Option(help="patch stride (paper: 21)")] = 21,
    downscale: Annotated[list[float], typer.Option(help="image shrink factors (augmentation)")]
    = [1.0, 0.9, 0.8, 0.7, 0.6],  # noqa: B006
    batch: Annotated[int, typer.Option(help="global batch (split over torchrun processes)")] = 64,
    steps: Annotated[int, typer.Option(help="training steps")] = 10000,
    minutes: Annotated[float, typer.Option(help="> 0: fit the step count to this training time")]
    = 0.0,
    optimizer: Annotated[str, typer.Option(help="adam or sgd (paper: sgd, lr 0.01, step)")] = "adam",
    lr: Annotated[float, typer.Option(help="peak learning rate")] = 5e-4,
    momentum: Annotated[float, typer.Option(help="SGD momentum")] = 0.9,
    weight_decay: Annotated[float, typer.Option(help="weight decay (paper: 1e-4)")] = 1e-4,
    schedule: Annotated[str, typer.Option(help="cosine, step or constant")] = "cosine",
    warmup: Annotated[int, typer.Option(help="linear warm-up steps")] = 200,
    lr_drop: Annotated[list[float], typer.Option(help="step schedule: x0.1 at these fractions")]
    = [0.5, 0.75],  # noqa: B006
    clip: Annotated[float, typer.Option(help="gradient-norm clipping (0 = off)")] = 0.5,
    alpha: Annotated[float, typer.Option(help="initial weight of the per-depth loss")] = 1.0,
    alpha_decay: Annotated[float, typer.Option(help="fraction of steps for alpha to reach 0")]
    = 0.5,
    init: Annotated[str, typer.Option(help="start from these weights (model spec)")] = "",
    val_data: Annotated[str, typer.Option(help="validation folder (default: Set5 beside --data)")]
    = "",
    val_every: Annotated[int, typer.Option(help="validate and checkpoint every N steps")] = 500,
    test_data: Annotated[list[str], typer.Option(help="folders measured at the end (card table)")]
    = [],  # noqa: B006
    baseline: Annotated[str, typer.Option(help="model measured beside the result in the card")]
    = "",
    name: Annotated[str, typer.Option(help="exported file stem (default drcn-fF-dD-xS)")] = "",
    device: DeviceOpt = "auto",
    precision: Annotated[str, typer.Option(help="auto (bf16 on CUDA), fp32 or bf16")] = "auto",
    seed: int = 0,
    resume: Annotated[bool, typer.Option(help="continue OUT/last.pt exactly")] = False,
    stop_at: Annotated[int, typer.Option(help="stop resumably after this step")] = 0,
) -> None:
    """Train DRCN (recursive supervision, multi-scale); works under torchrun with DDP."""
    from .train import TrainConfig, train_with_progress

    with user_errors():
        cfg = TrainConfig(
            data=[str(d) for d in data], out=str(out), scales=scale, features=features,
            recursions=recursions, patch=patch, stride=stride, downscales=downscale, batch=batch,
            steps=steps, minutes=minutes, optimizer=optimizer, lr=lr, momentum=momentum,
            weight_decay=weight_decay, schedule=schedule, warmup=warmup, lr_drops=lr_drop,
            clip=clip, alpha=alpha, alpha_decay=alpha_decay, init=init, val_data=val_data,
            val_every=val_every, test_data=test_data, baseline=baseline, name=name,
            device=device, precision=precision, seed=seed, stop_at=stop_at)
        log = train_with_progress(cfg, resume=resume, console=console)
        if log.get("weights"):
            console.print(f"wrote {out / log['weights']} and its model card "
                          f"({log['step']} steps, {log['steps_per_s']} steps/s)")
        elif log.get("stopped_at"):
            console.print(f"stopped at step {log['stopped_at']}; continue with --resume")


def main() -> None:
    """Entry point of the ``drcn`` console script."""
    app()
