"""Measuring with fake clocks: the ladder, the finalists, the budget, and what load on the CPU
changes (the wall clock) and does not (CPU time per thread, hence the timings and the plan)."""

from __future__ import annotations

import pytest
import torch

from drcn_plugin import tuning
from drcn_plugin.tuning import Timing


class FakeClock:
    """A clock that only moves when the fake network runs: timings without timing noise. Its
    ``cpu`` clock counts the call's cost on each of ``cpus`` threads; other processes' ``load``
    stretches the wall clock by that factor."""

    def __init__(self, seconds_per_call, load: float = 1.0, cpus: int = 0) -> None:
        self.now, self.work, self.cost, self.calls, self.load = 0.0, 0.0, seconds_per_call, [], load
        self.cpus = cpus or min(torch.get_num_threads(), tuning.usable_cpus())

    def __call__(self) -> float:
        return self.now

    def cpu(self) -> float:
        return self.work * self.cpus

    def forward(self, x: torch.Tensor) -> None:
        self.calls.append(x.shape[-1])
        self.work += self.cost(x)
        self.now += self.cost(x) * self.load


def clocks(monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> None:
    monkeypatch.setattr(tuning, "_clock", clock)
    monkeypatch.setattr(tuning, "_cpu_clock", clock.cpu)


def test_measure_ranks_then_retimes_the_finalists(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock(lambda x: 1.0)  # every call costs the same: bigger is cheaper per pixel
    clocks(monkeypatch, clock)
    out = tuning.measure(clock.forward, torch.device("cpu"), 2,
                         [(8, 1), (16, 2), (32, 1), (48, 1)], budget_s=100, repeats=3, finalists=2)
    assert not out.cut and not out.busy
    assert out.timings == [Timing(8, 1, 1.0), Timing(16, 2, 1.0), Timing(32, 1, 1.0), Timing(48, 1, 1.0)]
    # Warm-up and a first timing each, then two more rounds for the two finalists, round-robin.
    assert clock.calls == [12, 12, 20, 20, 36, 36, 52, 52, 52, 36, 52, 36]


def test_a_finalist_out_of_memory_on_a_later_round_is_dropped(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Memory that fitted a 52 px window once is taken by something else later.
    clock = FakeClock(lambda x: 1.0)
    clocks(monkeypatch, clock)

    def forward(x: torch.Tensor) -> None:
        if x.shape[-1] == 52 and len(clock.calls) >= 8:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        clock.forward(x)

    out = tuning.measure(forward, torch.device("cpu"), 2, [(8, 1), (16, 2), (32, 1), (48, 1)],
                         budget_s=100, repeats=3, finalists=2)
    assert [t.tile for t in out.timings] == [8, 16, 32]  # 48 px dropped, the others kept
    assert clock.calls[8:] == [36, 36]  # the remaining finalist timed in both rounds


def test_measure_stops_after_two_misses_and_before_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock(lambda x: x.shape[-1] ** 3 * 1e-6)  # time per pixel grows with the window
    clocks(monkeypatch, clock)
    ladder = [(4, 1), (8, 1), (16, 1), (32, 1)]
    slow = tuning.measure(clock.forward, torch.device("cpu"), 0, ladder, repeats=1)
    assert [t.tile for t in slow.timings] == [4, 8, 16], "8 and 16 both 15% worse than 4"
    assert not slow.cut, "the timings turned: a whole measurement"
    # A call costs 1 ms per window pixel: 1.6 s at 40 px, 3.6 s at 60 px, 6.4 s at 80 px.
    clock = FakeClock(lambda x: x.shape[-1] ** 2 * 1e-3)
    clocks(monkeypatch, clock)
    out = tuning.measure(clock.forward, torch.device("cpu"), 0, [(40, 1), (60, 1), (80, 1)],
                         budget_s=10)
    assert [t.tile for t in out.timings] == [40, 60] and out.cut, \
        "at 10.4 s, 80 px (2 x 6.4 s) would end past the budget"
    assert clock.calls[:4] == [40, 40, 60, 60] and sorted(clock.calls[4:]) == [40, 60], \
        "one round of the finalists within 20 s"
    clock = FakeClock(lambda x: x.shape[-1] ** 2 * 1e-3)
    clocks(monkeypatch, clock)
    out = tuning.measure(clock.forward, torch.device("cpu"), 0, ladder[:3], budget_s=10)
    assert len(out.timings) == 3 and not out.cut, "every candidate measured"


def threads(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """Torch runs ``n`` threads on ``n`` usable CPUs."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: n)
    monkeypatch.setattr(tuning, "usable_cpus", lambda: n)


@pytest.mark.parametrize(("n", "load", "busy"), [(2, 1.0, False), (2, 1.33, False), (2, 2.0, True),
                                                 (1, 1.0, False), (1, 2.0, False)])
def test_measure_tells_when_other_work_held_the_cpu(monkeypatch: pytest.MonkeyPatch, n: int,
                                                    load: float, busy: bool) -> None:
    """Several threads under load spin while one waits for the CPU, inflating their CPU time:
    busy. One thread's CPU time is its work alone whatever the load: never busy by load."""
    threads(monkeypatch, n)
    clock = FakeClock(lambda x: 1.0, load)
    clocks(monkeypatch, clock)
    out = tuning.measure(clock.forward, torch.device("cpu"), 0, [(8, 1), (16, 1)])
    assert out.busy is busy and not out.cut
    assert out.timings == [Timing(8, 1, 1.0), Timing(16, 1, 1.0)], "CPU seconds per thread"


@pytest.mark.parametrize("n", [1, 2])
def test_load_on_the_cpu_changes_neither_the_plan_nor_how_far_the_budget_reaches(
        monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """Other processes triple the wall time of every call, not its CPU time: the same timings and
    plan as an idle run, the whole ladder within the budget (by the wall clock it would end at
    60 px, after 37 s). On several threads it is busy, to be taken up again."""
    threads(monkeypatch, n)
    cost = lambda x: 0.5 + x.shape[-1] ** 2 * 1e-3  # noqa: E731 - bigger windows cheaper per px
    runs = {}
    for load in (1.0, 3.0):
        clock = FakeClock(cost, load)
        clocks(monkeypatch, clock)
        runs[load] = tuning.measure(clock.forward, torch.device("cpu"), 0,
                                    [(40, 1), (60, 1), (80, 1)], budget_s=30)
        assert clock.calls == [40, 40, 60, 60, 80, 80] + [80, 60, 40] * 2, load
    idle, loaded = runs.values()
    assert [t.tile for t in loaded.timings] == [40, 60, 80] and not loaded.cut
    assert loaded.timings == idle.timings
    assert [t.seconds for t in idle.timings] == pytest.approx([2.1, 4.1, 6.9])
    assert min(loaded.timings, key=lambda t: tuning.predicted_seconds(t, 500, 500, 0)).tile == 80
    assert not idle.busy and loaded.busy is (n > 1)


def test_heavy_load_cuts_a_measurement_by_the_wall_clock_to_be_taken_up_later(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Ten times the wall time of every call: past four budgets of wall time the ladder stops,
    cut (so not settled), its timings still the CPU's own."""
    threads(monkeypatch, 1)
    clock = FakeClock(lambda x: 0.5 + x.shape[-1] ** 2 * 1e-3, load=10.0)
    clocks(monkeypatch, clock)
    m = tuning.measure(clock.forward, torch.device("cpu"), 0, [(40, 1), (60, 1), (80, 1)],
                       budget_s=30)
    assert [t.tile for t in m.timings] == [40, 60] and m.cut
    assert [t.seconds for t in m.timings] == pytest.approx([2.1, 4.1])
    assert not tuning.Plans.measured(m).settled


def test_the_busy_share_counts_only_the_cpus_the_process_may_use(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Four threads in a container limited to two CPUs use both fully: not busy."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    for usable, busy in ((2, False), (4, True)):
        monkeypatch.setattr(tuning, "usable_cpus", lambda n=usable: n)
        clock = FakeClock(lambda x: 1.0, cpus=2)  # two threads' time: 4 ran on 2 CPUs
        clocks(monkeypatch, clock)
        assert tuning.measure(clock.forward, torch.device("cpu"), 0, [(8, 1)]).busy is busy


def test_a_coarse_cpu_clock_times_quick_calls_by_repeating_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows counts CPU time in 15.6 ms ticks: calls of 5 and 8 ms read alone as 0 or a tick
    (a 0 s timing is chosen as free, then refused by the cache). Repeated until 0.1 s is counted,
    each is timed within a tick of its cost."""
    threads(monkeypatch, 1)
    clock = FakeClock(lambda x: x.shape[-1] * 1e-4)
    tick = 1 / 64
    monkeypatch.setattr(tuning, "_clock", clock)
    monkeypatch.setattr(tuning, "_cpu_clock", lambda: clock.work // tick * tick)
    out = tuning.measure(clock.forward, torch.device("cpu"), 0, [(50, 1), (80, 1)], budget_s=10)
    assert [t.seconds for t in out.timings] == pytest.approx([0.005, 0.008], rel=0.16)


def test_a_cpu_clock_that_stands_still_ends_a_timing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU clock that never moves (a platform without one) times each window in a bounded
    number of calls instead of calling it for ever."""
    threads(monkeypatch, 1)
    clock = FakeClock(lambda x: 1e-3)
    monkeypatch.setattr(tuning, "_clock", clock)
    monkeypatch.setattr(tuning, "_cpu_clock", lambda: 0.0)

    def forward(x: torch.Tensor) -> None:
        assert len(clock.calls) < 1000, "called for ever"
        clock.forward(x)

    out = tuning.measure(forward, torch.device("cpu"), 0, [(8, 1), (16, 1)], repeats=1)
    assert [t.seconds for t in out.timings] == [0.0, 0.0]
    assert clock.calls == [8] * 65 + [16] * 65, "a warm-up and 64 timed calls each"
