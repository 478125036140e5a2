"""Animated GIF, PNG, WebP and AVIF files upscaled frame by frame into an animated result: every
frame as a viewer shows it (a GIF's or APNG's drawn by :mod:`.compositing`, a WebP's as Pillow
composites it; an AVIF's are whole), upscaled by the still path's own function, and
written with each frame's duration, playing as many times as the source, as an animated PNG,
WebP or AVIF. Results are held until the file is written (a PNG's compressed), so an animation
whose frames do not fit in the memory available is refused first, as is one of more frames than
:data:`MAX_FRAMES`."""

from __future__ import annotations

import io
import itertools
import struct
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

from .av1header import avif_plays, avif_with_plays
from .colourspace import png_chunk
from .compositing import Canvas, frame_canvas, pillow_frame, shown_size
from .engine import ProgressFn
from .errors import BadImageError, DamagedImageError, counted
from .imagefile import ImageInfo, decoding, first_frame_only
from .memory import memory_needed, refuse_over
from .metadata import TRANSPOSE, orientation
from .misreads import png_chunks, without_damaged_chunks
from .opening import (
    FileState,
    caught_warnings,
    hashed,
    later_frames_damaged,
    open_image,
    pillow_frames,
    reopen,
)
from .pixelmodes import to_array
from .planes import PEAKS
from .writing import Encoded

SOURCES = ("GIF", "PNG", "WEBP", "AVIF")  # the formats whose frames are an animation
ANIMATED = {"PNG": "animated PNG", "WEBP": "animated WebP", "AVIF": "animated AVIF"}
MAX_FRAMES = 10_000  # about 17 minutes at 10 frames a second; more is a video, or a bomb
EncodeFn = Callable[[np.ndarray, ImageInfo, ProgressFn | None], Encoded]


def animates(info: ImageInfo, fmt: str) -> bool:
    """Whether a file read as ``info`` is an animation that a ``fmt`` result keeps animated."""
    return (info.frames > 1 or info.damaged_frames) and info.format in SOURCES \
        and fmt in ANIMATED and fmt in Image.SAVE_ALL


@dataclass
class _Frames:
    """What the animation's frames share: how long each shows (ms), how many times it plays (0:
    for ever; None: not known), the channels that hold all of them (grey only if every frame
    is; alpha if any frame has it), and the first (1 where an APNG's first image is only for
    viewers of stills)."""

    durations: list[int]
    plays: int | None
    channels: int
    start: int


def animated(path: Path, first: np.ndarray, info: ImageInfo, fmt: str, size: tuple[int, int],
             upscaled: EncodeFn, progress: ProgressFn | None = None) -> tuple[Encoded, int]:
    """Every frame of the animation at ``path`` through ``upscaled`` (``first`` is frame 0 as
    :func:`.imagefile.read_image` gave it, with ``info``): one ``fmt`` file to write, with each
    frame's duration and the source's number of plays, and the number of its frames.
    ``progress`` counts the tiles of all frames. Refused before any upscaling: more than
    :data:`MAX_FRAMES` frames, or frames whose results do not fit in memory together. An AVIF's
    count is written when the file is, and noted in ``info`` then if it cannot be."""
    if info.damaged_frames:  # a still of its first frame would do; an animation cannot
        raise later_frames_damaged(path)
    check_frame_count(path, info.frames)
    (h, w), itemsize = first.shape[:2], first.itemsize
    check_frames_memory(h, w, itemsize, info.frames, first.shape[2] if first.ndim == 3 else 1,
                        fmt, size)
    state = _with_digest(path, info.state)
    frames = _survey(path, state)
    check_frames_memory(h, w, itemsize, info.frames, frames.channels, fmt, size)
    head, later = None, []
    count = len(frames.durations)
    for k, array in enumerate(_arrays(path, state, first, frames)):
        report = None if progress is None else \
            lambda done, total, k=k: progress(k * total + done, count * total)
        about = info if k == 0 else replace(info, notes=[])  # frame 0's notes are the file's
        encoded = upscaled(array, about, report)
        del array
        if head is None:
            head = encoded
        else:  # a PNG frame is held compressed, as the file will hold it
            later.append(_idats(encoded.image) if fmt == "PNG" else encoded.image)
    info.notes.remove(first_frame_only(info.frames))
    info.notes.append(f"{count} frames upscaled ({ANIMATED[fmt]})")
    if frames.plays is None:
        info.notes.append("loop count not kept (the AVIF's edit list is unreadable): the result "
                          "loops for ever")
    if fmt == "PNG":
        still = io.BytesIO()
        head.write(still)
        return _Made(head.image, fmt, pieces=_apng(still.getvalue(), later, frames)), count
    # WebP's loop count has 16 bits: a GIF's 65535 repeats (65536 plays) become 65535, as in
    # gif2webp
    options = {**head.options, "save_all": True, "append_images": later,
               "duration": frames.durations, "loop": min(frames.plays or 0, 0xFFFF)}
    if fmt == "AVIF" and frames.plays:
        return _Counted(head.image, fmt, options, head.chunks, plays=frames.plays,
                        notes=info.notes), count
    return Encoded(head.image, fmt, options, head.chunks), count


@dataclass
class _Counted(Encoded):
    """An animated AVIF that plays ``plays`` times, which Pillow's writer cannot say (it loops
    for ever): the file it writes is edited as libavif writes the count before it is written
    out; where that cannot be done it is written as it is and ``notes`` says so."""

    plays: int = 0
    notes: list[str] = field(default_factory=list)

    def write(self, f: BinaryIO) -> None:
        """Write the file to ``f``."""
        encoded = io.BytesIO()
        super().write(encoded)
        data = encoded.getvalue()
        edited = avif_with_plays(data, self.plays)
        if edited is None:
            self.notes.append(f"loop count not kept (the source plays "
                              f"{counted(self.plays, 'time')}): Pillow's AVIF writer loops for "
                              "ever")
        f.write(data if edited is None else edited)


@dataclass
class _Made(Encoded):
    """A file already encoded, in ``pieces`` (Pillow's APNG writer holds every frame
    uncompressed, twice: drcn writes the animation chunks itself)."""

    pieces: list[bytes] = field(default_factory=list)

    def write(self, f: BinaryIO) -> None:
        """Write the file to ``f``."""
        f.writelines(self.pieces)


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """A PNG's chunks as (type, data)."""
    f = io.BytesIO(data)
    return [(kind, f.read(length)) for kind, length in png_chunks(f)]


def _idats(image: Image.Image) -> list[bytes]:
    """The compressed pixels (IDAT data) of ``image`` written as a PNG."""
    f = io.BytesIO()
    image.save(f, "PNG")
    return [data for kind, data in _chunks(f.getvalue()) if kind == b"IDAT"]


def _apng(still: bytes, later: list[list[bytes]], frames: _Frames) -> list[bytes]:
    """The animated PNG of the PNG ``still`` (frame 0 with all the file's metadata) and the
    IDAT data of each ``later`` frame (in the same mode): every frame whole, shown for its
    duration, replacing the one before."""
    chunks = _chunks(still)
    width, height = struct.unpack(">2I", chunks[0][1][:8])  # IHDR's
    numbers = itertools.count()  # fcTL and fdAT chunks share one sequence

    def control(k: int) -> bytes:
        ms = frames.durations[k]  # in ms, or in hundredths of a second past 65535 ms
        delay = (ms, 1000) if ms < 1 << 16 else (min(round(ms / 10), 0xFFFF), 100)
        return png_chunk(b"fcTL", struct.pack(">5I2H2B", next(numbers), width, height, 0, 0,
                                              *delay, 0, 0))

    pieces, started = [still[:8]], False  # the signature
    for kind, data in chunks:
        if kind == b"IDAT" and not started:
            pieces += [png_chunk(b"acTL", struct.pack(">2I", len(frames.durations),
                                                      frames.plays or 0)), control(0)]
            started = True
        elif kind == b"IEND":
            for k, idats in enumerate(later, 1):
                pieces.append(control(k))
                pieces += [png_chunk(b"fdAT", struct.pack(">I", next(numbers)) + d)
                           for d in idats]
        pieces.append(png_chunk(kind, data))
    return pieces


def check_frame_count(path: Path, count: int) -> None:
    """Refuse the animation at ``path`` of ``count`` frames where they are more than
    :data:`MAX_FRAMES`."""
    if count > MAX_FRAMES:
        raise BadImageError(f"{path}: {count} frames; drcn upscales animations of at most "
                            f"{MAX_FRAMES}")


def check_frames_memory(h: int, w: int, itemsize: int, count: int, channels: int, fmt: str,
                        size: tuple[int, int]) -> None:
    """Refuse an animation of ``h x w`` frames (of ``channels`` samples of ``itemsize`` bytes)
    whose ``count`` results, as its writer holds them, and one upscale beside them do not fit in
    memory."""
    oh, ow = size
    # a PNG's frames are held compressed (at most their bytes); libwebp's encoder took 2.6 times
    # the frames' bytes besides (30 frames of 1280x960), and Pillow's AVIF writer holds them too
    held = count * oh * ow * channels * itemsize * (1 if fmt == "PNG" else 3)
    refuse_over(memory_needed(h, w, channels, itemsize, size=size) + held,
                f"an animation of {count} frames of {ow}x{oh}")


def _with_digest(path: Path, state: FileState | None) -> FileState | None:
    """``state`` with the hash of the file's bytes, taken as its frames are about to be read
    again (the file refused if it changed since ``state``), so a touch alone later is no change."""
    if state is None:
        return None
    with decoding(path), reopen(path, state) as f:
        return hashed(f, state)


@contextmanager
def _opened(path: Path, state: FileState | None
            ) -> Iterator[tuple[Image.Image, Canvas | None, tuple[int, int]]]:
    """``path`` open in Pillow, the file first read in ``state`` (:func:`.opening.reopen`), with
    the canvas its frames are drawn on where Pillow's is not a viewer's and the size a viewer
    shows them at (:func:`.shown_size`); only opening is read as the file's fault (one line
    naming it)."""
    with decoding(path):
        raw = reopen(path, state)
    with raw:
        with decoding(path):
            im = open_image(f := without_damaged_chunks(raw, []))
            canvas, size = frame_canvas(im, f), shown_size(im)
        with im:
            yield im, canvas, size


def _frame(path: Path, im: Image.Image, k: int, size: tuple[int, int],
           canvas: Canvas | None) -> np.ndarray:
    """Frame ``k`` of the open animation ``im`` as an engine array, as a viewer shows it (drawn
    on ``canvas`` where there is one): in the ``size`` a viewer shows (a GIF frame reaching past
    it grows Pillow's canvas, which the result's frames would be squeezed from), the orientation
    its EXIF states applied."""
    with decoding(path), caught_warnings():
        warnings.simplefilter("ignore")  # the file's warnings are the first frame's notes
        turn = orientation(im)
        drawn, stored = canvas.frame(k) if canvas is not None else pillow_frame(im, k)
        shown = drawn if drawn.size == size else drawn.crop((0, 0, *size))
        frame = shown.transpose(TRANSPOSE[turn]) if turn in TRANSPOSE else shown
        return to_array(frame, ImageInfo(im.format), stored)


def _survey(path: Path, state: FileState | None) -> _Frames:
    """Every frame decoded once, before any upscaling: their durations, the number of plays, the
    channels that hold them all; a damaged frame is refused now."""
    durations, grey, alpha = [], True, False
    with _opened(path, state) as (im, canvas, size):
        start = int(bool(im.info.get("default_image")))
        count = pillow_frames(path, im)
        for k in range(count):
            array = _numbered_frame(path, im, k, count, size, canvas)
            if k < start:
                continue
            durations.append(round(im.info.get("duration", 0) if canvas is None else
                                   canvas.duration(k)))
            channels = array.shape[2] if array.ndim == 3 else 1
            grey, alpha = grey and channels <= 2, alpha or channels in (2, 4)
        plays = _plays(path, state, im)  # last: a GIF's loop extension may follow frame 0
    return _Frames(durations, plays, (1 if grey else 3) + alpha, start)


def _numbered_frame(path: Path, im: Image.Image, k: int, count: int,
                    size: tuple[int, int], canvas: Canvas | None) -> np.ndarray:
    """:func:`_frame`, a damaged frame refused by its number: Pillow's reason ("no more images
    in APNG file", a wrong argument count) says nothing to a user; other refusals (too many
    pixels, memory) pass with their own."""
    try:
        return _frame(path, im, k, size, canvas)
    except DamagedImageError as e:
        raise DamagedImageError(f"{path}: frame {k + 1} of {count} is damaged or cut short") \
            from e


def _plays(path: Path, state: FileState | None, im: Image.Image) -> int | None:
    """How many times the animation at ``path`` (read in ``state``), open as ``im``, plays: 0
    for ever, None where an AVIF's count is unreadable. APNG's and WebP's count is of plays; a
    GIF's (NETSCAPE) is of repeats after the first, as browsers play it (gif2webp adds one), and
    a GIF without one plays once; an AVIF's, which Pillow does not read, is in its edit list."""
    if im.format == "AVIF":
        with decoding(path), reopen(path, state) as f:
            return avif_plays(f)
    loop = im.info.get("loop")
    if im.format == "GIF":
        return 1 if loop is None else 0 if loop == 0 else int(loop) + 1
    return int(loop or 0)


def _arrays(path: Path, state: FileState | None, first: np.ndarray,
            frames: _Frames) -> Iterator[np.ndarray]:
    """Each frame's array in the ``frames``' channels (``first`` as frame 0), decoded as it is
    needed from the file read in ``state`` (a canvas draws frame 0 again, under frame 1)."""
    if frames.start == 0:
        yield _in_channels(first, frames.channels)
    with _opened(path, state) as (im, canvas, size):
        for k in range(1, frames.start + len(frames.durations)):  # as counted in the survey
            yield _in_channels(_frame(path, im, k, size, canvas), frames.channels)


def _in_channels(array: np.ndarray, channels: int) -> np.ndarray:
    """``array`` with grey made RGB and an opaque alpha added as ``channels`` asks."""
    have = array.shape[2] if array.ndim == 3 else 1
    if have == channels:
        return array
    planes = array.reshape(*array.shape[:2], have)
    split = 1 if have <= 2 else 3  # grey or colour, then alpha
    colour, alpha = planes[..., :split], planes[..., split:]
    if channels >= 3 and colour.shape[2] == 1:
        colour = np.repeat(colour, 3, axis=2)
    if channels in (2, 4) and not alpha.shape[2]:
        alpha = np.full((*array.shape[:2], 1), PEAKS.get(array.dtype, 1.0), array.dtype)
    return np.concatenate([colour, alpha], axis=2)
