"""drcn-plugin: DRCN image super-resolution (Kim, Lee & Lee, CVPR 2016) for everyday image tools.

The public API is re-exported here; everything else is reached through its module.
"""

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

__all__ = ["DRCN", "Upscaler", "load_model", "SHIPPED", "DEFAULT_MODEL", "DRCNError",
           "BadOptionError", "BadImageError", "ModelLoadError", "OutputExistsError", "Cancelled",
           "one_line"]
__version__ = "0.1.0"
