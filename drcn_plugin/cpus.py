"""Work spread over the CPUs this process may use: pieces done on threads, their results taken
in order, as a 16-bit result's strips or rows are compressed (zlib and numpy drop Python's global
lock while they work)."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import psutil

Piece = TypeVar("Piece")
Result = TypeVar("Result")


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity mask (``taskset``, a scheduler's
    placement), capped by a cgroup v2 CPU quota (a container's ``--cpus``)."""
    try:
        n = len(psutil.Process().cpu_affinity() or []) or os.cpu_count() or 1
    except (AttributeError, psutil.Error, OSError):  # macOS has no affinity
        n = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return n


def in_order(work: Callable[[Piece], Result], pieces: Iterable[Piece],
             threads: int | None = None) -> Iterator[Result]:
    """``work`` of each of ``pieces``, in their order, done on ``threads`` threads (default:
    every usable CPU) with at most two pieces a thread in flight, so that memory stays bounded
    however many pieces there are. Pieces not yet begun are dropped when the caller stops."""
    threads = threads or usable_cpus()
    if threads == 1:
        yield from map(work, pieces)
        return
    pool, pending = ThreadPoolExecutor(threads, "drcn-pieces"), deque[Future[Result]]()
    try:
        for piece in pieces:
            if len(pending) == 2 * threads:
                yield pending.popleft().result()
            pending.append(pool.submit(work, piece))
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(cancel_futures=True)
