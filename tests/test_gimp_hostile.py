"""The GIMP plug-in and its worker under hostile conditions: a garbled or polluted protocol pipe,
a worker killed mid-job, locks and channel settings that would keep GIMP's own pixels."""

from __future__ import annotations

import errno
import io
import json
import subprocess
import sys

import numpy as np
import pytest
from test_gimp_worker import ENV, client

from drcn_plugin.integrations.gimp_worker import EXIT_CANCELLED, serve


def _fake_worker(script: str) -> client.Worker:
    """A started client on a stand-in worker that says ``ready 1`` and then runs ``script``."""
    worker = client.Worker([sys.executable, "-c", "import sys, os, time\n"
                            "print('ready 1', flush=True)\nsys.stdin.readline()\n" + script],
                           env=ENV)
    worker.start()
    return worker


@pytest.mark.parametrize("reply", [
    "progress 3\n",  # a field missing
    "progress a b\n",
    "result 4 4\n",  # a result header cut short
    "result 2 2 5\nxxxxx",  # a payload that does not hold 2x2 RGB
])
def test_a_garbled_reply_is_one_worker_error(reply: str) -> None:
    """A reply that breaks the protocol is one WorkerError, not a ValueError traceback in GIMP
    (nor, for a bad result header, 'exited with code -15: no message' once the plug-in has
    stopped a live worker)."""
    worker = _fake_worker(f"sys.stdout.write({reply!r}); sys.stdout.flush(); time.sleep(30)")
    try:
        with pytest.raises(client.WorkerError) as e:
            worker.upscale(bytes(12), 2, 2, client.PixelFormat("t", "u8", 3), 2.0, {},
                           lambda done, total: None)
        message = str(e.value)
        assert "not the DRCN protocol" in message and "\n" not in message
        assert worker.proc.poll() is not None  # the stand-in was stopped, not left running
    finally:
        worker.close(graceful=False)


@pytest.mark.parametrize("reply", [
    "hello world\n",  # a line the protocol does not know: it was skipped, and heartbeats waited on
    "junkresult 2 2 12\n" + "x" * 12,  # stray bytes glued to a result line
    "result 2 2 99999999999999999999999\n",  # a size no payload has: the reader thread died
    "result 2 2 900000000000\n",  # one that allocates 900 GB before reading
    "result 2 2 100\n" + "x" * 12,  # more bytes claimed than 2x2 RGB holds: heartbeats read as pixels
    "result 600000 1 1800000\n",  # wider than the dry run let through
])
def test_a_reply_out_of_step_ends_at_once_in_one_line(monkeypatch, reply: str) -> None:
    """With the heartbeat still coming, such a reply left the plug-in waiting forever or until
    the silence timeout ('did not answer', after a traceback from the reader thread): the size
    is checked against the pixels awaited before a byte of payload is read."""
    monkeypatch.setattr(client, "SILENCE_TIMEOUT_S", 1.0)
    worker = _fake_worker(f"sys.stdout.write({reply!r}); sys.stdout.flush()\n"
                          "for _ in range(15):\n"
                          "    sys.stdout.write('alive\\n'); sys.stdout.flush(); time.sleep(0.2)\n"
                          "time.sleep(30)")
    try:
        with pytest.raises(client.WorkerError) as e:
            worker.upscale(bytes(12), 2, 2, client.PixelFormat("t", "u8", 3), 2.0, {}, None)
        message = str(e.value)
        assert "not the DRCN protocol" in message and "\n" not in message
        assert repr(reply.split("\n")[0][:57]).strip("'") in message
    finally:
        worker.close(graceful=False)


def test_a_result_too_big_for_gimps_memory_is_one_line() -> None:
    """A payload that cannot be allocated ends the reading with a line saying so, not a
    MemoryError traceback from the reader thread and a minute's wait."""

    class Stream(io.BytesIO):
        def read(self, n: int = -1) -> bytes:
            if n > 1 << 30:
                raise MemoryError
            return super().read(n)

    worker = client.Worker(["unused"])
    worker._pixel_bytes = 4
    worker._read(Stream(b"result 100000 100000 40000000000\n"))
    assert worker._messages.get_nowait() == (
        "failed", "DRCN: the upscaled pixels (37.3 GiB) do not fit in GIMP's memory: choose a "
                  "smaller Scale or size")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_worker_killed_mid_job_is_named_as_such() -> None:
    """The OOM killer's SIGKILL read 'exited with code -9: <some earlier warning>. Install
    drcn-plugin ...', sending the user to reinstall what works."""
    worker = _fake_worker("sys.stderr.write('UserWarning: something\\n'); sys.stderr.flush(); "
                          "os.kill(os.getpid(), 9)")
    try:
        with pytest.raises(client.WorkerError) as e:
            worker.upscale(bytes(12), 2, 2, client.PixelFormat("t", "u8", 3), 2.0, {}, None)
        message = str(e.value)
        assert "killed" in message and "memory" in message and "SIGKILL" in message
        assert "drcn gimp install" not in message and "\n" not in message
    finally:
        worker.close(graceful=False)


def test_the_worker_keeps_c_level_writes_off_the_protocol_pipe(tiny_model_file: str) -> None:
    """A library writing to file descriptor 1 (C code, not ``print``) stays out of the replies:
    without a newline its text would glue itself to ``result``, the client would read the
    pixels as lines and, with the heartbeat still coming, wait forever."""
    code = ("import os\n"
            "from drcn_plugin.integrations import gimp_worker as g\n"
            "class Noisy(g.Upscaler):\n"
            "    def upscale(self, *a, **k):\n"
            "        os.write(1, b'libfoo: warming up')\n"
            "        return super().upscale(*a, **k)\n"
            "g.Upscaler = Noisy\n"
            "g.main()\n")
    image = np.arange(6 * 5 * 3, dtype=np.uint8).reshape(6, 5, 3)
    header = {"width": 5, "height": 6, "channels": 3, "dtype": "u8", "scale": 2,
              "model": tiny_model_file}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, env=ENV, timeout=120,
                         input=json.dumps(header).encode() + b"\n" + image.tobytes())
    assert run.returncode == 0, run.stderr
    lines = run.stdout.split(b"\n")
    assert lines[0] == b"ready 1" and b"result 12 10 360" in lines
    assert b"libfoo" not in run.stdout and b"libfoo: warming up" in run.stderr


def test_a_reply_cut_short_by_a_failed_write_is_the_last_thing_written(
        tiny_model_file: str) -> None:
    """A write that fails mid-payload ends the worker; its 'cancelled' line went out after the
    partial pixels, where the plug-in would read it as the rest of them: an image of garbage."""

    class Failing(io.BytesIO):
        def write(self, data: bytes) -> int:
            if len(data) > 100:  # the payload: half of it goes out, then the pipe fails
                super().write(bytes(data[:50]))
                raise OSError(errno.EIO, "Input/output error")
            return super().write(data)

    header = {"width": 5, "height": 6, "channels": 3, "dtype": "u8", "scale": 2,
              "model": tiny_model_file}
    out = Failing()
    pixels = np.arange(90, dtype=np.uint8).tobytes()
    assert serve(io.BytesIO(json.dumps(header).encode() + b"\n" + pixels), out) == EXIT_CANCELLED
    _, reply = out.getvalue().split(b"result 12 10 360\n")
    assert len(reply) == 50  # the cut payload, and nothing after it
