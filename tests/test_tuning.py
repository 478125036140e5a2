"""Measured tile plans: the cache file's robustness, the plan choice, and exact tiles for every
plan the tuner can pick. Measuring runs here only on a tiny model with tiny candidates."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from drcn_plugin import devices, engine, memory, tuning
from drcn_plugin.engine import Upscaler
from drcn_plugin.errors import Cancelled
from drcn_plugin.model import DRCN
from drcn_plugin.tuning import Measurement, Plans, Timing


def tiny() -> DRCN:
    torch.manual_seed(0)
    return DRCN(features=8, recursions=3).eval()


@pytest.fixture
def tuning_on(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """Measuring on, a private cache folder, tiny candidates, nothing remembered in memory,
    measurements never taken for busy ones."""
    monkeypatch.setenv(tuning.TUNING_ENV, "1")
    monkeypatch.setenv(tuning.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(tuning, "LADDER", (16, 24, 32, 48))
    monkeypatch.setattr(tuning, "MEASURE_MIN_PIXELS", 40 * 40)
    monkeypatch.setattr(tuning, "BUSY_SHARE", 0.0)  # other tests running beside: not busy here
    monkeypatch.setattr(engine, "_TIMINGS", {})


def test_tiles_measured_once_then_cached(tuning_on: None) -> None:
    notes: list[str] = []
    x = torch.rand(70, 90)
    up = Upscaler(tiny(), device="cpu", precision="fp32", notify=notes.append)
    out = up.run_y(x)
    assert len(notes) == 1 and "measuring float32 tile sizes" in notes[0]
    data = json.loads(tuning.cache_path().read_text())
    key = tuning.plan_key(up.device, 8, 3, torch.float32)
    assert data["version"] == tuning.CACHE_VERSION and key in data["plans"]
    assert {r["tile"] for r in data["plans"][key]["timings"]} <= {16, 24, 32, 48}
    # A new process (simulated: nothing in memory) reads the file instead of measuring again.
    engine._TIMINGS.clear()
    again = Upscaler(tiny(), device="cpu", precision="fp32", notify=notes.append)
    assert torch.equal(again.run_y(x), out) and len(notes) == 1
    with torch.inference_mode():
        whole = up.model(x[None, None])[0, 0]
    assert (out - whole).abs().max() <= 1e-5


def test_small_planes_do_not_start_a_measurement_but_use_one(tuning_on: None) -> None:
    notes: list[str] = []
    up = Upscaler(tiny(), device="cpu", precision="fp32", notify=notes.append)
    up.run_y(torch.rand(30, 50))  # 1,500 px: below the threshold
    assert notes == [] and not tuning.cache_path().exists()
    up.run_y(torch.rand(50, 50))
    assert len(notes) == 1 and tuning.cache_path().exists()
    key = tuning.plan_key(up.device, 8, 3, torch.float32)
    engine._TIMINGS[key] = [Timing(16, 1, 1.0)]  # a measured plan is used on small planes too
    assert up._auto_plan(32, 32).tile_h == 16


def test_cancel_is_seen_while_measuring(tuning_on: None) -> None:
    from drcn_plugin import Cancelled

    up = Upscaler(tiny(), device="cpu", precision="fp32", notify=lambda _: None)
    with pytest.raises(Cancelled):
        up.run_y(torch.rand(60, 60), cancel=lambda: True)
    assert not tuning.cache_path().exists()  # the measurement stopped, nothing half kept


def test_explicit_tile_and_switch_off_skip_measuring(tuning_on: None,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    notes: list[str] = []
    Upscaler(tiny(), device="cpu", precision="fp32", tile=20, notify=notes.append).run_y(
        torch.rand(40, 40))
    monkeypatch.setenv(tuning.TUNING_ENV, "0")
    Upscaler(tiny(), device="cpu", precision="fp32", notify=notes.append).run_y(torch.rand(40, 40))
    assert notes == [] and not tuning.cache_path().exists()


def test_no_candidate_fits_memory_falls_back_to_the_rule(tuning_on: None,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "_available_memory", lambda device: 400_000)
    notes: list[str] = []
    up = Upscaler(tiny(), device="cpu", precision="fp32", notify=notes.append)
    x = torch.rand(40, 50)
    with torch.inference_mode():
        whole = up.model(x[None, None])[0, 0]
    assert (up.run_y(x) - whole).abs().max() <= 1e-5
    assert notes == [] and not tuning.cache_path().exists()
    assert up._auto_plan(40, 50).tile_h < 30, "small tiles by the memory rule"


def entry(rows: str, settled: str = "true", tries: str = "1", busy: str = "false",
          version: int = tuning.CACHE_VERSION) -> str:
    """A cache file holding one key ``k`` with these timing rows."""
    return (f'{{"version": {version}, "plans": {{"k": {{"timings": [{rows}], '
            f'"settled": {settled}, "tries": {tries}, "busy": {busy}}}}}}}')


@pytest.mark.parametrize("body", ["{not json", "", "[1, 2]", '{"version": 99, "plans": {}}',
                                  '{"version": 1, "plans": {"k": [{"tile": 64, "batch": 1, '
                                  '"seconds": 1}]}}',  # the first format
                                  # the second: CPU windows timed by the wall clock
                                  entry('{"tile": 64, "batch": 1, "seconds": 1}', version=2),
                                  entry('{"tile": "x"}'), "\x00\xff garbage",
                                  entry('{"tile": 0, "batch": 1, "seconds": 1}'),
                                  entry('{"tile": Infinity, "batch": 1, "seconds": 1}'),
                                  # below the smallest tile: far slower
                                  entry('{"tile": 1, "batch": 1, "seconds": 1e-9}'),
                                  entry('{"tile": 64, "batch": 1e999, "seconds": 1}'),
                                  entry('{"tile": 64, "batch": 1, "seconds": 1}', settled='"no"'),
                                  entry('{"tile": 64, "batch": 1, "seconds": 1}', tries="0"),
                                  entry('{"tile": 64, "batch": 1, "seconds": 1}', tries="1e9"),
                                  entry('{"tile": 64, "batch": 1, "seconds": 1}', busy="1"),
                                  entry(""), f'{{"version": {tuning.CACHE_VERSION}, '
                                  '"plans": {"k": [1]}}', "[" * 100_000])
def test_corrupt_or_foreign_cache_is_ignored_and_rewritten(tuning_on: None, body: str) -> None:
    path = tuning.cache_path()
    path.parent.mkdir(parents=True)
    path.write_text(body, encoding="latin-1")
    assert tuning.load_plans("k") is None
    tuning.store_plans("mine", Plans([Timing(128, 1, 0.5)]))
    assert tuning.load_plans("mine") == Plans([Timing(128, 1, 0.5)])
    assert json.loads(path.read_text())["plans"].keys() == {"mine"}


def test_writers_merge_and_leave_no_temporary_files(tuning_on: None) -> None:
    tuning.store_plans("a", Plans([Timing(96, 1, 0.1)]))
    tuning.store_plans("b", Plans([Timing(256, 4, 0.2), Timing(512, 1, 0.3)], False, 2))
    assert tuning.load_plans("a") == Plans([Timing(96, 1, 0.1)])
    assert tuning.load_plans("b") == Plans([Timing(256, 4, 0.2), Timing(512, 1, 0.3)], False, 2)
    assert [p.name for p in tuning.cache_path().parent.iterdir()] == [tuning.cache_path().name]


def test_two_processes_writing_at_once_leave_a_valid_file(tuning_on: None) -> None:
    code = ("import sys; from drcn_plugin.tuning import Plans, Timing, store_plans\n"
            "for i in range(150): store_plans(f'{sys.argv[1]}{i % 7}', Plans([Timing(64 + i, 1, 1)]))")
    procs = [subprocess.Popen([sys.executable, "-c", code, name]) for name in ("p", "q")]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    plans = json.loads(tuning.cache_path().read_text())["plans"]
    assert plans and all(k[0] in "pq" and v["timings"][0]["batch"] == 1 for k, v in plans.items())
    assert [p.name for p in tuning.cache_path().parent.iterdir()] == [tuning.cache_path().name]


def test_choice_counts_halo_and_border_windows() -> None:
    halo = 20
    small, big = Timing(128, 1, 1.0), Timing(512, 1, 10.0)  # big: cheaper per core pixel
    assert tuning.predicted_seconds(big, 2000, 2000, halo) < \
        tuning.predicted_seconds(small, 2000, 2000, halo)
    # 140 px: the small plan needs 2 x 2 windows of 70 + 2 halos; the big one a single window
    # clipped to the image, costed by its actual area.
    assert tuning.predicted_seconds(small, 140, 140, halo) == pytest.approx(4 * 110 ** 2 / 168 ** 2)
    assert tuning.predicted_seconds(big, 140, 140, halo) == pytest.approx(10 * 140 ** 2 / 552 ** 2)
    assert tuning.balanced_core(1200, 141) == 134 and tuning.balanced_core(100, 128) == 100


def test_an_unsettled_measurement_is_taken_up_again_until_it_settles(
        tuning_on: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cut short or busy, a measurement is kept and used, and the next runs that may measure
    start again from its best tile (re-timed; from the rung below after a busy try) and the
    larger ones; the last try settles it. A window timed twice keeps its faster timing."""
    tried: list[list[int]] = []
    results = iter([Measurement([Timing(16, 1, 1.0), Timing(24, 1, 1.5)], cut=True),
                    Measurement([Timing(24, 1, 1.0), Timing(32, 1, 1.5)], busy=True),
                    Measurement([Timing(32, 1, 1.8), Timing(48, 1, 5.0)], busy=True)])
    # (the second try's 24 px timing is faster than the first's, the third's 32 px slower; after
    # the busy second try, the third starts a rung below the best, 32 px)

    def fake_measure(forward, device, halo, candidates, **kw) -> Measurement:
        tried.append([tile for tile, _ in candidates])
        return next(results)

    monkeypatch.setattr(tuning, "measure", fake_measure)
    notes: list[str] = []
    key = tuning.plan_key(torch.device("cpu"), 8, 3, torch.float32)
    for run in range(4):
        engine._TIMINGS.clear()  # a new process each time
        up = Upscaler(tiny(), device="cpu", precision="fp32", notify=notes.append)
        up.run_y(torch.rand(20, 20))  # a small plane uses what is there, and never measures
        up.run_y(torch.rand(60, 60))
        plans = tuning.load_plans(key)
        assert plans.tries == min(run + 1, tuning.MAX_TRIES)
        assert plans.settled is (run + 1 >= tuning.MAX_TRIES)
    assert tried == [[16, 24, 32, 48], [24, 32, 48], [24, 32, 48]]  # then settled: no 4th
    assert plans.timings == [Timing(16, 1, 1.0), Timing(24, 1, 1.0), Timing(32, 1, 1.5),
                             Timing(48, 1, 5.0)]
    assert len(notes) == 3 and "again" not in notes[0]
    assert "ran out of time" in notes[1] and "other work shared the CPU" in notes[2]
    assert up._auto_plan(60, 60).tile_h in (30, 32)  # 32 px measured cheapest per pixel


def test_a_measurement_without_any_timing_is_not_repeated_in_the_process(
        tuning_on: None, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def nothing_fits(forward, device, halo, candidates, **kw) -> Measurement:
        calls.append(1)  # out of memory at the first candidate
        return Measurement([])

    monkeypatch.setattr(tuning, "measure", nothing_fits)
    up = Upscaler(tiny(), device="cpu", precision="fp32", notify=lambda _: None)
    for _ in range(3):
        up.run_y(torch.rand(60, 60))
    assert calls == [1] and not tuning.cache_path().exists()


def test_an_entry_with_nothing_left_to_try_settles(tuning_on: None,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    key = tuning.plan_key(torch.device("cpu"), 8, 3, torch.float32)
    tuning.store_plans(key, Plans([Timing(16, 1, 2.0), Timing(48, 1, 1.0)], False, 1))
    monkeypatch.setattr(tuning, "LADDER", (16, 24))  # nothing from the best, 48 px, up
    monkeypatch.setattr(tuning, "measure", lambda *a, **k: pytest.fail("nothing to measure"))
    Upscaler(tiny(), device="cpu", precision="fp32").run_y(torch.rand(60, 60))
    assert tuning.load_plans(key) == Plans([Timing(16, 1, 2.0), Timing(48, 1, 1.0)], True, 2)


def test_two_processes_taking_up_one_entry_keep_both_tries(tuning_on: None) -> None:
    tuning.store_plans("k", Plans([Timing(96, 1, 0.1), Timing(128, 1, 0.3)], False, 2, True))
    tuning.store_plans("k", Plans([Timing(96, 1, 0.2), Timing(160, 1, 0.4)], False, 2, False))
    assert tuning.load_plans("k") == Plans([Timing(96, 1, 0.1), Timing(128, 1, 0.3),
                                            Timing(160, 1, 0.4)], False, 2, False)


@pytest.mark.parametrize("tile", [16, 24, 31, 48, 100])
@pytest.mark.parametrize("shape", [(53, 71), (16, 90), (97, 40)])
def test_every_pickable_plan_is_seamless(tuning_on: None, tile: int, shape) -> None:
    """Whatever tile the measurement favours, balanced cores give the untiled result."""
    up = Upscaler(tiny(), device="cpu", precision="fp32")
    key = tuning.plan_key(up.device, 8, 3, torch.float32)
    engine._TIMINGS[key] = [Timing(tile, 3, 1.0)]
    x = torch.rand(*shape)
    with torch.inference_mode():
        whole = up.model(x[None, None])[0, 0]
    assert (up.run_y(x) - whole).abs().max() <= 1e-5


def test_callers_model_is_left_as_it_was() -> None:
    for precision in ("fp32", "bf16"):
        model = DRCN(features=8, recursions=3).train()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        up = Upscaler(model, device="cpu", precision=precision, tile=16)
        up.upscale(np.zeros((20, 30, 3), np.uint8), 2)
        assert model.training
        for k, v in model.state_dict().items():
            assert v.dtype == torch.float32 and v.device.type == "cpu"
            assert v.is_contiguous() and torch.equal(v, before[k]), k


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX FIFOs")
def test_a_cache_that_is_not_a_file_is_ignored_without_blocking(tuning_on: None) -> None:
    path = tuning.cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)  # opening it for reading would wait for a writer for ever
    read = subprocess.run([sys.executable, "-c", "from drcn_plugin import tuning; "
                           "print(tuning.load_plans('any'))"],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, tuning.CACHE_ENV: str(path.parent)})
    assert read.stdout.strip() == "None", read.stderr


def test_a_cache_that_cannot_be_written_is_said(tuning_on: None, monkeypatch, tmp_path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(tuning.CACHE_ENV, str(blocker))  # the cache folder is a file
    notes: list[str] = []
    Upscaler(tiny(), device="cpu", notify=notes.append).timings()
    assert any("cannot keep the tile plan" in n and "measured again next time" in n
               for n in notes), notes


def test_unproven_bf16_is_measured_against_fp32_once(tuning_on: None,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Where torch runs bf16 but no instruction set vouches for its speed, ``auto`` measures both
    precisions' plans on the first plane large enough to start a measurement (not when the engine
    is made, nor for small planes or a given tile), takes the faster, and later engines read the
    choice from the cache; a cancel stops the measuring."""
    monkeypatch.setattr(engine, "cpu_bf16_unproven", lambda: True)
    monkeypatch.setattr(devices, "cpu_has_fast_bf16", lambda: False)  # as it is where unproven
    notes: list[str] = []
    model = tiny()
    up = Upscaler(model, device="cpu", notify=notes.append)
    up.run_y(torch.rand(30, 30))  # under MEASURE_MIN_PIXELS
    Upscaler(tiny(), device="cpu", tile=32, notify=notes.append).run_y(torch.rand(60, 60))
    assert up.dtype == torch.float32 and not notes
    with pytest.raises(Cancelled):
        up.run_y(torch.rand(60, 60), cancel=lambda: True)
    assert up.dtype == torch.float32 and not tuning.cache_path().exists()
    assert [n.split(" tile sizes")[0] for n in notes] == ["measuring float32"]
    notes.clear()
    out = up.run_y(torch.rand(60, 60))
    assert [n.split(" tile sizes")[0] for n in notes] == ["measuring float32", "measuring bfloat16"]
    assert model.embed[0].weight.dtype == torch.float32, "the caller's module is left as it was"
    plans = json.loads(tuning.cache_path().read_text())["plans"]
    best = {}
    for dtype in (torch.float32, torch.bfloat16):
        timings = plans[tuning.plan_key(up.device, 8, 3, dtype)]["timings"]
        best[dtype] = min(t["seconds"] / (t["batch"] * t["tile"] ** 2) for t in timings)
    faster = torch.bfloat16 if best[torch.bfloat16] * 1.15 < best[torch.float32] else torch.float32
    assert up.dtype == faster and up.model.embed[0].weight.dtype == faster
    assert out.shape == (60, 60) and torch.isfinite(out).all()
    engine._TIMINGS.clear()
    assert Upscaler(tiny(), device="cpu", notify=notes.append).dtype == faster and len(notes) == 2
    assert Upscaler(tiny(), device="cpu", precision="fp32").dtype == torch.float32


@pytest.mark.parametrize(("bf16_speedup", "chosen"), [
    (0.5, torch.float32), (1.1, torch.float32), (1.3, torch.bfloat16), (3.0, torch.bfloat16)])
def test_the_measured_plans_choose_the_precision(tuning_on: None, monkeypatch: pytest.MonkeyPatch,
                                                 bf16_speedup: float, chosen: torch.dtype) -> None:
    """bf16 is taken when its plans are at least 15% faster than fp32's (its numbers are coarser);
    with measuring off, fp32 as the rule says."""
    monkeypatch.setattr(engine, "cpu_bf16_unproven", lambda: True)
    monkeypatch.setattr(devices, "cpu_has_fast_bf16", lambda: False)  # as it is where unproven
    cpu = torch.device("cpu")
    for dtype, seconds in ((torch.float32, 1.0), (torch.bfloat16, 1.0 / bf16_speedup)):
        assert tuning.store_plans(tuning.plan_key(cpu, 8, 3, dtype),
                                  Plans([Timing(32, 1, seconds), Timing(48, 1, 3 * seconds)])) \
            is None
    notes: list[str] = []
    assert Upscaler(tiny(), device="cpu", notify=notes.append).dtype == chosen and not notes
    monkeypatch.setenv(tuning.TUNING_ENV, "0")
    assert Upscaler(tiny(), device="cpu").dtype == torch.float32


def test_cpus_sharing_a_model_string_get_their_own_plans(tmp_path, monkeypatch) -> None:
    """Two virtual machines that both say "AMD EPYC" (Zen 4 and Zen 5), or two Arm hosts that
    say nothing, must not share a tile plan: the key holds the family/model or part numbers."""
    def signature(text: str) -> str:
        path = tmp_path / f"cpuinfo{len(list(tmp_path.iterdir()))}"
        path.write_text(text)
        return devices.cpu_signature(str(path))

    zen = "processor\t: {n}\ncpu family\t: {family}\nmodel\t\t: {model}\nmodel name\t: AMD EPYC\n\n"
    zen4 = signature(zen.format(n=0, family=25, model=17) + zen.format(n=1, family=26, model=2))
    zen5 = signature(zen.format(n=0, family=26, model=2))
    arm = "processor\t: 0\nCPU implementer\t: 0x41\nCPU part\t: {part}\n\n"
    n1, v1 = signature(arm.format(part="0xd0c")), signature(arm.format(part="0xd40"))
    assert zen4.endswith("cpu_family=25,model=17") and zen5.endswith("cpu_family=26,model=2")
    assert n1.endswith("CPU_implementer=0x41,CPU_part=0xd0c") and v1.endswith("CPU_part=0xd40")
    assert len({zen4, zen5, n1, v1}) == 4
    assert signature("") == signature("not a cpuinfo") != zen4  # the ISA and bf16 still count
    keys = set()
    for sig in (zen4, zen5):
        monkeypatch.setattr(tuning, "cpu_signature", lambda sig=sig: sig)
        keys.add(tuning.plan_key(torch.device("cpu"), 64, 16, torch.bfloat16))
    assert len(keys) == 2


def test_threads_on_fewer_cpus_keep_their_timings_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    """Four threads on two CPUs (``taskset``, a container's quota) take about twice as long per
    window as on four: merged into one key, the slower timings would skew the plan."""
    cpu = torch.device("cpu")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    keys = {}
    for usable in (8, 4, 2):
        monkeypatch.setattr(tuning, "usable_cpus", lambda n=usable: n)
        keys[usable] = tuning.plan_key(cpu, 8, 3, torch.float32)
    assert keys[8] == keys[4] and "|threads=4|" in keys[4]
    assert keys[2] == keys[4].replace("|threads=4|", "|threads=4/2|")
    assert "|threads=0|" in tuning.plan_key(torch.device("meta"), 8, 3, torch.float32)
