"""Reading images in threads (ComfyUI's nodes, the GIMP worker and host): what one thread's
reading sets up for its file leaves Pillow as it was for every other thread's."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import numpy as np
from helpers import hand_tiff

from drcn_plugin.imagefile import read_image
from drcn_plugin.opening import load_pixels, open_image


class _HeldAtLibtiff(io.BytesIO):
    """A TIFF's bytes whose reading stops, until ``go`` is set, where libtiff's opening begins:
    at the third read of its header (Pillow's own reader reads it twice, to identify the file
    and to open it, before a file stored as planes is opened again through libtiff)."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.heads, self.held, self.go = 0, threading.Event(), threading.Event()

    def read(self, size: int | None = -1) -> bytes:
        if self.tell() == 0:
            self.heads += 1
            if self.heads == 3:
                self.held.set()
                assert self.go.wait(10)
        return super().read(size)


def test_a_tiff_read_while_another_thread_opens_one_through_libtiff_keeps_its_16_bits(
        tmp_path: Path) -> None:
    """While one thread opens a TIFF stored as planes through libtiff, another reads a 16-bit
    one stored so: still at 16 bits, as read alone (Pillow's switch to libtiff was set for
    every thread: its second reading of the low bytes came through libtiff, the image at 8 bits
    with "Pillow has no 16-bit colour")."""
    planes8 = np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    hand_tiff(tmp_path / "p8.tif", planes8, 2, planar=True)
    planes16 = np.random.default_rng(1).integers(0, 65536, (5, 6, 3), dtype=np.uint16)
    hand_tiff(tmp_path / "p16.tif", planes16, 2, planar=True)
    held = _HeldAtLibtiff((tmp_path / "p8.tif").read_bytes())
    opened: dict[str, object] = {}

    def other_thread() -> None:
        with open_image(held) as im:
            load_pixels(im)
            opened["pixels"] = np.asarray(im)

    opener = threading.Thread(target=other_thread, daemon=True)
    opener.start()
    try:
        assert held.held.wait(10)
        array, info = read_image(tmp_path / "p16.tif")
    finally:
        held.go.set()
        opener.join(10)
    assert array.dtype == np.uint16 and np.array_equal(array, planes16), info.notes
    assert not info.notes
    assert np.array_equal(opened.get("pixels"), planes8)
