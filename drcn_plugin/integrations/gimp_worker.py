"""``python -m drcn_plugin.integrations.gimp_worker``: the engine for a host whose Python has no
torch (GIMP).

Protocol on stdin/stdout, raw pixels in native byte order, rows of interleaved channels:

* worker: ``ready 1`` once the engine is importable;
* client, per image: one JSON header line (``width``, ``height``, ``channels`` 1-4, ``dtype``
  ``u8``/``u16``/``f32``, ``scale``; optional ``out_width``/``out_height`` (an exact output size,
  see ``sizing.TargetSize``; either alone keeps the aspect ratio), ``model`` (read as a pasted
  path, see ``pasting``), ``denoise`` (0..1, see ``hub.load_denoised``; 0 = the model as named),
  ``tile``, ``tta``, ``device``, ``precision``, ``dry_run``, ``memory_check``), then
  ``width * height * channels`` samples (none for a dry run);
* worker: ``progress DONE TOTAL`` lines, ``alive`` every 2 s, then ``result HEIGHT WIDTH NBYTES``
  and the upscaled samples (same channels and dtype; a dry run gets its output size and 0 bytes,
  after the memory check the real run would make when ``memory_check`` is set, so a client can
  refuse an image before it reads its pixels); or ``error MESSAGE`` (exit 2) or ``cancelled``
  (exit 3).

The worker serves images until stdin closes (exit 0). SIGTERM cancels between tiles; the worker
also stops when the client goes away (closed pipe or new parent process).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, get_type_hints

import numpy as np

from ..engine import Upscaler
from ..errors import Cancelled, DRCNError, ProtocolError, one_line
from ..hub import DEFAULT_MODEL
from ..memory import check_memory
from ..pasting import pasted_path
from ..sizing import TargetSize, size_text

PROTOCOL = 1
DTYPES = {"u8": np.dtype(np.uint8), "u16": np.dtype(np.uint16), "f32": np.dtype(np.float32)}
HEARTBEAT_S = 2.0
MAX_HEADER = 1 << 16
MAX_SIDE = 1 << 19  # GIMP's largest layer side (GIMP_MAX_IMAGE_SIZE); memory decides below it
_CHUNK = 1 << 22  # pixel data is read in pieces: memory follows what arrives, not the header
EXIT_ERROR, EXIT_CANCELLED = 2, 3


@dataclass(frozen=True)
class Request:
    """One image to upscale, as described by its header line."""

    width: int
    height: int
    channels: int
    dtype: str
    scale: float
    out_width: int = 0
    out_height: int = 0
    dry_run: bool = False
    memory_check: bool = False
    model: str = DEFAULT_MODEL
    denoise: float = 0.0
    tile: int = 0
    tta: bool = False
    device: str = "auto"
    precision: str = "auto"

    @property
    def nbytes(self) -> int:
        """Size of the pixel payload that follows the header."""
        if self.dry_run:
            return 0
        return self.width * self.height * self.channels * DTYPES[self.dtype].itemsize

    def output_size(self) -> tuple[int, int]:
        """The result's (height, width), by the rule every front end shares."""
        target = TargetSize.of(self.scale, self.out_width, self.out_height)
        return target.resolve(self.height, self.width)


# each header field's JSON types, from Request's annotations (a JSON number may be whole)
_TYPES = {name: (int, float) if hint is float else hint
          for name, hint in get_type_hints(Request).items()}
_FLAGS = {name for name, hint in _TYPES.items() if hint is bool}


def parse_header(line: bytes) -> Request:
    """Decode and check one header line; raises ProtocolError naming the bad field."""
    if not line.endswith(b"\n"):
        raise ProtocolError(f"bad header: no newline in the first {MAX_HEADER} bytes"
                            if len(line) >= MAX_HEADER else "bad header: input ended before "
                            "its newline")
    try:
        fields = json.loads(line)
    except (ValueError, RecursionError) as e:
        raise ProtocolError(f"bad header: not JSON ({one_line(e)})") from e
    if not isinstance(fields, dict):
        raise ProtocolError("bad header: expected a JSON object")
    unknown = sorted(set(fields) - set(_TYPES))
    missing = sorted({"width", "height", "channels", "dtype", "scale"} - set(fields))
    if unknown or missing:
        raise ProtocolError(f"bad header: unknown fields {unknown}, missing fields {missing}")
    for key, value in fields.items():
        if not isinstance(value, _TYPES[key]) or (key not in _FLAGS and isinstance(value, bool)):
            raise ProtocolError(f"bad header: {key}={value!r} has the wrong type")
    try:
        req = Request(**{**fields, "scale": float(fields["scale"]),
                         "denoise": float(fields.get("denoise", 0.0)),
                         "model": pasted_path(fields.get("model", DEFAULT_MODEL))})
    except OverflowError:
        raise ProtocolError("bad header: scale or denoise is too large a number") from None
    if not (1 <= req.width <= MAX_SIDE and 1 <= req.height <= MAX_SIDE):
        raise ProtocolError(f"a {size_text(req.width, req.height)} px image is outside the 1 "
                            f"to {MAX_SIDE} px a side that the DRCN worker takes")
    if not 1 <= req.channels <= 4 or req.dtype not in DTYPES:
        raise ProtocolError(f"bad header: {req.channels} channels, dtype {req.dtype!r} "
                            "(1-4 channels, u8, u16 or f32)")
    if not 0 <= req.denoise <= 1:  # checked before any pixels are read
        raise ProtocolError("bad header: denoise must be in 0..1")
    return req


class _Channel:
    """Thread-safe writer of protocol lines and payloads; notes when the client is gone."""

    def __init__(self, out: BinaryIO) -> None:
        self.out, self.lock, self.gone = out, threading.Lock(), threading.Event()

    def send(self, line: str, payload: memoryview | None = None) -> None:
        """Write one line (and its payload); nothing once a write has failed: that one may have
        stopped mid-reply, and a line after it would be read as the rest of the pixels."""
        with self.lock:
            if self.gone.is_set():
                return
            try:
                self._write_all(memoryview(line.encode() + b"\n"))
                if payload is not None:
                    self._write_all(payload)
                self.out.flush()
            except (BrokenPipeError, ValueError, OSError):
                self.gone.set()

    def _write_all(self, data: memoryview) -> None:
        """Write everything: a signal handled mid-write can make one write() return short."""
        while data:
            data = data[self.out.write(data) or 0:]

    def heartbeat(self) -> None:
        while not self.gone.wait(HEARTBEAT_S):
            self.send("alive")


def _read_exact(inp: BinaryIO, n: int) -> bytearray:
    """``n`` bytes, grown as they arrive (a header alone never makes the worker allocate)."""
    buf = bytearray()
    while len(buf) < n:
        piece = inp.read(min(_CHUNK, n - len(buf)))
        if not piece:
            raise ProtocolError(f"truncated pixel data: got {len(buf)} of {n} bytes")
        buf += piece
    return buf


def _die_with_parent() -> None:
    """On Linux, have the kernel kill the worker when the client process dies."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def serve(inp: BinaryIO, out: BinaryIO) -> int:
    """Answer requests from ``inp`` on ``out`` until EOF; returns the process exit code."""
    chan = _Channel(out)
    stop = threading.Event()
    parent = os.getppid()
    waiting = threading.Event()  # set while blocked on the client's input

    def on_term(*_: object) -> None:
        stop.set()
        if waiting.is_set():  # a blocked read would never see the flag: leave it now
            raise Cancelled("cancelled")

    def watch() -> None:
        chan.heartbeat()  # returns once the client stops taking lines
        if waiting.is_set():  # blocked on its input, which it may hold open: leave that read
            if hasattr(signal, "pthread_kill"):  # to the thread that reads, where on_term runs
                signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)
            else:  # Windows: no signal interrupts the read
                os._exit(EXIT_CANCELLED)

    handlers = {s: signal.signal(s, on_term)  # SIGINT: Ctrl-C in the terminal GIMP started in
                for s in (signal.SIGTERM, signal.SIGINT)}
    threading.Thread(target=watch, daemon=True).start()
    upscalers: dict[tuple, Upscaler] = {}

    def cancel() -> bool:
        return stop.is_set() or chan.gone.is_set() or os.getppid() != parent

    def progress(done: int, total: int) -> None:
        chan.send(f"progress {done} {total}")

    def wait_for_client(read: Callable[[], bytes]) -> bytes:
        """A read that may block on the client; a stop signal before or during it ends the worker
        (``waiting`` is set before the check, so no signal falls between the two)."""
        waiting.set()
        try:
            if cancel():
                raise Cancelled("cancelled")
            return read()
        finally:
            waiting.clear()

    chan.send(f"ready {PROTOCOL}")
    try:
        while not cancel():
            line = wait_for_client(functools.partial(inp.readline, MAX_HEADER))
            if not line:
                return 0
            req = parse_header(line)
            size = req.output_size()
            if req.memory_check or not req.dry_run:
                check_memory(req.height, req.width, req.channels, DTYPES[req.dtype].itemsize,
                             size=size)
            if req.dry_run:
                chan.send(f"result {size[0]} {size[1]} 0")
                continue
            key = (req.model, req.denoise, req.device, req.precision, req.tile, req.tta)
            if key not in upscalers:  # before the pixels: a bad option is named at once
                upscalers.clear()
                upscalers[key] = Upscaler(req.model, device=req.device, precision=req.precision,
                                          tile=req.tile, tta=req.tta,
                                          denoise=req.denoise)
            pixels = wait_for_client(functools.partial(_read_exact, inp, req.nbytes))
            image = np.frombuffer(pixels, DTYPES[req.dtype]).reshape(
                req.height, req.width, req.channels)
            result = np.ascontiguousarray(upscalers[key].upscale(
                image, size=size, progress=progress, cancel=cancel))
            chan.send(f"result {result.shape[0]} {result.shape[1]} {result.nbytes}",
                      memoryview(result).cast("B"))
        raise Cancelled("cancelled")
    except Cancelled:
        chan.send("cancelled")
        return EXIT_CANCELLED
    except Exception as e:  # noqa: BLE001 - the worker's boundary: any failure is one error line
        message = one_line(e) if isinstance(e, DRCNError) else \
            f"unexpected {type(e).__name__}: {one_line(e)}"
        chan.send(f"error {message}")
        print(f"error: {message}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        chan.gone.set()
        for s, handler in handlers.items():  # as they were, for a caller in this process
            signal.signal(s, handler)


def main() -> None:
    """Entry point: serve stdin/stdout; stray output goes to stderr so it cannot corrupt pixels.

    The protocol keeps a private copy of file descriptor 1, which then points at stderr: C code
    (a GPU driver, a native library) writes there directly, past ``sys.stdout``.
    """
    _die_with_parent()
    sys.stdout.flush()
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    code = serve(sys.stdin.buffer, out)
    # The host waits for the exit after a cancel; the interpreter's teardown (a full garbage
    # collection over torch's objects) takes seconds on a busy machine and holds nothing to save.
    with contextlib.suppress(OSError, ValueError):
        out.flush()
        sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
