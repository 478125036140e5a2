"""Speed of writing a 16-bit colour result: seconds, MB/s of raw pixels and file size of a
PNG (:func:`drcn_plugin.deep.write_png16`) and a TIFF (:func:`drcn_plugin.tiff16.write_tiff_deep`)
at several zlib levels, on one thread and on every CPU this process may use.

The image is a real 16-bit one: a reference image upscaled by bicubic in floating point to
``--size`` (12 MP by default) and rounded to 16 bits, so its gradients fill the low bytes as a
result's do; ``--grain`` adds Gaussian noise of that many 16-bit levels, as a raw converter's
output has (random noise alone would not compress at all).

    python benchmarks/write_speed.py --data ../shared/data
    python benchmarks/write_speed.py --image ../shared/data/BSD200/100075.png --levels 6 --grain 0
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from drcn_plugin.cpus import usable_cpus
from drcn_plugin.deep import write_png16
from drcn_plugin.devices import device_name
from drcn_plugin.tiff16 import write_tiff_deep

WRITERS: dict[str, Callable[..., None]] = {"PNG": write_png16, "TIFF": write_tiff_deep}


def deep_image(path: Path, size: tuple[int, int], grain: float, seed: int = 0) -> np.ndarray:
    """``path`` upscaled to ``size`` (width, height) by bicubic in float, as uint16 (H, W, 3),
    with Gaussian noise of ``grain`` 16-bit levels."""
    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"), np.float32)
    out = np.empty((size[1], size[0], 3), np.uint16)
    rng = np.random.default_rng(seed)
    for c in range(3):
        plane = np.asarray(Image.fromarray(rgb[..., c], "F").resize(size, Image.BICUBIC))
        plane = plane * 257.0
        if grain:
            plane += rng.normal(0.0, grain, plane.shape).astype(np.float32)
        out[..., c] = np.clip(np.rint(plane), 0, 65535)
    return out


def stand_in(fmt: str) -> bytes:
    """The file Pillow writes for a 1x1 RGB image, whose chunks or tags the writers keep."""
    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, fmt)
    return buf.getvalue()


def time_write(fmt: str, pixels: np.ndarray, folder: str, repeat: int,
               **options: int) -> tuple[float, int]:
    """Best wall time of ``repeat`` writes of ``pixels`` as ``fmt`` to a file, and its size."""
    data, path, best = stand_in(fmt), os.path.join(folder, f"w.{fmt.lower()}"), float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        with open(path, "wb") as f:
            WRITERS[fmt](f, data, pixels, **options)
        best = min(best, time.perf_counter() - t0)
    return best, os.path.getsize(path)


def main() -> None:
    """Time every format, level and thread count asked for and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared"
                    / "data")
    ap.add_argument("--image", type=Path, help="default: DATA/Set14/monarch.png")
    ap.add_argument("--size", type=int, nargs=2, default=[4000, 3000], metavar=("W", "H"))
    ap.add_argument("--grain", type=float, nargs="+", default=[0.0, 64.0],
                    help="noise in 16-bit levels, one table block each (default 0 and 64)")
    ap.add_argument("--formats", nargs="+", default=list(WRITERS), choices=list(WRITERS))
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 3, 6])
    ap.add_argument("--threads", type=int, nargs="+",
                    help=f"default: 1 and every usable CPU ({usable_cpus()})")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    image = args.image or args.data / "Set14" / "monarch.png"
    threads = args.threads or sorted({1, usable_cpus()})
    print(f"{device_name(torch.device('cpu'))}, {usable_cpus()} usable CPUs; {image.name} "
          f"at {args.size[0]}x{args.size[1]} 16-bit RGB")
    print(f"{'grain':>5} {'format':>6} {'level':>5} {'threads':>7} {'seconds':>8} "
          f"{'MB/s':>7} {'MB':>7} {'ratio':>6}")
    with tempfile.TemporaryDirectory() as folder:
        for grain in args.grain:
            pixels = deep_image(image, tuple(args.size), grain)
            for fmt in args.formats:
                for level in args.levels:
                    for n in threads:
                        seconds, size = time_write(fmt, pixels, folder, args.repeat,
                                                   level=level, threads=n)
                        print(f"{grain:5g} {fmt:>6} {level:5d} {n:7d} {seconds:8.2f} "
                              f"{pixels.nbytes / seconds / 1e6:7.1f} {size / 1e6:7.2f} "
                              f"{size / pixels.nbytes:6.3f}", flush=True)


if __name__ == "__main__":
    main()
