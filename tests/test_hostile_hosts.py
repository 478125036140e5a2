"""Hostile inputs to the host front ends: ComfyUI batches refused before any frame is read or
upscaled, and the UPSCALE_MODEL module's refusals (memory, empty tiles) before it upscales."""

from __future__ import annotations

import sys

import pytest
import torch
from helpers import seeded_drcn
from test_comfyui_nodes import FRAMES, NODES, PKG

from drcn_plugin import engine, memory
from drcn_plugin.model import DRCN

UPSCALE = PKG.NODE_CLASS_MAPPINGS["DRCNUpscale"]()
MODELS = sys.modules[f"{PKG.__name__}.upscale_model"]


@pytest.fixture(scope="module")
def tiny() -> DRCN:
    return seeded_drcn()


def _count_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record every frame the node converts for the engine (each costs a pass over the frame)."""
    reads: list[int] = []
    real = FRAMES.to_engine
    monkeypatch.setattr(FRAMES, "to_engine", lambda *a, **k: reads.append(1) or real(*a, **k))
    return reads


def test_a_batch_that_cannot_fit_is_refused_before_its_frames_are_read(
        tiny: DRCN, monkeypatch: pytest.MonkeyPatch) -> None:
    """The estimate's bytes per value come from the dtype, not from converting every frame
    (which would take 4 minutes on 600 1080p frames at x2)."""
    reads = _count_reads(monkeypatch)
    monkeypatch.setattr(memory, "_available_memory", lambda device: 1 << 28)
    frames = torch.zeros(1, 1, 1, 3).expand(64, 270, 480, 3)
    with pytest.raises(NODES.DRCNNodeError, match="a batch of 64 frames of 960x540 needs about"):
        UPSCALE.upscale(frames, tiny, 2.0, 0, False)
    assert reads == []


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_frame_with_nan_is_named_before_any_frame_is_upscaled(
        tiny: DRCN, monkeypatch: pytest.MonkeyPatch, bad: float) -> None:
    """A VAE decode in half precision can give NaN frames: the batch is checked first, and the
    error names the frame, rather than failing midway without saying which one."""
    ran, real = [], engine.Upscaler.upscale
    monkeypatch.setattr(engine.Upscaler, "upscale",
                        lambda self, *a, **k: ran.append(1) or real(self, *a, **k))
    frames = torch.rand(4, 8, 8, 3, generator=torch.Generator().manual_seed(1))
    frames[2, 3, 3, 1] = bad
    kept = frames.clone()
    with pytest.raises(NODES.DRCNNodeError) as info:
        UPSCALE.upscale(frames, tiny, 2.0, 0, False, per_batch=1)
    assert str(info.value) == "DRCN: frame 3 of 4 has NaN or infinite values"
    assert ran == [] and torch.equal(frames.nan_to_num(), kept.nan_to_num())
    with pytest.raises(NODES.DRCNNodeError, match="^DRCN: the image has NaN or infinite values$"):
        UPSCALE.upscale(frames[2:3], tiny, 2.0, 0, False)


def test_a_masks_type_is_named_with_its_article(tiny: DRCN) -> None:
    with pytest.raises(NODES.DRCNNodeError, match="a MASK holds floats in 0..1"):
        UPSCALE.upscale(torch.rand(1, 8, 8, 3), tiny, 2.0, 0, False,
                        mask=torch.ones(1, 8, 8, dtype=torch.int64))


def test_the_upscale_model_refuses_what_cannot_fit_before_upscaling(
        tiny: DRCN, monkeypatch: pytest.MonkeyPatch) -> None:
    """Called on a whole image (not ComfyUI's 512 px tiles), the module checks the memory
    estimate first: a result larger than memory is refused, not left to the allocator or the OS."""
    ran, real = [], engine.Upscaler.upscale
    monkeypatch.setattr(engine.Upscaler, "upscale",
                        lambda self, *a, **k: ran.append(1) or real(self, *a, **k))
    module = MODELS.DRCNUpscaleModule(tiny, 4)
    tile = torch.rand(2, 3, 40, 30, generator=torch.Generator().manual_seed(2))
    assert module(tile).shape == (2, 3, 160, 120) and len(ran) == 2
    ran.clear()
    # what one tile's batch needs: an unencoded upscale beside its input and float32 output
    one = memory.memory_needed(40, 30, 3, 4, size=(160, 120), encoded=False) \
        + 3 * 4 * (40 * 30 + 160 * 120)
    monkeypatch.setattr(memory, "_available_memory", lambda device: one)
    with pytest.raises(NODES.DRCNNodeError, match="a batch of 2 tiles of 120x160 needs about"):
        module(tile)
    assert ran == []
    assert module(tile[:1]).shape == (1, 3, 160, 120)  # one result, stacked: fits


@pytest.mark.parametrize("shape", [(0, 3, 6, 6), (1, 3, 0, 5), (2, 3, 5, 0)])
def test_the_upscale_model_refuses_an_empty_batch_in_one_line(tiny: DRCN, shape: tuple) -> None:
    """A tile of zero rows or columns is one line, not torch's own RuntimeError from
    ``min()``."""
    with pytest.raises(NODES.DRCNNodeError, match=r"^DRCN: the batch is empty \("):
        MODELS.DRCNUpscaleModule(tiny, 2)(torch.rand(*shape))
