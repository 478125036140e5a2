"""Peak memory of DRCN Upscale on a video-frame batch, before and after ``per_batch``.

Each case runs in a fresh process: 8-bit frames (a photo panned across, ComfyUI's float layout)
are built, the peak-RSS counter is reset (``/proc/self/clear_refs``), the node's
``upscale_batch`` runs, and the rise of the peak over the resident size before the call is
reported. "before" loads ``comfyui_nodes/drcn_nodes.py`` from a git revision (default 984e587,
the last one before per_batch); the others use this checkout.

Usage: python benchmarks/comfyui_frame_memory.py [--frames 120] [--size 640x360] [--scale 2]
       [--model tiny|drcn-lite|PATH] [--before-rev REV]       (Linux only: reads /proc)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from memory_over_batch import proc_status  # this folder is on sys.path when run as a script

ROOT = Path(__file__).resolve().parents[1]
CASES = [("before", None), ("after", 0), ("after", 16)]


def _nodes(rev: str | None):
    """The node module of this checkout (imported with its package, as ComfyUI does), or of git
    revision ``rev`` (a single file then)."""
    path = ROOT / "comfyui_nodes" / "drcn_nodes.py"
    name = "drcn_nodes_under_test"
    if rev is not None:
        source = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{path.relative_to(ROOT)}"],
                                check=True, capture_output=True, text=True).stdout
        path = Path(tempfile.mkdtemp()) / "drcn_nodes_before.py"
        path.write_text(source)
    else:
        path = path.with_name("__init__.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module if rev is not None else sys.modules[f"{name}.drcn_nodes"]


def _model(spec: str):
    import torch

    from drcn_plugin.hub import load_model
    from drcn_plugin.model import DRCN

    if spec != "tiny":
        return load_model(spec)
    torch.manual_seed(0)
    return DRCN(features=8, recursions=3).eval()


def _frames(count: int, width: int, height: int):
    """``count`` 8-bit frames panning across a photo, as float 0..1 like a video loader gives."""
    import numpy as np
    import torch
    from PIL import Image

    photo = Image.open(ROOT / "examples" / "comic.png").convert("RGB")
    photo = np.asarray(photo.resize((width + count, height), Image.BICUBIC))
    out = torch.empty((count, height, width, 3))
    for i in range(count):
        out[i] = torch.from_numpy(photo[:, i: i + width].copy()).float() / 255.0
    return out


def run_case(args: argparse.Namespace, mode: str, per_batch: int | None) -> dict:
    """One measurement, in this process."""
    nodes = _nodes(args.before_rev if mode == "before" else None)
    width, height = (int(v) for v in args.size.split("x"))
    frames, model = _frames(args.frames, width, height), _model(args.model)
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    rss = proc_status("VmRSS")
    kwargs = {} if per_batch is None else {"per_batch": per_batch}
    image, _ = nodes.upscale_batch(frames, model, args.scale, **kwargs)
    peak = proc_status("VmHWM")
    return {"mode": mode, "per_batch": per_batch, "frames": tuple(frames.shape),
            "out": tuple(image.shape), "output_gib": image.nelement() * 4 / 2**30,
            "rise_gib": (peak - rss) / 2**30}


def main() -> None:
    """Measure each mode in its own process and print the peaks (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--scale", type=float, default=2.0)
    parser.add_argument("--model", default="tiny", help="tiny (random F=8 D=3), drcn-lite, ...")
    parser.add_argument("--before-rev", default="984e587",
                        help="git revision whose node is 'before' (default: the last before "
                             "per_batch)")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        mode, per_batch = json.loads(args.case)
        print(json.dumps(run_case(args, mode, per_batch)))
        return
    print(f"{args.frames} frames {args.size} x{args.scale:g}, model {args.model}, "
          f"{platform.processor() or platform.machine()}; peak RSS rise during the node call")
    for mode, per_batch in CASES:
        done = subprocess.run([sys.executable, __file__, *sys.argv[1:],
                               "--case", json.dumps([mode, per_batch])],
                              capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{mode}: failed: {done.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        label = mode if per_batch is None else f"{mode} per_batch={per_batch or 'all'}"
        print(f"{label:24s} output {r['output_gib']:.2f} GiB, peak rise {r['rise_gib']:.2f} GiB "
              f"({r['rise_gib'] / r['output_gib']:.2f}x the output)")


if __name__ == "__main__":
    main()
