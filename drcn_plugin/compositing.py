"""Animated PNG and GIF frames composited as their specifications, and every browser, say, where
Pillow's own compositing differs. For an APNG, Pillow blends a frame "over" the canvas by
pasting it through its alpha, which turns opaque pixels under a half-transparent frame
half-transparent and lets a palette frame's half-transparent pixels replace what they cover,
and it disposes a frame of an RGB or grey APNG to opaque black. For a GIF, whose canvas starts
transparent, Pillow clears a frame disposed "to background" to its opaque background colour
when the frame has no transparent index, fills what the first frame does not cover with
palette colour 0, takes a frame that states no disposal as disposing like the one before, and
grows its canvas to hold a frame placed past the logical screen, where browsers clip later
frames to the screen (the first too, in Firefox: :func:`clipped_screen`). Each GIF frame's
rectangle is decoded alone; the canvas is kept here, in 8-bit RGBA."""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import BinaryIO

from PIL import Image

from .errors import DamagedImageError
from .pixelmodes import stored_mode

_SOURCE, _OVER = 0, 1  # APNG's blend_op: the frame replaces its rectangle, or goes over it
_BACKGROUND, _PREVIOUS = 1, 2  # APNG's dispose_op: clear the rectangle, or put it back
_EIGHT_BITS = ("1", "L", "LA", "P", "RGB", "RGBA")  # Pillow's modes of 8-bit APNGs
Box = tuple[int, int, int, int]


class _Canvas:
    """A canvas of ``im``'s shown size (:func:`shown_size`), transparent at first, the frame drawn
    last (``done``) and how it is undone; shown grey where ``grey``, with an alpha where
    ``alpha`` or it shows through."""

    def __init__(self, im: Image.Image, grey: bool = False, alpha: bool = False) -> None:
        self.im, self.grey, self.alpha = im, grey, alpha
        self.canvas = Image.new("RGBA", shown_size(im), (0, 0, 0, 0))
        self.done = -1
        self.undo: tuple[Box, Image.Image | None] | None = None

    def _dispose(self, box: Box, clear: bool, restore: bool) -> None:
        """The last frame's disposal done, and that of the next, drawn in ``box``, kept: its
        rectangle cleared to transparent after it (``clear``), or what it covers put back
        (``restore``)."""
        if self.undo is not None:
            where, saved = self.undo
            self.canvas.paste(saved if saved is not None else (0, 0, 0, 0), where)
        saved = self.canvas.crop(box) if restore else None
        self.undo = (box, saved) if clear or restore else None

    def _drawn_to(self, k: int, first: int = 0) -> str:
        """Every frame from ``first`` up to ``k`` drawn that is not yet (frames are asked for in
        order); the stored mode of the last (:func:`.stored_mode`, "" where not known)."""
        if k <= self.done:
            raise ValueError(f"frame {k} asked for after frame {self.done}")
        stored = ""
        for n in range(max(self.done + 1, first), k + 1):
            stored = self._draw(n)
            self.done = n
        return stored

    def _draw(self, k: int) -> str:
        """Frame ``k`` drawn on the canvas after the last one's disposal; its stored mode."""
        raise NotImplementedError

    def duration(self, k: int) -> float:
        """How long (ms) frame ``k``, the last asked for, shows."""
        return self.im.info.get("duration", 0)

    def _shown(self) -> Image.Image:
        """The canvas in the file's kind of pixels."""
        shown = self.canvas.convert("LA") if self.grey else self.canvas.copy()
        if not self.alpha and shown.getextrema()[-1][0] == 255:
            return shown.convert(shown.mode[:-1])
        return shown


class ApngCanvas(_Canvas):
    """The frames of an open APNG, each as a viewer shows it, asked for in order."""

    def __init__(self, im: Image.Image) -> None:
        super().__init__(im, grey=im.mode in ("1", "L", "LA"),
                         alpha=im.mode in ("LA", "RGBA") or "transparency" in im.info)
        self.start = int(bool(im.info.get("default_image")))  # the still before the frames

    def frame(self, k: int) -> tuple[Image.Image, str]:
        """Frame ``k`` as shown and how the file stores its pixels (:func:`.stored_mode`)."""
        if k < self.start:  # the still outside the animation, shown alone
            return pillow_frame(self.im, k)
        stored = self._drawn_to(k, self.start)
        return self._shown(), stored

    def _draw(self, k: int) -> str:
        """Frame ``k`` drawn on the canvas after the last one's disposal; its stored mode."""
        im = self.im
        im.seek(k)
        stored = stored_mode(im)
        blend, dispose = im.info.get("blend", _SOURCE), im.info.get("disposal", 0)
        box = tuple(int(v) for v in im.info.get("bbox", (0, 0, *im.size)))
        im.blend_op = _SOURCE  # Pillow leaves the rectangle as the frame's own pixels
        im.load()
        rectangle = im.crop(box).convert("RGBA")
        if dispose == _PREVIOUS and k == self.start:  # nothing before: as background
            dispose = _BACKGROUND
        self._dispose(box, dispose == _BACKGROUND, dispose == _PREVIOUS)
        if blend == _OVER:
            self.canvas.alpha_composite(rectangle, box[:2])
        else:
            self.canvas.paste(rectangle, box[:2])
        return stored


@dataclass
class _GifFrame:
    """One image of a GIF as its blocks state it: its rectangle, the palette it is drawn with
    (local, else the global one), its transparent index, disposal and duration (ms, 0 where no
    graphic control states one, as Pillow reads it), and its image data (the LZW code size and
    sub-blocks, as stored)."""

    box: Box
    palette: bytes
    transparent: int | None
    disposal: int
    duration: int
    interlaced: bool
    data: bytes


def _sub_blocks(f: BinaryIO) -> bytes:
    """The sub-blocks at ``f`` as stored, their terminator included."""
    out = bytearray()
    while (size := f.read(1)) and size != b"\0":
        out += size + f.read(size[0])
    return bytes(out + b"\0")


def gif_frames(f: BinaryIO) -> list[_GifFrame]:
    """The images of the GIF ``f`` in order, read from its blocks (no pixel decoded) as Pillow
    reads them; those before the end of a file cut short (Pillow refuses the rest)."""
    f.seek(6)
    frames: list[_GifFrame] = []
    try:
        _, _, packed, _, _ = struct.unpack("<HHBBB", f.read(7))
        table = f.read(3 << ((packed & 7) + 1)) if packed & 0x80 else b""
        transparent, disposal, duration = None, 0, 0
        while (kind := f.read(1)) not in (b"", b"\x3b"):
            if kind == b"\x21":
                label, body = f.read(1), _sub_blocks(f)
                if label == b"\xf9" and len(body) >= 5:  # graphic control: for the next image
                    flags, disposal = body[1], body[1] >> 2 & 7
                    transparent = body[4] if flags & 1 else None
                    duration = 10 * int.from_bytes(body[2:4], "little")
            elif kind == b"\x2c":
                x, y, w, h, flags = struct.unpack("<HHHHB", f.read(9))
                local = f.read(3 << ((flags & 7) + 1)) if flags & 0x80 else b""
                data = f.read(1) + _sub_blocks(f)
                frames.append(_GifFrame((x, y, x + w, y + h), local or table, transparent,
                                        disposal, duration, bool(flags & 0x40), data))
                transparent, disposal, duration = None, 0, 0
            # any other byte is skipped, as Pillow skips it: the frames are those it counts
    except struct.error:  # cut short in a header
        pass
    return frames


def _on(box: Box, size: tuple[int, int]) -> Box:
    """The part of ``box`` on a canvas of ``size`` (empty where it lies past it)."""
    x0, y0 = min(box[0], size[0]), min(box[1], size[1])
    return x0, y0, max(x0, min(box[2], size[0])), max(y0, min(box[3], size[1]))


def _gif_rectangle(frame: _GifFrame, shown: Box) -> Image.Image:
    """The part ``shown`` (on the screen) of a GIF image's own pixels, RGBA: Pillow decodes a
    one-image GIF of them."""
    x0, y0, x1, y1 = frame.box
    palette = frame.palette or bytes(i // 3 for i in range(768))  # none: grey levels
    bits = max(1, (len(palette) // 3 - 1).bit_length())
    palette = palette.ljust(3 << bits, b"\0")
    control = b"" if frame.transparent is None else \
        b"\x21\xf9\x04\x01\0\0" + bytes([frame.transparent]) + b"\0"
    one = (b"GIF89a" + struct.pack("<HHBBB", x1 - x0, y1 - y0, 0x80 | (bits - 1), 0, 0)
           + palette + control + b"\x2c" + struct.pack("<HHHHB", 0, 0, x1 - x0, y1 - y0,
                                                       0x40 if frame.interlaced else 0)
           + frame.data + b"\x3b")
    with Image.open(io.BytesIO(one)) as im:
        return im.crop((shown[0] - x0, shown[1] - y0, shown[2] - x0, shown[3] - y0)) \
            .convert("RGBA")


class GifCanvas(_Canvas):
    """The frames of an open GIF, each as a viewer shows it, asked for in order."""

    def __init__(self, im: Image.Image, f: BinaryIO) -> None:
        super().__init__(im)
        where = f.tell()
        try:
            self.frames = gif_frames(f)
        finally:
            f.seek(where)  # Pillow's place in the file
        if self.frames and (shown := clipped_screen(im)) is not None:  # the first in its corner
            x0, y0, x1, y1 = self.frames[0].box
            self.frames[0].box = (x0 - shown[0], y0 - shown[1], x1 - shown[0], y1 - shown[1])

    def frame(self, k: int) -> tuple[Image.Image, str]:
        """Frame ``k`` as shown (RGB where opaque, else RGBA), and an empty stored mode. Pillow
        does not read it in ``im``: it would grow its canvas to hold a frame placed far outside
        the screen, and decode every frame on it (a 176-byte GIF took 31 s and 3.8 GB); each
        frame's own rectangle is decoded alone, with Pillow's checks (its pixel limit, damage)."""
        if k >= len(self.frames):
            raise DamagedImageError(f"GIF image {k + 1} not found")
        self._drawn_to(k)
        return self._shown(), ""

    def duration(self, k: int) -> float:
        """How long (ms) frame ``k`` shows, as its graphic control states."""
        return self.frames[k].duration

    def _draw(self, k: int) -> str:
        """Image ``k`` drawn (its transparent pixels leave the canvas) after the last one's
        disposal: 2 clears its rectangle to transparent, 3 puts back what it covered. Only its
        part on the screen is kept (what it covers of a 16x16 screen, not a copy of 20000x20000
        pixels to put back)."""
        frame = self.frames[k]
        shown = _on(frame.box, self.canvas.size)
        self._dispose(shown, frame.disposal == 2, frame.disposal == 3)
        rectangle = _gif_rectangle(frame, shown)
        self.canvas.paste(rectangle, shown[:2], rectangle)
        return ""


def shown_size(im: Image.Image) -> tuple[int, int]:
    """The (width, height) a viewer shows ``im`` at (opened, not loaded): its
    :func:`clipped_screen`'s, else ``im.size``."""
    box = clipped_screen(im)
    return im.size if box is None else (box[2] - box[0], box[3] - box[1])


def clipped_screen(im: Image.Image) -> Box | None:
    """The part of Pillow's canvas a viewer shows of ``im`` (opened, not loaded) where it is a
    GIF's that Pillow has grown past its logical screen to hold the first frame (a 3 KB file
    with a frame at y = 65535 became a 17x65535 image, a minute to upscale, all but a strip
    transparent); None otherwise. That is the screen, or where the first frame is itself larger
    than the screen (a broken encoder's 0x0 screen) the frame's own rectangle, which Firefox
    takes as the screen, the frame in its corner (Chrome, as Pillow, grows the screen to the
    frame's far corner: the same strip for a frame one row taller than its screen). Every later
    frame is clipped to it, as browsers clip them, rather than refused."""
    if im.format != "GIF" or im.fp is None or len(im.tile) != 1:
        return None
    where = im.fp.tell()
    try:
        im.fp.seek(6)
        screen = struct.unpack("<HH", im.fp.read(4))
    finally:
        im.fp.seek(where)  # Pillow's place in the file
    first = tuple(int(v) for v in im.tile[0].extents)
    larger = first[2] - first[0] > screen[0] or first[3] - first[1] > screen[1]
    shown = first if larger else (0, 0, *screen)
    return None if shown == (0, 0, *im.size) else shown


def bare_gif_screen(im: Image.Image) -> Box | None:
    """The rectangle of the first image of ``im`` (opened, not loaded) where it is a GIF's that
    leaves part of the screen bare and has no transparent index (Pillow fills the rest with
    palette colour 0; browsers show it transparent); None otherwise."""
    if im.format != "GIF" or "transparency" in im.info or len(im.tile) != 1:
        return None
    box = tuple(int(v) for v in im.tile[0].extents)
    return None if box == (clipped_screen(im) or (0, 0, *im.size)) else box


def with_bare_screen(im: Image.Image, box: Box) -> Image.Image:
    """``im``, loaded, transparent outside ``box``, as a GIF's bare screen is shown."""
    shown = im.convert("LA" if im.mode == "L" else "RGBA")
    alpha = Image.new("L", im.size, 0)
    alpha.paste(255, box)
    shown.putalpha(alpha)
    return shown


def behind_default_image(im: Image.Image) -> bool:
    """Whether ``im`` is an animated PNG whose first image is a default image outside the
    animation (what a viewer without APNG shows, often a "not supported" picture)."""
    return im.format == "PNG" and bool(im.info.get("default_image")) and \
        getattr(im, "n_frames", 1) > 1


def pillow_frame(im: Image.Image, k: int) -> tuple[Image.Image, str]:
    """Frame ``k`` of ``im`` as Pillow composites it, and how the file stores its pixels
    (:func:`.stored_mode`, read before loading clears the tiles)."""
    im.seek(k)
    stored = stored_mode(im)
    im.load()
    return im, stored


def first_animation_frame(im: Image.Image, f: BinaryIO, stored: str,
                          notes: list[str]) -> tuple[Image.Image, str]:
    """The first frame of ``im``'s animation (:func:`behind_default_image`), read from ``f``, as a
    browser shows it, and how the file stores its pixels; where that frame cannot be read (a
    file cut short), the default image as it is (``stored``), noted."""
    default = im.copy()  # a failed seek can leave ``im`` half-way to the frame
    try:
        canvas = frame_canvas(im, f)
        return canvas.frame(1) if canvas is not None else pillow_frame(im, 1)
    except Exception:  # noqa: BLE001 - Pillow's ways to say a frame is damaged or cut short
        notes.append("its animation is damaged or cut short: the default image (what viewers "
                     "without APNG show) was upscaled")
        return default, stored


Canvas = ApngCanvas | GifCanvas


def frame_canvas(im: Image.Image, f: BinaryIO) -> Canvas | None:
    """The canvas for the frames of ``im``, an animation read from ``f``, where Pillow's differs
    from a browser's: an 8-bit animated PNG, a GIF; None otherwise (WebP and AVIF, whose frames
    Pillow has composited, and 16-bit grey APNG, which Pillow composites at 16 bits)."""
    if im.format == "GIF":
        return GifCanvas(im, f)
    return ApngCanvas(im) if im.format == "PNG" and im.mode in _EIGHT_BITS else None
