"""Measured tile plans: time a few window and batch sizes once, remember them, pick per image.

Like cuDNN's benchmark mode. The first run for a key (device, threads, torch version, model F and
D, precision) times square windows of growing size on a synthetic plane, and the timings are kept
as JSON in the user's cache folder. Every later run (and every other process) predicts the cost of
each measured plan on the actual image, halo and border windows included, and takes the cheapest.
On a CPU the windows are timed by this process's CPU time per thread, not the wall clock: other
processes' load then slows the measurement down but changes neither its timings nor how far up its
budget reaches. A measurement is unsettled when its budget cut the ladder short or something may
have swayed its timings (a pass of the network in another thread; load while several threads
ran); the next runs that may measure take it up again from its best plan, until it settles or has
been tried ``MAX_TRIES`` times.
``DRCN_TILE_TUNING=0`` turns measuring off (the engine then sizes tiles by rule) and
``DRCN_CACHE_DIR`` moves the cache folder.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from .cpus import usable_cpus
from .devices import cpu_signature, device_name, is_out_of_memory, synchronize
from .errors import WriteError, reason
from .writing import atomic_write_bytes, clean_stale_parts, locked_folder

TUNING_ENV = "DRCN_TILE_TUNING"
CACHE_ENV = "DRCN_CACHE_DIR"
CACHE_VERSION = 3  # 3: CPU timings are CPU seconds per thread, no longer wall seconds
LADDER = (64, 96, 128, 160, 192, 256, 320, 384, 512, 768, 1024, 1536, 2048)
MAX_BATCH = 16  # windows per call a plan may batch (GPUs)
MIN_TILE = 16  # the smallest core a plan may use: below it the halo work dominates
# Smaller planes do not start a measurement (they take the rule's plan until one exists): their
# upscale takes about as long as measuring does, and any plan is one window or a few.
MEASURE_MIN_PIXELS = 512 * 512
# The first pass stops where its next candidate would end past this (after two candidates); the
# finalists' rounds stop where one would end past twice this. Seconds as the timings count them.
_BUDGET_S = {"cpu": 4.0, "cuda": 3.0, "mps": 3.0}
# Under heavy load a CPU measurement's CPU-time budget could take minutes of wall time: past
# this many budgets of wall time it stops as cut, and a later run takes it up from its best
_WALL_CAP = 4
# Windows counts a process's CPU time in clock ticks (15.6 ms), which a quick call can fall
# between: a CPU timing repeats its call until this many seconds are counted, a tick a small part
_CPU_TIMED_S = 0.1
_MOST_CALLS = 64  # timed calls of one window at most: a clock that stands still ends the timing
_MISSES = 2  # stop after this many candidates in a row >= 15% worse than the best
MAX_TRIES = 3  # measurements of one key before its timings are kept as they are
# Below this share of its threads' wall time, a measurement on several threads shared the CPU with
# other work: OpenMP threads waiting for a descheduled one spin, and that counts as CPU time (on a
# loaded 2-core EPYC Zen 5, two threads' CPU time per thread was 1.4-2.9x half of one thread's, the
# smaller windows the more). One thread's CPU time barely moves under load (there, +0.6-3%).
BUSY_SHARE = 0.7
LOCK_WAIT_S = 10.0  # the longest a store waits for the cache folder's lock, then writes anyway
_clock = time.perf_counter  # wall time: what timings on a GPU count (after synchronizing)
_cpu_clock = time.process_time  # this process's CPU time, all threads: what timings on a CPU count
_MEASURING: dict[str, threading.Lock] = {}  # by plan key: held by the thread measuring it
_PASSES = threading.Lock()
_passes = [0, 0]  # the network's passes in flight in this process, and started in all


@dataclass(frozen=True)
class Timing:
    """One measured plan: ``batch`` square windows of ``tile + 2 * halo`` px took ``seconds``."""

    tile: int
    batch: int
    seconds: float

    @property
    def per_pixel(self) -> float:
        """Seconds per core pixel, how plans of different sizes compare."""
        return self.seconds / (self.batch * self.tile ** 2)


@dataclass(frozen=True)
class Measurement:
    """What :func:`measure` found: the timings, whether its budget stopped it before the
    candidates ran out or turned worse, and whether other work held part of the CPU meanwhile."""

    timings: list[Timing]
    cut: bool = False
    busy: bool = False


@dataclass(frozen=True)
class Plans:
    """A plan key's timings as kept in the cache, whether they are final, how many measurements
    made them, and whether the last one shared the CPU with other work."""

    timings: list[Timing]
    settled: bool = True
    tries: int = 1
    busy: bool = False

    def candidates(self, ladder: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Where an unsettled measurement is taken up again: from its best tile upward, or from
        the rung below it when the last try was busy (load may have hidden the best there)."""
        best = min(self.timings, key=lambda t: t.per_pixel).tile
        below = [tile for tile, _ in ladder if tile < best]
        start = below[-1] if self.busy and below else best
        return [c for c in ladder if c[0] >= start]

    @classmethod
    def measured(cls, m: Measurement, before: Plans | None = None) -> Plans:
        """The plans after ``m``, which took up ``before``; settled when ``m`` was neither cut
        short nor busy, or at the last try."""
        tries = before.tries + 1 if before else 1
        return cls(m.timings, not (m.cut or m.busy) or tries >= MAX_TRIES, tries,
                   m.busy).merged(before)

    def merged(self, older: Plans | None) -> Plans:
        """These plans with ``older``'s timings: a window timed in both keeps the faster one
        (load only ever slows a call down); settled if either is, tried as often as the most."""
        if older is None:
            return self
        fastest: dict[tuple[int, int], Timing] = {}
        for t in older.timings + self.timings:
            fastest[t.tile, t.batch] = min(fastest.get((t.tile, t.batch), t), t,
                                           key=lambda t: t.seconds)
        return Plans(sorted(fastest.values(), key=lambda t: (t.tile, t.batch)),
                     self.settled or older.settled, max(self.tries, older.tries), self.busy)


def tuning_enabled() -> bool:
    """False when ``DRCN_TILE_TUNING`` is 0/off/false/no."""
    return os.environ.get(TUNING_ENV, "1").strip().lower() not in ("0", "off", "false", "no")


def cache_path() -> Path:
    """The JSON file of measured plans: ``$DRCN_CACHE_DIR`` or the platform's user cache folder."""
    root = os.environ.get(CACHE_ENV)
    if not root:
        import platformdirs

        root = platformdirs.user_cache_dir("drcn-plugin", appauthor=False)
    return Path(root) / f"tile-plans-v{CACHE_VERSION}.json"  # versions side by side never clash


def plan_key(device: torch.device, features: int, recursions: int, dtype: torch.dtype) -> str:
    """Everything the fastest plan depends on, as one string: on a CPU its threads and, when
    fewer, the CPUs they may use (``taskset``, a container's quota), which slow every window."""
    cpu = device.type == "cpu"
    threads = torch.get_num_threads() if cpu else 0
    shared = f"/{usable}" if cpu and (usable := usable_cpus()) < threads else ""
    return (f"{device_name(device)}{f'|{cpu_signature()}' if cpu else ''}"
            f"|threads={threads}{shared}|torch={torch.__version__}"
            f"|F={features}|D={recursions}|{str(dtype).removeprefix('torch.')}")


def _read(path: Path) -> dict[str, Plans]:
    """The cache's valid entries; anything corrupt, foreign or from another version is dropped."""
    try:
        if not path.is_file():  # a FIFO or device would block the read for ever
            return {}
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION \
            or not isinstance(data.get("plans"), dict):
        return {}
    plans = {}
    for key, entry in data["plans"].items():
        try:
            timings = [Timing(int(r["tile"]), int(r["batch"]), float(r["seconds"]))
                       for r in entry["timings"]]
            settled, tries, busy = entry["settled"], int(entry["tries"]), entry["busy"]
        except (TypeError, KeyError, ValueError, OverflowError):
            continue
        if timings and isinstance(settled, bool) and isinstance(busy, bool) \
                and 1 <= tries <= MAX_TRIES \
                and all(t.tile >= MIN_TILE and 0 < t.batch <= MAX_BATCH
                        and 0 < t.seconds < math.inf for t in timings):
            plans[key] = Plans(timings, settled, tries, busy)
    return plans


def load_plans(key: str) -> Plans | None:
    """Measured plans for ``key`` from the cache file, or None."""
    return _read(cache_path()).get(key)


def store_plans(key: str, plans: Plans) -> str | None:
    """Add ``key`` to the cache file: re-read, merge (with what another process stored for
    ``key`` meanwhile, too), write atomically. Returns why the plans could not be kept (then
    they are measured again next time), else None.

    Processes storing at once take turns under the cache folder's lock, so none loses what
    another stored; temporary files of writers that were killed are removed.
    """
    path = cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with locked_folder(path.parent, LOCK_WAIT_S):
            clean_stale_parts(path.parent)
            kept = _read(path)
            kept[key] = plans.merged(kept.get(key))
            body = {"version": CACHE_VERSION, "plans": {k: asdict(v) for k, v in kept.items()}}
            atomic_write_bytes(path, json.dumps(body, indent=1).encode())
    except (OSError, WriteError) as e:
        return f"cannot keep the tile plan in {path.parent} ({reason(e)})"
    return None


def candidates(halo: int, bytes_per_pixel: int, budget: int,
               gpu: bool) -> list[tuple[int, int]]:
    """The (tile, batch) windows of the ladder a measurement may time: those whose batch fits in
    ``budget`` bytes of working memory, of ``bytes_per_pixel``."""
    out = []
    for tile in LADDER:
        area = (tile + 2 * halo) ** 2
        batch = max(1, min(MAX_BATCH, budget // (bytes_per_pixel * area))) if gpu else 1
        # Cores under two halos spend most of their time on the halo; GPUs want big calls.
        if tile >= max(2 * halo, 256 if gpu else 0) and area * bytes_per_pixel * batch <= budget:
            out.append((tile, batch))
    return out


@contextlib.contextmanager
def measuring_alone(key: str) -> Iterator[bool]:
    """Whether this thread may measure ``key``: False while another thread of this process
    measures it (that one would be slowed by the same measurement beside it); none waits."""
    lock = _MEASURING.setdefault(key, threading.Lock())
    alone = lock.acquire(blocking=False)
    try:
        yield alone
    finally:
        if alone:
            lock.release()


@contextlib.contextmanager
def network_pass() -> Iterator[None]:
    """Around one pass of the network over windows: a measurement that one ran beside is busy
    (the process's CPU time, which the busy check reads, counts both)."""
    with _PASSES:
        _passes[0] += 1
        _passes[1] += 1
    try:
        yield
    finally:
        with _PASSES:
            _passes[0] -= 1


def _timed(forward: Callable[[torch.Tensor], object], x: torch.Tensor,
           clock: Callable[[], float], least: float = 0.0) -> float:
    """Seconds one call of ``forward`` on ``x`` takes by ``clock``: the mean of calls repeated
    until ``least`` seconds are counted (a coarse clock reads one quick call as 0)."""
    synchronize(x.device)
    t0, calls = clock(), 0
    while True:
        forward(x)
        synchronize(x.device)
        calls += 1
        if (spent := clock() - t0) >= least or calls == _MOST_CALLS:
            return spent / calls


def measure(forward: Callable[[torch.Tensor], object], device: torch.device, halo: int,
            candidates: list[tuple[int, int]], budget_s: float | None = None,
            repeats: int = 3, finalists: int = 3) -> Measurement:
    """Time ``forward`` on random ``[batch, 1, tile + 2 halo, same]`` windows.

    First a pass up the candidates, smallest first: a warm-up and one timed call each, stopping
    before a candidate predicted (from the last one's time per pixel) to end past the budget, or
    after two candidates in a row at least 15% slower per pixel than the best. Then the
    ``finalists`` fastest are timed again round-robin, up to ``repeats`` rounds within twice the
    budget, and keep the median: a load burst then hits every finalist alike instead of one of
    them. The budget bounds the cost on slow devices and wide models, where one call of a
    large window can take seconds; two candidates are always timed, so that a measurement taken
    up again makes progress. Timings and budget count wall seconds on a GPU, and on a CPU the
    process's CPU seconds per thread (threads capped by the CPUs it may use), which other
    processes' load leaves alone (a call quicker than ``_CPU_TIMED_S`` is repeated, and the
    mean kept: Windows counts CPU time in 15.6 ms ticks); past ``_WALL_CAP`` budgets of wall
    time the pass stops as cut, and the rounds past twice that. It is busy when a pass of the
    network in another thread of this process ran during it (:func:`network_pass`: its CPU time
    counts too), or when it ran on several threads and got less than ``BUSY_SHARE`` of their
    wall time (spinning inflated it).
    """
    with _PASSES:
        beside, started = _passes[0] > 0, _passes[1]
    m = _measured(forward, device, halo, candidates, budget_s, repeats, finalists)
    with _PASSES:
        beside = beside or _passes[1] != started
    return replace(m, busy=m.busy or beside)


def _measured(forward: Callable[[torch.Tensor], object], device: torch.device, halo: int,
              candidates: list[tuple[int, int]], budget_s: float | None, repeats: int,
              finalists: int) -> Measurement:
    """:func:`measure`'s timings, busy by its CPU share alone."""
    budget = _BUDGET_S.get(device.type, 3.0) if budget_s is None else budget_s
    threads = min(torch.get_num_threads(), usable_cpus()) if device.type == "cpu" else 0
    clock = (lambda: _cpu_clock() / threads) if threads else _clock
    least = _CPU_TIMED_S if threads else 0.0
    start, wall_start, first, best, misses = clock(), _clock(), {}, math.inf, 0
    cut, last_per_px = False, 0.0
    for tile, batch in candidates:
        win = tile + 2 * halo
        if len(first) >= 2 and (clock() - start + 2 * last_per_px * batch * win * win > budget
                                or _clock() - wall_start > _WALL_CAP * budget):
            cut = True
            break
        x = torch.rand(batch, 1, win, win, device=device)
        try:
            _timed(forward, x, clock)
            first[tile, batch] = [_timed(forward, x, clock, least)]
        except (torch.OutOfMemoryError, RuntimeError) as e:
            if not is_out_of_memory(e):
                raise
            break
        last_per_px = first[tile, batch][0] / (batch * win * win)
        per_px = first[tile, batch][0] / (batch * tile * tile)
        misses = 0 if per_px < best * 1.15 else misses + 1
        best = min(best, per_px)
        if misses >= _MISSES:
            break
    ranked = sorted(first, key=lambda c: first[c][0] / (c[1] * c[0] * c[0]))[:finalists]
    for _ in range(repeats - 1):
        if clock() - start + sum(first[c][0] for c in ranked) > 2 * budget \
                or _clock() - wall_start > 2 * _WALL_CAP * budget:
            break
        for tile, batch in list(ranked):
            x = torch.rand(batch, 1, tile + 2 * halo, tile + 2 * halo, device=device)
            try:
                first[tile, batch].append(_timed(forward, x, clock, least))
            except (torch.OutOfMemoryError, RuntimeError) as e:
                if not is_out_of_memory(e):
                    raise
                del first[tile, batch]  # fitted once, not reliably: not a plan
                ranked.remove((tile, batch))
    wall = _clock() - wall_start
    busy = threads > 1 and wall > 0 and clock() - start < BUSY_SHARE * wall
    return Measurement([Timing(t, b, statistics.median(runs)) for (t, b), runs in first.items()],
                       cut, busy)


def balanced_core(length: int, tile: int) -> int:
    """The smallest core <= ``tile`` that covers ``length`` with as few windows as ``tile`` does."""
    windows = -(-length // tile)  # integer ceilings: a tile of 10**400 px is one window
    return -(-length // windows)


@dataclass
class Plan:
    """Cores of ``tile_h x tile_w`` px (each window adds the halo), ``batch`` windows a call."""

    tile_h: int
    tile_w: int
    batch: int

    @classmethod
    def balanced(cls, h: int, w: int, tile: int, batch: int) -> Plan:
        """Cores <= ``tile`` that split each axis evenly: as many windows, less halo work."""
        return cls(balanced_core(h, tile), balanced_core(w, tile), batch)

    def halved(self) -> Plan | None:
        """The next smaller plan after an out-of-memory error, or None at the smallest."""
        if self.batch > 1:
            return Plan(self.tile_h, self.tile_w, self.batch // 2)
        if max(self.tile_h, self.tile_w) > MIN_TILE:
            low = MIN_TILE
            return Plan(max(low, self.tile_h // 2), max(low, self.tile_w // 2), 1)
        return None


def windows(length: int, core: int, halo: int) -> list[tuple[int, int, int]]:
    """(window start, core start, core end) along one axis; every window has the same length.

    Windows are shifted inward at the image border instead of clipped, so all tiles share one
    shape (batchable) and each core keeps a full halo or touches the image edge.
    """
    win = min(length, core + 2 * halo)
    out = []
    for cs in range(0, length, core):
        ws = min(max(cs - halo, 0), length - win)
        out.append((ws, cs, min(cs + core, length)))
    return out


def predicted_seconds(t: Timing, h: int, w: int, halo: int) -> float:
    """Time of plan ``t`` on an ``h x w`` plane: per window, scaled by the windows' actual area."""
    ch, cw = balanced_core(h, t.tile), balanced_core(w, t.tile)
    windows = math.ceil(h / ch) * math.ceil(w / cw)
    area = min(h, ch + 2 * halo) * min(w, cw + 2 * halo)
    return windows * t.seconds / t.batch * area / (t.tile + 2 * halo) ** 2
