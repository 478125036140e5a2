"""The DRCN loader's IS_CHANGED: ComfyUI reuses a node's output while this stays the same, so a
weights file written anew under its name must change it (fakes from test_comfyui_nodes)."""

from __future__ import annotations

import math
import os
import types
from pathlib import Path

from helpers import seeded_drcn
from safetensors.torch import save_file
from test_comfyui_nodes import PKG, fake_folder_paths  # noqa: F401 (a fixture)

LOADER = PKG.NODE_CLASS_MAPPINGS["DRCNModelLoader"]


def _save(path: Path, features: int) -> None:
    model = seeded_drcn(features=features)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


def test_a_weights_file_written_anew_is_loaded_again(
        tmp_path: Path, fake_folder_paths: types.ModuleType) -> None:  # noqa: F811
    folder = tmp_path / "models" / "drcn"
    folder.mkdir(parents=True)
    _save(folder / "mine.safetensors", 8)
    LOADER.INPUT_TYPES()  # as ComfyUI lists the models first: models/drcn registered
    first = LOADER.IS_CHANGED("mine.safetensors")
    assert LOADER.IS_CHANGED("mine.safetensors") == first  # unchanged: the cached model stays
    _save(folder / "mine.safetensors", 12)  # trained further, saved under the same name
    os.utime(folder / "mine.safetensors", ns=(1, 1))  # a time the first one did not have
    again = LOADER.IS_CHANGED("mine.safetensors")
    assert again != first
    (model,) = LOADER().load("mine.safetensors")
    assert model.features == 12
    pasted = LOADER.IS_CHANGED("drcn-lite", f'"{folder / "mine.safetensors"}"')
    _save(folder / "mine.safetensors", 8)
    assert LOADER.IS_CHANGED("drcn-lite", str(folder / "mine.safetensors")) != pasted


def test_a_shipped_name_or_a_hub_spec_does_not_follow_local_files(
        tmp_path: Path, fake_folder_paths: types.ModuleType) -> None:  # noqa: F811
    """Only the file a choice loads counts: rewriting another one reloads nothing."""
    folder = tmp_path / "models" / "drcn"
    folder.mkdir(parents=True)
    _save(folder / "mine.safetensors", 8)
    LOADER.INPUT_TYPES()
    choices = [("drcn-lite",), ("drcn-lite", "hf:someone/drcn"), ("missing.safetensors",)]
    before = [LOADER.IS_CHANGED(*args) for args in choices]
    _save(folder / "mine.safetensors", 12)
    os.utime(folder / "mine.safetensors", ns=(1, 1))
    assert [LOADER.IS_CHANGED(*args) for args in choices] == before
    assert LOADER.IS_CHANGED("drcn-lite") != LOADER.IS_CHANGED("drcn-lite-photo")
    assert LOADER.IS_CHANGED("drcn-lite", denoise=0.5) != LOADER.IS_CHANGED("drcn-lite")


def test_a_choice_wired_from_another_node_reloads_without_a_warning(
        tmp_path: Path, fake_folder_paths: types.ModuleType) -> None:  # noqa: F811
    """ComfyUI calls IS_CHANGED before running anything, with None for each input wired from
    another node's output (ComfyUI 0.3.64 execution.py, IsChangedCache.get and get_input_data's
    mark_missing); whatever it raises is logged as a WARNING and taken as NaN. A wired name or
    path names a file IS_CHANGED cannot see: NaN on purpose (reload each run), not an error."""
    (tmp_path / "models" / "drcn").mkdir(parents=True)
    LOADER.INPUT_TYPES()
    for args in [(None,), (None, ""), ("drcn-lite", None), (None, None, None)]:
        assert math.isnan(LOADER.IS_CHANGED(*args)), args
    pasted = str(tmp_path / "models" / "drcn" / "mine.safetensors")
    assert LOADER.IS_CHANGED(None, pasted) == LOADER.IS_CHANGED(None, pasted)  # the path rules
    assert LOADER.IS_CHANGED("drcn-lite", denoise=None) == LOADER.IS_CHANGED("drcn-lite", "", None)
