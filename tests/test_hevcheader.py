"""A HEIC's quantiser, the slice QP of its primary image (of a grid's first tile): read from the
hvcC parameter sets and the first slice header, None for anything else, never an error."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
from helpers import random_rgb
from PIL import Image

from drcn_plugin.av1header import isobmff_boxes
from drcn_plugin.hevcheader import _sps, heif_slice_qp

pillow_heif = pytest.importorskip("pillow_heif")
DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def _heic(quality: int, image: Image.Image | None = None) -> bytes:
    buf = io.BytesIO()
    pillow_heif.from_pillow(image or random_rgb(40, 24)).save(buf, quality=quality)
    return buf.getvalue()


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def _as_grid(data: bytes) -> bytes:
    """``data`` (a one-item HEIC) with a grid item 2 made primary, its one tile the image item 1;
    the old meta box becomes a free box of its size and the new one follows the pixels, so the
    item offsets hold."""
    _, a, b = next(box for box in isobmff_boxes(data) if box[0] == b"meta")
    children = []
    for kind, x, y in isobmff_boxes(data, a + 4, b):
        payload = data[x:y]
        if kind == b"pitm":
            payload = payload[:4] + struct.pack(">H", 2)
        elif kind == b"iinf":  # version 0: a 16-bit count
            grid = _box(b"infe", bytes([2, 0, 0, 0]) + struct.pack(">HH4s", 2, 0, b"grid") + b"\0")
            payload = payload[:4] + struct.pack(">H", payload[5] + 1) + payload[6:] + grid
        children.append(_box(kind, payload))
    children.append(_box(b"iref", bytes(4) + _box(b"dimg", struct.pack(">HHH", 2, 1, 1))))
    meta = _box(b"meta", data[a: a + 4] + b"".join(children))
    return data[: a - 8] + _box(b"free", data[a:b]) + data[b:] + meta


def test_the_qp_rises_as_the_quality_falls_the_same_on_every_image() -> None:
    """pillow-heif's x265 gives one QP per quality on every Set5/Set14 image, whatever its size."""
    qps = [heif_slice_qp(io.BytesIO(_heic(q))) for q in (10, 30, 50, 70, 90)]
    assert all(qp is not None and 0 <= qp <= 51 for qp in qps) and qps == sorted(qps, reverse=True)
    assert len(set(qps)) == len(qps)
    with Image.open(DATA / "Set14" / "monarch.png") as im:
        monarch = im.convert("RGB")
    assert heif_slice_qp(io.BytesIO(_heic(30, monarch))) == qps[1]
    assert heif_slice_qp(io.BytesIO(_heic(30, monarch.convert("RGBA")))) == qps[1]  # alpha item


def test_a_grid_is_read_from_its_first_tile() -> None:
    single = _heic(30)
    grid = _as_grid(single)
    assert heif_slice_qp(io.BytesIO(grid)) == heif_slice_qp(io.BytesIO(single)) is not None


@pytest.mark.parametrize("grid", [False, True])
def test_a_damaged_or_foreign_heic_has_no_qp_and_no_error(grid: bool) -> None:
    data = _as_grid(_heic(30)) if grid else _heic(30)
    whole, pixels = heif_slice_qp(io.BytesIO(data)), data.find(b"mdat")
    assert whole is not None
    rng = np.random.default_rng(0)
    assert heif_slice_qp(io.BytesIO(rng.bytes(4000))) is None
    assert heif_slice_qp(io.BytesIO(b"")) is None
    for cut in range(0, len(data), 5):  # inside the pixels' box, then its slice header, then past
        got = heif_slice_qp(io.BytesIO(data[:cut]))
        assert got is None if cut < pixels + 12 else got in (None, whole), (cut, got)
    for _ in range(400):
        mutated = bytearray(data)
        for i in rng.integers(0, len(data), 3):
            mutated[i] = int(rng.integers(256))
        f = io.BytesIO(bytes(mutated))
        f.seek(5)
        got = heif_slice_qp(f)
        assert (got is None or -48 <= got <= 51) and f.tell() == 5


def _nal(kind: int, fields: list[tuple[str, int, int]]) -> bytes:
    """A NAL unit of type ``kind`` holding ``fields`` (("u", bits, value), ("ue", 0, value)), its
    payload stuffed with emulation-prevention bytes as an encoder writes it."""
    bits = ""
    for code, width, value in fields:
        if code == "ue":
            width, value = 2 * (value + 1).bit_length() - 1, value + 1
        bits += format(value, f"0{width}b") if width else ""
    bits += "1" + "0" * ((-len(bits) - 1) % 8)  # rbsp_trailing_bits
    payload, stuffed = int(bits, 2).to_bytes(len(bits) // 8, "big"), bytearray()
    for byte in payload:
        if stuffed[-2:] == b"\0\0" and byte <= 3:
            stuffed.append(3)
        stuffed.append(byte)
    return bytes([kind << 1, 1]) + bytes(stuffed)


def test_a_sequence_with_sub_layers_and_stuffed_bytes_is_read() -> None:
    """Two temporal sub-layers, each with its ordering info, in an SPS whose zero profile flags
    the encoder broke up with emulation-prevention bytes."""
    sps = _nal(33, [("u", 4, 0), ("u", 3, 1), ("u", 1, 1), ("u", 96, 0), ("u", 2, 0),
                    ("u", 14, 0), ("ue", 0, 0), ("ue", 0, 1), ("ue", 0, 40), ("ue", 0, 24),
                    ("u", 1, 0), ("ue", 0, 0), ("ue", 0, 0), ("ue", 0, 4), ("u", 1, 1),
                    *[("ue", 0, v) for v in (1, 0, 0, 2, 1, 0)],  # ordering info of both layers
                    *[("ue", 0, v) for v in (0, 1, 0, 1, 0, 0)],  # block sizes, depths
                    ("u", 1, 0), ("u", 1, 1), ("u", 1, 1)])  # no scaling list, amp, SAO
    assert b"\0\0\3" in sps
    assert _sps(sps) == (0, {"separate_planes": 0, "chroma": 1, "sao": 1})
