"""Processes sharing the tile-plan cache: stores take turns under the cache folder's lock, so none
drops another's plans; a killed writer's temporary file is removed; a stuck holder of the lock
delays a store but never blocks it."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from helpers import dead_pid

from drcn_plugin import tuning
from drcn_plugin.tuning import Plans, Timing


@pytest.fixture(autouse=True)
def private_cache(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """The cache in a folder of this test's own."""
    monkeypatch.setenv(tuning.CACHE_ENV, str(tmp_path / "cache"))


@pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")
def test_processes_storing_at_once_keep_every_key() -> None:
    # both start storing together (after their imports), each its own 60 keys
    code = ("import sys; from drcn_plugin.tuning import Plans, Timing, store_plans\n"
            "print('ready', flush=True); sys.stdin.readline()\n"
            "for i in range(60): store_plans(f'{sys.argv[1]}{i}', Plans([Timing(64, 1, 1)]))")
    procs = [subprocess.Popen([sys.executable, "-c", code, name], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for name in ("p", "q")]
    assert all(p.stdout.readline() == "ready\n" for p in procs)
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    assert all(p.wait(timeout=120) == 0 for p in procs)
    kept = json.loads(tuning.cache_path().read_text())["plans"]
    assert set(kept) == {f"{name}{i}" for name in "pq" for i in range(60)}


def test_a_killed_writers_temporary_cache_file_is_removed() -> None:
    folder = tuning.cache_path().parent
    folder.mkdir(parents=True)
    (folder / f".{tuning.cache_path().name}.{dead_pid()}.0123abcd.part").write_text("{")
    assert tuning.store_plans("a", Plans([Timing(96, 1, 0.1)])) is None
    assert [p.name for p in folder.iterdir()] == [tuning.cache_path().name]


@pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")
def test_a_held_cache_lock_delays_a_store_but_never_blocks_it(monkeypatch) -> None:
    # another process holds the cache folder's lock and never lets go (stopped, stuck)
    folder = tuning.cache_path().parent
    folder.mkdir(parents=True)
    code = ("import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); "
            "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        monkeypatch.setattr(tuning, "LOCK_WAIT_S", 0.3)
        t0 = time.monotonic()
        assert tuning.store_plans("a", Plans([Timing(96, 1, 0.1)])) is None
        assert 0.3 <= time.monotonic() - t0 < 5
        assert tuning.load_plans("a") == Plans([Timing(96, 1, 0.1)])
    finally:
        holder.communicate("")
