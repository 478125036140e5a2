"""Refusals from an image file's header: a result the checks after decoding would refuse (a
format's size limits, the memory the upscale needs) is refused before the pixels are decoded,
in the same words. A small file may declare a canvas of millions of pixels a side, whose
decoding alone takes seconds and gigabytes."""

from __future__ import annotations

from pathlib import Path

from .animation import animates, check_frame_count, check_frames_memory
from .encoding import check_size
from .engine import check_memory
from .imagefile import ImageInfo, read_header
from .sizing import TargetSize


def refuse_early(path: Path, fmt: str, target: TargetSize) -> None:
    """Refuse, from ``path``'s header, a ``fmt`` result at ``target`` that the batch's checks
    after decoding would refuse, in their order: the decoding's memory, the target size, the
    format's limits, the animation's frames, the upscale's memory. Checks that need the array's
    channels are left to the decoded array where the header does not settle them; nothing is
    refused where the header cannot be read."""
    header = read_header(path)
    if header is None:
        return
    (h, w), planes = header.size, header.planes
    size = target.resolve(h, w)
    check_size(fmt, size, planes[0] if planes else None)
    moving = animates(ImageInfo(header.format, frames=header.frames), fmt)
    if moving:
        check_frame_count(path, header.frames)
    if planes is None:
        return
    channels, itemsize = planes
    if moving:
        check_frames_memory(h, w, itemsize, header.frames, channels, fmt, size)
    else:
        check_memory(h, w, channels, itemsize, size=size)
