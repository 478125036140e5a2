"""The ``drcn`` command line: a thin Typer front end over the engine, evaluation and training."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from .errors import DRCNError
from .hub import DEFAULT_MODEL

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="DRCN super-resolution: upscale images, evaluate and train models.")
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
    json_out: Annotated[Optional[Path], typer.Option("--json", help="write results here")] = None,
) -> None:
    """Score a model with the paper's protocol (Y, MATLAB bicubic, shave s, PSNR/SSIM)."""
    from .engine import Upscaler
    from .evaluation import evaluate

    with user_errors():
        if any(s < 2 or s > 8 for s in scale):
            raise DRCNError("--scale takes integer factors from 2 to 8")
        upscaler = None if model == "bicubic" else Upscaler(model, device=device,
                                                            precision=precision)
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


def main() -> None:
    """Entry point of the ``drcn`` console script."""
    app()
