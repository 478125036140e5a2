"""The GIMP plug-in's pure-Python half: pixel formats, geometry and the worker client (no ``gi``).

GIMP's Python has no torch, so pixels go to ``python -m drcn_plugin.integrations.gimp_worker``
(see that module for the protocol) running in the environment recorded by ``drcn gimp install``.
"""

from __future__ import annotations

import json
import math
import os
import queue
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

CONFIG_NAME = "drcn-worker.json"
PYTHON_ENV = "DRCN_WORKER_PYTHON"
WORKER_MODULE = "drcn_plugin.integrations.gimp_worker"
START_TIMEOUT_S = 180.0
SILENCE_TIMEOUT_S = 60.0
STOP_GRACE_S = 3.0
HINT = ("Install drcn-plugin in a Python environment and run `drcn gimp install` from it "
        f"(or set {PYTHON_ENV} to that Python).")
_ITEMSIZE = {"u8": 1, "u16": 2, "f32": 4}
MAX_SIDE = 524288  # GIMP's largest image side: GIMP_MAX_IMAGE_SIZE, libgimpbase/gimplimits.h
_LINES = {"ready", "alive", "progress", "error", "cancelled"}  # the worker's lines, but results


class WorkerError(Exception):
    """A one-line message for the GIMP user: a refusal before the work, or the worker's."""


@dataclass(frozen=True)
class PixelFormat:
    """How a drawable's pixels travel: babl format name, worker dtype and channel count."""

    babl: str
    dtype: str
    channels: int

    def nbytes(self, width: int, height: int) -> int:
        """Bytes of a ``width x height`` block in this format."""
        return width * height * self.channels * _ITEMSIZE[self.dtype]


def pixel_format(gray: bool, alpha: bool, precision: str) -> PixelFormat:
    """The format to read a drawable in at its own precision (a Gimp.Precision nick such as
    ``u16-non-linear``): u8 and u16 stay integer, everything else (u32, half, float, double) is
    read as 32-bit float. Values are always the perceptual (gamma) encoding the network expects,
    so linear u8 and u16 travel as float too: their levels do not map one to one onto the
    perceptual ones (73 of an 8-bit layer's 256 would come back as a neighbour)."""
    kind, _, trc = precision.partition("-")
    dtype = kind if kind in ("u8", "u16") and trc != "linear" else "f32"
    model = ("Y'" if gray else "R'G'B'") + ("A" if alpha else "")
    babl = f"{model} {'float' if dtype == 'f32' else dtype}"
    return PixelFormat(babl, dtype, (1 if gray else 3) + int(alpha))


def scaled_span(offset: int, length: int, scale: float) -> tuple[int, int]:
    """A layer's (offset, length) on the scaled canvas: both edges scaled, halves rounded up as
    the engine rounds sizes, so layers that touch keep touching (rounding offset and length
    apart can open a 1 px gap)."""
    start, end = (math.floor(round(edge * scale, 9) + 0.5) for edge in (offset, offset + length))
    return start, max(1, end - start)


def check_result_size(width: int, height: int) -> None:
    """Refuse, before any work, a result larger than GIMP's images can be (its new image or
    Scale Image would fail with a traceback after the whole upscale)."""
    if max(width, height) > MAX_SIDE:
        raise WorkerError(f"DRCN: the result would be {width}x{height} px, and GIMP's images are "
                          f"at most {MAX_SIDE} px a side: choose a smaller Scale or size")


def overall_fraction(index: int, count: int, done: int, total: int) -> float:
    """Progress over ``count`` layers when layer ``index`` has ``done`` of ``total`` tiles."""
    return (index + (done / total if total else 0.0)) / count


FLATPAK_HINT = ("In a Flatpak GIMP, allow the plug-in to start it on the host once: flatpak "
                "override --user --talk-name=org.freedesktop.Flatpak org.gimp.GIMP")


def worker_command(plugin_dir: Path, environ: Mapping[str, str] = os.environ) -> list[str]:
    """The worker's command line: the Python from $DRCN_WORKER_PYTHON or the install record;
    inside a Flatpak sandbox it runs on the host through ``flatpak-spawn --host``."""
    sandboxed = "FLATPAK_ID" in environ
    python = environ.get(PYTHON_ENV)
    if not python:
        config = plugin_dir / CONFIG_NAME
        try:
            python = json.loads(config.read_text(encoding="utf-8"))["python"]
        except FileNotFoundError:
            raise WorkerError(f"the DRCN worker is not set up ({config} is missing). "
                              f"{HINT}") from None
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise WorkerError(f"cannot read {config} ({e}). {HINT}") from None
        if not isinstance(python, str) or not python.strip():  # a record edited by hand
            raise WorkerError(f"{config} names no Python for the worker (\"python\": "
                              f"{json.dumps(python)}). {HINT}")
    if sandboxed:  # the host's files are not visible here; flatpak-spawn reports a bad path
        return ["flatpak-spawn", "--host", "--watch-bus", python, "-m", WORKER_MODULE]
    if not Path(python).is_file():
        raise WorkerError(f"the DRCN worker's Python {python} does not exist. {HINT}")
    return [python, "-m", WORKER_MODULE]


class Spool:
    """Upscaled blocks kept in a temporary file until all have arrived: Scale this image writes
    none before the last is done (so a failure leaves the image as it was), and held in memory
    they would take every scaled layer at once."""

    def __init__(self) -> None:
        self._file = _temp_io(tempfile.TemporaryFile)
        self._blocks: list[tuple[int, int, int, int]] = []  # offset, bytes, width, height

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()

    def add(self, data: bytes, width: int, height: int) -> None:
        """Keep one ``width x height`` block."""
        offset = _temp_io(self._file.seek, 0, os.SEEK_END)
        _temp_io(self._file.write, data)
        self._blocks.append((offset, len(data), width, height))

    def get(self, index: int) -> tuple[bytes, int, int]:
        """The block added ``index``-th, as (pixels, width, height)."""
        offset, size, width, height = self._blocks[index]
        _temp_io(self._file.seek, offset)
        return _temp_io(self._file.read, size), width, height


def _temp_io(call: Callable, *args: object):
    """``call(*args)``, its OSError (a full disk, a missing temporary folder) one line."""
    try:
        return call(*args)
    except OSError as e:
        raise WorkerError(f"DRCN: cannot keep the upscaled layers in {tempfile.gettempdir()} "
                          f"until the last is done ({e.strerror or e})") from None


def worker_env(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The environment for the worker, without the host application's Python settings."""
    drop = {"PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONEXECUTABLE"}
    return {k: v for k, v in environ.items() if k not in drop}


class Worker:
    """One worker process serving upscale requests; use as a context manager."""

    def __init__(self, command: list[str], env: Mapping[str, str] | None = None) -> None:
        self.command, self.env = command, dict(env) if env is not None else worker_env()
        self.proc: subprocess.Popen | None = None
        self._messages: queue.Queue = queue.Queue()
        self._pixel_bytes = 0  # bytes a pixel of the awaited result takes (0: a dry run's none)
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (lives with the worker)

    def __enter__(self) -> Worker:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close(graceful=exc[0] is None)

    def start(self) -> None:
        """Launch the worker and wait for its ``ready`` line."""
        try:
            self.proc = subprocess.Popen(
                self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                env=self.env, creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0))
        except OSError as e:
            raise WorkerError(f"cannot start the DRCN worker {self.command[0]} ({e}). "
                              f"{HINT}") from e
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()
        first = self._next(START_TIMEOUT_S, "start")
        if first != ("line", "ready 1"):
            self.stop()
            raise WorkerError(f"the DRCN worker answered {first[1]!r} instead of 'ready 1': "
                              f"the plug-in and drcn-plugin versions differ. {HINT}")

    def upscale(self, pixels: bytes, width: int, height: int, fmt: PixelFormat, scale: float,
                options: Mapping[str, object],
                progress: Callable[[int, int], None] | None = None) -> tuple[bytes, int, int]:
        """Upscale one block of pixels; returns (pixels, width, height) in the same format."""
        if not options.get("dry_run") and len(pixels) != fmt.nbytes(width, height):
            raise ValueError(f"{len(pixels)} bytes do not hold {width}x{height} in {fmt.babl}")
        header = {"width": width, "height": height, "channels": fmt.channels,
                  "dtype": fmt.dtype, "scale": scale, **options}
        self._pixel_bytes = 0 if options.get("dry_run") else fmt.nbytes(1, 1)
        # written beside the wait for replies: a worker that stops reading (wedged, stopped)
        # would block a plain write past the pipe's buffer, and the silence timeout with it
        threading.Thread(target=self._send, daemon=True,
                         args=(json.dumps(header).encode() + b"\n", pixels)).start()
        while True:
            message = self._next(SILENCE_TIMEOUT_S, "run")
            if message[0] == "result":
                _, h, w, data = message
                return data, w, h
            kind, _, rest = message[1].partition(" ")
            if kind == "progress" and progress is not None:
                try:
                    done, total = (int(v) for v in rest.split())
                except ValueError:
                    self._garbled(message[1])
                progress(done, total)
            elif kind == "error":
                raise WorkerError(f"DRCN: {rest}")
            elif kind == "cancelled":
                raise WorkerError("DRCN: cancelled")
            elif kind != "progress":  # a second 'ready': out of step
                self._garbled(message[1])

    def output_size(self, width: int, height: int, scale: float, options: Mapping[str, object],
                    fmt: PixelFormat | None = None) -> tuple[int, int]:
        """The (width, height) the worker would give a ``width x height`` image with these
        options (a dry run: the size rule lives in the worker's library). With ``fmt``, the
        worker also makes the memory check of a real run of that block, so one too big for
        memory is refused before its pixels are read out of GIMP."""
        _, w, h = self.upscale(b"", width, height, fmt or PixelFormat("", "u8", 1), scale,
                               {**options, "dry_run": True, "memory_check": fmt is not None})
        return w, h

    def stop(self) -> None:
        """Ask the worker to cancel (SIGTERM); kill it if it has not exited after a grace period."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def close(self, graceful: bool = True) -> None:
        """End the worker: close its stdin and let it exit, or stop it."""
        if self.proc is not None and graceful:
            try:
                self.proc.stdin.close()
                self.proc.wait(STOP_GRACE_S)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.stop()
        self._stderr.close()

    # -- internals ----------------------------------------------------------------------------
    def _send(self, header: bytes, pixels: bytes) -> None:
        """Writer thread: one request to the worker; a worker that died is reported by the
        reader, and one stopped for silence ends this write with a broken pipe."""
        try:
            self.proc.stdin.write(header)
            self.proc.stdin.write(pixels)
            self.proc.stdin.flush()
        except (OSError, ValueError):
            pass

    def _read(self, stream) -> None:
        """Reader thread: split stdout into lines and result payloads. A line the protocol does
        not know, or a result header whose size is not that of the pixels awaited, puts the
        stream out of step (nothing after it can be read): it is checked before any payload is
        read, so a bad size field neither allocates nor waits for bytes that never come."""
        try:
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\n")
                size = self._result_size(line) if line.startswith("result ") else None
                if size is None and line.partition(" ")[0] not in _LINES:
                    self._messages.put(("garbled", line))
                    return
                if size is None:
                    self._messages.put(("line", line))
                    continue
                h, w, n = size
                try:
                    data = stream.read(n)
                except MemoryError:
                    self._messages.put(("failed", f"DRCN: the upscaled pixels ({n / 2**30:.1f} "
                                                  "GiB) do not fit in GIMP's memory: choose a "
                                                  "smaller Scale or size"))
                    return
                if len(data) != n:
                    break
                self._messages.put(("result", h, w, data))
        except (OSError, ValueError):
            pass
        self._messages.put(("eof", ""))

    def _result_size(self, line: str) -> tuple[int, int, int] | None:
        """(height, width, bytes) of a ``result`` line that holds the pixels awaited: a real
        result fits in GIMP's images (checked by the dry run before it) and takes
        ``_pixel_bytes`` a pixel; None for any other."""
        try:
            h, w, n = (int(v) for v in line.split()[1:])
        except ValueError:
            return None
        fits = min(h, w) >= 0 and (not self._pixel_bytes or max(h, w) <= MAX_SIDE)
        return (h, w, n) if fits and n == h * w * self._pixel_bytes else None

    def _next(self, timeout: float, stage: str) -> tuple:
        """The next non-heartbeat message; raises WorkerError on a dead or silent worker."""
        while True:
            try:
                message = self._messages.get(timeout=timeout)
            except queue.Empty:
                self.stop()
                raise WorkerError(f"the DRCN worker did not answer for {timeout:.0f} s during "
                                  f"{stage} and was stopped. {HINT}") from None
            if message == ("line", "alive"):
                continue
            if message[0] == "eof":
                self._messages.put(message)  # every later call sees the end at once too
                raise WorkerError(self._failure())
            if message[0] == "garbled":
                self._garbled(message[1])
            if message[0] == "failed":
                self.stop()
                raise WorkerError(message[1])
            return message

    def _garbled(self, reply: str) -> None:
        """Stop a worker whose reply breaks the protocol and say so in one line."""
        self.stop()
        shown = reply if len(reply) <= 60 else reply[:57] + "..."
        raise WorkerError(f"the DRCN worker replied {shown!r}, which is not the DRCN protocol "
                          f"(something in its environment writes to its output). {HINT}")

    def _failure(self) -> str:
        """Why the worker's output ended: its exit code and last stderr line, or the signal that
        killed it (a reinstall cannot help there, so the install hint is left out)."""
        try:
            code = self.proc.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self.stop()
            return f"the DRCN worker closed its output without exiting and was stopped. {HINT}"
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return (f"the DRCN worker was killed by {name} mid-job; when nobody stopped it, the "
                    "system most likely ran out of memory: try a smaller Tile size or Scale, "
                    "or close other programs")
        self._stderr.seek(0)
        lines = [ln for ln in self._stderr.read().decode("utf-8", "replace").splitlines()
                 if ln.strip()]
        last = lines[-1].strip() if lines else "no message"
        hint = FLATPAK_HINT if self.command[0] == "flatpak-spawn" else HINT
        return f"the DRCN worker exited with code {code}: {last}. {hint}"
