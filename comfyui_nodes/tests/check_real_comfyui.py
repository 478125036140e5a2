"""Check the DRCN nodes in a real ComfyUI, end to end over its HTTP API.

It installs the nodes the documented way (``drcn comfyui install``), checks the registry metadata
with ComfyUI's own parser, starts ComfyUI headless on 127.0.0.1 (``--cpu``), then:

1. cancels a long tiled job (POST /interrupt) and measures how far it ran on;
2. queues the example API workflow (the next job after the cancel) and compares the saved PNG with
   ``drcn upscale`` and with the engine called here: size, PSNR, largest difference (<= 1 LSB);
3. queues bad inputs (scale out of range, missing and corrupt weights, a too-small tile, a 0-pixel
   image from a throwaway test node) and prints the message ComfyUI reports for each.

Usage: python check_real_comfyui.py COMFYUI_DIR [--python PY] [--image PNG] [--port 8189]
Run it with a Python that has drcn-plugin (and its ``drcn`` command); ComfyUI's own Python
(``--python``, default: COMFYUI_DIR/venv) must have ComfyUI's requirements. Exits 1 on a failure.
"""

from __future__ import annotations

import argparse
import base64
import glob
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from drcn_plugin.engine import Upscaler
from drcn_plugin.integrations.comfyui_install import NODES_NAME, default_python
from drcn_plugin.metrics import psnr

HOST = "127.0.0.1"
WORKFLOW = Path(__file__).resolve().parent.parent / "workflows" / "drcn_upscale_api.json"
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


class WebSocket:
    """A minimal client for ComfyUI's /ws status stream (text frames only; binary skipped)."""

    def __init__(self, port: int, client_id: str) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /ws?clientId={client_id} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
                           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
                          .encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.sock.recv(4096)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise ConnectionError(f"websocket upgrade refused: {head[:80]!r}")

    def _frame(self) -> tuple[int, bytes] | None:
        if len(self.buf) < 2:
            return None
        opcode, length, pos = self.buf[0] & 0x0F, self.buf[1] & 0x7F, 2
        if length == 126:
            if len(self.buf) < 4:
                return None
            length, pos = struct.unpack(">H", self.buf[2:4])[0], 4
        elif length == 127:
            if len(self.buf) < 10:
                return None
            length, pos = struct.unpack(">Q", self.buf[2:10])[0], 10
        if len(self.buf) < pos + length:
            return None
        payload, self.buf = self.buf[pos: pos + length], self.buf[pos + length:]
        return opcode, payload

    def receive(self, timeout: float) -> dict | None:
        """The next JSON message, or None after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self._frame()
            if frame is not None:
                if frame[0] == 8:
                    raise ConnectionError("ComfyUI closed the websocket")
                if frame[0] == 1:
                    return json.loads(frame[1])
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(1 << 16)
            except TimeoutError:
                return None
            if not chunk:
                raise ConnectionError("ComfyUI closed the websocket")
            self.buf += chunk


class Comfy:
    """A ComfyUI server process on 127.0.0.1 and its HTTP API."""

    def __init__(self, folder: Path, python: Path, port: int, log: Path) -> None:
        self.port, self.client_id = port, uuid.uuid4().hex
        self.log = open(log, "w")  # noqa: SIM115 (open while ComfyUI runs)
        self.proc = subprocess.Popen([str(python), "main.py", "--cpu", "--listen", HOST,
                                      "--port", str(port)], cwd=folder, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}; see {log}")
            try:
                self.get("/system_stats")
                break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(1)
        else:
            raise RuntimeError(f"ComfyUI did not answer within 300 s; see {log}")
        self.ws = WebSocket(port, self.client_id)

    def request(self, path: str, body: dict | None = None) -> tuple[int, dict]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://{HOST}:{self.port}{path}", data=data,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                text = r.read()
                return r.status, json.loads(text) if text.strip() else {}
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def get(self, path: str) -> dict:
        return self.request(path)[1]

    def queue(self, prompt: dict) -> tuple[int, dict]:
        return self.request("/prompt", {"prompt": prompt, "client_id": self.client_id})

    def wait(self, prompt_id: str, timeout: float = 600,
             on_progress=None) -> tuple[str, dict, list[tuple[float, int, int]]]:
        """Follow the websocket to the end of ``prompt_id``: (event, data, progress events)."""
        progress: list[tuple[float, int, int]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.ws.receive(deadline - time.monotonic())
            if msg is None:
                break
            data = msg.get("data", {})
            if data.get("prompt_id") != prompt_id:
                continue
            if msg["type"] == "progress":
                progress.append((time.monotonic(), data["value"], data["max"]))
                if on_progress is not None:
                    on_progress(progress)
            elif msg["type"] in ("execution_success", "execution_error", "execution_interrupted"):
                return msg["type"], data, progress
        return "timeout", {}, progress

    def history(self, prompt_id: str, timeout: float = 60) -> dict:
        """The /history entry of a finished prompt (it lands shortly after the websocket event)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.get(f"/history/{prompt_id}").get(prompt_id)
            if entry is not None:
                return entry
            time.sleep(0.5)
        raise RuntimeError(f"prompt {prompt_id} never appeared in /history")

    def close(self) -> None:
        self.ws.sock.close()
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


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
    drcn = shutil.which("drcn", path=str(Path(sys.executable).parent)) or shutil.which("drcn")
    cmd = [drcn, "comfyui", "install", "--comfyui-dir", str(folder), "--python", str(python)]
    print("$", " ".join(cmd), flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True)
    print((done.stdout + done.stderr).strip()[-1500:], flush=True)
    check(done.returncode == 0 and (folder / "custom_nodes" / NODES_NAME / "__init__.py").is_file(),
          f"drcn comfyui install (exit {done.returncode})")


def registry_metadata(folder: Path, python: Path) -> None:
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
    """Run the example workflow; compare its PNG with `drcn upscale` and the engine here."""
    status, answer = comfy.queue(workflow(image, scale))
    if not check(status == 200, f"queue the example workflow (x{scale:g}): HTTP {status}"):
        return
    pid = answer["prompt_id"]
    start = time.monotonic()
    event, data, _ = comfy.wait(pid)
    seconds = time.monotonic() - start
    if not check(event == "execution_success", f"example workflow after the cancel: {event} in "
                 f"{seconds:.1f} s {data.get('exception_message', '')}".rstrip()):
        return
    saved = comfy.history(pid)["outputs"]["4"]["images"][0]
    path = folder / "output" / saved["subfolder"] / saved["filename"]
    got = np.array(Image.open(path).convert("RGB"))
    src = np.array(Image.open(source).convert("RGB"))
    want_size = (round(src.shape[1] * scale), round(src.shape[0] * scale))
    check((got.shape[1], got.shape[0]) == want_size,
          f"saved {path.name}: {got.shape[1]}x{got.shape[0]} (input {src.shape[1]}x"
          f"{src.shape[0]} x{scale:g} -> {want_size[0]}x{want_size[1]})")
    with tempfile.TemporaryDirectory() as tmp:
        drcn = shutil.which("drcn", path=str(Path(sys.executable).parent)) or "drcn"
        cli = subprocess.run([drcn, "upscale", str(source), "--scale", str(scale), "-o", tmp,
                              "--format", "png"], capture_output=True, text=True)
        outs = glob.glob(os.path.join(tmp, "*.png"))
        if not check(cli.returncode == 0 and len(outs) == 1,
                     f"drcn upscale on the same input (exit {cli.returncode})"):
            print(cli.stderr[-800:])
            return
        ref = np.array(Image.open(outs[0]).convert("RGB"))
    engine = Upscaler("drcn-lite").upscale(src, scale)
    for name, other in (("drcn upscale", ref), ("the engine here", engine)):
        if other.shape != got.shape:
            check(False, f"{name}: shape {other.shape} differs from ComfyUI's {got.shape}")
            continue
        diff = np.abs(got.astype(int) - other.astype(int))
        value = psnr(torch.from_numpy(got).double(), torch.from_numpy(other).double())
        check(int(diff.max()) <= 1, f"ComfyUI vs {name}: PSNR {value:.2f} dB, max diff "
              f"{int(diff.max())} LSB, {100 * float((diff > 0).mean()):.2f}% of values differ")


def error_checks(comfy: Comfy, image: str) -> None:
    """Bad inputs must come back as one clear line, from validation or from our node."""
    broken = "drcn_check_broken.safetensors"
    cases = [
        ("scale out of range (9)", workflow(image, 9.0)),
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("comfyui_dir", type=Path)
    parser.add_argument("--python", type=Path, help="ComfyUI's Python (default: its venv/)")
    parser.add_argument("--image", type=Path, help="test image (default: input/example.png)")
    parser.add_argument("--scale", type=float, default=2.5)
    parser.add_argument("--port", type=int, default=8189)
    args = parser.parse_args()
    folder = args.comfyui_dir.resolve()
    python = args.python or default_python(folder)
    source = (args.image or folder / "input" / "example.png").resolve()
    image = "drcn_check_input.png"
    shutil.copyfile(source, folder / "input" / image)
    install(folder, python)
    registry_metadata(folder, python)
    (folder / "models" / "drcn" / "drcn_check_broken.safetensors").write_bytes(b"not weights")
    (folder / "custom_nodes" / EMPTY_NODE).write_text(EMPTY_NODE_SOURCE)
    log = Path(tempfile.gettempdir()) / "drcn-check-comfyui.log"
    comfy = Comfy(folder, python, args.port, log)
    try:
        info = comfy.get("/object_info")
        ours = {k: (v["display_name"], v["category"]) for k, v in info.items()
                if k in ("DRCNModelLoader", "DRCNUpscale")}
        check(len(ours) == 2, f"ComfyUI {comfy.get('/system_stats')['system']['comfyui_version']}"
              f" loaded the nodes: {ours}")
        cancel_check(comfy, image)
        compare_check(comfy, folder, source, image, args.scale)
        error_checks(comfy, image)
    finally:
        comfy.close()
        (folder / "custom_nodes" / EMPTY_NODE).unlink()
        (folder / "models" / "drcn" / "drcn_check_broken.safetensors").unlink()
    failed = sum(not ok for ok, _ in RESULTS)
    print(f"{len(RESULTS) - failed} passed, {failed} failed (ComfyUI log: {log})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
