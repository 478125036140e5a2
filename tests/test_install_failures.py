"""A full disk or a Ctrl-C part way through ``drcn gimp install`` or ``drcn comfyui install``:
the earlier install is still there, whole, and nothing half-built is left beside it."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
from test_comfyui_install import _fake_comfyui

from drcn_plugin.errors import DRCNError
from drcn_plugin.integrations import comfyui_install, gimp_install

FAILURES = [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()]


def _fail_on_call(monkeypatch: pytest.MonkeyPatch, owner: object, name: str, n: int,
                  error: BaseException) -> None:
    """Make ``owner.name`` raise ``error`` on its ``n``-th call (the earlier ones run)."""
    real, calls = getattr(owner, name), [0]

    def failing(*args: object, **kwargs: object) -> object:
        calls[0] += 1
        if calls[0] == n:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, failing)


def _gimp_state(gimp_dir: Path) -> tuple[list[str], str]:
    dest = gimp_dir / "plug-ins" / gimp_install.PLUGIN
    names = sorted(p.name for p in dest.parent.iterdir())
    return names, json.loads((dest / gimp_install.CONFIG_NAME).read_text())["python"]


@pytest.mark.parametrize("error", FAILURES, ids=["ENOSPC", "Ctrl-C"])
@pytest.mark.parametrize("step, n", [("copyfile", 2), ("rename", 2)])
def test_a_gimp_update_stopped_part_way_leaves_the_earlier_install(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str, n: int,
        error: BaseException) -> None:
    """The 2nd file copied, or the move of the new folder into place (the earlier one is aside
    by then: a Ctrl-C there left no plug-in at all, only two hidden folders)."""
    gimp_install.install(tmp_path, "/old/python")
    _fail_on_call(monkeypatch, *((shutil, "copyfile") if step == "copyfile" else
                                 (Path, "rename")), n, error)
    with pytest.raises((DRCNError, KeyboardInterrupt)) as info:
        gimp_install.install(tmp_path, "/new/python")
    if isinstance(error, OSError):
        assert str(info.value).endswith(": No space left on device"), info.value
    monkeypatch.undo()
    assert _gimp_state(tmp_path) == ([gimp_install.PLUGIN], "/old/python")


@pytest.mark.parametrize("error", FAILURES, ids=["ENOSPC", "Ctrl-C"])
def test_a_nodes_copy_stopped_on_its_third_file_leaves_the_earlier_copy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    """Nothing half-built stays in custom_nodes/, and the full disk is one plain line (it was
    shutil.copytree's list of every failed file, hidden folder paths and all)."""
    comfy = _fake_comfyui(tmp_path / "ComfyUI")
    dest, _ = comfyui_install.link_nodes(comfy, copy=True)
    before = {p: p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    _fail_on_call(monkeypatch, shutil, "copyfile", 3, error)
    with pytest.raises((DRCNError, KeyboardInterrupt)) as info:
        comfyui_install.link_nodes(comfy, copy=True)
    if isinstance(error, OSError):
        assert str(info.value) == f"cannot put the nodes into {dest}: No space left on device"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["comfyui-drcn"]
    assert {p: p.read_bytes() for p in dest.rglob("*") if p.is_file()} == before


def test_what_a_killed_install_left_is_cleared_by_the_next(tmp_path: Path) -> None:
    """The hidden new and earlier folders of an install killed outright (no handler runs) stayed
    beside the plug-in and the nodes for good; a running process's own are kept."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    live = str(os.getppid())  # pytest's parent: running
    comfy = _fake_comfyui(tmp_path / "ComfyUI")
    for folder, name in ((tmp_path / "GIMP" / "plug-ins", gimp_install.PLUGIN),
                         (comfy / "custom_nodes", "comfyui-drcn")):
        for pid, kind in ((dead, "part"), (dead, "old"), (live, "old")):
            (folder / f".{name}.{pid}.{kind}.disabled").mkdir(parents=True)
            (folder / f".{name}.{pid}.{kind}.disabled" / "x.py").write_text("")
    gimp_install.install(tmp_path / "GIMP")
    assert comfyui_install.remove_nodes(comfy) is None  # nothing to remove, leftovers cleared
    for folder, name in ((tmp_path / "GIMP" / "plug-ins", gimp_install.PLUGIN),
                         (comfy / "custom_nodes", "comfyui-drcn")):
        kept = sorted(p.name for p in folder.iterdir())
        assert kept == sorted({f".{name}.{live}.old.disabled"} |
                              ({name} if name == gimp_install.PLUGIN else set()))


def _checkout_with_a_linked_folder(tmp_path: Path) -> Path:
    """A nodes folder (a dev checkout's, say) whose web/ is a link to a folder elsewhere."""
    source = tmp_path / "checkout" / "comfyui_nodes"
    source.mkdir(parents=True)
    (source / "drcn_nodes.py").write_text("# the nodes\n")
    (tmp_path / "shared-web").mkdir()
    (tmp_path / "shared-web" / "drcn.js").write_text("// the web part\n")
    (source / "web").symlink_to(tmp_path / "shared-web", target_is_directory=True)
    return source


def test_a_copy_holds_what_a_linked_folder_in_the_nodes_leads_to(tmp_path: Path) -> None:
    """Copying the link itself failed ("Is a directory"); a copy is self-contained, as
    copytree(symlinks=False) makes it, and is replaced by the next copy."""
    source = _checkout_with_a_linked_folder(tmp_path)
    comfy = _fake_comfyui(tmp_path / "ComfyUI")
    for _ in range(2):
        dest, linked = comfyui_install.link_nodes(comfy, copy=True, source=source)
        assert not linked and not (dest / "web").is_symlink()
        assert (dest / "web" / "drcn.js").read_text() == "// the web part\n"
        assert (dest / ".drcn-installed").read_text() == "drcn_nodes.py\nweb/drcn.js\n"


def test_a_link_into_a_folder_holding_it_is_refused_in_one_line(tmp_path: Path) -> None:
    source = _checkout_with_a_linked_folder(tmp_path)
    (source / "web" / "up").symlink_to(source, target_is_directory=True)
    comfy = _fake_comfyui(tmp_path / "ComfyUI")
    with pytest.raises(DRCNError) as info:
        comfyui_install.link_nodes(comfy, copy=True, source=source)
    assert str(info.value) == f"{source / 'web' / 'up'} is a link back into a folder that " \
        "holds it: its copy would never end"
    assert list((comfy / "custom_nodes").iterdir()) == []


def unreadable(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Make ``folder`` fail to list as one without its read right does (the tests run as root,
    who reads every folder)."""
    real = os.scandir

    def scandir(path: object = ".") -> object:
        if isinstance(path, (str, os.PathLike)) and Path(path) == folder:
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)


def _users_folder_in(dest: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user's file in a folder of the install at ``dest`` that cannot be read."""
    (dest / "mine").mkdir()
    (dest / "mine" / "notes.txt").write_text("mine")
    unreadable(monkeypatch, dest / "mine")
    return dest / "mine" / "notes.txt"


@pytest.mark.parametrize("host", ["gimp", "comfyui"])
def test_an_update_over_a_folder_it_cannot_read_is_refused(tmp_path: Path, host: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """os.walk skipped the folder, so the update found no user's file and removed it."""
    if host == "gimp":
        dest = gimp_install.install(tmp_path)
        update = partial(gimp_install.install, tmp_path)
    else:
        comfy = _fake_comfyui(tmp_path.resolve() / "ComfyUI")
        dest, _ = comfyui_install.link_nodes(comfy, copy=True)
        update = partial(comfyui_install.link_nodes, comfy, copy=True)
    notes = _users_folder_in(dest, monkeypatch)
    with pytest.raises(DRCNError) as info:
        update()
    assert str(info.value) == f"cannot read {dest / 'mine'}: Permission denied; {dest} may " \
        "hold files this installer did not write: move it away first"
    assert notes.read_text() == "mine" and sorted(p.name for p in dest.parent.iterdir()) == \
        [dest.name]
