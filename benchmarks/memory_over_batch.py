"""Resident memory over a long run: does RSS climb with every file of a batch or an eval?

Three workloads, each in this one process, VmRSS and VmHWM (/proc/self/status) read after every
file and printed as a table with a summary (RSS after the warm-up, at the end, MB per file over
the files after the warm-up, peak):

  make DIR     images of varied sizes cut from BSD200's colour images (random crops and resizes;
               PNG, JPEG, PNG with alpha, grey), seeded, so every run gets the same folder
  batch DIR    what ``drcn upscale DIR -o OUT`` does for each file (default model chosen per file,
               x2), ``--passes`` times over the folder
  eval DATA    ``drcn eval --model drcn-lite --dataset DATA`` ``--passes`` times
  engine DIR   ``Upscaler.upscale`` on each image, read once, ``--passes`` times

Usage: OMP_NUM_THREADS=1 python benchmarks/memory_over_batch.py make /tmp/mixed [--count 120]
       OMP_NUM_THREADS=1 python benchmarks/memory_over_batch.py batch /tmp/mixed [--passes 2]
       (Linux only: reads /proc; DRCN_CACHE_DIR keeps the tile plans measured on first use)

Measured (2-core AMD EPYC, one thread, 120 files x2 passes, mean RSS after a file): before the
engine released freed memory, files 1-20 345 MB, 101-120 409 MB, 2nd pass 411 MB; after, 296,
319 and 323 MB (peak 448 and 461 MB, the largest file's). What still rises in the first pass is
oneDNN's primitive caches (about 0.25 MB per new window shape in bf16, 0.4 in fp32; 1024 entries
each by default), flat once shapes repeat.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BSD200 = ROOT.parent / "shared" / "data" / "BSD200"
MB = 1 << 20


def proc_status(field: str) -> int:
    """A /proc/self/status field (VmRSS, VmHWM) in bytes."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


class Trace:
    """RSS and peak after each file, and the summary of their course."""

    def __init__(self, warmup: int) -> None:
        self.rows: list[tuple[str, int, int]] = []
        self.warmup = warmup

    def sample(self, label: str) -> None:
        self.rows.append((label, proc_status("VmRSS"), proc_status("VmHWM")))
        n, (name, rss, hwm) = len(self.rows), self.rows[-1]
        print(f"{n:4d} {name:28.28s} rss {rss / MB:7.1f} MB  peak {hwm / MB:7.1f} MB", flush=True)

    def summary(self) -> None:
        rss = np.array([r[1] for r in self.rows], dtype=float) / MB
        after = rss[self.warmup:]
        slope = np.polyfit(np.arange(len(after)), after, 1)[0] if len(after) > 1 else 0.0
        print(f"files {len(rss)}  rss after warm-up ({self.warmup}) {after[0]:.1f} MB  "
              f"end {rss[-1]:.1f} MB  max {rss.max():.1f} MB  slope {slope:+.3f} MB/file  "
              f"peak {self.rows[-1][2] / MB:.1f} MB")


def make(folder: Path, count: int, seed: int) -> None:
    """``count`` images of varied sizes and kinds from BSD200's colour images."""
    from PIL import Image

    rng = random.Random(seed)
    sources = sorted(BSD200.glob("*.png"))
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        im = Image.open(rng.choice(sources)).convert("RGB")
        w, h = rng.randint(48, im.width), rng.randint(48, im.height)
        x, y = rng.randint(0, im.width - w), rng.randint(0, im.height - h)
        im = im.crop((x, y, x + w, y + h))
        f = rng.uniform(0.5, 1.6)
        im = im.resize((max(32, min(640, round(w * f))), max(32, min(640, round(h * f)))),
                       Image.Resampling.BICUBIC)
        kind = rng.choice(["png", "jpg", "jpg", "rgba", "grey"])
        if kind == "jpg":
            im.save(folder / f"{i:03d}.jpg", quality=rng.randint(60, 95))
            continue
        if kind == "rgba":
            ramp = np.linspace(0, 255, im.width, dtype=np.uint8)[None].repeat(im.height, 0)
            im.putalpha(Image.fromarray(ramp))
        elif kind == "grey":
            im = im.convert("L")
        im.save(folder / f"{i:03d}.png")


def batch(folder: Path, passes: int, trace: Trace) -> None:
    """The loop of ``drcn upscale FOLDER -o OUT --overwrite`` (engines as the command makes them)."""
    from drcn_plugin.batch import collect_jobs, per_source_chooser, run_job
    from drcn_plugin.engine import Upscaler
    from drcn_plugin.hub import DEFAULT_MODEL
    from drcn_plugin.sizing import TargetSize

    target = TargetSize(2.0, 0, 0, 0)
    with tempfile.TemporaryDirectory() as out:
        jobs, errors = collect_jobs([str(folder)], target, out, False, "", "same")
        assert not errors, errors
        engine = {"device": "cpu", "precision": "auto", "tile": 0, "tta": False,
                  "notify": lambda s: print("drcn:", s, file=sys.stderr)}
        chooser = per_source_chooser(Upscaler(DEFAULT_MODEL, **engine), **engine)
        for _ in range(passes):
            for job in jobs:
                outcome = run_job(job, chooser, target, overwrite=True)
                assert outcome.status == "done", outcome.message
                trace.sample(job.source.name)


def evaluate(dataset: Path, passes: int, scales: list[int], trace: Trace) -> None:
    """``drcn eval --model drcn-lite --dataset DATASET --scale SCALES``, ``passes`` times."""
    from drcn_plugin.engine import Upscaler
    from drcn_plugin.evaluation import evaluate as run

    upscaler = Upscaler("drcn-lite", device="cpu", precision="fp32")  # eval's default
    for _ in range(passes):
        run(upscaler, dataset, scales, on_image=lambda s, name: trace.sample(f"x{s} {name}"))


def engine(folder: Path, passes: int, trace: Trace) -> None:
    """``Upscaler.upscale`` x2 on each image of ``folder``, read once, ``passes`` times."""
    from drcn_plugin.engine import Upscaler
    from drcn_plugin.imagefile import read_image

    upscaler = Upscaler("drcn-lite", device="cpu")
    images = [(p.name, read_image(p)[0]) for p in sorted(folder.iterdir())]
    for _ in range(passes):
        for name, image in images:
            upscaler.upscale(image, 2.0)
            trace.sample(name)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=["make", "batch", "eval", "engine"])
    p.add_argument("folder", type=Path)
    p.add_argument("--count", type=int, default=120, help="make: images to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--passes", type=int, default=2)
    p.add_argument("--scale", type=int, nargs="+", default=[2], help="eval: scales")
    p.add_argument("--warmup", type=int, default=10, help="files before the slope is fitted")
    a = p.parse_args()
    if a.mode == "make":
        make(a.folder, a.count, a.seed)
        return
    trace = Trace(a.warmup)
    trace.sample("start")
    if a.mode == "batch":
        batch(a.folder, a.passes, trace)
    elif a.mode == "eval":
        evaluate(a.folder, a.passes, a.scale, trace)
    else:
        engine(a.folder, a.passes, trace)
    trace.summary()


if __name__ == "__main__":
    main()
