"""The GIMP plug-in without GIMP: worker protocol end to end, the plug-in's client and pixel
helpers (imported without ``gi``), the plug-in file with a stubbed ``gi``, and the installer."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from itertools import pairwise
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from drcn_plugin.engine import Upscaler
from drcn_plugin.errors import DRCNError
from drcn_plugin.integrations.gimp_install import CONFIG_NAME, PLUGIN, install
from drcn_plugin.integrations.gimp_worker import EXIT_CANCELLED, EXIT_ERROR, parse_header, serve
from drcn_plugin.sizing import output_size

REPO = Path(__file__).resolve().parents[1]
PLUGIN_DIR = REPO / "gimp" / PLUGIN
WORKER = [sys.executable, "-m", "drcn_plugin.integrations.gimp_worker"]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


client = _load("drcn_worker_client", PLUGIN_DIR / "drcn_worker_client.py")


@pytest.fixture(scope="module")
def tiny(tiny_model_file: str) -> str:
    """The worker loads the tiny model by path."""
    return tiny_model_file


@pytest.fixture(scope="module")
def worker():
    with client.Worker(WORKER, env=ENV) as w:
        yield w


def _image(dtype: str, channels: int, h: int = 20, w: int = 24) -> np.ndarray:
    rng = np.random.default_rng(channels)
    x = rng.random((h, w, channels), dtype=np.float32)
    if dtype == "u8":
        return (x * 255).round().astype(np.uint8)
    if dtype == "u16":
        return (x * 65535).round().astype(np.uint16)
    return x


@pytest.mark.parametrize("dtype,channels,scale", [("u8", 3, 2.0), ("u8", 4, 3.0),
                                                  ("u16", 1, 2.0), ("u16", 2, 1.5),
                                                  ("f32", 3, 2.5)])
def test_worker_matches_engine(worker, tiny, dtype, channels, scale):
    image = _image(dtype, channels)
    fmt = client.PixelFormat("test", dtype, channels)
    seen = []
    data, w, h = worker.upscale(image.tobytes(), 24, 20, fmt, scale, {"model": tiny, "tile": 16},
                                lambda done, total: seen.append((done, total)))
    expected = Upscaler(tiny, tile=16).upscale(image, scale)
    got = np.frombuffer(data, image.dtype).reshape(h, w, channels)
    assert (h, w) == output_size(20, 24, scale) == expected.shape[:2]
    np.testing.assert_array_equal(got, expected)
    assert seen and seen[-1][0] == seen[-1][1] > 1  # several tiles, progress ends at total


def test_wire_format_progress_lines_and_result(tiny):
    image = _image("u8", 3)
    header = {"width": 24, "height": 20, "channels": 3, "dtype": "u8", "scale": 2, "model": tiny,
              "tile": 16}
    run = subprocess.run(WORKER, input=json.dumps(header).encode() + b"\n" + image.tobytes(),
                         capture_output=True, env=ENV, timeout=120)
    assert run.returncode == 0, run.stderr
    head, _, rest = run.stdout.partition(b"result 40 48 5760\n")
    lines = [ln for ln in head.decode().splitlines() if ln != "alive"]
    assert lines[0] == "ready 1"
    progress = [tuple(map(int, ln.split()[1:])) for ln in lines[1:]]
    assert all(ln.startswith("progress ") for ln in lines[1:])
    assert progress[-1] == (9, 9)  # 40x48 in 16-pixel tiles
    assert len(rest) == 5760


@pytest.mark.parametrize("stdin,message", [
    (b"not json\n", "error bad header: not JSON"),
    (b'{"width": 2, "height": 2, "channels": 3, "dtype": "u8", "scale": 2}\n' + b"\0" * 5,
     "error truncated pixel data: got 5 of 12 bytes"),
])
def test_bad_input_is_a_clean_error_exit(stdin, message):
    run = subprocess.run(WORKER, input=stdin, capture_output=True, env=ENV, timeout=120)
    assert run.returncode == 2
    assert message in run.stdout.decode()
    assert "Traceback" not in run.stderr.decode() and "error:" in run.stderr.decode()


@pytest.mark.parametrize(("option", "message"), [
    ({"device": "bogus"}, "unknown device 'bogus': use auto, cpu, cuda, cuda:N or mps"),
    ({"model": "no-such-model"}, "unknown model 'no-such-model': use one of drcn-lite"),
    ({"precision": "fp8"}, "unknown precision 'fp8': use one of auto, fp32, bf16, fp16"),
    ({"tile": 3}, "tile size 3 is too small: use 0 (automatic) or at least 16"),
])
def test_a_bad_option_is_named_before_the_pixels_are_read(option: dict, message: str) -> None:
    """The engine's options are checked once the header is read: a bad one is named before a
    layer's pixels are sent (here none follow, which a later check would call a truncation)."""
    header = json.dumps({"width": 200, "height": 150, "channels": 3, "dtype": "u8", "scale": 2,
                         **option}).encode() + b"\n"
    inp, out = io.BytesIO(header), io.BytesIO()
    assert serve(inp, out) == EXIT_ERROR
    lines = [ln for ln in out.getvalue().decode().splitlines() if ln != "alive"]
    assert lines[0] == "ready 1" and lines[1].startswith(f"error {message}") and len(lines) == 2
    assert inp.tell() == len(header), "nothing read past the header"


@pytest.mark.parametrize("line,needle", [
    (b'{"width": 2}', "input ended before its newline"),
    (b"[1, 2]\n", "JSON object"),
    (b'{"width": 2, "height": 2, "channels": 1, "dtype": "u8", "scale": 2, "colour": 1}\n',
     "unknown fields ['colour']"),
    (b'{"width": 2, "height": 2, "channels": 1, "dtype": "u8"}\n', "missing fields ['scale']"),
    (b'{"width": 2, "height": 2, "channels": 1, "dtype": "u8", "scale": true}\n', "wrong type"),
    (b'{"width": 2, "height": 2, "channels": 1, "dtype": "f64", "scale": 2}\n', "dtype 'f64'"),
    (b'{"width": 2, "height": 2, "channels": 5, "dtype": "u8", "scale": 2}\n', "5 channels"),
    (b'{"width": 2, "height": 2, "channels": 1, "dtype": "u8", "scale": 2, "denoise": 2}\n',
     "denoise must be in 0..1"),
])
def test_parse_header_names_the_problem(line, needle):
    with pytest.raises(DRCNError) as e:
        parse_header(line)
    assert needle in str(e.value)


def test_stop_cancels_the_worker_between_tiles(tiny):
    image = _image("u8", 3, 64, 64)
    w = client.Worker(WORKER, env=ENV)
    w.start()
    try:
        with pytest.raises(client.WorkerError, match="cancelled"):
            w.upscale(image.tobytes(), 64, 64, client.PixelFormat("t", "u8", 3), 4.0,
                      {"model": tiny, "tile": 16}, lambda done, total: w.stop())
        assert w.proc.returncode == 3  # cancelled cleanly, not killed
    finally:
        w.close(graceful=False)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("payload", [b"", b"x" * 10])
def test_a_stop_signal_ends_a_worker_waiting_for_input(payload: bytes, sig: int) -> None:
    proc = subprocess.Popen(WORKER, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    try:
        assert proc.stdout.readline().startswith(b"ready")
        if payload:  # a header whose pixels never finish arriving
            proc.stdin.write(b'{"width": 8, "height": 8, "channels": 3, "dtype": "u8", '
                             b'"scale": 2}\n' + payload)
            proc.stdin.flush()
        proc.send_signal(sig)  # wherever it lands after "ready", the worker ends
        assert proc.wait(20) == 3
        assert proc.stdout.read().endswith(b"cancelled\n")
        assert b"Traceback" not in proc.stderr.read()
    finally:
        proc.kill()


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses PR_SET_PDEATHSIG")
def test_worker_dies_with_its_client(tmp_path, tiny):
    """GIMP kills the plug-in when its progress is cancelled; the worker must not live on."""
    script = tmp_path / "client.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(PLUGIN_DIR)!r})
        import drcn_worker_client as c
        w = c.Worker({WORKER!r}, env={ENV!r})
        w.start()
        def tick(done, total):
            print(w.proc.pid, flush=True)
        w.upscale(bytes(96 * 96 * 3), 96, 96, c.PixelFormat("t", "u8", 3), 4.0,
                  {{"model": {tiny!r}, "tile": 16}}, tick)
    """))
    plugin = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE)
    try:
        worker_pid = int(plugin.stdout.readline())
        plugin.kill()
        plugin.wait()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _alive(worker_pid):
            time.sleep(0.05)
        alive = _alive(worker_pid)
        if alive:
            os.kill(worker_pid, signal.SIGKILL)
        assert not alive
    finally:
        plugin.kill()


def test_failing_worker_reports_exit_code_and_last_stderr_line():
    w = client.Worker([sys.executable, "-c",
                       "import sys; sys.stderr.write('warming up\\nboom: no torch here\\n'); "
                       "sys.exit(7)"], env=ENV)
    with pytest.raises(client.WorkerError) as e:
        w.start()
    assert "exited with code 7: boom: no torch here" in str(e.value)
    assert "drcn gimp install" in str(e.value)


def test_every_call_to_a_worker_that_has_exited_says_so(monkeypatch):
    monkeypatch.setattr(client, "SILENCE_TIMEOUT_S", 0.5)
    w = client.Worker([sys.executable, "-c", "import sys; print('ready 1', flush=True); "
                       "sys.stdin.readline(); sys.stderr.write('bad request\\n'); sys.exit(2)"],
                      env=ENV)
    w.start()
    for _ in range(3):  # the first call sees the exit; the later ones must not wait for it
        with pytest.raises(client.WorkerError, match="exited with code 2: bad request"):
            w.upscale(b"\0" * 12, 2, 2, client.PixelFormat("t", "u8", 3), 2.0, {}, None)


def test_silent_worker_times_out_and_is_killed(monkeypatch):
    monkeypatch.setattr(client, "START_TIMEOUT_S", 0.5)
    monkeypatch.setattr(client, "STOP_GRACE_S", 0.5)
    w = client.Worker([sys.executable, "-c",
                       "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                       "time.sleep(60)"], env=ENV)
    with pytest.raises(client.WorkerError, match="did not answer for 0 s during start"):
        w.start()
    assert w.proc.returncode == -signal.SIGKILL  # killed, not waited for


def test_unstartable_worker_is_reported(tmp_path):
    with pytest.raises(client.WorkerError, match="cannot start the DRCN worker"):
        client.Worker([str(tmp_path / "no-python"), "-m", "drcn_plugin.integrations.gimp_worker"], env=ENV).start()


def test_version_mismatch_is_reported():
    w = client.Worker([sys.executable, "-c", "print('ready 2', flush=True)"], env=ENV)
    with pytest.raises(client.WorkerError, match="instead of 'ready 1'"):
        w.start()


def test_worker_command_from_record_env_or_error(tmp_path):
    with pytest.raises(client.WorkerError, match="not set up"):
        client.worker_command(tmp_path, {})
    (tmp_path / CONFIG_NAME).write_text(json.dumps({"python": str(tmp_path / "nope")}))
    with pytest.raises(client.WorkerError, match="does not exist"):
        client.worker_command(tmp_path, {})
    (tmp_path / CONFIG_NAME).write_text(json.dumps({"python": sys.executable}))
    assert client.worker_command(tmp_path, {}) == WORKER
    assert client.worker_command(tmp_path, {"DRCN_WORKER_PYTHON": sys.executable})[0] == \
        sys.executable
    (tmp_path / CONFIG_NAME).write_text("{broken")
    with pytest.raises(client.WorkerError, match="cannot read"):
        client.worker_command(tmp_path, {})
    assert "PYTHONHOME" not in client.worker_env({"PYTHONHOME": "/gimp", "PATH": "/bin"})


@pytest.mark.parametrize("gray,alpha,precision,babl,dtype,channels", [
    (False, False, "u8-non-linear", "R'G'B' u8", "u8", 3),
    (False, True, "u8-perceptual", "R'G'B'A u8", "u8", 4),
    (True, False, "u16-non-linear", "Y' u16", "u16", 1),
    (True, False, "u16-linear", "Y' float", "f32", 1),
    (True, True, "half-non-linear", "Y'A float", "f32", 2),
    (False, True, "u32-linear", "R'G'B'A float", "f32", 4),
    (False, False, "double-perceptual", "R'G'B' float", "f32", 3),
])
def test_pixel_format(gray, alpha, precision, babl, dtype, channels):
    fmt = client.pixel_format(gray, alpha, precision)
    assert (fmt.babl, fmt.dtype, fmt.channels) == (babl, dtype, channels)
    assert fmt.nbytes(5, 3) == 15 * channels * {"u8": 1, "u16": 2, "f32": 4}[dtype]


def test_geometry_matches_the_engine():
    for n in (1, 5, 7, 33, 101):
        for scale in (1.0, 1.15, 1.5, 2.0, 2.3, 2.5, 3.3, 4.0):
            assert (client.scaled_span(0, n, scale)[1], client.scaled_span(0, n + 2, scale)[1]) == \
                output_size(n, n + 2, scale)
    assert client.scaled_span(-5, 2, 2.5) == (-12, 5) and client.scaled_span(7, 3, 1.5) == (11, 4)


@pytest.mark.parametrize("scale", [1.3, 1.5, 2.5, 1.01, 3.7])
def test_touching_layers_stay_touching_when_scaled(scale):
    # layers side by side from 0: each one's scaled span starts where the previous one ended
    edges = [0, 1, 3, 4, 7, 12, 13, 20]
    spans = [client.scaled_span(a, b - a, scale) for a, b in pairwise(edges)]
    for (start, length), (next_start, _) in pairwise(spans):
        assert start + length == next_start
    for (a, b), (_, length) in zip(pairwise(edges), spans, strict=True):
        assert length >= b - a  # never smaller than the layer (the worker refuses that)
    assert sum(spans[-1]) == client.scaled_span(0, edges[-1], scale)[1]
    assert client.overall_fraction(1, 4, 5, 10) == pytest.approx(0.375)


def test_installer_copies_plugin_and_records_python(tmp_path):
    dest = install(tmp_path, python="/opt/env/bin/python")
    assert dest == tmp_path / "plug-ins" / PLUGIN
    main = dest / f"{PLUGIN}.py"
    assert main.read_bytes() == (PLUGIN_DIR / f"{PLUGIN}.py").read_bytes()
    assert os.access(main, os.X_OK) and (dest / "drcn_worker_client.py").is_file()
    assert json.loads((dest / CONFIG_NAME).read_text()) == {"python": "/opt/env/bin/python"}
    assert client.worker_command(dest, {"DRCN_WORKER_PYTHON": sys.executable})[1:] == WORKER[1:]


def test_install_command(tmp_path):
    from typer.testing import CliRunner

    from drcn_plugin.cli import app

    result = CliRunner().invoke(app, ["gimp", "install", "--gimp-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "plug-ins" / PLUGIN / CONFIG_NAME).read_text())
    assert record == {"python": sys.executable}
    blocked = tmp_path / "file"
    blocked.write_text("")
    result = CliRunner().invoke(app, ["gimp", "install", "--gimp-dir", str(blocked)])
    assert result.exit_code == 2 and f"{blocked} is a file" in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1


def test_plugin_registers_its_arguments_with_a_stubbed_gi():
    """The plug-in file imports and declares the procedure without a real GIMP."""
    gi = mock.MagicMock()
    repo = gi.repository

    class PlugIn:
        __gtype__ = "gtype"

    repo.Gimp.PlugIn = PlugIn
    with mock.patch.dict(sys.modules, {"gi": gi, "gi.repository": repo}), \
            mock.patch.object(sys, "path", list(sys.path)):
        plugin = _load("drcn_plugin_gimp_file", PLUGIN_DIR / f"{PLUGIN}.py")
    repo.Gimp.main.assert_called_once()
    instance = plugin.DRCNSuperResolution()
    assert instance.do_query_procedures() == ["plug-in-drcn-super-resolution"]
    proc = instance.do_create_procedure("plug-in-drcn-super-resolution")
    args = [c.args[0] for name, c in ((c[0], c) for c in proc.mock_calls)
            if name.startswith("add_") and name.endswith("_argument")]
    assert args == ["scale", "width", "height", "model", "custom-model", "denoise", "tile",
                    "self-ensemble", "output"]
    proc.set_menu_label.assert_called_once_with("DRCN Super-Resolution...")
    proc.add_menu_path.assert_called_once_with("<Image>/Filters/Enhance")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_worker_whose_client_stops_reading_leaves_even_with_its_input_open() -> None:
    proc = subprocess.Popen(WORKER, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=ENV)
    try:
        assert proc.stdout.readline().startswith(b"ready")
        proc.stdout.close()  # the client's end of the replies gone, its end of the requests kept
        assert proc.wait(timeout=30) == EXIT_CANCELLED  # at the next heartbeat, not never
    finally:
        proc.kill()
        proc.stdin.close()
