"""Reading images in threads (ComfyUI's nodes, the GIMP worker and host): what one thread's
reading sets up for its file leaves Pillow as it was for every other thread's."""

from __future__ import annotations

import io
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from helpers import hand_tiff, random_rgb

from drcn_plugin import imagefile
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
    one stored so: still at 16 bits, as read alone (Pillow's switch to libtiff is one for
    every thread: set for the first, it would send the second's reading of the low bytes
    through libtiff, the image at 8 bits with "Pillow has no 16-bit colour")."""
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


def test_images_read_in_two_threads_keep_their_own_warnings_and_the_hosts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recwarn: pytest.WarningsRecorder) -> None:
    """Thread A's reading warns while thread B reads too, and A ends first: A's warning is its
    own image's note, not B's, and a warning of the host's afterwards reaches the host (each
    reading swapped the process's warning filters and their recorder for its own, B's put back
    A's when it ended: the host's warnings went to A's list, for good)."""
    random_rgb(6, 5, seed=1).save(tmp_path / "a.png")
    random_rgb(6, 5, seed=2).save(tmp_path / "b.png")
    a_inside, b_inside, a_done = threading.Event(), threading.Event(), threading.Event()
    decode = imagefile._decode

    def meanwhile(path: Path) -> object:
        if path.name == "a.png":
            a_inside.set()
            b_inside.wait(0.5)  # B reads meanwhile, unless readings take turns
            warnings.warn("A's decoder warning", UserWarning, stacklevel=1)
        else:
            b_inside.set()
            a_done.wait(0.5)
        return decode(path)

    monkeypatch.setattr(imagefile, "_decode", meanwhile)
    notes: dict[str, list[str]] = {}

    def read(name: str) -> None:
        notes[name] = imagefile.read_image(tmp_path / name)[1].notes
        if name == "a.png":
            a_done.set()

    a, b = (threading.Thread(target=read, args=(name,), daemon=True)
            for name in ("a.png", "b.png"))
    a.start()
    assert a_inside.wait(10)
    b.start()
    a.join(10)
    b.join(10)
    assert notes == {"a.png": ["decoder warning: A's decoder warning"], "b.png": []}
    warnings.warn("the host's own warning", UserWarning, stacklevel=1)
    assert [str(w.message) for w in recwarn] == ["the host's own warning"]
