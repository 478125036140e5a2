"""ComfyUI nodes against what ComfyUI itself and its users hand them: its GPUs' precision rules
(fakes of ComfyUI's modules from test_comfyui_nodes)."""

from __future__ import annotations

import pytest
import torch
from test_comfyui_nodes import NODES, FakeComfy

from drcn_plugin.devices import pick_precision


def test_a_gpu_without_bf16_hardware_runs_in_fp16_as_comfyui_says(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A Tesla T4 (Colab's free GPU) or an RTX 20xx: ComfyUI's should_use_bf16 says no (compute
    capability under 8, comfy/model_management.py), yet ``torch.cuda.is_bf16_supported()``
    answers True there, as bf16 is emulated (slow; cuDNN has no bf16 convolutions below 8.0).
    The node leaves the choice to the engine, which must then pick fp16, not emulated bf16."""
    def is_bf16_supported(including_emulation: bool = True) -> bool:
        return including_emulation  # torch on compute capability 7.5

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    fake = FakeComfy().install(monkeypatch)
    fake.half.update(fp16=True, bf16=False)
    asked = NODES.engine_precision(fake.mm, "cuda:0")
    assert pick_precision(torch.device("cuda", 0), asked) == torch.float16

