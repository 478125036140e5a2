"""Quality at any factor: bicubic, the network run at the factor itself, and the engine's rule
(``sizing.network_size``: the next whole factor from 2 to 4, then bicubic to the size), as Y
PSNR on real images.

Each ground-truth image is shrunk by 1/factor with the protocol's bicubic (its Y plane, 8-bit
levels) and enlarged back to its own size; 3 px borders are shaved. CPU, bf16 where the CPU has
it (as ``drcn upscale`` runs).

    python benchmarks/scale_quality.py --data ../shared/data --factors 1.1 1.25 1.5 1.75 2 2.5 3
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from drcn_plugin.datasets import list_images
from drcn_plugin.devices import device_name
from drcn_plugin.engine import Upscaler
from drcn_plugin.imagefile import read_y
from drcn_plugin.imaging import imresize, quantize8
from drcn_plugin.metrics import psnr
from drcn_plugin.planes import interpolated_y


def scores(up: Upscaler, hr: torch.Tensor, factor: float) -> tuple[float, float, float]:
    """(bicubic, network at the factor, engine) Y PSNR for one 8-bit Y plane."""
    h, w = hr.shape
    lr = quantize8(imresize(hr, size=(round(h / factor), round(w / factor))))
    bicubic = quantize8(imresize(lr, size=(h, w)))
    at_factor = up.run_y(interpolated_y(lr.float() / 255.0, (h, w), 255.0)).double() * 255.0
    engine = up.upscale(lr.numpy().astype(np.uint8), size=(h, w)).astype(np.float64)
    return tuple(psnr(quantize8(x), hr, border=3)
                 for x in (bicubic, at_factor, torch.from_numpy(engine)))


def main() -> None:
    """Print the table of Y PSNR per factor for the chosen sets and model."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--sets", nargs="+", default=["Set5", "Set14"])
    parser.add_argument("--factors", nargs="+", type=float, default=[1.1, 1.25, 1.5, 1.75, 2.0])
    parser.add_argument("--model", default="drcn-lite")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    up = Upscaler(args.model, device="cpu")
    images = [read_y(p) for s in args.sets for p in list_images(args.data / s)]
    print(f"{args.model}, {len(images)} images ({' + '.join(args.sets)}), {up.dtype}, "
          f"{device_name(up.device)}, {args.threads} threads")
    print("| factor | bicubic | network at the factor | engine (next whole factor in 2-4) |")
    print("|---|---|---|---|")
    for factor in args.factors:
        rows = np.array([scores(up, hr, factor) for hr in images])
        b, a, e = rows.mean(axis=0)
        print(f"| x{factor:g} | {b:.2f} | {a:.2f} | {e:.2f} |", flush=True)


if __name__ == "__main__":
    main()
