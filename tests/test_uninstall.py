"""``drcn gimp uninstall`` and ``drcn comfyui uninstall``: what an install wrote goes, a folder
holding a user's own file is left whole, and a user's models and the package stay."""

from __future__ import annotations

import os
import shutil
import stat
import sys
from pathlib import Path

import pytest
from test_comfyui_install import _fake_comfyui
from test_install_failures import _users_folder_in
from typer.testing import CliRunner

from drcn_plugin.cli import app
from drcn_plugin.integrations import comfyui_install, gimp_install, owned

runner = CliRunner()


def test_gimp_uninstall_removes_only_an_install(tmp_path: Path) -> None:
    gimp = tmp_path / "GIMP 3"
    assert runner.invoke(app, ["gimp", "install", "--gimp-dir", str(gimp)]).exit_code == 0
    dest = gimp / "plug-ins" / gimp_install.PLUGIN
    (dest / "__pycache__").mkdir()  # what GIMP's Python writes when it loads the plug-in
    (dest / "__pycache__" / "drcn_worker_client.cpython-312.pyc").write_bytes(b"")
    mine = gimp / "plug-ins" / "other-plugin"
    mine.mkdir()
    r = runner.invoke(app, ["gimp", "uninstall", "--gimp-dir", str(gimp)])
    assert r.exit_code == 0 and f"removed {dest}" in r.output, r.output
    assert not dest.exists() and mine.is_dir()
    r = runner.invoke(app, ["gimp", "uninstall", "--gimp-dir", str(gimp)])
    assert r.exit_code == 0 and "no DRCN plug-in to remove" in r.output, r.output


def test_gimp_uninstall_keeps_a_folder_holding_a_users_file(tmp_path: Path) -> None:
    gimp_install.install(tmp_path)
    dest = tmp_path / "plug-ins" / gimp_install.PLUGIN
    (dest / "notes.txt").write_text("mine")
    r = runner.invoke(app, ["gimp", "uninstall", "--gimp-dir", str(tmp_path)])
    assert r.exit_code == 2 and "did not write (notes.txt)" in r.output, r.output
    assert (dest / "notes.txt").read_text() == "mine" and (dest / f"{gimp_install.PLUGIN}.py").is_file()


def test_comfyui_uninstall_keeps_models_and_foreign_folders(tmp_path: Path) -> None:
    comfy = tmp_path / "ComfyUI"
    (comfy / "custom_nodes").mkdir(parents=True)
    (comfy / "main.py").write_text("")
    (comfy / "models" / "drcn").mkdir(parents=True)
    (comfy / "models" / "drcn" / "mine.safetensors").write_bytes(b"weights")
    dest, _ = comfyui_install.link_nodes(comfy, copy=True)
    r = runner.invoke(app, ["comfyui", "uninstall", "--comfyui-dir", str(comfy)])
    assert r.exit_code == 0 and f"removed {dest}" in r.output and "models/drcn" in r.output
    assert not dest.exists() and (comfy / "models" / "drcn" / "mine.safetensors").is_file()
    r = runner.invoke(app, ["comfyui", "uninstall", "--comfyui-dir", str(comfy)])
    assert r.exit_code == 0 and "no DRCN nodes to remove" in r.output, r.output
    comfyui_install.link_nodes(comfy)  # a link: only the link goes, never what it points to
    source = comfyui_install.nodes_source()
    assert runner.invoke(app, ["comfyui", "uninstall", "--comfyui-dir", str(comfy)]).exit_code == 0
    assert not dest.is_symlink() and (source / "drcn_nodes.py").is_file()
    (dest / ".git").mkdir(parents=True)  # someone's clone of other nodes under that name
    r = runner.invoke(app, ["comfyui", "uninstall", "--comfyui-dir", str(comfy)])
    assert r.exit_code == 2 and "is not the DRCN nodes" in r.output and (dest / ".git").is_dir()
    r = runner.invoke(app, ["comfyui", "uninstall", "--comfyui-dir", str(tmp_path)])
    assert r.exit_code == 2 and "is not a ComfyUI folder" in r.output


def test_gimp_uninstall_goes_on_past_a_refused_folder(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder refused (a user's file in it) neither stops nor hides the other folders' removal."""
    folders = [tmp_path / rel for rel in (".config/GIMP/3.0",
                                          ".var/app/org.gimp.GIMP/config/GIMP/3.0")]
    monkeypatch.setattr(gimp_install.sys, "platform", "linux")
    monkeypatch.setattr(gimp_install.Path, "home", staticmethod(lambda: tmp_path))
    for var in ("GIMP3_DIRECTORY", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(var, raising=False)
    for folder in folders:
        gimp_install.install(folder)
    kept = folders[0] / "plug-ins" / gimp_install.PLUGIN
    (kept / "notes.txt").write_text("mine")
    r = runner.invoke(app, ["gimp", "uninstall"])
    gone = folders[1] / "plug-ins" / gimp_install.PLUGIN
    assert r.exit_code == 2 and "did not write (notes.txt)" in r.output, r.output
    assert f"removed {gone}" in " ".join(r.output.split()) and not gone.exists()
    assert (kept / "notes.txt").is_file() and not list(gone.parent.iterdir())  # nothing aside


def _comfyui_loads(custom_nodes: Path) -> list[str]:
    """What ComfyUI imports as node packs: every folder (hidden ones too) and .py file there but
    ``__pycache__`` and names ending in ``.disabled``."""
    return sorted(p.name for p in custom_nodes.iterdir() if p.name != "__pycache__"
                  and not p.name.endswith(".disabled") and (p.is_dir() or p.suffix == ".py"))


_rmtree = shutil.rmtree


def _rmtree_as_a_user(path: Path, *args: object, **kwargs: object) -> None:
    """shutil.rmtree as anyone but root sees it (the tests may run as root): a read-only folder
    that holds something stops it (with ignore_errors, silently, the tree left there)."""
    for top, dirs, files in os.walk(path):
        if (dirs or files) and not os.stat(top).st_mode & stat.S_IWUSR:
            if kwargs.get("ignore_errors"):
                return
            raise PermissionError(13, "Permission denied", top)
    _rmtree(path, *args, **kwargs)


def test_a_read_only_folder_in_an_install_does_not_leave_it_behind(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    comfy = _fake_comfyui(tmp_path / "Comfy UI")
    dest, _ = comfyui_install.link_nodes(comfy, copy=True)
    monkeypatch.setattr(shutil, "rmtree", _rmtree_as_a_user)
    (dest / "web").chmod(0o555)  # e.g. copied from a read-only medium
    comfyui_install.link_nodes(comfy, copy=True)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["comfyui-drcn"]
    (dest / "web" / "docs").chmod(0o555)
    assert comfyui_install.remove_nodes(comfy) == dest
    assert list(dest.parent.iterdir()) == []


@pytest.mark.parametrize("host", ["gimp", "comfyui"])
def test_a_read_only_folder_in_a_half_built_install_is_removed_by_the_next(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, host: str) -> None:
    """The hidden new folder of an install killed outright, its PID since reused by this one:
    the GIMP install's rmtree(ignore_errors=True) left it, then failed on it ("File exists")."""
    comfy = _fake_comfyui(tmp_path / "ComfyUI")
    place = tmp_path / "plug-ins" / gimp_install.PLUGIN if host == "gimp" \
        else comfy / "custom_nodes" / "comfyui-drcn"
    part = owned.beside(place, "part")
    (part / "sub").mkdir(parents=True)
    (part / "sub" / "x.py").write_text("")
    (part / "sub").chmod(0o555)
    monkeypatch.setattr(shutil, "rmtree", _rmtree_as_a_user)
    dest = gimp_install.install(tmp_path) if host == "gimp" \
        else comfyui_install.link_nodes(comfy, copy=True)[0]
    assert dest == place and not (dest / "sub").exists()
    assert sorted(p.name for p in dest.parent.iterdir()) == [dest.name]


def test_an_earlier_copy_that_cannot_be_removed_is_not_loaded_by_comfyui(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def busy(path: Path, *args: object, **kwargs: object) -> None:
        raise OSError(16, "Device or resource busy", str(path))  # e.g. a file open on Windows

    updated, removed = (_fake_comfyui(tmp_path / name) for name in ("updated", "removed"))
    for comfy in (updated, removed):
        comfyui_install.link_nodes(comfy, copy=True)
    monkeypatch.setattr(shutil, "rmtree", busy)
    dest, _ = comfyui_install.link_nodes(updated, copy=True)  # the earlier copy stays beside
    assert _comfyui_loads(dest.parent) == ["comfyui-drcn"]
    dest = comfyui_install.remove_nodes(removed)
    assert dest is not None and _comfyui_loads(dest.parent) == []


def test_an_unreadable_install_record_is_one_line_naming_it_once(tmp_path: Path) -> None:
    dest = gimp_install.install(tmp_path)
    (dest / ".drcn-installed").unlink()
    (dest / ".drcn-installed").mkdir()  # unreadable as a file (a permission error as a user)
    r = runner.invoke(app, ["gimp", "uninstall", "--gimp-dir", str(tmp_path)])
    assert r.exit_code == 2 and r.output.count("\n") == 1, r.output
    assert r.output.count(".drcn-installed") == 1 and "Is a directory" in r.output, r.output


def test_gimp_install_goes_on_past_a_refused_folder(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """GIMP 3.2's folder refused (a user's file in it) left 3.0's without the plug-in, after the
    command had said it was installing into each."""
    gimp = tmp_path / ".config" / "GIMP"
    refused = gimp / "3.2" / "plug-ins" / gimp_install.PLUGIN
    refused.mkdir(parents=True)
    (refused / "notes.txt").write_text("mine")
    (gimp / "3.0").mkdir()
    monkeypatch.setattr(gimp_install.sys, "platform", "linux")
    monkeypatch.setattr(gimp_install.Path, "home", staticmethod(lambda: tmp_path))
    for var in ("GIMP3_DIRECTORY", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(var, raising=False)
    r = runner.invoke(app, ["gimp", "install"])
    text = " ".join(r.output.split())
    assert r.exit_code == 2 and "did not write (notes.txt)" in text, r.output
    done = gimp / "3.0" / "plug-ins" / gimp_install.PLUGIN
    assert f"installed {done}" in text and "restart GIMP to load it" in text
    assert (done / gimp_install.CONFIG_NAME).is_file()
    assert sorted(p.name for p in refused.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("command", ["install", "uninstall"])
def test_a_gimp3_directory_too_long_is_one_line(tmp_path: Path, capsys, command: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Found while looking for the folders: the uninstall said 'cannot write to stdout'."""
    from drcn_plugin.cli import main

    monkeypatch.setenv("GIMP3_DIRECTORY", str(tmp_path / ("x" * 300)))
    monkeypatch.setattr(sys, "argv", ["drcn", "gimp", command])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1, err
    assert err.startswith("error: File name too long: "), err


@pytest.mark.parametrize("host", ["gimp", "comfyui"])
def test_uninstall_keeps_an_install_holding_a_folder_it_cannot_read(
        tmp_path: Path, host: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """os.walk skipped the folder, and the removal (which makes folders writable, and readable,
    first) took the user's files in it."""
    if host == "gimp":
        dest, given = gimp_install.install(tmp_path), tmp_path
    else:
        given = _fake_comfyui(tmp_path.resolve() / "ComfyUI")
        dest, _ = comfyui_install.link_nodes(given, copy=True)
    notes = _users_folder_in(dest, monkeypatch)
    r = runner.invoke(app, [host, "uninstall", f"--{host}-dir", str(given)])
    assert r.exit_code == 2 and r.output == f"error: cannot read {dest / 'mine'}: Permission " \
        f"denied; {dest} may hold files this installer did not write: move it away first\n", r.output
    assert notes.read_text() == "mine" and (dest / ".drcn-installed").is_file()


def test_comfyui_uninstall_names_a_copy_comfyui_manager_disabled(tmp_path: Path) -> None:
    """The install named it, the uninstall did not: enabled again, it brings the nodes back."""
    comfy = _fake_comfyui(tmp_path.resolve() / "ComfyUI")
    copy = comfy / "custom_nodes" / ".disabled" / "comfyui-drcn@1_0_2"
    copy.mkdir(parents=True)
    (copy / "drcn_nodes.py").write_text("# the disabled version\n")
    dest, _ = comfyui_install.link_nodes(comfy, copy=True)
    note = f"note: ComfyUI-Manager holds a disabled copy of the nodes in {copy}, left as it " \
        "is: remove it in the Manager too for the nodes to be gone"
    for removed in (f"removed {dest}", "no DRCN nodes to remove"):
        r = runner.invoke(app, ["comfyui", "uninstall", "--comfyui-dir", str(comfy)])
        text = " ".join(r.output.split())
        assert r.exit_code == 0 and removed in text and text.endswith(note), r.output
    assert not dest.exists() and (copy / "drcn_nodes.py").read_text() == "# the disabled version\n"
    (copy / "drcn_nodes.py").unlink()  # another pack's folder of that name: not named
    r = runner.invoke(app, ["comfyui", "uninstall", "--comfyui-dir", str(comfy)])
    assert r.exit_code == 0 and "note:" not in r.output, r.output
