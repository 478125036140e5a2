"""The timing helper the linear-time tests rest on: it tells square growth from linear, and
counts this process's work only, not the time others on a busy machine take from it."""

from __future__ import annotations

import time

from helpers import time_growth


def test_time_growth_tells_quadratic_work_from_linear() -> None:
    """Work that grows as its size's square measures over the linear tests' bound of 10."""
    assert time_growth(lambda size: sum(range(size * size // 1000)), 3_000) >= 10


def test_time_growth_counts_no_time_this_process_is_not_running() -> None:
    """Linear work that also waits, longer as its size's square (as it would, taken off the
    CPU by other programs on a loaded machine), measures linear: wall-clock time grows over 10
    times."""
    def work(size: int) -> None:
        sum(range(size * 7))
        time.sleep((size / 3_000) ** 2 / 1000)

    assert time_growth(work, 3_000) < 10
