"""How big an upscaled image should be (a scale factor, an exact width and/or height, or a long
edge), and at which size the network runs for it. The one rule the CLI, the ComfyUI node, the
GIMP worker and the engine share."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .errors import BadOptionError
from .scales import MAX_SCALE, check_scale, scaled_length


def size_text(width: int, height: int) -> str:
    """``WxH`` for a message, or 'huge' when a side has 13 digits or more: Python cannot print an
    int of over 4300 digits (a pasted run of 9s, or the side kept in proportion to one), and a
    line of digits says nothing more."""
    return f"{width}x{height}" if max(width, height) < 10**12 else "huge"


def output_size(height: int, width: int, scale: float | None = None,
                size: tuple[int, int] | None = None) -> tuple[int, int]:
    """Output (height, width): input x scale, halves rounded up (:func:`.scales.scaled_length`),
    or the explicit size; refuses bad values."""
    if size is not None and scale is not None:
        raise BadOptionError("give a scale factor or a target size, not both", option="size")
    if size is not None:
        sides = [whole_number(n) for n in size] if isinstance(size, tuple | list) else []
        if len(sides) != 2 or None in sides:
            raise BadOptionError(f"target size {size!r} is not (height, width) in whole pixels",
                                 option="size")
        oh, ow = sides
        if oh < height or ow < width:
            raise BadOptionError(f"target size {size_text(ow, oh)} is smaller than the input "
                                 f"{width}x{height}", option="size")
        if oh > height * MAX_SCALE or ow > width * MAX_SCALE:
            raise BadOptionError(f"target size {size_text(ow, oh)} is more than {MAX_SCALE:g}x "
                                 f"the input {width}x{height}", option="size")
        return oh, ow
    if scale is None:
        raise BadOptionError("give a scale factor or a target size", option="scale")
    scale = check_scale(scale)
    return scaled_length(height, scale), scaled_length(width, scale)


def whole_number(value: object) -> int | None:
    """``value`` as an int when it is a whole number of at least 0 (a numpy integer or a float
    such as an API workflow's 2.0 too, not a bool), else None: the check behind every count."""
    if isinstance(value, float | np.floating) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        return None
    return int(value)


NETWORK_FACTORS = (2, 4)  # the whole factors the shipped models were trained at


def network_size(height: int, width: int, out_h: int, out_w: int) -> tuple[int, int]:
    """Where the network runs for an ``out_h x out_w`` result: on each side at the next whole
    factor up within ``NETWORK_FACTORS`` (x2.5 at x3, x1.5 at x2, x6 at x4), or at the one just
    under when the factor is at most 0.05 above it (x2.05 at x2, x2.06 at x3), and bicubic takes
    its result to the size. The shipped models, trained at x2-x4, score best so on Set5 + Set14
    (``benchmarks/scale_quality.py``): run at x1.5 or x6 itself, DRCN is no better than bicubic."""
    low, high = NETWORK_FACTORS
    return tuple(min(max(-((side - 20 * out) // (20 * side)), low), high) * side
                 for side, out in ((height, out_h), (width, out_w)))

# The names of the folders drcn upscale writes results to (``drcn-`` and a :meth:`TargetSize.tag`,
# after the input folder's name for a folder): a recursive scan passes over them.
RESULT_FOLDER = re.compile(r"(?:.+-)?drcn-(?:x\d+(?:\.\d+)?|w\d+|h\d+|\d+x\d+|long\d+)")


@dataclass(frozen=True)
class TargetSize:
    """A scale factor, or target pixels: width alone or height alone keep the aspect ratio, both
    give exactly width x height, ``long_edge`` sets the longer side. Zero means "not given"."""

    scale: float | None = None
    width: int = 0
    height: int = 0
    long_edge: int = 0

    def __post_init__(self) -> None:
        for name in ("width", "height", "long_edge"):
            value = getattr(self, name)
            if whole_number(value) is None:
                raise BadOptionError(f"target {name.replace('_', ' ')} must be a whole number "
                                     f"of pixels, got {value!r}", option=name)
            object.__setattr__(self, name, whole_number(value))
        if self.long_edge and (self.width or self.height):
            raise BadOptionError("give a long edge or a width/height, not both",
                                 option="long_edge")
        if self.scale is not None and self.exact:
            raise BadOptionError("give a scale factor or a target size (width, height or long "
                                 "edge), not both", option="scale")
        if self.scale is not None:
            object.__setattr__(self, "scale", check_scale(self.scale))

    @classmethod
    def of(cls, scale: float, width: int = 0, height: int = 0,
           long_edge: int = 0) -> TargetSize:
        """For hosts whose scale widget always has a value: any target given replaces it."""
        exact = bool(width or height or long_edge)
        return cls(None if exact else scale, width, height, long_edge)

    @classmethod
    def from_value(cls, value: TargetSize | float) -> TargetSize:
        """A ``TargetSize`` as is, or a plain scale factor wrapped in one."""
        return value if isinstance(value, TargetSize) else cls(scale=float(value))

    @property
    def exact(self) -> bool:
        """True when pixels were asked for rather than a factor."""
        return bool(self.width or self.height or self.long_edge)

    def resolve(self, height: int, width: int) -> tuple[int, int]:
        """The output (height, width) for an input of ``height x width``; refuses a target
        smaller than the input or beyond the engine's largest factor."""
        if not self.exact:
            return output_size(height, width, self.scale)
        oh, ow = self.height, self.width
        if self.long_edge:
            oh, ow = (0, self.long_edge) if width >= height else (self.long_edge, 0)
        if not oh:  # the other side keeps the aspect ratio, halves rounded up (exact integers)
            oh = max(1, (2 * height * ow + width) // (2 * width))
        if not ow:
            ow = max(1, (2 * width * oh + height) // (2 * height))
        return output_size(height, width, size=(oh, ow))

    def tag(self) -> str:
        """A short name for folders: ``x2.5``, ``w1000``, ``h500``, ``900x500``, ``long2048``."""
        if self.long_edge:
            return f"long{self.long_edge}"
        if self.width and self.height:
            return f"{self.width}x{self.height}"
        if self.width:
            return f"w{self.width}"
        if self.height:
            return f"h{self.height}"
        return f"x{self.scale:g}" if self.scale is not None else "x"
