"""An animated PNG's frames composited as its specification, and every browser, says, where
Pillow's own compositing differs: Pillow blends a frame "over" the canvas by pasting it through
its alpha, which turns opaque pixels under a half-transparent frame half-transparent and lets
a palette frame's half-transparent pixels replace what they cover, and it disposes a frame of
an RGB or grey APNG to opaque black where the canvas is transparent. Pillow decodes each
frame's rectangle; the canvas is kept here, in 8-bit RGBA."""

from __future__ import annotations

from PIL import Image

from .pixelmodes import stored_mode

_SOURCE, _OVER = 0, 1  # APNG's blend_op: the frame replaces its rectangle, or goes over it
_BACKGROUND, _PREVIOUS = 1, 2  # APNG's dispose_op: clear the rectangle, or put it back
_EIGHT_BITS = ("1", "L", "LA", "P", "RGB", "RGBA")  # Pillow's modes of 8-bit APNGs


class ApngCanvas:
    """The frames of an open APNG, each as a viewer shows it, asked for in order."""

    def __init__(self, im: Image.Image) -> None:
        self.im = im
        self.start = int(bool(im.info.get("default_image")))  # the still before the frames
        self.grey = im.mode in ("1", "L", "LA")
        self.alpha = im.mode in ("LA", "RGBA") or "transparency" in im.info
        self.canvas = Image.new("RGBA", im.size, (0, 0, 0, 0))
        self.done = -1  # the last frame drawn
        self.undo: tuple[tuple[int, int, int, int], Image.Image | None] | None = None

    def frame(self, k: int) -> tuple[Image.Image, str]:
        """Frame ``k`` as shown and how the file stores its pixels (:func:`.stored_mode`)."""
        if k < self.start:  # the still outside the animation, shown alone
            self.im.seek(k)
            stored = stored_mode(self.im)
            self.im.load()
            return self.im, stored
        if k <= self.done:
            raise ValueError(f"APNG frame {k} asked for after frame {self.done}")
        stored = ""
        for n in range(max(self.done + 1, self.start), k + 1):
            stored = self._draw(n)
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
        if self.undo is not None:  # the last frame's disposal
            where, saved = self.undo
            self.canvas.paste(saved if saved is not None else (0, 0, 0, 0), where)
        if dispose == _PREVIOUS and k == self.start:  # nothing before: as background
            dispose = _BACKGROUND
        saved = self.canvas.crop(box) if dispose == _PREVIOUS else None
        self.undo = (box, saved) if dispose in (_BACKGROUND, _PREVIOUS) else None
        if blend == _OVER:
            self.canvas.alpha_composite(rectangle, box[:2])
        else:
            self.canvas.paste(rectangle, box[:2])
        self.done = k
        return stored

    def _shown(self) -> Image.Image:
        """The canvas in the file's kind of pixels: grey stays grey, and an alpha is kept where
        the file has one or the canvas shows through."""
        shown = self.canvas.convert("LA") if self.grey else self.canvas.copy()
        if not self.alpha and shown.getextrema()[-1][0] == 255:
            return shown.convert(shown.mode[:-1])
        return shown


def apng_canvas(im: Image.Image) -> ApngCanvas | None:
    """The canvas for the frames of ``im``, an animation, where it is an 8-bit animated PNG; None
    otherwise (other formats, and 16-bit grey, which Pillow composites at 16 bits)."""
    return ApngCanvas(im) if im.format == "PNG" and im.mode in _EIGHT_BITS else None
