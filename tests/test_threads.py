"""One engine shared by threads (ComfyUI's worker thread, a thread pool over the Python API):
every plane runs start to end on one model and precision, whatever another thread measures or
switches meanwhile."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading

import pytest
import torch

from drcn_plugin import devices, engine, tuning
from drcn_plugin.engine import Upscaler
from drcn_plugin.model import DRCN
from drcn_plugin.tuning import Measurement, Timing


def tiny() -> DRCN:
    torch.manual_seed(0)
    return DRCN(features=8, recursions=3).eval()


@pytest.fixture
def measuring(monkeypatch: pytest.MonkeyPatch, tmp_path, one_thread: None) -> None:
    """Measuring on, a private cache, nothing remembered in memory, planes of 40x40 px enough to
    measure, tiny candidates."""
    monkeypatch.setenv(tuning.TUNING_ENV, "1")
    monkeypatch.setenv(tuning.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(tuning, "MEASURE_MIN_PIXELS", 40 * 40)
    monkeypatch.setattr(tuning, "LADDER", (16, 24, 32))
    monkeypatch.setattr(engine, "_TIMINGS", {})


@pytest.fixture
def unproven_bf16(monkeypatch: pytest.MonkeyPatch, measuring: None) -> None:
    """A CPU where bf16 runs but only a measurement tells whether it pays."""
    monkeypatch.setattr(engine, "cpu_bf16_unproven", lambda: True)
    monkeypatch.setattr(devices, "cpu_has_fast_bf16", lambda: False)


def test_a_plane_keeps_its_precision_while_another_thread_settles_it(
        unproven_bf16: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Thread A's large plane measures fp32, then bf16 (which wins); thread B's small plane runs
    meanwhile, and A's choice lands between B's windows: B's plane is all fp32, as the engine
    stood when B began, never bf16 windows of a measurement nor a mix of the two."""
    in_bf16, go_a, b_paused, go_b = (threading.Event() for _ in range(4))
    measured: list[int] = []

    def measure(forward, device, halo, candidates) -> Measurement:
        measured.append(1)
        if len(measured) == 2:  # bf16's measurement: wait while B runs
            in_bf16.set()
            assert go_a.wait(10)
        return Measurement([Timing(16, 1, 1.0 / len(measured) ** 4)])  # bf16 16x faster

    monkeypatch.setattr(tuning, "measure", measure)
    up = Upscaler(tiny(), device="cpu", notify=lambda _: None)
    small = torch.rand(30, 30, generator=torch.Generator().manual_seed(1))  # 4 windows of 16
    results: dict[str, torch.Tensor] = {}

    def pause_after_first_window(done: int, total: int) -> None:
        if done == 1:
            b_paused.set()
            assert go_b.wait(10)

    a = threading.Thread(target=lambda: results.update(a=up.run_y(torch.rand(60, 60))))
    b = threading.Thread(target=lambda: results.update(
        b=up.run_y(small, progress=pause_after_first_window)))
    a.start()
    assert in_bf16.wait(10)
    b.start()
    assert b_paused.wait(10)
    go_a.set()
    a.join(10)
    go_b.set()
    b.join(10)
    assert up.dtype == torch.bfloat16 and set(results) == {"a", "b"}
    alone = Upscaler(tiny(), device="cpu", precision="fp32", tile=16, batch=1).run_y(small)
    assert torch.equal(results["b"], alone)


def test_one_thread_measures_a_plan_while_the_others_run_by_rule(
        measuring: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Threads of a pool sharing an engine each measured the same plan at once (one "measuring"
    line each, every measurement slowed by the others): one measures, the others go on."""
    in_measure, go = threading.Event(), threading.Event()
    measured_by: list[str] = []

    def measure(forward, device, halo, candidates) -> Measurement:
        measured_by.append(threading.current_thread().name)
        if len(measured_by) == 1:
            in_measure.set()
            assert go.wait(10)
        return Measurement([Timing(16, 1, 1.0)])

    monkeypatch.setattr(tuning, "measure", measure)
    up = Upscaler(tiny(), device="cpu", precision="fp32", notify=lambda _: None)
    x = torch.rand(50, 60, generator=torch.Generator().manual_seed(2))
    results: dict[str, torch.Tensor] = {}
    a = threading.Thread(target=lambda: results.update(a=up.run_y(x)), name="a")
    a.start()
    assert in_measure.wait(10)
    b = threading.Thread(target=lambda: results.update(b=up.run_y(x)), name="b")
    b.start()
    b.join(10)
    go.set()
    a.join(10)
    assert measured_by == ["a"] and set(results) == {"a", "b"}
    with torch.inference_mode():
        whole = up.model(x[None, None])[0, 0]
    assert all((r - whole).abs().max() <= 1e-5 for r in results.values())


def test_a_measurement_beside_another_threads_pass_is_not_final(
        measuring: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The busy check counts the process's CPU time, which another thread's pass adds to: a
    measurement taken beside one is not final, and is taken up again next time."""
    monkeypatch.setattr(tuning, "BUSY_SHARE", 0.0)  # the CPU time alone never says busy here
    inside, go, asked = threading.Event(), threading.Event(), []

    def hold() -> bool:  # asked before the first batch, then inside its pass, between recursions
        asked.append(1)
        if len(asked) == 2:
            inside.set()
            assert go.wait(10)
        return False

    other = Upscaler(tiny(), device="cpu", precision="fp32", tile=16)
    b = threading.Thread(target=other.run_y, args=(torch.rand(20, 20),), kwargs={"cancel": hold})
    b.start()
    assert inside.wait(10)
    up = Upscaler(tiny(), device="cpu", precision="fp32", notify=lambda _: None)
    try:
        up.timings()
    finally:
        go.set()
        b.join(10)
    plans = tuning.load_plans(tuning.plan_key(up.device, 8, 3, torch.float32))
    assert plans is not None and plans.busy and not plans.settled


def test_a_finished_jobs_cancel_never_stops_the_next_one(
        unproven_bf16: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker thread's job is paused (its cancel watching the shared model) while another
    thread settles the precision on a copy of that model: the copy kept the job's cancel, so
    once it turned true (the user pressed Cancel after the job ended), the worker's next job,
    which has no cancel, stopped as cancelled."""
    measured: list[int] = []

    def measure(forward, device, halo, candidates) -> Measurement:
        measured.append(1)
        return Measurement([Timing(16, 1, 1.0 / len(measured) ** 4)])  # bf16 16x faster

    monkeypatch.setattr(tuning, "measure", measure)
    up = Upscaler(tiny(), device="cpu", notify=lambda _: None)
    paused, go, pressed = threading.Event(), threading.Event(), threading.Event()
    jobs: queue.Queue = queue.Queue()
    done: queue.Queue = queue.Queue()

    def worker() -> None:  # one thread for every job, as a host's worker
        for job in iter(jobs.get, None):
            try:
                done.put(up.run_y(torch.rand(30, 30), **job))
            except Exception as e:  # noqa: BLE001 (handed to the test)
                done.put(e)

    def pause_once(n: int, total: int) -> None:
        if n == 1:
            paused.set()
            assert go.wait(10)

    thread = threading.Thread(target=worker)
    thread.start()
    jobs.put({"progress": pause_once, "cancel": pressed.is_set})
    assert paused.wait(10)
    up.run_y(torch.rand(60, 60))  # settles the precision meanwhile: bf16
    go.set()
    assert isinstance(done.get(timeout=10), torch.Tensor)
    pressed.set()
    jobs.put({})
    jobs.put(None)
    second = done.get(timeout=10)
    thread.join(10)
    assert up.dtype == torch.bfloat16 and isinstance(second, torch.Tensor), second


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")
def test_a_forked_child_runs_the_parents_engine() -> None:
    """torch's OpenMP threads do not survive a fork: a child using an engine that has run on
    several threads in its parent must not wait for them for ever."""
    code = ("import multiprocessing as mp, numpy as np, torch\n"
            "from drcn_plugin import Upscaler\nfrom drcn_plugin.model import DRCN\n"
            "torch.set_num_threads(2)\ntorch.manual_seed(0)\n"
            "up = Upscaler(DRCN(8, 3), device='cpu', precision='fp32')\n"
            "image = np.random.default_rng(0).integers(0, 256, (40, 40, 3), np.uint8)\n"
            "mine = up.upscale(image, 2)\nq = mp.get_context('fork').SimpleQueue()\n"
            "child = mp.get_context('fork').Process(target=lambda: q.put(up.upscale(image, 2)))\n"
            "child.start()\nchild.join(60)\nchild.kill()\n"
            "print(child.exitcode, not q.empty() and np.array_equal(q.get(), mine))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, tuning.TUNING_ENV: "0"})
    assert run.stdout.split() == ["0", "True"], run.stderr
