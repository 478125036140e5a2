"""Helpers shared by the tests: the read-only project data, tiny seeded models, chart readers."""

from __future__ import annotations

import contextlib
import io
import os
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from click.testing import Result
from PIL import Image
from typer.testing import CliRunner

from drcn_plugin.cli import app
from drcn_plugin.model import DRCN
from drcn_plugin.training.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATA = SHARED / "data"
REFERENCE_WEIGHTS = SHARED / "weights"


# Python code printing its process's peak resident memory in KiB (Linux): VmHWM is the address
# space's own, where ru_maxrss keeps, across exec, the high-water mark of the (v)forked parent.
PEAK_KIB = ("int(next(line.split()[1] for line in open('/proc/self/status') "
            "if line.startswith('VmHWM:')))")


def seeded_drcn(features: int = 8, recursions: int = 3, seed: int = 0) -> DRCN:
    """A small DRCN with seeded random weights, in eval mode (fast on any CPU)."""
    torch.manual_seed(seed)
    return DRCN(features=features, recursions=recursions).eval()


def plotted_lines(fig) -> dict[str, list[tuple[float, float]]]:
    """The labelled lines of a matplotlib figure, all axes: label -> [(x, y), ...] as drawn."""
    return {line.get_label(): [(float(x), float(y)) for x, y in line.get_xydata()]
            for ax in fig.axes for line in ax.get_lines() if not line.get_label().startswith("_")}


def check_png(path: Path, width: int = 800, max_bytes: int = 200_000) -> None:
    """``path`` decodes as a PNG of README width and stays small."""
    with Image.open(path) as im:
        im.load()
        assert (im.format, im.width) == ("PNG", width)
    assert path.stat().st_size < max_bytes


def random_rgb(w: int = 20, h: int = 16, seed: int = 0) -> Image.Image:
    """A small seeded noise image (every pixel different, so any processing shows)."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), np.uint8))


def tiny(data: Path, out: Path, **kw) -> TrainConfig:
    """A CPU-sized training recipe: F=8, D=3, 32x32 patches of x3 pairs, no validation or curves
    unless asked (a chart costs about a second on a busy 2-core machine)."""
    base = TrainConfig(data=[str(data)], out=str(out), scales=[3], features=8, recursions=3,
                       patch=32, stride=32, downscales=[1.0, 0.8], batch=16, steps=40, lr=2e-3,
                       warmup=5, val_every=0, device="cpu", curves=False)
    return replace(base, **kw)


def upscale(*args: str) -> Result:
    """``drcn upscale ARGS`` run in this process through typer's test runner."""
    return CliRunner().invoke(app, ["upscale", *args])


def dead_pid() -> int:
    """The PID of a process that has ended (what a killed writer left in its file names)."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def as_on_windows(monkeypatch) -> None:
    """Windows' file rules for the rest of a test: no ``fcntl`` (no advisory locks), and a file
    this process holds open cannot be removed (DeleteFile's sharing violation), which Linux
    allows."""
    real = os.unlink

    def unlink(path, *, dir_fd=None):
        held = []
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):  # the listing's own descriptor, closed by now
                held.append(os.readlink(f"/proc/self/fd/{fd}"))
        if os.path.realpath(path) in held:
            raise PermissionError(13, "the file is being used by another process", path)
        return real(path, dir_fd=dir_fd)

    monkeypatch.setitem(sys.modules, "fcntl", None)  # import fcntl: ImportError
    monkeypatch.setattr(os, "unlink", unlink)
    monkeypatch.setattr(os, "remove", unlink)


def cuda_gpus(monkeypatch, *capabilities: tuple[int, int]) -> None:
    """CUDA GPUs ``cuda:0``, ``cuda:1``, ... of these compute capabilities, as torch reports
    them; ``torch.cuda.is_bf16_supported`` takes torch 2.2's no argument and answers True, as
    bf16 emulation makes it answer on every GPU."""
    def capability(device: torch.device | int | None = None) -> tuple[int, int]:
        index = device.index if isinstance(device, torch.device) else device
        return capabilities[index or 0]

    monkeypatch.setattr(torch.cuda, "get_device_capability", capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)


def hand_tiff(path: Path, pixels: np.ndarray, photometric: int,
              tags: dict[int, list[int]] | None = None, planar: bool = False) -> None:
    """An uncompressed little-endian TIFF of ``pixels`` (``H x W [x samples]``), written by hand
    for the tags Pillow's writer sets itself (PhotometricInterpretation) or not at all;
    ``planar`` stores each channel as its own plane (PlanarConfiguration 2), as scanners may."""
    h, w = pixels.shape[:2]
    samples = 1 if pixels.ndim == 2 else pixels.shape[2]
    little = pixels.astype(pixels.dtype.newbyteorder("<"))
    planes = [np.ascontiguousarray(little.reshape(h, w, samples)[..., c]).tobytes()
              for c in range(samples)] if planar else [little.tobytes()]
    data = b"".join(planes)
    data += b"\0" * (len(data) % 2)
    entries = {256: [w], 257: [h], 258: [pixels.dtype.itemsize * 8] * samples, 259: [1],
               262: [photometric], 273: [8 + i * len(planes[0]) for i in range(len(planes))],
               277: [samples], 278: [h], 279: [len(p) for p in planes],
               **({284: [2]} if planar else {}), **(tags or {})}
    ifd = 8 + len(data)
    spill = ifd + 2 + 12 * len(entries) + 4  # values over four bytes follow the IFD
    table, blobs = struct.pack("<H", len(entries)), b""
    for tag, values in sorted(entries.items()):
        kind, fmt = (4, "I") if tag in (273, 279) else (3, "H")
        raw = struct.pack(f"<{len(values)}{fmt}", *values)
        if len(raw) > 4:
            raw, blobs = struct.pack("<I", spill + len(blobs)), blobs + raw
        table += struct.pack("<HHI", tag, kind, len(values)) + raw.ljust(4, b"\0")
    path.write_bytes(b"II*\0" + struct.pack("<I", ifd) + data + table + b"\0\0\0\0" + blobs)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data and CRC, for PNGs written by hand."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def hand_png(size: tuple[int, int], depth: int, colour: int, rows: bytes, chunks: bytes = b"",
             interlaced: bool = False, idat_size: int = 1 << 20) -> bytes:
    """A PNG written by hand (depths and kinds Pillow does not write): ``rows`` are its filtered
    rows (a filter byte first), compressed into IDAT chunks of ``idat_size``, after ``chunks``."""
    data = zlib.compress(rows)
    header = struct.pack(">IIBBBBB", *size, depth, colour, 0, 0, int(interlaced))
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + chunks
            + b"".join(png_chunk(b"IDAT", data[i:i + idat_size])
                       for i in range(0, len(data), idat_size)) + png_chunk(b"IEND", b""))


def tga16(pixels: np.ndarray, alpha_bits: int, rle: bool = False) -> bytes:
    """A top-down 16-bit colour TGA (ARGB1555, little-endian) whose header's descriptor declares
    ``alpha_bits`` attribute bits; RLE as raw packets of at most 128 pixels."""
    h, w = pixels.shape
    head = struct.pack("<BBBHHBHHHHBB", 0, 0, 10 if rle else 2, 0, 0, 0, 0, 0, w, h, 16,
                       0x20 | alpha_bits)
    flat = pixels.astype("<u2").ravel()
    if not rle:
        return head + flat.tobytes()
    return head + b"".join(bytes([len(part) - 1]) + part.tobytes()
                           for part in (flat[i:i + 128] for i in range(0, len(flat), 128)))


def jpeg_bytes(im: Image.Image, **save) -> bytes:
    """``im`` saved as a JPEG, in memory."""
    out = io.BytesIO()
    im.save(out, "JPEG", **save)
    return out.getvalue()


def mpf_jpeg(photo: bytes, extras: list[tuple[int, bytes]]) -> bytes:
    """A JPEG ``photo`` followed by the JPEGs ``extras`` (MP type code, data), listed in an MPF
    index (CIPA DC-007: an APP2 segment holding a little-endian TIFF directory) put right after
    its SOI, as cameras and phones write them."""
    n = len(extras) + 1
    entries = 8 + 2 + 3 * 12 + 4  # the MP entries follow the header and the directory
    ifd = struct.pack("<HHHI4sHHIIHHII", 3, 0xB000, 7, 4, b"0100", 0xB001, 4, 1, n, 0xB002, 7,
                      16 * n, entries)
    base, size = 10, len(photo) + 8 + entries + 16 * n  # the TIFF header's offset; the photo's
    table, at = struct.pack("<IIIHH", 0x20030000, size, 0, 0, 0), size
    for mp_type, data in extras:
        table += struct.pack("<IIIHH", mp_type, len(data), at - base, 0, 0)
        at += len(data)
    tiff = b"II*\0" + struct.pack("<I", 8) + ifd + b"\0\0\0\0" + table
    segment = b"\xff\xe2" + struct.pack(">H", 2 + 4 + len(tiff)) + b"MPF\0" + tiff
    return photo[:2] + segment + photo[2:] + b"".join(data for _, data in extras)


def time_growth(work: Callable[[int], object], n: int) -> float:
    """How many times longer ``work(4 * n)`` takes than ``work(n)``: about 4 in linear time
    (less, with a fixed cost), 16 in quadratic; linear passes below 10. Timed in this process's
    CPU time, which other programs on a busy machine do not add to as they do to the wall
    clock's (``work`` must run in this thread: CPU time is the whole process's): each the best
    of 3 timings, taken in turn, each of 20 ms of calls at least (a fast call's is not the
    clock's noise)."""
    def timing(size: int) -> float:
        calls, started = 0, time.process_time()
        while (spent := time.process_time() - started) < 0.02 or not calls:
            work(size)
            calls += 1
        return spent / calls

    small, large = zip(*((timing(n), timing(4 * n)) for _ in range(3)), strict=True)
    return min(large) / min(small)


def upscaled_plays(source: Path, out: str, model_file: str) -> tuple[int | None, str]:
    """Upscale the two-frame animation ``source`` x2 to an ``out`` file beside it, assert the
    result has both frames, and give how often it plays (Pillow's ``loop``, an AVIF's edit-list
    count) and the job's message."""
    from drcn_plugin.av1header import avif_plays
    from drcn_plugin.batch import Job, run_job
    from drcn_plugin.engine import Upscaler

    job = Job(source, source.with_name(f"b.{out}"), fmt=out)
    outcome = run_job(job, Upscaler(model_file, device="cpu"), 2.0)
    assert outcome.status == "done", outcome.message
    with Image.open(job.target) as im:
        assert im.n_frames == 2
        plays = im.info.get("loop")
    if out == "avif":
        assert plays is None  # Pillow reads none from an AVIF
        with job.target.open("rb") as f:
            plays = avif_plays(f)
    return plays, outcome.message
