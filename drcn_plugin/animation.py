"""Animated GIF, PNG and WebP files upscaled frame by frame into an animated result: every frame
as a viewer shows it (Pillow composites each over the ones before, as its disposal says),
upscaled by the still path's own function, and written with each frame's duration and the loop
count as an animated PNG, WebP or AVIF. Pillow's writers hold every frame until the file is
written, so an animation whose frames do not fit in the memory available is refused first."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from .engine import CancelFn, ProgressFn, memory_needed, refuse_over
from .errors import BadImageError, Cancelled
from .imagefile import ImageInfo, decoding, first_frame_only
from .metadata import TRANSPOSE, orientation
from .misreads import without_damaged_chunks
from .opening import open_image, open_regular
from .pixelmodes import stored_mode, to_array
from .planes import PEAKS
from .writing import Encoded

SOURCES = ("GIF", "PNG", "WEBP")  # the formats whose frames are an animation
ANIMATED = {"PNG": "animated PNG", "WEBP": "animated WebP", "AVIF": "animated AVIF"}
MAX_FRAMES = 10_000  # about 17 minutes at 10 frames a second; more is a video, or a bomb
EncodeFn = Callable[[np.ndarray, ImageInfo, ProgressFn | None], Encoded]


def animates(info: ImageInfo, fmt: str) -> bool:
    """Whether a file read as ``info`` is an animation that a ``fmt`` result keeps animated."""
    return info.frames > 1 and info.format in SOURCES and fmt in ANIMATED \
        and fmt in Image.SAVE_ALL


@dataclass
class _Frames:
    """What every frame shares: how long each shows (ms), the loop count (0: for ever) and the
    channels that hold all of them (grey only if every frame is; alpha if any frame has it)."""

    durations: list[int]
    loop: int
    channels: int


def animated(path: Path, first: np.ndarray, info: ImageInfo, fmt: str, size: tuple[int, int],
             upscaled: EncodeFn, progress: ProgressFn | None = None,
             cancel: CancelFn | None = None) -> Encoded:
    """Every frame of the animation at ``path`` through ``upscaled`` (``first`` is frame 0 as
    :func:`.imagefile.read_image` gave it, with ``info``), as one ``fmt`` file to write with
    each frame's duration and the loop count. ``progress`` counts the tiles of all frames; a
    cancel stops between frames. Refused before any upscaling: more than :data:`MAX_FRAMES`
    frames, or frames whose results do not fit in memory together."""
    count = info.frames
    if count > MAX_FRAMES:
        raise BadImageError(f"{path}: {count} frames; drcn upscales animations of at most "
                            f"{MAX_FRAMES}")
    _check_memory(first, count, first.shape[2] if first.ndim == 3 else 1, fmt, size)
    frames = _survey(path)
    _check_memory(first, count, frames.channels, fmt, size)
    images = []
    for k, array in enumerate(_arrays(path, first, frames.channels)):
        if cancel is not None and cancel():
            raise Cancelled("cancelled")
        report = None if progress is None else \
            lambda done, total, k=k: progress(k * total + done, count * total)
        about = info if k == 0 else replace(info, notes=[])  # frame 0's notes are the file's
        images.append(upscaled(array, about, report))
        del array
    head = images[0]
    info.notes.remove(first_frame_only(count))
    info.notes.append(f"{count} frames upscaled ({ANIMATED[fmt]})")
    if fmt == "AVIF" and frames.loop != 0:
        info.notes.append(f"loop count {frames.loop} not kept: Pillow's AVIF writer loops for "
                          "ever")
    options = {**head.options, "save_all": True, "append_images": [e.image for e in images[1:]],
               "duration": frames.durations, "loop": frames.loop}
    return Encoded(head.image, fmt, options, head.chunks)


def _check_memory(first: np.ndarray, count: int, channels: int, fmt: str,
                  size: tuple[int, int]) -> None:
    """Refuse an animation whose ``count`` results, which Pillow's writers hold together (its
    PNG writer a copy of each besides), and one upscale beside them do not fit in memory."""
    (h, w), (oh, ow) = first.shape[:2], size
    held = count * oh * ow * channels * first.itemsize * (2 if fmt == "PNG" else 1)
    refuse_over(memory_needed(h, w, channels, first.itemsize, size=size) + held,
                f"an animation of {count} frames of {ow}x{oh}")


@contextmanager
def _opened(path: Path) -> Iterator[Image.Image]:
    """``path`` open in Pillow; only opening is read as the file's fault (one line naming it)."""
    with decoding(path):
        raw = open_regular(path)
    with raw:
        with decoding(path):
            im = open_image(without_damaged_chunks(raw, []))
        with im:
            yield im


def _frame(path: Path, im: Image.Image, k: int) -> np.ndarray:
    """Frame ``k`` of the open animation ``im`` as an engine array, as a viewer shows it (the
    orientation its EXIF states applied, as to the first frame)."""
    with decoding(path), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the file's warnings are the first frame's notes
        turn = orientation(im)
        im.seek(k)
        stored = stored_mode(im)
        im.load()
        frame = im.transpose(TRANSPOSE[turn]) if turn in TRANSPOSE else im
        return to_array(frame, ImageInfo(im.format), stored)


def _survey(path: Path) -> _Frames:
    """Every frame decoded once, before any upscaling: their durations, the loop count (a GIF
    without one plays once), the channels that hold them all; a damaged frame is refused now."""
    durations, grey, alpha = [], True, False
    with _opened(path) as im:
        loop = int(im.info.get("loop", 1))
        for k in range(getattr(im, "n_frames", 1)):
            array = _frame(path, im, k)
            durations.append(int(im.info.get("duration", 0)))
            channels = array.shape[2] if array.ndim == 3 else 1
            grey, alpha = grey and channels <= 2, alpha or channels in (2, 4)
    return _Frames(durations, loop, (1 if grey else 3) + alpha)


def _arrays(path: Path, first: np.ndarray, channels: int) -> Iterator[np.ndarray]:
    """Each frame's array in ``channels`` (``first`` as frame 0), decoded as it is needed."""
    yield _in_channels(first, channels)
    with _opened(path) as im:
        for k in range(1, getattr(im, "n_frames", 1)):
            yield _in_channels(_frame(path, im, k), channels)


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
