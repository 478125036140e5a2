"""Inference speed of the engine: output megapixels per second and peak memory.

The summary (default): drcn-lite on an 800x600 RGB image x2 (1600x1200 out) through
``Upscaler.upscale`` at default settings (the measured tile plan) against a sweep of fixed tiles
(128, 256, 400, 512, 768) and the untiled network, the halo share of the default plan, the time of
the colour pipeline around the network, the ratio to a plain fp32 eager forward of the whole
1200x1600 plane, and the GFLOP/s done against the machine's limit (the model's own F->F conv
timed alone). ``--table`` adds per-model rows (bare model on a whole Y plane, tiled default and
256 px, RGB pipeline); ``--readme`` writes them into README.md between the ``<!-- bench:DEVICE -->``
markers; ``--photo`` also upscales a 12 MP photo x2 and reports peak RAM. ``--plot FILE.png``
instead sweeps the tile size on a Y plane and draws output Mpx/s against it ([plot] extra).
``--sweep`` sets the summary's fixed tiles; ``--cpu-time`` times it by CPU time, for a CPU shared
with other work (with ``--threads 1``, as one core's work).

    python benchmarks/bench_engine.py
    python benchmarks/bench_engine.py --device cuda --table --json bench_gpu.json
    python benchmarks/bench_engine.py --models drcn-lite --plot docs/tile-speed-cpu.png
    python benchmarks/bench_engine.py --threads 1 --cpu-time --sweep 128 192 256 384 512 768
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from readme_markers import fill_readme

from drcn_plugin import tuning
from drcn_plugin.devices import cpu_bf16_unproven, cpu_has_fast_bf16, device_name
from drcn_plugin.engine import Upscaler
from drcn_plugin.hub import load_model
from drcn_plugin.planes import interpolated_y, merge, to_planes

ROOT = Path(__file__).resolve().parents[1]


class PeakMemory:
    """Peak process RSS (CPU, sampled every 5 ms) or peak CUDA allocation during a block."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak, self._stop = device, 0, threading.Event()

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    def _poll(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        else:
            self.peak = self._rss()
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()


SWEEP = (128, 256, 400, 512, 768)
# What best_time reads: wall time, or with --cpu-time the process's CPU time (on a CPU shared
# with other work, the time this process's threads ran, whatever else ran beside them)
clock = time.perf_counter


def best_time(fn: Callable[[], object], device: torch.device, repeat: int) -> float:
    """Best wall time of ``repeat`` calls (no separate warm-up: each call is seconds long)."""
    best = float("inf")
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = clock()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, clock() - t0)
    return best


def timed(fn: Callable[[], object], device: torch.device, repeat: int) -> tuple[float, int]:
    """Best wall time of ``repeat`` calls after one warm-up, and peak memory of one call."""
    fn()
    best = best_time(fn, device, repeat)
    with PeakMemory(device) as mem:
        fn()
    return best, mem.peak


def conv_limit(up: Upscaler, side: int = 256, repeat: int = 5) -> float:
    """GFLOP/s of the model's own F->F 3x3 convolution (its dtype and memory format) on one
    ``side``-px map: this machine's practical limit for DRCN, whose work is almost all that conv."""
    f = up.model.features
    fmt = torch.channels_last if up.channels_last else torch.contiguous_format
    x = torch.rand(1, f, side, side, device=up.device, dtype=up.dtype).contiguous(
        memory_format=fmt)
    with torch.inference_mode():
        seconds = timed(lambda: up.model.recursive(x), up.device, repeat)[0]
    return 2 * 9 * f * f * side * side / seconds / 1e9


def bench(model: str, device: str, precision: str, side: int, repeat: int) -> dict:
    """One ``--table`` row: untiled, tiled (default and 256 px) and RGB-pipeline speed and peak
    memory of ``model`` on a ``side``-px Y plane."""
    up = Upscaler(model, device=device, precision=precision)
    tiled = Upscaler(up.model, device=device, precision=precision, tile=256)
    y = torch.rand(side, side)
    rgb = (np.random.default_rng(0).random((side // 2, side // 2, 3)) * 255).astype(np.uint8)
    x = y[None, None].to(up.device)

    def bare() -> None:
        with torch.inference_mode():
            up._forward(x)

    mpx = side * side / 1e6
    row = {"model": model, "device": str(up.device), "precision": str(up.dtype)[6:],
           "side": side}
    for name, fn in (("untiled", bare), ("tiled_default", lambda: up.run_y(y)),
                     ("tiled_256", lambda: tiled.run_y(y)),
                     ("pipeline_rgb", lambda: up.upscale(rgb, 2))):
        t, peak = timed(fn, up.device, repeat)
        row[name] = {"mpx_s": mpx / t, "seconds": t, "peak_mib": peak / 2**20}
    row["tiling_overhead_default"] = row["tiled_default"]["seconds"] / row["untiled"]["seconds"] - 1
    row["tiling_overhead_256"] = row["tiled_256"]["seconds"] / row["untiled"]["seconds"] - 1
    return row


def tile_sweep(model: str, device: str, precision: str, side: int, tiles: list[int],
               repeat: int) -> dict:
    """Output Mpx/s of the engine on a Y plane of ``side`` px at each tile size (those up to the
    side), and at the engine's default plan: the curve a tile choice acts on."""
    up = Upscaler(model, device=device, precision=precision)
    y = torch.rand(side, side)
    mpx = side * side / 1e6
    points = []
    for tile in (t for t in tiles if t <= side):
        run = Upscaler(up.model, device=device, precision=precision, tile=tile).run_y
        points.append({"tile": tile, "mpx_s": mpx / timed(lambda run=run: run(y), up.device,
                                                          repeat)[0]})
        print(json.dumps({"model": model, "precision": precision, **points[-1]}), flush=True)
    plan = up._auto_plan(side, side)
    return {"model": model, "precision": str(up.dtype)[6:], "side": side, "points": points,
            "default_tile": min(max(plan.tile_h, plan.tile_w), side),  # one window at most
            "default_mpx_s": mpx / timed(lambda: up.run_y(y), up.device, repeat)[0]}


def default_vs_fixed(device: str, repeat: int, sweep: tuple[int, ...] = SWEEP) -> dict:
    """The summary: default plan vs fixed tiles vs untiled, halo share, RGB pipeline, and the work
    done against the machine's limit."""
    img = (np.random.default_rng(0).random((600, 800, 3)) * 255).astype(np.uint8)
    oh, ow = 1200, 1600
    mpx = oh * ow / 1e6
    up = Upscaler("drcn-lite", device=device)
    t0 = time.perf_counter()
    up.timings()  # measures the tile plan now unless it is cached
    tuned_s = time.perf_counter() - t0
    res = {"plan_seconds": tuned_s, "precision": str(up.dtype).removeprefix("torch."), "tiles": {}}
    short = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[up.dtype]
    plan = up._auto_plan(oh, ow)
    halo = up.model.receptive_radius
    computed = (len(tuning.windows(oh, plan.tile_h, halo)) * min(oh, plan.tile_h + 2 * halo)
                * len(tuning.windows(ow, plan.tile_w, halo)) * min(ow, plan.tile_w + 2 * halo))
    res["default_plan"] = {"core": f"{plan.tile_w}x{plan.tile_h}", "batch": plan.batch,
                           "halo_share": 1 - oh * ow / computed}
    res["default"] = mpx / best_time(lambda: up.upscale(img, 2), up.device, repeat)
    res["mflop_per_px"] = up.model.flops_per_pixel() / 1e6
    res["default_gflop_s"] = res["default"] * res["mflop_per_px"] * 1e3  # Mpx/s x MFLOP/px
    res["conv_limit_gflop_s"] = conv_limit(up)
    print(f"default ({res['default_plan']['core']} cores): {res['default']:.3f} Mpx/s", flush=True)
    for tile in sweep:
        fixed = Upscaler("drcn-lite", device=device, precision=short, tile=tile)
        res["tiles"][tile] = mpx / best_time(lambda f=fixed: f.upscale(img, 2), up.device, repeat)
        print(f"--tile {tile}: {res['tiles'][tile]:.3f} Mpx/s", flush=True)
    planes, _ = to_planes(img)
    src = planes.to(up.device)
    y = torch.rand(oh, ow)
    x = y[None, None].to(up.device)

    def untiled() -> None:
        with torch.inference_mode():
            up._forward(x)

    res["untiled"] = mpx / best_time(untiled, up.device, repeat)
    print(f"untiled network: {res['untiled']:.3f} Mpx/s", flush=True)

    def colour() -> None:
        merge(interpolated_y(src[0], (oh, ow), 255.0), src[1:], True, np.dtype(np.uint8))

    res["rgb_pipeline_s"] = best_time(colour, up.device, repeat)
    eager = load_model("drcn-lite").to(up.device)
    with torch.inference_mode():
        res["fp32_eager"] = mpx / best_time(lambda: eager(x), up.device, 1)
    print(f"fp32 eager whole plane: {res['fp32_eager']:.3f} Mpx/s", flush=True)
    best = max(res["tiles"], key=res["tiles"].get)
    res["best_tile"] = best
    res["default_vs_best_tile"] = res["default"] / res["tiles"][best]
    res["default_vs_fp32_eager"] = res["default"] / res["fp32_eager"]
    return res


def sweep_text(r: dict, where: str) -> str:
    """The README's summary of :func:`default_vs_fixed`'s result ``r``, measured on ``where``."""
    sweep = list(r["tiles"])
    tiles = " | ".join(f"{r['tiles'][t]:.3f}" for t in sweep)
    return "\n".join([
        f"drcn-lite, 800x600 RGB x2 -> 1600x1200, {r['precision']}, on {where}, "
        f"torch {torch.__version__}. Output Mpx/s:", "",
        "| default | " + " | ".join(f"--tile {t}" for t in sweep) + " | untiled network "
        "| fp32 eager, whole plane |", "|---" * (len(sweep) + 3) + "|",
        f"| **{r['default']:.3f}** | {tiles} | {r['untiled']:.3f} | {r['fp32_eager']:.3f} |", "",
        f"Default plan: {r['default_plan']['core']} px cores, batch {r['default_plan']['batch']}, "
        f"halo {100 * r['default_plan']['halo_share']:.0f}% of the computed pixels. Colour "
        f"pipeline around the network (bicubic Y/Cb/Cr, YCbCr->RGB, 8-bit): "
        f"{r['rgb_pipeline_s']:.2f} s. Measuring the plan took {r['plan_seconds']:.1f} s.",
        f"Default / best fixed tile ({r['best_tile']}): {r['default_vs_best_tile']:.2f}x; "
        f"default / fp32 eager: {r['default_vs_fp32_eager']:.1f}x.",
        f"Work done: {r['default_gflop_s']:.0f} GFLOP/s at {r['mflop_per_px']:.1f} MFLOP per "
        f"output pixel, {100 * r['default_gflop_s'] / r['conv_limit_gflop_s']:.0f}% of this "
        f"machine's limit (the model's F->F 3x3 conv alone on a 256 px map: "
        f"{r['conv_limit_gflop_s']:.0f} GFLOP/s)."])


def photo_12mp(device: str) -> dict:
    """Upscale a 4000x3000 RGB photo x2 with the default model; peak RAM is the point."""
    up = Upscaler(device=device)
    img = (np.random.default_rng(1).random((3000, 4000, 3)) * 255).astype(np.uint8)
    with PeakMemory(up.device) as mem:
        t0 = time.perf_counter()
        out = up.upscale(img, 2)
        seconds = time.perf_counter() - t0
    return {"output": f"{out.shape[1]}x{out.shape[0]}", "seconds": seconds,
            "mpx_s": out.shape[0] * out.shape[1] / 1e6 / seconds, "peak_rss_mib": mem.peak / 2**20}


def machine() -> str:
    """This machine in words: the device, the threads and the CPU's bf16 support."""
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    has_amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    isa = "" if dev.type == "cuda" else ", AMX" if has_amx else \
        ", AVX512-BF16, no AMX" if cpu_has_fast_bf16() else ", no AVX512-BF16"
    return f"{device_name(dev)}, {torch.get_num_threads()} threads{isa}"


def table(rows: list[dict], where: str) -> str:
    """The ``--table`` rows of :func:`bench` as a Markdown table."""
    out = [f"Measured on {where}, torch {torch.__version__} (`python benchmarks/bench_engine.py`).",
           "Output Mpx/s; Y plane of side N (model and tiles), RGB pipeline on an N/2 image x2.",
           "", "| model | precision | N | untiled | tiled (default) | tiled 256 px | overhead "
           "default / 256 | RGB pipeline | peak memory |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(
            f"| {r['model']} | {r['precision']} | {r['side']} | {r['untiled']['mpx_s']:.3f} | "
            f"{r['tiled_default']['mpx_s']:.3f} | {r['tiled_256']['mpx_s']:.3f} | "
            f"{100 * r['tiling_overhead_default']:+.0f}% / {100 * r['tiling_overhead_256']:+.0f}% | "
            f"{r['pipeline_rgb']['mpx_s']:.3f} | {r['tiled_default']['peak_mib']:.0f} MiB |")
    return "\n".join(out)


def plot_sweep(args: argparse.Namespace, precisions: list[str], gpu: bool) -> None:
    """``--plot``: the tile sweep of every model and precision, drawn and (with --json) saved."""
    from drcn_plugin.charts import check_png_target, tile_speed_chart

    check_png_target(args.plot, overwrite=True)  # regenerates the chart in docs/
    sweeps = [tile_sweep(model, args.device, precision,
                         args.side or (2048 if gpu else 384 if model == "drcn" else 512),
                         args.tiles, args.repeat)
              for model in args.models for precision in precisions]
    where = machine()
    sides = sorted({sw["side"] for sw in sweeps})
    tile_speed_chart(sweeps, args.plot, f"{where}, torch {torch.__version__}\n"
                     f"Y plane {' / '.join(map(str, sides))} px; star: the engine's default tile")
    if args.json:
        args.json.write_text(json.dumps({"machine": where, "tile_sweep": sweeps}, indent=2))
    print(f"wrote {args.plot}")


def main() -> None:
    """Measure what the options ask for (see the module docstring) and print it."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--models", nargs="+", default=["drcn-lite", "drcn"])
    ap.add_argument("--precisions", nargs="+", default=None)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--photo", action="store_true", help="also a 12 MP photo x2 (peak RAM)")
    ap.add_argument("--table", action="store_true", help="also the per-model/precision rows")
    ap.add_argument("--cached-plan", action="store_true",
                    help="use the tile plans cached for this user (default: measure them afresh)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--readme", action="store_true", help="write the table into README.md")
    ap.add_argument("--plot", type=Path, help="instead of the table, sweep --tiles and draw "
                    "output Mpx/s against the tile size into this PNG")
    ap.add_argument("--tiles", nargs="+", type=int, default=[64, 96, 128, 192, 256, 384])
    ap.add_argument("--sweep", nargs="+", type=int, default=list(SWEEP),
                    help="the fixed tiles the summary compares the default plan with")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    ap.add_argument("--cpu-time", action="store_true", help="time the summary by the process's "
                    "CPU time, not wall time (CPU only: other work on the machine then counts "
                    "less)")
    ap.add_argument("--side", type=int, default=0,
                    help="plane side of the sweep (default: 512, F=256 models 384; GPUs 2048)")
    args = ap.parse_args()
    gpu = args.device.startswith("cuda")
    precisions = args.precisions or (["fp32", "bf16"] if gpu or cpu_has_fast_bf16()
                                      or cpu_bf16_unproven() else ["fp32"])
    if args.plot:
        plot_sweep(args, precisions, gpu)
        return
    if not args.cached_plan:
        os.environ[tuning.CACHE_ENV] = tempfile.mkdtemp(prefix="drcn-bench-plans-")
    print(f"tile plans cached in {tuning.cache_path()}", flush=True)
    torch.set_num_threads(args.threads or torch.get_num_threads())
    if args.cpu_time:
        global clock
        clock = time.process_time
    sweep = default_vs_fixed(args.device, args.repeat, tuple(args.sweep))
    rows = []
    for model in args.models if args.table or args.readme else []:
        for precision in precisions:
            heavy = model == "drcn" and (not gpu or precision == "fp32")
            side = (1024 if heavy else 2048) if gpu else (192 if heavy else 512)
            rows.append(bench(model, args.device, precision, side, args.repeat))
            print(json.dumps(rows[-1]), flush=True)
    where = machine()
    result = {"machine": where, "sweep": sweep, "rows": rows}
    if args.photo:
        result["photo_12mp_x2"] = photo_12mp(args.device)
        print(json.dumps(result["photo_12mp_x2"]), flush=True)
    text = sweep_text(sweep, where) + ("\n\n" + table(rows, where) if rows else "")
    if "photo_12mp_x2" in result:
        p = result["photo_12mp_x2"]
        text += (f"\n\n12 MP photo x2 (default model and settings): {p['seconds']:.0f} s, "
                 f"{p['mpx_s']:.2f} Mpx/s, peak RAM {p['peak_rss_mib']:.0f} MiB.")
    print(text)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    if args.readme:
        tag = "gpu" if gpu else "cpu"
        fill_readme({f"bench:{tag}": text})


if __name__ == "__main__":
    main()
