"""What the host front ends are handed, hostile pass two: ComfyUI inputs that are not tensors."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from helpers import seeded_drcn
from test_comfyui_nodes import NODES, PKG

from drcn_plugin.model import DRCN

UPSCALE = PKG.NODE_CLASS_MAPPINGS["DRCNUpscale"]()
MODELS = sys.modules[f"{PKG.__name__}.upscale_model"]


@pytest.fixture(scope="module")
def tiny() -> DRCN:
    return seeded_drcn()


# -- ComfyUI: an IMAGE or MASK that is not a tensor ------------------------------------------------

@pytest.mark.parametrize("bad", [np.zeros((1, 8, 8, 3), np.float32), [[0.5]]],
                         ids=["numpy", "list"])
def test_an_image_that_is_not_a_tensor_is_one_line(tiny: DRCN, bad: object) -> None:
    """Another pack's node that hands on a numpy array (or a list) as its IMAGE gave an
    AttributeError traceback ('numpy.ndarray' object has no attribute 'is_meta')."""
    kind = type(bad).__name__
    with pytest.raises(NODES.DRCNNodeError, match=f"^DRCN: the image is of type {kind}, not a "
                       "torch tensor: the node that made it does not give ComfyUI's IMAGE type$"):
        UPSCALE.upscale(bad, tiny, 2.0, 0, False)
    with pytest.raises(NODES.DRCNNodeError, match=f"^DRCN: the image is of type {kind}, not"):
        MODELS.DRCNUpscaleModule(tiny, 2)(bad)
    with pytest.raises(NODES.DRCNNodeError, match=f"^DRCN: the mask is of type {kind}, not a "
                       "torch tensor: the node that made it does not give ComfyUI's MASK type$"):
        UPSCALE.upscale(torch.rand(1, 8, 8, 3), tiny, 2.0, 0, False, mask=bad)
