"""Memory freed by one image's network run goes back to the OS before the next image (glibc
keeps freed heap pages otherwise: a batch sat 100-150 MB above its live memory)."""

from __future__ import annotations

import ctypes
import platform

import numpy as np
import psutil
import pytest
import torch

from drcn_plugin import devices, engine
from drcn_plugin.engine import Upscaler


@pytest.fixture
def releases(monkeypatch) -> list[int]:
    """Every call of the engine's release of freed memory, counted."""
    calls: list[int] = []
    monkeypatch.setattr(engine, "release_freed_memory", lambda: calls.append(1) or True)
    return calls


def test_each_upscale_hands_freed_memory_back(tiny_model, releases) -> None:
    up = Upscaler(tiny_model, device="cpu", precision="fp32", tile=16)
    image = np.random.default_rng(0).integers(0, 256, (20, 23, 3), dtype=np.uint8)
    for n in (1, 2, 3):
        up.upscale(image, 2.0)
        assert len(releases) == n


def test_each_scored_plane_hands_freed_memory_back(tiny_model, releases) -> None:
    """``drcn eval`` runs the network through ``run_y`` alone: it releases there too."""
    Upscaler(tiny_model, device="cpu", precision="fp32").run_y(torch.rand(30, 30))
    assert releases == [1]


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc_trim only")
def test_glibc_trims_its_heap() -> None:
    """64 MB of small blocks freed below a block still held: glibc keeps those pages (only the
    heap's free top is handed back by itself) until the release trims them."""
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = [libc.malloc(4096) for _ in range(16384)]
    for block in blocks:
        ctypes.memset(block, 1, 4096)  # touched: resident
    held = libc.malloc(4096)  # above them: the freed blocks are not the heap's top
    try:
        for block in blocks:
            libc.free(block)
        before = psutil.Process().memory_info().rss
        assert devices.release_freed_memory() is True
        assert before - psutil.Process().memory_info().rss > 32 << 20
    finally:
        libc.free(held)


def test_elsewhere_nothing_is_loaded_or_called(monkeypatch) -> None:
    """macOS, Windows and musl have no ``malloc_trim``: a no-op there, not an error."""
    devices._malloc_trim.cache_clear()
    monkeypatch.setattr(devices.sys, "platform", "darwin")
    try:
        assert devices.release_freed_memory() is False
    finally:
        devices._malloc_trim.cache_clear()
