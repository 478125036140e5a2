"""A ComfyUI server on 127.0.0.1 for check_real_comfyui.py: the process, its HTTP API and a
minimal client for its /ws status stream."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

HOST = "127.0.0.1"


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
        """GET ``path`` (POST ``body`` as JSON when given): the HTTP status and the JSON answer."""
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
        """The JSON answer to a GET of ``path``."""
        return self.request(path)[1]

    def queue(self, prompt: dict) -> tuple[int, dict]:
        """Queue an API-format workflow: the status and ComfyUI's answer (its prompt_id)."""
        return self.request("/prompt", {"prompt": prompt, "client_id": self.client_id})

    def wait(self, prompt_id: str, timeout: float = 600,
             on_progress: Callable[[list[tuple[float, int, int]]], object] | None = None,
             ) -> tuple[str, dict, list[tuple[float, int, int]]]:
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
        """Close the websocket and stop ComfyUI (killed after 30 s)."""
        self.ws.sock.close()
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
