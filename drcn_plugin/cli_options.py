"""The options the ``drcn`` commands share (``upscale``, ``eval``, ``compare``): one help and one
type each, so that every command describes a model, a device and a precision alike."""

from __future__ import annotations

from typing import Annotated

import typer

from .hub import SHIPPED

MODEL_HELP = f"{', '.join(SHIPPED)}, a .safetensors file, a model folder or hf:owner/name"
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps")]
PrecisionOpt = Annotated[str, typer.Option(help="auto, fp32, bf16 or fp16")]
