"""The scale factors each use accepts, defined once for the engine and every front end.

Upscaling takes any factor from ``MIN_SCALE`` to ``MAX_SCALE`` (the network sees the bicubic
interpolation, so fractional factors work). Training and the evaluation protocol use integer
factors from ``MIN_TRAIN_SCALE`` to ``MAX_TRAIN_SCALE`` (the paper trains and scores x2, x3, x4).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

from .errors import BadOptionError

MIN_SCALE = 1.0
MAX_SCALE = 16.0
MIN_TRAIN_SCALE = 2
MAX_TRAIN_SCALE = 8


def scaled_length(length: int, scale: float) -> int:
    """A side (at least 1 px) times ``scale``, halves rounded up (Python's ``round`` rounds them
    to even, which would make 3 x 1.5 = 4 but 5 x 1.5 = 8). The product is first rounded to 9
    decimals, so a decimal factor's half is a half (50 x 1.15 is 57.49999999999999 in binary)."""
    return max(1, math.floor(round(length * scale, 9) + 0.5))


def as_float(value: float) -> float:
    """A real number as a float; one too large for a float (an int of 400 digits) as +-inf, so
    a range check refuses it instead of an OverflowError."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def exact_text(value: float) -> str:
    """A number as short as it reads back exactly (2.5, 75, 0.1234567), where ``:g`` would round
    it to six digits and name another; -0 is written 0."""
    short = f"{value + 0.0:g}"
    return short if float(short) == value else repr(value)


def check_scale(scale: float, lowest: float = MIN_SCALE) -> float:
    """An upscaling factor within ``lowest..MAX_SCALE`` as a Python float (a numpy scalar's
    own arithmetic would overflow or round sizes), or :class:`BadOptionError` (NaN too, and
    anything that is not a real number); a caller that refuses low factors names its range."""
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):  # a Fraction too
        raise BadOptionError(f"scale {scale!r} is not a number", option="scale")
    value = as_float(scale)
    if not lowest <= value <= MAX_SCALE:
        raise BadOptionError(f"scale {exact_text(value)} is out of range: use {lowest:g} to "
                             f"{MAX_SCALE:g}", option="scale")
    return value


def check_train_scales(scales: Iterable[int]) -> list[int]:
    """The integer protocol scales, or :class:`BadOptionError` naming the ``scale`` option."""
    scales = list(scales)
    if not scales or any(not MIN_TRAIN_SCALE <= s <= MAX_TRAIN_SCALE for s in scales):
        raise BadOptionError(f"scales must be integers from {MIN_TRAIN_SCALE} to "
                             f"{MAX_TRAIN_SCALE}", option="scale")
    return scales
