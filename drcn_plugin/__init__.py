"""drcn-plugin: DRCN image super-resolution (Kim, Lee & Lee, CVPR 2016) for everyday image tools."""

from .engine import Upscaler
from .errors import Cancelled, DRCNError
from .hub import DEFAULT_MODEL, SHIPPED, load_model
from .model import DRCN

__all__ = ["DRCN", "Upscaler", "load_model", "DRCNError", "Cancelled", "SHIPPED", "DEFAULT_MODEL"]
__version__ = "0.1.0"
