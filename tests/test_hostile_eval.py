"""``drcn eval`` and ``drcn compare`` against awkward datasets and inputs (a hostile pass)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import random_rgb

from drcn_plugin.evaluation import evaluate


def test_images_sharing_a_stem_are_each_scored(folder: Path) -> None:
    random_rgb(24, 24, seed=1).save(folder / "a.png")
    random_rgb(24, 24, seed=2).save(folder / "a.jpg", quality=90)
    both = evaluate(None, folder, [2])[2]
    assert set(both.images) == {"a.jpg", "a.png"}
    alone = {}
    for name in ("a.png", "a.jpg"):
        single = folder.parent / name.replace(".", "-")
        single.mkdir()
        (folder / name).rename(single / name)
        alone[name] = evaluate(None, single, [2])[2].psnr
    assert both.images["a.png"].psnr == alone["a.png"] != alone["a.jpg"]
    assert both.psnr == pytest.approx((alone["a.png"] + alone["a.jpg"]) / 2)

