"""Check the DRCN nodes in a real ComfyUI, end to end over its HTTP API.

It installs the nodes the documented way (``drcn comfyui install``), checks the registry metadata
with ComfyUI's own parser, starts ComfyUI headless on 127.0.0.1 (``--cpu``), then:

1. cancels a long tiled job (POST /interrupt) and measures how far it ran on;
2. queues the example API workflow (the next job after the cancel) and compares the saved PNG with
   ``drcn upscale`` and with the engine called here: size, PSNR, largest difference (<= 1 LSB);
3. DRCN to Upscale Model -> ComfyUI's own "Upscale Image (using Model)": on an image smaller
   than one of its tiles the pixels must equal ``drcn upscale --scale 2`` (<= 2 LSB); on a large
   image its 512-pixel tiles are blended by ComfyUI: PSNR against ``drcn upscale``, overall and in
   the bands where the tiles overlap;
4. DRCN Upscale with an exact width (aspect kept) against ``drcn upscale --width``;
5. a 120-frame 640x360 batch (RepeatImageBatch) x2 with per_batch 16: ComfyUI's peak resident
   memory during the run, under twice the upscaled batch (a tiny model, so frames dominate);
6. queues bad inputs (scale out of range, missing and corrupt weights, a too-small tile, a 0-pixel
   image from a throwaway test node) and prints the message ComfyUI reports for each.

Usage: python check_real_comfyui.py COMFYUI_DIR [--python PY] [--image PNG] [--port 8189]
       [--checks cancel,compare,model,size,frames,errors]
Run it with a Python that has drcn-plugin (and its ``drcn`` command); ComfyUI's own Python
(``--python``, default: COMFYUI_DIR/venv) must have ComfyUI's requirements. Exits 1 on a failure.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from comfy_client import Comfy  # beside this script, on sys.path when it runs
from PIL import Image
from safetensors.torch import save_file

from drcn_plugin.engine import Upscaler
from drcn_plugin.integrations.comfyui_install import NODES_NAME, default_python
from drcn_plugin.metrics import psnr
from drcn_plugin.model import DRCN
from drcn_plugin.scales import MAX_SCALE

API = Path(__file__).resolve().parent.parent / "comfyui_nodes" / "api_workflows"
WORKFLOW = API / "drcn_upscale.json"
MODEL_WORKFLOW = API / "drcn_upscale_model.json"
TINY = "drcn_check_tiny.safetensors"  # a small random DRCN for the frame-batch memory run
CHECKS = ("cancel", "compare", "model", "size", "frames", "errors")
EMPTY_NODE = "drcn_check_empty_image.py"  # a throwaway node that outputs a 0-pixel IMAGE
EMPTY_NODE_SOURCE = '''import torch


class DRCNCheckEmptyImage:
    """Test helper written by check_real_comfyui.py: a 0-pixel IMAGE."""
    CATEGORY = "testing"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def make(self):
        return (torch.zeros(1, 0, 0, 3),)


NODE_CLASS_MAPPINGS = {"DRCNCheckEmptyImage": DRCNCheckEmptyImage}
'''
RESULTS: list[tuple[bool, str]] = []


def check(ok: bool, text: str) -> bool:
    """Record and print one check."""
    RESULTS.append((ok, text))
    print(f"{'PASS' if ok else 'FAIL'}  {text}", flush=True)
    return ok


def workflow(image: str, scale: float, tile: int = 0, prefix: str = "DRCN",
             **loader: str) -> dict:
    """The example API workflow with its input image, scale, tile, model and prefix replaced."""
    wf = json.loads(WORKFLOW.read_text())
    wf["1"]["inputs"]["image"] = image
    wf["2"]["inputs"].update(loader)
    wf["3"]["inputs"].update(scale=scale, tile=tile)
    wf["4"]["inputs"]["filename_prefix"] = prefix
    return wf


def install(folder: Path, python: Path) -> None:
    """``drcn comfyui install`` into the ComfyUI at ``folder``; checks that the nodes landed."""
    drcn = shutil.which("drcn", path=str(Path(sys.executable).parent)) or shutil.which("drcn")
    cmd = [drcn, "comfyui", "install", "--comfyui-dir", str(folder), "--python", str(python)]
    print("$", " ".join(cmd), flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True)
    print((done.stdout + done.stderr).strip()[-1500:], flush=True)
    check(done.returncode == 0 and (folder / "custom_nodes" / NODES_NAME / "__init__.py").is_file(),
          f"drcn comfyui install (exit {done.returncode})")


def registry_metadata(folder: Path, python: Path) -> None:
    """Check that ComfyUI's own ``comfy_config`` parser reads the node pack's [tool.comfy]."""
    code = ("from comfy_config import config_parser as p; c = p.extract_node_configuration("
            f"{str(folder / 'custom_nodes' / NODES_NAME)!r}); print(c.project.name, "
            "c.project.version, repr(c.tool_comfy.publisher_id), repr(c.tool_comfy.display_name))")
    done = subprocess.run([str(python), "-c", code], cwd=folder, capture_output=True, text=True)
    out = done.stdout.strip()
    check(done.returncode == 0 and "'DRCN Super-Resolution'" in out,
          f"[tool.comfy] read by ComfyUI's comfy_config parser: {out or done.stderr[-300:]}")


def cancel_check(comfy: Comfy, image: str) -> None:
    """Interrupt a long job (tile 16, x4) after a few tile steps; it must stop within one step."""
    status, answer = comfy.queue(workflow(image, 4.0, tile=16, prefix="DRCN_cancel"))
    if not check(status == 200, f"queue a long tiled job (tile 16, x4): HTTP {status}"):
        return
    pid = answer["prompt_id"]
    sent: list[float] = []

    def interrupt(progress: list) -> None:
        if len(progress) == 5 and not sent:
            comfy.request("/interrupt", {"prompt_id": pid})
            sent.append(time.monotonic())

    event, _, progress = comfy.wait(pid, on_progress=interrupt)
    stopped = time.monotonic()
    after = [p for p in progress if sent and p[0] > sent[0]]
    steps = np.diff([p[0] for p in progress[:5]])
    step_s = float(np.median(steps)) if len(steps) else float("nan")
    done, total = (progress[-1][1], progress[-1][2]) if progress else (0, 0)
    check(event == "execution_interrupted" and len(after) <= 1,
          f"cancel: {event} at step {done}/{total}; {len(after)} progress step(s) after "
          f"/interrupt; stopped {stopped - sent[0] if sent else float('nan'):.2f} s after it "
          f"(one step took {step_s:.2f} s)")


def compare_check(comfy: Comfy, folder: Path, source: Path, image: str, scale: float) -> None:
    """Run the example workflow; compare its PNG with `drcn upscale` and the engine here. The
    first run on a machine measures tile sizes, which takes minutes on two busy cores."""
    got = run_saved(comfy, folder, workflow(image, scale), "4",
                    f"the example workflow (x{scale:g})")
    if got is None:
        return
    src = np.array(Image.open(source).convert("RGB"))
    want_size = (round(src.shape[1] * scale), round(src.shape[0] * scale))
    check((got.shape[1], got.shape[0]) == want_size,
          f"saved image: {got.shape[1]}x{got.shape[0]} (input {src.shape[1]}x"
          f"{src.shape[0]} x{scale:g} -> {want_size[0]}x{want_size[1]})")
    ref = drcn_cli(source, "--scale", str(scale))
    if ref is None:
        return
    engine = Upscaler("drcn-lite").upscale(src, scale)
    for name, other in (("drcn upscale", ref), ("the engine here", engine)):
        if other.shape != got.shape:
            check(False, f"{name}: shape {other.shape} differs from ComfyUI's {got.shape}")
            continue
        diff = np.abs(got.astype(int) - other.astype(int))
        value = psnr(torch.from_numpy(got).double(), torch.from_numpy(other).double())
        check(int(diff.max()) <= 1, f"ComfyUI vs {name}: PSNR {value:.2f} dB, max diff "
              f"{int(diff.max())} LSB, {100 * float((diff > 0).mean()):.2f}% of values differ")


def drcn_cli(source: Path, *args: str) -> np.ndarray | None:
    """`drcn upscale SOURCE ARGS` as an RGB array, or None (reported) when it fails."""
    with tempfile.TemporaryDirectory() as tmp:
        drcn = shutil.which("drcn", path=str(Path(sys.executable).parent)) or "drcn"
        cli = subprocess.run([drcn, "upscale", str(source), *args, "-o", tmp, "--format", "png"],
                             capture_output=True, text=True)
        outs = glob.glob(os.path.join(tmp, "*.png"))
        if not check(cli.returncode == 0 and len(outs) == 1,
                     f"drcn upscale {' '.join(args)} (exit {cli.returncode})"):
            print(cli.stderr[-800:])
            return None
        return np.array(Image.open(outs[0]).convert("RGB"))


def run_saved(comfy: Comfy, folder: Path, wf: dict, node: str, what: str,
              timeout: float = 1800) -> np.ndarray | None:
    """Queue ``wf``, wait up to ``timeout`` s (2 busy cores are slow), and read the first image
    its output node ``node`` saved."""
    status, answer = comfy.queue(wf)
    if not check(status == 200, f"queue {what}: HTTP {status} {answer.get('error', '')}"):
        return None
    start = time.monotonic()
    event, data, _ = comfy.wait(answer["prompt_id"], timeout)
    if not check(event == "execution_success", f"{what}: {event} in {time.monotonic() - start:.1f}"
                 f" s {data.get('exception_message', '')}".rstrip()):
        return None
    saved = comfy.history(answer["prompt_id"])["outputs"][node]["images"][0]
    return np.array(Image.open(folder / saved["type"] / saved["subfolder"]
                               / saved["filename"]).convert("RGB"))


def model_checks(comfy: Comfy, folder: Path, source: Path) -> None:
    """DRCN to Upscale Model through ComfyUI's ImageUpscaleWithModel, small and large."""
    src = Image.open(source).convert("RGB")
    small = src.crop((0, 0, min(src.width, 320), min(src.height, 240)))
    large = src.resize((800, 600), Image.BICUBIC)  # 2 x 2 of ComfyUI's 512-pixel tiles
    for name, img in (("small", small), ("large", large)):
        path = folder / "input" / f"drcn_check_{name}.png"
        img.save(path)
        wf = json.loads(MODEL_WORKFLOW.read_text())
        wf["1"]["inputs"]["image"] = path.name
        wf["5"]["inputs"]["filename_prefix"] = f"DRCN_model_{name}"
        got = run_saved(comfy, folder, wf, "5", f"DRCN to Upscale Model x2 on {img.width}x"
                        f"{img.height} through Upscale Image (using Model)")
        ref = drcn_cli(path, "--scale", "2")
        if got is None or ref is None:
            continue
        if not check(got.shape == ref.shape, f"{name}: ComfyUI {got.shape} vs drcn {ref.shape}"):
            continue
        diff = np.abs(got.astype(int) - ref.astype(int))
        value = psnr(torch.from_numpy(got).double(), torch.from_numpy(ref).double())
        if name == "small":
            check(int(diff.max()) <= 2, f"small image (one tile): max diff {int(diff.max())} LSB,"
                  f" PSNR {value:.2f} dB vs drcn upscale --scale 2")
            continue
        seam = np.zeros(got.shape[:2], bool)  # where ComfyUI's tiles (512, overlap 32) overlap
        for axis, length in ((0, img.height), (1, img.width)):
            for pos in range(480, length - 32, 480):
                band = slice(2 * pos, 2 * (pos + 32))
                if axis == 0:
                    seam[band] = True
                else:
                    seam[:, band] = True
        in_seam = psnr(torch.from_numpy(got[seam]).double(), torch.from_numpy(ref[seam]).double())
        rest = psnr(torch.from_numpy(got[~seam]).double(), torch.from_numpy(ref[~seam]).double())
        check(value >= 40 and in_seam >= 40, f"large image through ComfyUI's tiling: PSNR "
              f"{value:.2f} dB vs drcn upscale (tile overlaps {in_seam:.2f} dB, elsewhere "
              f"{rest:.2f} dB), max diff {int(diff.max())} LSB")


def size_check(comfy: Comfy, folder: Path, image: str, source: Path) -> None:
    """DRCN Upscale with width only: the aspect ratio is kept; same pixels as drcn --width."""
    wf = workflow(image, 2.0, prefix="DRCN_width")
    src = Image.open(source)
    width = src.width * 2 + 7
    wf["3"]["inputs"].update(width=width, height=0)
    got = run_saved(comfy, folder, wf, "4", f"DRCN Upscale width={width}")
    ref = drcn_cli(source, "--width", str(width))
    if got is None or ref is None:
        return
    ok = got.shape == ref.shape and int(np.abs(got.astype(int) - ref.astype(int)).max()) <= 1
    check(ok, f"exact width: ComfyUI {got.shape[1]}x{got.shape[0]}, drcn upscale --width "
          f"{ref.shape[1]}x{ref.shape[0]} (input {src.width}x{src.height}), max diff "
          f"{int(np.abs(got.astype(int) - ref.astype(int)).max()) if ok else 'n/a'} LSB")


def _memory(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        return next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith(field + ":"))


def frames_check(comfy: Comfy, folder: Path, source: Path, per_batch: int = 16) -> None:
    """120 frames of 640x360 x2 through DRCN Upscale: ComfyUI's peak memory during the run must
    stay under twice the upscaled batch (a node keeping its results beside the output batch would
    hold every upscaled frame twice). One run
    per server: a later run reuses what the previous prompt's cached outputs freed, so its rise
    would say little (benchmarks/comfyui_frame_memory.py compares before and after)."""
    frame = Image.open(source).convert("RGB").resize((640, 360), Image.BICUBIC)
    name = "drcn_check_frame.png"
    frame.save(folder / "input" / name)
    wf = {"1": {"class_type": "LoadImage", "inputs": {"image": name}},
          "2": {"class_type": "RepeatImageBatch", "inputs": {"image": ["1", 0], "amount": 120}},
          "3": {"class_type": "DRCNModelLoader", "inputs": {"model_name": TINY,
                                                           "hub_or_path": ""}},
          "4": {"class_type": "DRCNUpscale", "inputs": {
              "image": ["2", 0], "drcn_model": ["3", 0], "scale": 2.0, "tile": 0,
              "self_ensemble": False, "width": 0, "height": 0, "per_batch": per_batch}},
          "5": {"class_type": "ImageFromBatch", "inputs": {"image": ["4", 0], "batch_index": 0,
                                                          "length": 1}},
          "6": {"class_type": "PreviewImage", "inputs": {"images": ["5", 0]}}}
    rss = _memory(comfy.proc.pid, "VmRSS")
    Path(f"/proc/{comfy.proc.pid}/clear_refs").write_text("5")  # peak := now
    got = run_saved(comfy, folder, wf, "6", f"120 frames 640x360 x2, per_batch={per_batch}")
    if got is None:
        return
    rise = (_memory(comfy.proc.pid, "VmHWM") - rss) / 2**30
    output = 120 * 720 * 1280 * 3 * 4 / 2**30
    check(rise < 2 * output, f"frame batch in ComfyUI, per_batch={per_batch}: peak memory rise "
          f"{rise:.2f} GiB; the IMAGE output alone is {output:.2f} GiB, the 120 input frames "
          f"{output / 4:.2f} GiB (every upscaled frame held twice would be over "
          f"{2 * output:.2f} GiB)")


def error_checks(comfy: Comfy, image: str) -> None:
    """Bad inputs must come back as one clear line, from validation or from our node."""
    broken = "drcn_check_broken.safetensors"
    cases = [
        (f"scale out of range ({MAX_SCALE + 1:g})", workflow(image, MAX_SCALE + 1)),
        ("missing weights file", workflow(image, 2.0, hub_or_path="/no/such/drcn.safetensors")),
        ("corrupt weights file in models/drcn", workflow(image, 2.0, model_name=broken)),
        ("tile too small (8)", workflow(image, 2.0, tile=8)),
    ]
    empty = workflow(image, 2.0)
    empty["1"] = {"class_type": "DRCNCheckEmptyImage", "inputs": {}}
    cases.append(("0-pixel image", empty))
    for name, wf in cases:
        status, answer = comfy.queue(wf)
        if status != 200:
            errors = [e for node in answer.get("node_errors", {}).values()
                      for e in node.get("errors", [])]
            text = "; ".join(f"{e['message']}: {e['details']}" for e in errors) or str(answer)
            check(bool(errors), f"{name}: refused before running (HTTP {status}): {text}")
            continue
        event, data, _ = comfy.wait(answer["prompt_id"], timeout=120)
        message = str(data.get("exception_message", "")).strip()
        ours = [f for f in data.get("traceback", []) if "drcn" in f]
        check(event == "execution_error" and message.startswith("DRCN: ") and "\n" not in message,
              f"{name}: {data.get('node_type')} -> {data.get('exception_type')}: {message} "
              f"[{len(data.get('traceback', []))} frames, {len(ours)} in drcn code]")


def main() -> int:
    """Run the chosen checks against a real ComfyUI; exit status 1 when any failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("comfyui_dir", type=Path)
    parser.add_argument("--python", type=Path, help="ComfyUI's Python (default: its venv/)")
    parser.add_argument("--image", type=Path, help="test image (default: input/example.png)")
    parser.add_argument("--scale", type=float, default=2.5)
    parser.add_argument("--port", type=int, default=8189)
    parser.add_argument("--checks", default=",".join(CHECKS),
                        help=f"comma-separated subset of {','.join(CHECKS)} (default: all)")
    args = parser.parse_args()
    folder = args.comfyui_dir.resolve()
    python = args.python or default_python(folder)
    source = (args.image or folder / "input" / "example.png").resolve()
    image = "drcn_check_input.png"
    shutil.copyfile(source, folder / "input" / image)
    install(folder, python)
    registry_metadata(folder, python)
    (folder / "models" / "drcn" / "drcn_check_broken.safetensors").write_bytes(b"not weights")
    torch.manual_seed(0)
    save_file(DRCN(features=8, recursions=3).state_dict(), str(folder / "models" / "drcn" / TINY))
    (folder / "custom_nodes" / EMPTY_NODE).write_text(EMPTY_NODE_SOURCE)
    log = Path(tempfile.gettempdir()) / "drcn-check-comfyui.log"
    comfy = Comfy(folder, python, args.port, log)
    try:
        info = comfy.get("/object_info")
        ours = {k: (v["display_name"], v["category"]) for k, v in info.items()
                if k in ("DRCNModelLoader", "DRCNUpscale", "DRCNToUpscaleModel")}
        check(len(ours) == 3, f"ComfyUI {comfy.get('/system_stats')['system']['comfyui_version']}"
              f" loaded the nodes: {ours}")
        chosen = set(args.checks.split(","))
        for name, run in (("cancel", lambda: cancel_check(comfy, image)),
                          ("compare", lambda: compare_check(comfy, folder, source, image,
                                                            args.scale)),
                          ("model", lambda: model_checks(comfy, folder, source)),
                          ("size", lambda: size_check(comfy, folder, image, source)),
                          ("frames", lambda: frames_check(comfy, folder, source)),
                          ("errors", lambda: error_checks(comfy, image))):
            if name in chosen:
                run()
    finally:
        comfy.close()
        (folder / "custom_nodes" / EMPTY_NODE).unlink()
        for name in ("drcn_check_broken.safetensors", TINY):
            (folder / "models" / "drcn" / name).unlink()
    failed = sum(not ok for ok, _ in RESULTS)
    print(f"{len(RESULTS) - failed} passed, {failed} failed (ComfyUI log: {log})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
