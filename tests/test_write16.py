"""A 16-bit colour result written in pieces compressed on threads (TIFF strips, a PNG's zlib
stream made of blocks joined as pigz joins them): read back exactly, and the same file as one
thread writes."""

from __future__ import annotations

import io
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from drcn_plugin import cpus, deep, tiff16
from drcn_plugin.cpus import in_order
from drcn_plugin.encoding import encode
from drcn_plugin.imagefile import ImageInfo, read_image
from drcn_plugin.misreads import png_chunks


def _smooth(channels: int, h: int = 13, w: int = 6) -> np.ndarray:
    """16-bit gradients with every low byte used, as an upscaled result's are."""
    y, x = np.mgrid[:h, :w]
    ramp = (y * 4099 + x * 1237)[..., None] * np.arange(1, channels + 1) % 65536
    return ramp.astype(np.uint16)


def _written(pixels: np.ndarray, fmt: str) -> bytes:
    out = io.BytesIO()
    encode(pixels, fmt, ImageInfo(format=fmt), 1.0).write(out)
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
@pytest.mark.parametrize("channels", [3, 4])
def test_a_result_written_in_pieces_on_threads_reads_back_exactly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str, channels: int) -> None:
    """Pieces of 2 rows (a PNG's IDAT chunks of 50 bytes cut across them), on 3 threads: drcn
    reads the 16-bit values back, Pillow the high bytes, and the file is one thread's."""
    monkeypatch.setattr(deep, "_PIECE_SIZE", 2 * 6 * 2 * channels)
    monkeypatch.setattr(deep, "_IDAT_SIZE", 50)
    monkeypatch.setattr(tiff16, "_STRIP_SIZE", 2 * 6 * 2 * channels)
    pixels = _smooth(channels)
    monkeypatch.setattr(cpus, "usable_cpus", lambda: 1)
    alone = _written(pixels, fmt)
    monkeypatch.setattr(cpus, "usable_cpus", lambda: 3)
    path = tmp_path / f"p.{fmt.lower()}"
    path.write_bytes(_written(pixels, fmt))
    assert path.read_bytes() == alone
    array, info = read_image(path)
    assert array.dtype == np.uint16 and np.array_equal(array, pixels) and not info.notes
    with Image.open(path) as im:
        assert np.array_equal(np.asarray(im), (pixels >> 8).astype(np.uint8))
        strips = im.tag_v2[273] if fmt == "TIFF" else range(7)
    assert len(strips) == 7  # 13 rows, 2 a piece


def test_a_16_bit_png_holds_one_zlib_stream_of_its_filtered_rows(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The IDAT chunks joined are one zlib stream (its Adler-32 checked by zlib) of each row
    Sub-filtered, however many pieces it was deflated in."""
    monkeypatch.setattr(deep, "_PIECE_SIZE", 1)  # a row a piece
    monkeypatch.setattr(deep, "_IDAT_SIZE", 7)
    pixels = _smooth(3, h=5, w=4)
    data, chunks = _written(pixels, "PNG"), []
    f = io.BytesIO(data)
    for kind, length in png_chunks(f):
        if kind == b"IDAT":
            chunks.append(f.read(length))
    rows = zlib.decompress(b"".join(chunks))
    raw = pixels.astype(">u2").view(np.uint8).reshape(5, 24)
    sub = np.concatenate([raw[:, :6], raw[:, 6:] - raw[:, :-6]], axis=1)
    assert len(chunks) > 5 and rows == np.insert(sub, 0, 1, axis=1).tobytes()


def test_pieces_done_on_threads_come_back_in_order_a_few_at_a_time() -> None:
    """The first piece finishes only once the pieces after it have begun: results keep the
    pieces' order, and two pieces a thread are begun beyond those taken, no more."""
    begun, taken, ahead, lock = [], [], [], threading.Lock()
    six_begun = threading.Event()

    def work(i: int) -> int:
        with lock:
            begun.append(i)
            ahead.append(len(begun) - len(taken))
            if len(begun) == 6:
                six_begun.set()
        if i == 0:
            six_begun.wait(10)
        return i

    for i in in_order(work, range(20), threads=3):
        taken.append(i)
    assert taken == list(range(20)) and sorted(begun) == taken
    assert max(ahead) == 6
