"""How big an upscaled image should be: a scale factor, an exact width and/or height, or a long
edge. The one rule the CLI, the ComfyUI node and the GIMP worker share."""

from __future__ import annotations

from dataclasses import dataclass

from .engine import output_size
from .errors import BadOptionError
from .scales import check_scale


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
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise BadOptionError(f"target {name.replace('_', ' ')} must be a whole number "
                                     f"of pixels, got {value!r}", option=name)
        if self.long_edge and (self.width or self.height):
            raise BadOptionError("give a long edge or a width/height, not both",
                                 option="long_edge")
        if self.scale is not None and self.exact:
            raise BadOptionError("give a scale factor or a target size (width, height or long "
                                 "edge), not both", option="scale")
        if self.scale is not None:
            check_scale(self.scale)

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
