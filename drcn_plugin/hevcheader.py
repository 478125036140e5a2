"""The quantiser of a HEIC/HEIF still: the slice QP (51 coarsest; 0, below for deep images, finest)
of the first slice of its primary image (of a grid's first tile), ``26 + init_qp_minus26 +
slice_qp_delta``, from the item's ``hvcC`` parameter sets and its first slice segment header.

Only an IDR intra slice (what still-image encoders write) is read; any other layout, or damage,
gives None. Every read is bounded by the bytes present.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

from .av1header import (
    Bits,
    isobmff_boxes,
    item_extent,
    meta_children,
    meta_primary_item,
    read_meta,
)

_HEAD_BYTES = 1 << 16  # of the image item: its first slice header comes first
_NAL_VPS, _NAL_SPS, _NAL_PPS = 32, 33, 34
_IDR_W_RADL, _IDR_N_LP, _I_SLICE = 19, 20, 2


class _Golomb(Bits):
    """A HEVC header reader: fixed-width fields and Exp-Golomb codes."""

    def ue(self) -> int:
        """An unsigned Exp-Golomb number (the spec's ``ue(v)``)."""
        zeros = 0
        while not self.f(1):
            zeros += 1
            if zeros > 31:
                raise ValueError("Exp-Golomb code too long")
        return (1 << zeros) - 1 + self.f(zeros)

    def se(self) -> int:
        """A signed Exp-Golomb number (the spec's ``se(v)``)."""
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


def _rbsp(nal: bytes) -> _Golomb:
    """A reader of a NAL unit's payload past its two-byte header, emulation prevention removed."""
    return _Golomb(nal[2:].replace(b"\x00\x00\x03", b"\x00\x00"))


def _skip_profile_tier_level(bits: _Golomb, sub_layers: int) -> None:
    bits.f(96)  # general profile space .. general_level_idc
    present = [(bits.f(1), bits.f(1)) for _ in range(sub_layers)]
    if sub_layers:
        bits.f(2 * (8 - sub_layers))  # reserved_zero_2bits
    for profile, level in present:
        bits.f(88 * profile + 8 * level)


def _skip_scaling_list_data(bits: _Golomb) -> None:
    for size in range(4):
        for _ in range(0, 6, 3 if size == 3 else 1):
            if not bits.f(1):  # scaling_list_pred_mode_flag
                bits.ue()
                continue
            if size > 1:
                bits.se()  # scaling_list_dc_coef_minus8
            for _ in range(min(64, 1 << (4 + (size << 1)))):
                bits.se()


def _sps(nal: bytes) -> tuple[int, dict[str, int]]:
    """(id, what an intra slice header needs) of a sequence parameter set."""
    bits = _rbsp(nal)
    bits.f(4)  # sps_video_parameter_set_id
    sub_layers = bits.f(3)
    bits.f(1)  # sps_temporal_id_nesting_flag
    _skip_profile_tier_level(bits, sub_layers)
    sps_id, chroma = bits.ue(), bits.ue()
    separate = bits.f(1) if chroma == 3 else 0
    bits.ue(), bits.ue()  # pic_width/height_in_luma_samples
    if bits.f(1):  # conformance_window_flag
        for _ in range(4):
            bits.ue()
    bits.ue(), bits.ue(), bits.ue()  # bit depths, log2_max_pic_order_cnt_lsb_minus4
    for _ in range(sub_layers + 1 if bits.f(1) else 1):  # sub-layer ordering info: each, or one
        bits.ue(), bits.ue(), bits.ue()
    for _ in range(6):  # coding and transform block sizes, transform hierarchy depths
        bits.ue()
    if bits.f(1) and bits.f(1):  # scaling_list_enabled_flag, sps_scaling_list_data_present_flag
        _skip_scaling_list_data(bits)
    bits.f(1)  # amp_enabled_flag
    return sps_id, {"separate_planes": separate, "chroma": 0 if separate else chroma,
                    "sao": bits.f(1)}


def _pps(nal: bytes) -> tuple[int, dict[str, int]]:
    """(id, what a slice header needs) of a picture parameter set."""
    bits = _rbsp(nal)
    pps_id, sps_id = bits.ue(), bits.ue()
    bits.f(1)  # dependent_slice_segments_enabled_flag
    pps = {"sps": sps_id, "output_flag": bits.f(1), "extra_bits": bits.f(3)}
    bits.f(2)  # sign_data_hiding_enabled_flag, cabac_init_present_flag
    bits.ue(), bits.ue()  # num_ref_idx_l0/l1_default_active_minus1
    pps["init_qp"] = 26 + bits.se()
    return pps_id, pps


def _hvcc(payload: bytes) -> tuple[int, list[bytes]] | None:
    """(NAL length size, parameter-set NAL units) of an ``hvcC`` box's payload."""
    if len(payload) < 23:
        return None
    length_size, pos, nals = (payload[21] & 3) + 1, 23, []
    for _ in range(payload[22]):
        count = struct.unpack_from(">H", payload, pos + 1)[0]
        pos += 3
        for _ in range(count):
            size = struct.unpack_from(">H", payload, pos)[0]
            nals.append(payload[pos + 2: pos + 2 + size])
            pos += 2 + size
    return length_size, nals


_Sets = dict[int, dict[str, int]]  # parameter sets by id


def _slice_qp(nal: bytes, sps: _Sets, pps: _Sets) -> int | None:
    """The QP of an IDR picture's first intra slice segment ``nal``."""
    kind = nal[0] >> 1 & 63
    if kind not in (_IDR_W_RADL, _IDR_N_LP):
        return None
    bits = _rbsp(nal)
    if not bits.f(1):  # first_slice_segment_in_pic_flag
        return None
    bits.f(1)  # no_output_of_prior_pics_flag (an IRAP picture)
    p = pps.get(bits.ue())
    s = None if p is None else sps.get(p["sps"])
    if p is None or s is None:
        return None
    bits.f(p["extra_bits"])  # slice_reserved_flag
    if bits.ue() != _I_SLICE:
        return None
    bits.f(p["output_flag"] + 2 * s["separate_planes"])  # pic_output_flag, colour_plane_id
    if s["sao"]:
        bits.f(2 if s["chroma"] else 1)  # slice_sao_luma_flag, slice_sao_chroma_flag
    qp = p["init_qp"] + bits.se()
    return qp if -48 <= qp <= 51 else None  # QP runs down to -6 per bit of depth past 8


def _image_item(meta: bytes) -> int | None:
    """The primary item's id if it is an HEVC image, its first tile's if it is a grid."""
    primary, boxes = meta_primary_item(meta), meta_children(meta)
    if primary is None or b"iinf" not in boxes:
        return None
    a, b = boxes[b"iinf"]
    types = {}
    for kind, x, _ in isobmff_boxes(meta, a + (6 if meta[a] == 0 else 8), b):
        if kind == b"infe" and meta[x] in (2, 3):
            wide = meta[x] == 3
            item = struct.unpack_from(">I" if wide else ">H", meta, x + 4)[0]
            types[item] = meta[x + (10 if wide else 8): x + (14 if wide else 12)]
    if types.get(primary) == b"grid" and b"iref" in boxes:
        a, b = boxes[b"iref"]
        wide = meta[a] == 1
        for kind, x, _ in isobmff_boxes(meta, a + 4, b):
            number = ">I" if wide else ">H"
            if kind == b"dimg" and struct.unpack_from(number, meta, x)[0] == primary:
                primary = struct.unpack_from(number, meta, x + (6 if wide else 4))[0]
                break
    return primary if types.get(primary) == b"hvc1" else None


def _hvcc_of(meta: bytes, wanted: int) -> bytes | None:
    """The ``hvcC`` payload associated with item ``wanted`` (``iprp``'s ``ipco`` and ``ipma``)."""
    boxes = meta_children(meta)
    if b"iprp" not in boxes:
        return None
    inner = {kind: (a, b) for kind, a, b in isobmff_boxes(meta, *boxes[b"iprp"])}
    if b"ipco" not in inner or b"ipma" not in inner:
        return None
    properties = list(isobmff_boxes(meta, *inner[b"ipco"]))
    a, _ = inner[b"ipma"]
    version, wide_index, pos = meta[a], meta[a + 3] & 1, a + 8
    for _ in range(struct.unpack_from(">I", meta, a + 4)[0]):
        item = struct.unpack_from(">H" if version < 1 else ">I", meta, pos)[0]
        pos += 2 if version < 1 else 4
        count, pos = meta[pos], pos + 1
        indices = []
        for _ in range(count):
            value = struct.unpack_from(">H" if wide_index else ">B", meta, pos)[0]
            indices.append(value & (0x7FFF if wide_index else 0x7F))
            pos += 2 if wide_index else 1
        if item == wanted:
            for index in indices:
                if 0 < index <= len(properties) and properties[index - 1][0] == b"hvcC":
                    _, x, y = properties[index - 1]
                    return meta[x:y]
            return None
    return None


def heif_slice_qp(f: BinaryIO) -> int | None:
    """The slice QP of the HEIF file ``f``'s primary image (its position kept), or None where the
    file is laid out otherwise or damaged."""
    where = f.tell()
    try:
        meta = read_meta(f)
        item = _image_item(meta) if meta else None
        config = None if item is None else _hvcc_of(meta, item)
        extent = None if config is None else item_extent(meta, item)
        parsed = None if config is None else _hvcc(config)
        if extent is None or parsed is None:
            return None
        length_size, sets = parsed
        sps = dict(_sps(nal) for nal in sets if len(nal) > 2 and nal[0] >> 1 & 63 == _NAL_SPS)
        pps = dict(_pps(nal) for nal in sets if len(nal) > 2 and nal[0] >> 1 & 63 == _NAL_PPS)
        f.seek(extent[0])
        data, pos = f.read(min(extent[1], _HEAD_BYTES)), 0
        while pos + length_size <= len(data):
            size = int.from_bytes(data[pos: pos + length_size], "big")
            nal, pos = data[pos + length_size: pos + length_size + size], pos + length_size + size
            if len(nal) > 2 and nal[0] >> 1 & 63 < _NAL_VPS:  # the first coded slice
                return _slice_qp(nal, sps, pps)
        return None
    except (ValueError, IndexError, struct.error, OSError):
        return None
    finally:
        f.seek(where)
