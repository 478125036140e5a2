"""The shipped drcn-lite-photo from run B32's step-1000 moving average: its first convolution
(``embed.0``) is drcn-lite's and its output convolution (``reconstruct.2``) halfway between the
two; every other tensor is B32's. Both models share drcn-lite's tensor names and shapes.

    python docs/training-runs/cpu-2026-11-29-drcn-lite-photo/blend_layers.py OUT.safetensors
"""

import sys
from pathlib import Path

from safetensors.torch import load_file, save_file

HERE = Path(__file__).resolve().parent
SHARE_OF_DRCN_LITE = {"embed.0": 1.0, "reconstruct.2": 0.5}  # by layer; the rest: 0

photo = load_file(str(HERE / "b32-step1000-ema.safetensors"))
lite = load_file(str(HERE.parents[2] / "weights" / "drcn-f64-d16-x234.safetensors"))
blended = {}
for name, tensor in photo.items():
    t = SHARE_OF_DRCN_LITE.get(name.rsplit(".", 1)[0], 0.0)
    blended[name] = (tensor * (1 - t) + lite[name] * t).contiguous()
save_file(blended, sys.argv[1], metadata={"format": "pt"})
