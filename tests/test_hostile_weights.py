"""Hostile model specs and weights: each is a typed error (one line in the CLI), never a bare
exception from the OS, safetensors or torch, and never a misleading "not found"."""

from __future__ import annotations

import os
import re
from fractions import Fraction
from pathlib import Path

import pytest
import torch
from helpers import random_rgb, seeded_drcn
from safetensors.torch import save, save_file
from typer.testing import CliRunner

from drcn_plugin.cli import app
from drcn_plugin.errors import BadOptionError, ModelLoadError
from drcn_plugin.hub import load_denoised, load_model
from drcn_plugin.model import DRCN, interpolate


def _unreadable(path: Path) -> Path:
    """``path`` with every permission taken away (skips the test where that does not stop a
    read: root)."""
    path.chmod(0)
    if os.access(path, os.R_OK if path.is_file() else os.X_OK):
        path.chmod(0o700)
        pytest.skip("permissions do not stop this user (root)")
    return path


def test_unreadable_weights_say_so_not_missing(tmp_path: Path, no_network) -> None:
    """Said as unreadable, not missing: safetensors calls any file it cannot open "No such file
    or directory", and a folder that cannot be searched gives a bare PermissionError."""
    model = seeded_drcn()
    file = tmp_path / "w.safetensors"
    save_file(model.state_dict(), str(file))
    model.save_pretrained(tmp_path / "saved")
    model.save_pretrained(tmp_path / "locked")
    try:
        _unreadable(file)
        _unreadable(tmp_path / "saved" / "model.safetensors")
        _unreadable(tmp_path / "locked")
        for spec in (file, tmp_path / "saved", tmp_path / "locked",
                     tmp_path / "locked" / "model.safetensors"):
            with pytest.raises(ModelLoadError, match="Permission denied") as err:
                load_model(spec)
            assert "No such file" not in str(err.value) and "not found" not in str(err.value)
    finally:
        for path in (file, tmp_path / "saved" / "model.safetensors", tmp_path / "locked"):
            path.chmod(0o700)


def test_a_symlink_loop_is_named_as_one(tmp_path: Path, no_network) -> None:
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(ModelLoadError, match="cannot read .*a: Too many levels of symbolic links"):
        load_model(tmp_path / "a")
    random_rgb().save(tmp_path / "in.png")
    r = CliRunner().invoke(app, ["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "out"),
                                 "--model", str(tmp_path / "a")])
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and "symbolic links" in lines[0], r.output


@pytest.mark.parametrize(("typo", "meant"), [("drcn-lit", "drcn-lite"), ("Drcn-Lite", "drcn-lite"),
                                             ("drcn_lite_photo", "drcn-lite-photo")])
def test_a_misspelled_shipped_name_suggests_the_close_one(typo: str, meant: str,
                                                          no_network) -> None:
    with pytest.raises(ModelLoadError, match=rf"unknown model '{typo}' \(did you mean {meant}\?\)"):
        load_model(typo)


def test_a_run_folder_names_the_weights_file_it_holds(tmp_path: Path, no_network) -> None:
    """``--model runs/r1`` (a training run: NAME.safetensors beside its checkpoints) names the
    weights file to give, not only that a model folder needs config.json and model.safetensors."""
    save_file(seeded_drcn().state_dict(), str(tmp_path / "drcn-f8-d3-x3.safetensors"))
    with pytest.raises(ModelLoadError, match="it holds drcn-f8-d3-x3.safetensors: name the "):
        load_model(tmp_path)
    assert load_model(tmp_path / "drcn-f8-d3-x3.safetensors").features == 8


@pytest.mark.parametrize("protocol", [2, 5])
def test_a_pickled_checkpoint_is_named_as_one(tmp_path: Path, protocol: int) -> None:
    """torch.save's legacy format and plain pickles (a .pth, a .pt) are named as pickled
    checkpoints, not "header too large"."""
    path = tmp_path / "model.pth"
    torch.save(seeded_drcn().state_dict(), path, pickle_protocol=protocol,
               _use_new_zipfile_serialization=False)
    with pytest.raises(ModelLoadError, match="model.pth is a Python pickle .*, not .safetensors"):
        load_model(path)


def test_a_home_folder_of_no_user_is_not_found(no_network) -> None:
    """~nosuchuser is a model not found, where pathlib's expanduser raises RuntimeError (a
    traceback in the CLI)."""
    with pytest.raises(ModelLoadError, match="not found: ~no-such-user-drcn/w.safetensors"):
        load_model("~no-such-user-drcn/w.safetensors")


@pytest.mark.parametrize("spec", ["./my-run", "my-run/", "../my-run"])
def test_a_missing_path_written_as_one_is_not_found(spec: str, no_network) -> None:
    """``./my-run`` is a path however few names it has: not an "unknown model"."""
    with pytest.raises(ModelLoadError, match="not found: "):
        load_model(spec)


def test_a_hub_spec_with_nothing_after_the_at_is_refused(no_network) -> None:
    """``hf:a/b@$REV`` with REV unset must not quietly load the default branch."""
    with pytest.raises(ModelLoadError, match="bad Hub spec 'hf:a/b@'"):
        load_model("hf:a/b@")


@pytest.mark.parametrize("prefix", ["module.", "model."])
def test_a_wrapped_state_dict_names_its_prefix(tmp_path: Path, prefix: str) -> None:
    path = tmp_path / "wrapped.safetensors"
    save_file({prefix + k: v for k, v in seeded_drcn().state_dict().items()}, str(path))
    with pytest.raises(ModelLoadError, match=f"named {prefix}embed.0.weight, .*'{prefix}' prefix"):
        load_model(path)


@pytest.mark.parametrize(("tensor", "shape", "declared"), [("ensemble", (0,), "F=8, D=0"),
                                                           ("embed.0.weight", (0, 1, 3, 3),
                                                            "F=0, D=3")])
def test_a_file_declaring_no_features_or_no_recursions_says_so(
        tmp_path: Path, tensor: str, shape: tuple[int, ...], declared: str) -> None:
    path = tmp_path / "empty.safetensors"
    save_file(dict(seeded_drcn().state_dict(), **{tensor: torch.zeros(shape)}), str(path))
    with pytest.raises(ModelLoadError, match=f"declares {declared}: a DRCN has at least one"):
        load_model(path)


def test_blend_weights_and_specs_of_any_type_get_typed_errors() -> None:
    """A list spec (unhashable), a Fraction (torch.lerp refuses it), a huge int (overflows a
    float in the message) and a string (cannot be compared) each get a typed error."""
    with pytest.raises(ModelLoadError, match="not list"):
        load_denoised(0.5, ["drcn-lite"])
    with pytest.raises(BadOptionError, match="outside 0..1"):
        load_denoised(10**400)
    with pytest.raises(BadOptionError, match="blend weight '0.5' is not a number"):
        interpolate(seeded_drcn(), seeded_drcn(seed=1), "0.5")
    a, b = seeded_drcn(), seeded_drcn(seed=1)
    half = interpolate(a, b, Fraction(1, 2)).state_dict()
    assert all(torch.allclose(half[k], (v + b.state_dict()[k]) / 2)
               for k, v in a.state_dict().items())


@pytest.mark.parametrize("size", [0, 2.5, "8", True])
def test_a_drcn_of_a_size_that_is_not_a_whole_number_is_a_bad_option(size: object) -> None:
    with pytest.raises(BadOptionError, match="features must be a positive whole number"):
        DRCN(features=size, recursions=3)
    with pytest.raises(BadOptionError, match="recursions must be a positive whole number"):
        DRCN(features=8, recursions=size)


def test_weights_in_a_folder_whose_name_is_not_utf8_load(tmp_path: Path) -> None:
    folder = tmp_path / os.fsdecode(b"run\xe9")  # a training run's --out, say (Latin-1)
    folder.mkdir()
    path = folder / "w.safetensors"
    path.write_bytes(save(seeded_drcn().state_dict()))  # as a run exports (save_file takes UTF-8)
    assert torch.equal(load_model(str(path)).recursive.weight, seeded_drcn().recursive.weight)


def test_a_model_folder_whose_name_is_not_utf8_loads(tmp_path: Path) -> None:
    """A save_pretrained folder (or the Hub cache) under such a name is read as its file is."""
    folder = tmp_path / os.fsdecode(b"mod\xe8le")
    seeded_drcn().save_pretrained(folder)
    assert torch.equal(load_model(str(folder)).recursive.weight, seeded_drcn().recursive.weight)


@pytest.mark.parametrize(("content", "says"), [
    (lambda whole: b"", "the file is empty"),
    (lambda whole: b"\x89PNG\r\n\x1a\n" + bytes(64), "not .safetensors weights"),
    (lambda whole: whole[:100], "the file is damaged or cut short (100 bytes"),
    (lambda whole: whole[:-100], "the file is damaged or cut short"),
])
def test_an_unreadable_weights_file_says_what_it_is(tmp_path: Path, content, says: str) -> None:
    """safetensors' own words ("header too large", "incomplete metadata, file not fully
    covered") told a user nothing about an image, an empty file or a partial download."""
    whole = tmp_path / "whole.safetensors"
    save_file(seeded_drcn().state_dict(), str(whole))
    path = tmp_path / "w.safetensors"
    path.write_bytes(content(whole.read_bytes()))
    with pytest.raises(ModelLoadError, match=re.escape(f"cannot read weights file {path}: {says}")):
        load_model(path)
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "config.json").write_text('{"features": 8, "recursions": 3}')
    (folder / "model.safetensors").write_bytes(path.read_bytes())
    with pytest.raises(ModelLoadError, match=f"model.safetensors: {re.escape(says)}"):
        load_model(folder)


def test_a_model_folder_holding_a_torch_checkpoint_names_it(tmp_path: Path) -> None:
    """A torch.save file as model.safetensors: named as a checkpoint, as a weights file is."""
    (tmp_path / "config.json").write_text('{"features": 8, "recursions": 3}')
    torch.save(seeded_drcn().state_dict(), tmp_path / "model.safetensors")
    with pytest.raises(ModelLoadError, match=re.escape(
            "model.safetensors: it is a zip archive (as torch.save writes), not .safetensors "
            "weights")):
        load_model(tmp_path)
