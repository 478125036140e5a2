"""Memory a TIFF of samples Pillow has no mode for (16-bit grey with alpha, float colour) takes
to read: its strips or tiles are decoded a few at a time into the result, and the check made
before decoding asks for what that reading takes (per layout: a float RGBA pixel needs far more
than an 8-bit one), so that a file too large for the memory available gets drcn's one-line
refusal, not a MemoryError or the system's out-of-memory kill."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from helpers import upscale
from test_tiff16 import ADOBE_DEFLATE, LZW, PREMULTIPLIED
from test_tiff_deep_modes import _deep_tiff, _samples

from drcn_plugin import devices, tiffdeep
from drcn_plugin.errors import OutOfMemoryError
from drcn_plugin.imagefile import read_image

ORIENTATION = 274


@pytest.mark.parametrize("kind, layout", [
    ("rgba-float32", {"rows": 8}), ("rgba-float32", {"tile": 16}),
    ("grey16+alpha", {"rows": 5}), ("rgb-float16", {"planar": True, "rows": 4}),
    ("rgb-float32", {"rows": 8, "tags": {ORIENTATION: 6}}),
    ("rgba-float32", {"rows": 8, "extra": PREMULTIPLIED}),
    ("grey16+alpha", {"rows": 5, "extra": PREMULTIPLIED})])
def test_reading_takes_no_more_than_the_check_before_it_asks_for(
        folder: Path, tiny_model_file: str, monkeypatch: pytest.MonkeyPatch, kind: str,
        layout: dict) -> None:
    """What the reading allocates (numpy's and Python's, which tracemalloc sees) stays near the
    result's size (twice it, turned upright), not several copies of it; with less memory than
    it took available, the file is refused from its header, in one line."""
    monkeypatch.setattr(tiffdeep, "_PIECE_BYTES", 1 << 14)  # a few strips at a time, as for a photo
    monkeypatch.setattr(tiffdeep, "_PIECE_SLACK", 0)  # the allocator's: tracemalloc misses it
    pixels = _samples(kind, seed=9, h=320, w=400)
    if layout.get("extra") == PREMULTIPLIED:  # colour under full or no alpha comes back as stored
        pixels[..., -1] = np.where(pixels[..., -1] < pixels[..., -1].mean(), 0,
                                   65535 if pixels.dtype == np.uint16 else 1)
    compression, predictor = (LZW, 2) if pixels.dtype == np.uint16 else (ADOBE_DEFLATE, 3)
    _deep_tiff(folder / "m.tif", pixels, kind, "<", compression, predictor, **layout)
    read_image(folder / "m.tif")  # what a first reading imports and caches is not counted
    tracemalloc.start()
    try:
        array, _ = read_image(folder / "m.tif")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    turned = ORIENTATION in layout.get("tags", {})
    assert np.array_equal(np.rot90(array, 1) if turned else array, pixels)
    assert peak < (1.5 + turned) * array.nbytes
    monkeypatch.setattr(devices, "host_available_memory", lambda: peak - 1)
    with pytest.raises(OutOfMemoryError, match=r"m.tif: a \d+x\d+ image needs about"):
        read_image(folder / "m.tif")
    r = upscale(str(folder / "m.tif"), "-m", tiny_model_file, "-o", str(folder.parent / "o"))
    assert r.exit_code == 1 and "to decode" in r.output and "Traceback" not in r.output
    assert not (folder.parent / "o").exists()
