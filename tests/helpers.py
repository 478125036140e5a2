"""Helpers shared by the tests: where the read-only project data lives, and tiny seeded models."""

from __future__ import annotations

from pathlib import Path

import torch

from drcn_plugin.model import DRCN

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATA = SHARED / "data"
REFERENCE_WEIGHTS = SHARED / "weights"


def seeded_drcn(features: int = 8, recursions: int = 3, seed: int = 0) -> DRCN:
    """A small DRCN with seeded random weights, in eval mode (fast on any CPU)."""
    torch.manual_seed(seed)
    return DRCN(features=features, recursions=recursions).eval()
