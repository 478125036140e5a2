"""Refusals from an image file's header: a result the checks after decoding would refuse (a
format's size limits, the memory the upscale needs) is refused before the pixels are decoded,
in the same words. A small file may declare a canvas of millions of pixels a side, whose
decoding alone takes seconds and gigabytes."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from PIL import Image

from .animation import animates, check_frame_count, check_frames_memory
from .encoding import check_size
from .imagefile import (
    ImageInfo,
    decoding,
    frame_count,
    heif_opener,
    refuse_from_header,
    upright_size,
)
from .jpegparts import extra_images
from .memory import check_memory
from .metadata import XMP_KEY
from .misreads import png_chunks, without_damaged_chunks
from .opening import caught_warnings, open_image, open_regular
from .pixelmodes import decoded_planes
from .sizing import TargetSize
from .tiffdeep import StandIn

# The formats whose opened size is the decoded one (an icon's is its directory's claim, which
# decoding may correct).
_SIZED_BY_HEADER = frozenset({"PNG", "JPEG", "MPO", "WEBP", "AVIF", "HEIF", "TIFF", "BMP", "GIF",
                              "PPM", "TGA", "JPEG2000", "PCX", "SGI", "QOI", "DDS"})
# The keywords of the PNG text chunks (tEXt, zTXt, iTXt) Pillow's getexif() may take an
# orientation from: a chunk named "exif", ImageMagick's EXIF in hex, XMP's tiff:Orientation.
_ORIENTING_TEXT = frozenset({b"exif", b"Raw profile type exif", XMP_KEY.encode(), b"xmp"})
_KEYWORD_MAX = 80  # a PNG text chunk's keyword, 1-79 bytes, and the NUL that ends it


@dataclass(frozen=True)
class Header:
    """What a file's header says of the array :func:`.read_image` would decode from it."""

    size: tuple[int, int]  # (height, width), upright
    planes: tuple[int, int] | None  # channels and bytes a sample; None where the pixels decide
    format: str
    frames: int


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


def read_header(path: Path) -> Header | None:
    """``path``'s :class:`Header`, read without decoding its pixels, so that an impossible result
    is refused before the decoding is spent; None where the header cannot be read (decoding then
    says why) or leaves the decoded size open (a PNG that decoding may turn, an icon). What
    :func:`.read_image` refuses from the header alone it refuses too, in the same words."""
    heif_opener()
    try:
        raw = open_regular(path)
    except Exception:  # noqa: BLE001 - the reading says what is wrong with the file
        return None
    with raw, caught_warnings():
        warnings.simplefilter("ignore")  # the reading's warnings become its notes
        try:
            im = open_image(f := without_damaged_chunks(raw, [], header=True))
        except Exception:  # noqa: BLE001 - as above
            return None
        with im:
            with decoding(path):
                refuse_from_header(im)
            try:
                if im.format not in _SIZED_BY_HEADER or _turned_by_decoding(f, im):
                    return None
                return Header(upright_size(im),
                              None if isinstance(im, StandIn) else decoded_planes(im), im.format,
                              1 if extra_images(f, im) else frame_count(path, im))
            except Exception:  # noqa: BLE001 - as above
                return None


def _turned_by_decoding(f: BinaryIO, im: Image.Image) -> bool:
    """Whether the opened PNG ``im`` (of the file ``f``) may be turned by what Pillow reads only
    by decoding: without EXIF before its pixels, its getexif() decodes the file and takes an
    orientation from an eXIf chunk or a text chunk (EXIF in hex, XMP), before or after them."""
    if im.format != "PNG" or "exif" in im.info:
        return False
    for kind, length in png_chunks(f):
        if kind == b"eXIf" or kind in (b"tEXt", b"zTXt", b"iTXt") and \
                f.read(min(length, _KEYWORD_MAX)).split(b"\0", 1)[0] in _ORIENTING_TEXT:
            return True
    return False
