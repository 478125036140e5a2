"""Where ``drcn upscale`` spends its CPU time, stage by stage, for each file and scale given.

Runs the command in-process under cProfile with a CPU-time clock (``time.process_time``: other
work on the machine does not count) on one torch thread, and prints each stage's cumulative CPU
time in ms per output megapixel and its share of the file's job (``batch.run_job``). Tile plans
are measured once beforehand (into ``--cache``, not the user's cache). With ``--stub-model`` the
network is the identity, so that the stages around it can be measured on large photos in
seconds; the model's own cost per output megapixel is then measured apart, on a smaller image.
The fsync of the atomic write waits on the disk, not the CPU: it shows as wall time only.

    python benchmarks/upscale_stages.py /tmp/speed/photo12.jpg --scale 2 3 --stub-model
    python benchmarks/upscale_stages.py /tmp/speed/one.png --scale 2 --model drcn-lite
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

# (label, file, function, (file, function) of sub-stages whose time is subtracted)
STAGES = (
    ("job total", "batch.py", "run_job", ()),
    ("decode (Pillow load)", "opening.py", "load_pixels", ()),
    ("pixels to array", "pixelmodes.py", "to_array", ()),
    ("16-bit decode", "deep.py", "read_deep", ()),
    ("metadata reading", "imagefile.py", "read_image",
     (("opening.py", "load_pixels"), ("pixelmodes.py", "to_array"), ("deep.py", "read_deep"))),
    ("model choice (JPEG grid)", "batch.py", "choose", ()),
    ("input checks (NaN/range)", "planes.py", "checked_image", ()),
    ("writability check", "encoding.py", "check_writable", ()),
    ("float planes", "planes.py", "float_planes", ()),
    ("float range scan", "planes.py", "kept_range", ()),
    ("fill transparent", "planes.py", "fill_transparent", ()),
    ("RGB->YCbCr", "imaging.py", "rgb_to_ycbcr", ()),
    ("bicubic Y", "planes.py", "interpolated_y", ()),
    ("tiling (stack, copy, NaN scan)", "engine.py", "_run_plan", (("engine.py", "_forward"),)),
    ("model (network)", "engine.py", "_forward", ()),
    ("merge (CbCr bicubic, YCbCr->RGB, quantise)", "planes.py", "merge", ()),
    ("alpha bicubic", "planes.py", "resized_alpha", ()),
    ("encode: array to Pillow, options", "encoding.py", "encode", ()),
    ("encode: compress + metadata write", "writing.py", "write", ()),
    ("atomic write (part, rename; CPU)", "writing.py", "_atomic", (("writing.py", "write"),)),
)


def cumulative(stats: pstats.Stats) -> dict[tuple[str, str], float]:
    """Cumulative seconds by (file name, function name), summed over same-named functions."""
    out: dict[tuple[str, str], float] = {}
    for (file, _, name), (_, _, _, cum, _) in stats.stats.items():  # type: ignore[attr-defined]
        key = (Path(file).name, name)
        out[key] = out.get(key, 0.0) + cum
    return out


def stage_times(cum: dict[tuple[str, str], float]) -> dict[str, float]:
    """Each stage's CPU seconds, its sub-stages taken out."""
    return {label: cum.get((file, name), 0.0) - sum(cum.get(s, 0.0) for s in subs)
            for label, file, name, subs in STAGES}


def run(args: list[str]) -> tuple[dict[str, float], float]:
    """``drcn upscale ARGS`` in-process under cProfile: stage CPU seconds and wall seconds."""
    from drcn_plugin.cli import app

    prof = cProfile.Profile(time.process_time)
    t0 = time.perf_counter()
    prof.enable()
    try:
        app(["upscale", *args], standalone_mode=False, prog_name="drcn")
    finally:
        prof.disable()
    wall = time.perf_counter() - t0
    return stage_times(cumulative(pstats.Stats(prof))), wall


def main() -> None:
    """Profile each file at each scale and print the per-stage table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--scale", nargs="+", default=["2"])
    ap.add_argument("--model", default=None, help="a model name (default: chosen per file)")
    ap.add_argument("--format", default="same")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each; the fastest is shown")
    ap.add_argument("--stub-model", action="store_true", help="identity network")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "drcn-bench-cache")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    os.environ["DRCN_CACHE_DIR"] = str(a.cache)
    if a.stub_model:
        from drcn_plugin.engine import Upscaler

        Upscaler._forward = lambda self, x: x  # the tiling around it stays as it is
    out_dir = Path(tempfile.mkdtemp(prefix="drcn-stages-"))
    model = ["--model", a.model] if a.model else []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), CPU ms per output Mpx")
    for f in a.files:
        for scale in a.scale:
            argv = [str(f), "--scale", scale, "-o", str(out_dir), "--overwrite",
                    "--format", a.format, *model]
            runs = [run(argv) for _ in range(a.repeat)]
            out = next(p for p in out_dir.iterdir() if p.stem.startswith(f.stem))
            with Image.open(out) as im:
                mpx = im.size[0] * im.size[1] / 1e6
            totals = [r[0]["job total"] for r in runs]
            best = min(runs, key=lambda r: r[0]["job total"])[0]
            total = best["job total"]
            print(f"| {f.name} x{scale} -> {mpx:.1f} Mpx{' (stub model)' * a.stub_model}: job "
                  f"CPU {', '.join(f'{t:.2f}' for t in totals)} s, wall "
                  f"{', '.join(f'{r[1]:.2f}' for r in runs)} s")
            for label, t in best.items():
                if t > 0.0005 or label == "model (network)":
                    print(f"| {label:44s} {1e3 * t / mpx:9.1f} ms/Mpx {100 * t / total:6.1f}%")
            rest = total - sum(t for k, t in best.items() if k != "job total")
            print(f"| {'(other)':44s} {1e3 * rest / mpx:9.1f} ms/Mpx {100 * rest / total:6.1f}%")
            out.unlink()
    out_dir.rmdir()


if __name__ == "__main__":
    main()
