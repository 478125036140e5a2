"""drcn-plugin: DRCN image super-resolution (Kim, Lee & Lee, CVPR 2016) for everyday image tools.

The public API is re-exported here; everything else is reached through its module. Names load
on first use, so ``import drcn_plugin`` (and the ``drcn`` command's start) does not wait for
torch until something needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .engine import Upscaler
    from .errors import (
        BadImageError,
        BadOptionError,
        Cancelled,
        DRCNError,
        ModelLoadError,
        OutputExistsError,
        one_line,
    )
    from .hub import DEFAULT_MODEL, SHIPPED, load_model
    from .model import DRCN

_HOME = {"Upscaler": "engine", "DRCN": "model", "load_model": "hub", "SHIPPED": "hub",
         "DEFAULT_MODEL": "hub", "DRCNError": "errors", "BadOptionError": "errors",
         "BadImageError": "errors", "ModelLoadError": "errors", "OutputExistsError": "errors",
         "Cancelled": "errors", "one_line": "errors"}
__all__ = ["DRCN", "Upscaler", "load_model", "SHIPPED", "DEFAULT_MODEL", "DRCNError",
           "BadOptionError", "BadImageError", "ModelLoadError", "OutputExistsError", "Cancelled",
           "one_line"]
__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    if name in _HOME:
        return getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """The module's names and the public ones not loaded yet, for a REPL's completion."""
    return sorted({*globals(), *__all__})
