"""Model specs: shipped names, local files and folders, an offline Hub cache, and clear errors."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import huggingface_hub.constants as hf_constants
import pytest
import torch
from helpers import dead_pid
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from drcn_plugin import hub, writing
from drcn_plugin.cli import app
from drcn_plugin.errors import DRCNError
from drcn_plugin.hub import DEFAULT_MODEL, SHIPPED, load_model, sha256_of, weights_dir
from drcn_plugin.model import DRCN

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def offline(monkeypatch, tmp_path, no_network) -> Path:
    """HF offline mode with an empty cache in tmp_path; returns the cache folder.

    huggingface_hub reads its environment once at import, so the constants are patched too.
    """
    cache = tmp_path / "hf-home" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(cache.parent))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    return cache


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return set(sa) == set(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


REFERENCE_MODELS = ("drcn-lite", "drcn")  # the checkpoints in ../shared/weights


def test_shipped_files_match_their_sha256_and_the_reference_files(reference_weights):
    assert DEFAULT_MODEL == "drcn-lite"
    assert set(REFERENCE_MODELS) <= set(SHIPPED)
    assert {(m.features, m.recursions) for m in SHIPPED.values()} == {(64, 16), (256, 16)}
    for m in SHIPPED.values():
        assert sha256_of(weights_dir() / m.filename) == m.sha256
        if m.name in REFERENCE_MODELS:
            assert sha256_of(reference_weights / m.filename) == m.sha256


@pytest.mark.parametrize("name", list(SHIPPED))
def test_shipped_name_loads_offline(offline, reference_weights, name):
    model = load_model(name)
    m = SHIPPED[name]
    assert (model.features, model.recursions) == (m.features, m.recursions)
    assert not model.training
    folder = reference_weights if name in REFERENCE_MODELS else weights_dir()
    ref = load_file(str(folder / m.filename))
    assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())
    assert not any(offline.iterdir())  # nothing fetched or cached


def test_default_spec_is_the_lite_model(offline):
    assert load_model().features == 64


def test_local_safetensors_file(tmp_path, tiny_model, no_network):
    path = tmp_path / "mine.safetensors"
    save_file(tiny_model.state_dict(), str(path))
    model = load_model(str(path))
    assert (model.features, model.recursions) == (8, 3)
    assert same_weights(model, tiny_model)


def test_local_hub_style_folder(tmp_path, tiny_model, no_network):
    folder = tmp_path / "repo"
    tiny_model.save_pretrained(folder)
    assert {p.name for p in folder.iterdir()} >= {"config.json", "model.safetensors", "README.md"}
    assert json.loads((folder / "config.json").read_text()) == {"features": 8, "recursions": 3}
    model = load_model(str(folder))
    assert (model.features, model.recursions) == (8, 3)
    assert same_weights(model, tiny_model)
    x = torch.rand(1, 1, 10, 10)
    with torch.no_grad():
        assert torch.equal(model(x), tiny_model(x))


def test_a_failed_save_leaves_the_previous_model(tmp_path, tiny_model, monkeypatch):
    folder = tmp_path / "repo"
    tiny_model.save_pretrained(folder)
    card = (folder / "README.md").read_text() + "edited by hand"
    (folder / "README.md").write_text(card)

    def full_disk(self, directory: Path) -> None:
        (Path(directory) / "model.safetensors").write_bytes(b"cut")
        raise OSError(errno.ENOSPC, "No space left on device")

    other = DRCN(features=4, recursions=2)
    monkeypatch.setattr(DRCN, "_save_pretrained", full_disk)
    with pytest.raises(OSError):
        other.save_pretrained(folder)
    monkeypatch.undo()
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json",
                                                          "model.safetensors"]
    assert same_weights(load_model(str(folder)), tiny_model)
    other.save_pretrained(folder)  # a save that completes replaces the model, keeps the card
    assert same_weights(load_model(str(folder)), other)
    assert (folder / "README.md").read_text() == card


@pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")
def test_a_save_removes_what_killed_saves_left_and_nothing_else(tmp_path, tiny_model):
    """A SIGKILL leaves the hidden folder a save writes in; the next save into the folder removes
    it, but never a running save's (it holds its lock) nor anything that is not such a folder."""
    import fcntl

    folder = tmp_path / "repo"
    tiny_model.save_pretrained(folder)
    killed, running = (folder / f".saving-{dead_pid()}-{tag}" for tag in ("abcd1234", "efgh5678"))
    old, fresh = folder / ".saving-q1w2e3r4", folder / ".saving-t5y6u7i8"  # no lock: older code
    for d in (killed, running, old, fresh):
        d.mkdir()
    for d in (killed, running):
        (d / ".lock").touch()
    (killed / "config.json").write_text('{"features": 4, "recursions": 2}')
    os.utime(old, (time.time() - 2 * 3600,) * 2)  # unchanged for two hours
    (folder / ".saving-notes").write_text("a file, not a save's folder")
    (tmp_path / "elsewhere").mkdir()
    (folder / ".saving-link").symlink_to(tmp_path / "elsewhere")
    assert same_weights(load_model(str(folder)), tiny_model)  # the leftovers confuse no loader
    with open(running / ".lock", "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        tiny_model.save_pretrained(folder)
    assert sorted(p.name for p in folder.iterdir()) == sorted([
        ".saving-link", ".saving-notes", running.name, fresh.name, "README.md", "config.json",
        "model.safetensors"])
    assert (tmp_path / "elsewhere").is_dir() and same_weights(load_model(str(folder)), tiny_model)


@pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")
def test_a_temporary_folder_lives_as_long_as_its_writer(tmp_path):
    code = ("import sys, time; from pathlib import Path; from drcn_plugin.writing import "
            "temporary_folder\nwith temporary_folder(Path(sys.argv[1]), '.saving-') as d:\n"
            "    print(d, flush=True); time.sleep(60)")
    writer = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                              text=True)
    made = Path(writer.stdout.readline().strip())
    assert writing.clean_stale_folders(tmp_path, ".saving-") == 0 and made.is_dir()
    writer.kill()  # SIGKILL: no cleanup runs
    writer.wait()
    writer.stdout.close()
    assert made.is_dir() and writing.clean_stale_folders(tmp_path, ".saving-") == 1
    assert list(tmp_path.iterdir()) == []


def _fake_cache(cache: Path, source: Path, repo: str = "owner/name") -> None:
    """Lay a saved model folder out the way huggingface_hub caches a downloaded revision."""
    root = cache / ("models--" + repo.replace("/", "--"))
    snapshot = root / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(source / name, snapshot / name)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(COMMIT)


@pytest.mark.parametrize("spec", ["hf:owner/name", f"hf:owner/name@{COMMIT}",
                                  "hf:owner/name@main"])
def test_offline_hub_cache(offline, tmp_path, tiny_model, spec):
    tiny_model.save_pretrained(tmp_path / "saved")
    _fake_cache(offline, tmp_path / "saved")
    model = load_model(spec)
    assert (model.features, model.recursions) == (8, 3)
    assert same_weights(model, tiny_model)


@pytest.mark.parametrize("spec", ["hf:owner/unknown", "hf:owner/name@v9"])
def test_offline_unknown_repo_or_revision_names_the_spec(offline, tmp_path, tiny_model, spec):
    tiny_model.save_pretrained(tmp_path / "saved")
    _fake_cache(offline, tmp_path / "saved")
    with pytest.raises(DRCNError, match=spec) as err:
        load_model(spec)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("spec", ["hf:noslash", "hf:a/b/c", "hf:/name"])
def test_bad_hub_spec(offline, spec):
    with pytest.raises(DRCNError, match="bad Hub spec"):
        load_model(spec)


def test_a_path_that_is_neither_file_nor_folder(no_network):
    with pytest.raises(DRCNError, match="/dev/null is neither a weights file nor a model folder"):
        load_model("/dev/null")


def test_unknown_spec(no_network, tmp_path):
    with pytest.raises(DRCNError, match="unknown model 'nonexistent'"):
        load_model("nonexistent")
    with pytest.raises(DRCNError, match="not found: .*missing.safetensors .no such weights file"):
        load_model(str(tmp_path / "missing.safetensors"))
    with pytest.raises(DRCNError, match="not found: someone/drcn .* hf:owner/name"):
        load_model("someone/drcn")


@pytest.fixture
def lite_copy(tmp_path, monkeypatch) -> Path:
    """A private copy of the shipped weights folder, which load_model then uses."""
    folder = tmp_path / "weights"
    folder.mkdir()
    src = weights_dir() / SHIPPED["drcn-lite"].filename
    shutil.copy(src, folder / src.name)
    monkeypatch.setattr(hub, "weights_dir", lambda: folder)
    load_model("drcn-lite")  # the pristine copy loads
    return folder / src.name


def test_corrupted_shipped_weights(lite_copy):
    data = bytearray(lite_copy.read_bytes())
    data[-100] ^= 0x01  # one bit of one weight: still a valid safetensors file
    lite_copy.write_bytes(bytes(data))
    with pytest.raises(DRCNError, match="sha256"):
        load_model("drcn-lite")


def test_truncated_shipped_weights(lite_copy):
    lite_copy.write_bytes(lite_copy.read_bytes()[:5000])
    with pytest.raises(DRCNError, match="corrupted"):
        load_model("drcn-lite")


def test_missing_shipped_weights(lite_copy):
    lite_copy.unlink()
    with pytest.raises(DRCNError, match="not found"):
        load_model("drcn-lite")


def test_truncated_local_file(tmp_path, tiny_model):
    path = tmp_path / "cut.safetensors"
    save_file(tiny_model.state_dict(), str(path))
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(DRCNError, match="cannot read weights file"):
        load_model(str(path))


@pytest.mark.parametrize("drop", [None, "ensemble", "reconstruct.2.bias"])
def test_wrong_architecture_file(tmp_path, tiny_model, drop):
    sd = {"features.0.weight": torch.zeros(4, 3, 3, 3)} if drop is None else {
        k: v for k, v in tiny_model.state_dict().items() if k != drop}
    path = tmp_path / "other.safetensors"
    save_file(sd, str(path))
    with pytest.raises(DRCNError, match="does not hold DRCN weights"):
        load_model(str(path))


def test_a_small_file_declaring_a_huge_model_is_refused_before_allocating(tmp_path, tiny_model):
    # F = 10**6 from a 36 MB embed tensor would ask for 36 TB in the recursive conv.
    sd = dict(tiny_model.state_dict(), **{"embed.0.weight": torch.zeros(10**6, 1, 3, 3)})
    path = tmp_path / "huge.safetensors"
    save_file(sd, str(path))
    with pytest.raises(DRCNError, match=r"declares F=1000000, D=3: more than DRCN takes"):
        load_model(str(path))


def test_a_folder_declaring_a_huge_model_is_refused_before_allocating(tmp_path, tiny_model):
    folder = tmp_path / "repo"
    tiny_model.save_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({"features": 10**6, "recursions": 10**6}))
    with pytest.raises(DRCNError, match="declares F=1000000, D=1000000; the weights are F=8, D=3"):
        load_model(str(folder))


def test_folder_with_missing_tensor_is_refused(tmp_path, tiny_model):
    # from_pretrained loads non-strictly by default: a missing tensor must not become random init.
    folder = tmp_path / "repo"
    tiny_model.save_pretrained(folder)
    sd = load_file(str(folder / "model.safetensors"))
    del sd["ensemble"]
    save_file(sd, str(folder / "model.safetensors"))
    with pytest.raises(DRCNError, match="model folder .* does not hold DRCN weights"):
        load_model(str(folder))


def test_folder_whose_config_disagrees_with_the_weights(tmp_path, tiny_model):
    folder = tmp_path / "repo"
    tiny_model.save_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({"features": 16, "recursions": 3}))
    with pytest.raises(DRCNError, match="cannot load model folder"):
        load_model(str(folder))


@pytest.mark.parametrize("config", ["[1, 2]", "null", "{", "[" * 100_000])
def test_folder_whose_config_is_not_an_object(tmp_path, tiny_model, config, capsys):
    folder = tmp_path / "repo"
    tiny_model.save_pretrained(folder)
    (folder / "config.json").write_text(config)
    with pytest.raises(DRCNError, match="cannot load model folder"):
        load_model(str(folder))
    (folder / "config.json").write_text(json.dumps({"features": 8, "recursions": 3}))
    load_model(str(folder))
    assert capsys.readouterr().out == ""  # nothing printed over a command's own output


def test_hub_spec_never_loads_a_local_folder_of_that_name(offline, tmp_path, tiny_model,
                                                          monkeypatch):
    tiny_model.save_pretrained(tmp_path / "owner" / "name")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DRCNError, match="hf:owner/name: not in the local Hugging Face cache"):
        load_model("hf:owner/name")


def test_folder_without_weights(tmp_path, tiny_model):
    folder = tmp_path / "repo"
    tiny_model.save_pretrained(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(DRCNError, match="not a DRCN model folder"):
        load_model(str(folder))


def test_cli_unknown_model_is_one_line(set5, no_network):
    result = CliRunner().invoke(app, ["eval", "--model", "nonexistent", "--dataset", str(set5)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "nonexistent" in lines[0] and lines[0].startswith("error:")
    assert "Traceback" not in result.output


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex64])
def test_weights_that_are_not_floating_point_are_refused(tmp_path: Path, dtype: torch.dtype) -> None:
    """Integer, bool or complex tensors of the right shapes would be cast into the float weights
    without a word (garbage images): a file and a model folder are refused, naming a tensor."""
    from drcn_plugin.errors import ModelLoadError

    sd = {k: v.to(dtype) for k, v in DRCN(4, 2).state_dict().items()}
    save_file(sd, str(tmp_path / "w.safetensors"))
    DRCN(4, 2).save_pretrained(tmp_path / "folder")
    save_file(sd, str(tmp_path / "folder" / "model.safetensors"))
    for spec in (tmp_path / "w.safetensors", tmp_path / "folder"):
        with pytest.raises(ModelLoadError, match=r"does not hold DRCN weights \(embed\.0\.bias is "
                                                  r"\w+, not floating point\)"):
            load_model(str(spec))
    half = {k: v.half() for k, v in DRCN(4, 2).state_dict().items()}
    save_file(half, str(tmp_path / "half.safetensors"))
    assert load_model(str(tmp_path / "half.safetensors")).features == 4


def test_from_pretrained_checks_what_it_loads_as_load_model_does(offline, tmp_path, tiny_model,
                                                                 capsys, monkeypatch):
    """``from_pretrained`` is the checked folder and Hub loader, not the mixin's own, which
    builds the model from config.json before reading the weights (a config declaring F=200000
    asks for 1.4 TB), loads NaN weights without a word and raises torch's and
    huggingface_hub's exceptions."""
    from drcn_plugin.errors import ModelLoadError

    tiny_model.save_pretrained(tmp_path / "saved")
    _fake_cache(offline, tmp_path / "saved")
    for source in (tmp_path / "saved", str(tmp_path / "saved"), "owner/name"):
        assert same_weights(DRCN.from_pretrained(source), tiny_model)
    assert capsys.readouterr().out == ""  # not the mixin's "Loading weights from ..."
    with pytest.raises(ModelLoadError, match="owner/unknown: not in the local Hugging Face"):
        DRCN.from_pretrained("owner/unknown")
    with pytest.raises(ModelLoadError, match="not found: .*nowhere"):
        DRCN.from_pretrained(tmp_path / "nowhere")
    monkeypatch.chdir(tmp_path / "saved")  # "" (an unset variable) must not load this folder
    with pytest.raises(ModelLoadError, match="an empty path"):
        DRCN.from_pretrained("")
    (tmp_path / "saved" / "config.json").write_text(json.dumps({"features": 200_000,
                                                                "recursions": 3}))
    with pytest.raises(ModelLoadError, match="declares F=200000, D=3; the weights are F=8"):
        DRCN.from_pretrained(tmp_path / "saved")
    with torch.no_grad():
        tiny_model.ensemble[0] = float("nan")
    tiny_model.save_pretrained(tmp_path / "nan")
    with pytest.raises(ModelLoadError, match="NaN or infinite weights"):
        DRCN.from_pretrained(tmp_path / "nan")


def test_saving_to_an_empty_path_is_refused_not_the_current_folder(tmp_path, tiny_model,
                                                                   monkeypatch):
    from drcn_plugin.errors import BadOptionError

    monkeypatch.chdir(tmp_path)  # Path("") is ".": the files landed here
    with pytest.raises(BadOptionError, match="an empty path"):
        tiny_model.save_pretrained("")
    assert list(tmp_path.iterdir()) == []
