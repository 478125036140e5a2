"""Real-photo degradations of a low-resolution image: blur, sensor noise and JPEG.

A :class:`Recipe` is written as text, one step after another, applied in that order to the 8-bit
low-resolution image before the bicubic up-sampling: ``jpeg:75``, ``noise:5,jpeg:85``,
``blur:0.2-1.2@0.3,noise:1-10@0.5,jpeg:30-95,clean:0.15``. A value ``LO-HI`` is drawn uniformly
per image (a JPEG quality among the whole ones, each equally often), ``@P`` applies the step with
probability ``P``, and ``clean:P`` leaves a share ``P`` of the images untouched (training).
Colour images are compressed as colour JPEG with 4:2:0 chroma, the way cameras and the web store
them; the Y plane is taken afterwards.

Everything draws from a ``torch.Generator``, so a recipe and a seed give the same image every time.
"""

from __future__ import annotations

import io
import math
import re
import unicodedata
import zlib
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .errors import BadOptionError
from .imaging import image_y, imresize, modcrop, quantize8
from .scales import exact_text

StepKind = Literal["blur", "noise", "jpeg"]
_LIMITS: dict[str, tuple[float, float]] = {"blur": (0.0, 5.0), "noise": (0.0, 50.0),
                                           "jpeg": (1.0, 100.0)}


@dataclass(frozen=True)
class Step:
    """One degradation: blur sigma (LR pixels), noise sigma (0..255 levels) or JPEG quality."""

    kind: StepKind
    low: float
    high: float
    prob: float = 1.0

    def __str__(self) -> str:
        value = exact_text(self.low) if self.low == self.high else \
            f"{exact_text(self.low)}-{exact_text(self.high)}"
        return f"{self.kind}:{value}" + (f"@{exact_text(self.prob)}" if self.prob < 1 else "")


@dataclass(frozen=True)
class Recipe:
    """An ordered list of steps plus the share of images left clean."""

    steps: tuple[Step, ...]
    clean: float = 0.0

    @classmethod
    def parse(cls, text: str, option: str = "degrade") -> Recipe:
        """Read ``kind:value[@prob],...``; raises :class:`BadOptionError` for ``option`` with the
        reason."""
        steps, clean, clean_given = [], 0.0, False
        for part in (p.strip() for p in text.split(",")):
            kind, sep, rest = part.partition(":")
            kind = kind.strip().lower()
            if not sep or not rest:
                raise _bad(part, option, "write kind:value, e.g. jpeg:75")
            if kind == "clean":
                if clean_given:
                    raise _bad(part, option, "the clean share is given twice; give it once")
                clean, clean_given = _number(rest, part, option), True
                if not 0 <= clean <= 1:
                    raise _bad(part, option, "the clean share must be in 0..1")
                continue
            if kind not in _LIMITS:
                raise _bad(part, option, "use blur, noise, jpeg or clean")
            value, at, prob_text = rest.partition("@")
            # The range's dash: not a leading sign, not an exponent's sign (1e-3).
            dash = next((i for i in range(1, len(value))
                         if value[i] == "-" and value[i - 1] not in "eE"), -1)
            low = _number(value if dash < 0 else value[:dash], part, option)
            high = low if dash < 0 else _number(value[dash + 1:], part, option)
            prob = _number(prob_text, part, option) if at else 1.0
            lo_lim, hi_lim = _LIMITS[kind]
            if not lo_lim <= low <= high <= hi_lim:
                raise _bad(part, option, f"{kind} takes values from {lo_lim:g} to {hi_lim:g}, "
                           "low before high")
            if kind == "jpeg" and not (low.is_integer() and high.is_integer()):
                raise _bad(part, option, "JPEG qualities are whole numbers")
            if not 0 < prob <= 1:
                raise _bad(part, option, "the probability must be in (0, 1]")
            steps.append(Step(kind, low, high, prob))  # type: ignore[arg-type]
        if not steps:
            raise BadOptionError(f"degradation {text!r} has no blur, noise or jpeg step",
                                 option=option)
        return cls(tuple(steps), clean)

    def __str__(self) -> str:
        clean = [f"clean:{exact_text(self.clean)}"] if self.clean else []
        return ",".join([str(s) for s in self.steps] + clean)

    def apply(self, lr: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Degrade an 8-bit image ``[C, H, W]`` or ``[H, W]`` (0..255 floats); same shape back."""
        return self.draw(lr, generator)[0]

    def draw(self, lr: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, bool]:
        """:meth:`apply`, and whether the draw left the image clean (no step applied)."""
        if self.clean and _uniform(generator) < self.clean:
            return lr, True
        clean = True
        for step in self.steps:
            if step.prob < 1 and _uniform(generator) >= step.prob:
                continue
            clean = False
            u = _uniform(generator)
            if step.kind == "jpeg":  # each whole quality of the range equally often
                lr = jpeg(lr, int(step.low + (step.high - step.low + 1) * u))
                continue
            sigma = step.low + (step.high - step.low) * u
            if step.kind == "blur":
                lr = gaussian_blur(lr, sigma)
            else:
                noise = torch.randn(lr.shape, generator=generator, dtype=torch.float64)
                lr = quantize8(lr + sigma * noise.to(lr.dtype))
        return lr, clean


def _bad(part: str, option: str, reason: str) -> BadOptionError:
    return BadOptionError(f"degradation step {part!r}: {reason}", option=option)


# A decimal in ASCII digits, with an optional sign and exponent; float() alone would also take
# 7_5, spaces, other scripts' digits, inf and nan, and a typo would pass as another number.
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _number(text: str, part: str, option: str) -> float:
    if not _DECIMAL.fullmatch(text):
        raise _bad(part, option, f"{text!r} is not a number (write digits, e.g. 75 or 0.5)")
    return float(text)  # one too large for a float is inf, which every range check refuses


def _uniform(generator: torch.Generator) -> float:
    return float(torch.rand((), generator=generator, dtype=torch.float64))


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with mirrored borders, rounded back to 8-bit levels."""
    if sigma <= 0:
        return image
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = (k / k.sum()).to(image.dtype)
    planes = image.reshape(-1, 1, *image.shape[-2:])
    pad = min(radius, planes.shape[-1] - 1, planes.shape[-2] - 1)
    if pad < radius:  # images smaller than the kernel: trim it to what reflection allows
        k = k[radius - pad: radius + pad + 1]
        k = k / k.sum()
    planes = F.conv2d(F.pad(planes, (pad, pad, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    planes = F.conv2d(F.pad(planes, (0, 0, pad, pad), mode="reflect"), k.view(1, 1, -1, 1))
    return quantize8(planes.reshape(image.shape))


def jpeg(image: torch.Tensor, quality: int) -> torch.Tensor:
    """Round-trip through Pillow's JPEG at ``quality``; colour with 4:2:0 chroma subsampling."""
    a = image.round().clamp(0, 255).to(torch.uint8).cpu().numpy()
    colour = a.ndim == 3
    pil = Image.fromarray(np.ascontiguousarray(a.transpose(1, 2, 0)) if colour else a,
                          "RGB" if colour else "L")
    buf = io.BytesIO()
    pil.save(buf, "JPEG", quality=int(quality), subsampling=2 if colour else 0)
    buf.seek(0)
    with Image.open(buf) as im:
        out = torch.from_numpy(np.array(im)).to(image.dtype)
    return (out.permute(2, 0, 1) if colour else out).to(image.device)


def seed_for(name: str, scale: int) -> int:
    """A stable per-image seed, so every run degrades each test image the same way: the name in
    its composed Unicode form (macOS's HFS+ decomposes accents), a name that is not UTF-8 by its
    bytes."""
    name = unicodedata.normalize("NFC", name)
    # the "|0" keeps the draws behind the published degraded scores
    return zlib.crc32(f"{name}|x{scale}|0".encode(errors="surrogateescape"))


def degraded_pair(image: torch.Tensor, scale: int, recipe: Recipe,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(HR Y, ILR Y, clean), 0..255, from an 8-bit image: shrink in colour, degrade, take Y,
    enlarge; ``clean`` says the draw left the low-resolution image untouched.

    Shrinking and degrading the colour image (not its Y) is what a camera's JPEG does; for a
    grey plane this is the protocol's pair with the degradation between its two resizes.
    """
    hr = modcrop(image, scale)
    size = (hr.shape[-2] // scale, hr.shape[-1] // scale)
    lr, clean = recipe.draw(quantize8(imresize(hr, size=size)), generator)
    ilr = quantize8(imresize(image_y(lr), size=tuple(hr.shape[-2:])))
    return image_y(hr), ilr, clean
