"""``drcn gimp install`` finds GIMP 3 where it really is (native Linux, Flatpak, Snap, macOS,
Windows, $GIMP3_DIRECTORY), on fake home folders; the Flatpak route for the worker; and exact
output sizes through the worker protocol."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from test_gimp_worker import ENV, PLUGIN_DIR, WORKER, client
from typer.testing import CliRunner

from drcn_plugin.cli import app
from drcn_plugin.engine import Upscaler
from drcn_plugin.errors import DRCNError
from drcn_plugin.integrations import gimp_install
from drcn_plugin.integrations.gimp_install import (
    CONFIG_NAME,
    PLUGIN,
    GimpProfile,
    find_gimp_profiles,
)


@pytest.mark.parametrize("platform, environ, relative, kind", [
    ("linux", {}, ".config/GIMP/3.0", "Linux"),
    ("linux", {}, ".var/app/org.gimp.GIMP/config/GIMP/3.0", "Flatpak"),
    ("linux", {}, "snap/gimp/current/.config/GIMP/3.0", "Snap"),
    ("darwin", {}, "Library/Application Support/GIMP/3.0", "macOS"),
    ("win32", {"APPDATA": "{home}/AppData/Roaming"}, "AppData/Roaming/GIMP/3.0", "Windows"),
])
def test_each_layout_is_found(tmp_path: Path, platform: str, environ: dict, relative: str,
                              kind: str) -> None:
    environ = {k: v.format(home=tmp_path) for k, v in environ.items()}
    (tmp_path / relative).mkdir(parents=True)
    assert find_gimp_profiles(platform, environ, tmp_path) == \
        [GimpProfile(kind, tmp_path / relative)]


def test_nothing_found_means_the_platforms_usual_folder(tmp_path: Path) -> None:
    assert find_gimp_profiles("linux", {"XDG_CONFIG_HOME": str(tmp_path / "x")}, tmp_path) == \
        [GimpProfile("Linux", tmp_path / "x" / "GIMP" / "3.0")]
    assert find_gimp_profiles("win32", {}, tmp_path) == \
        [GimpProfile("Windows", tmp_path / "AppData" / "Roaming" / "GIMP" / "3.0")]


def test_several_linux_gimps_are_all_listed(tmp_path: Path) -> None:
    for rel in (".config/GIMP/3.0", ".var/app/org.gimp.GIMP/config/GIMP/3.0"):
        (tmp_path / rel).mkdir(parents=True)
    found = find_gimp_profiles("linux", {}, tmp_path)
    assert [p.kind for p in found] == ["Linux", "Flatpak"]


def test_gimp3_directory_wins(tmp_path: Path) -> None:
    (tmp_path / ".config/GIMP/3.0").mkdir(parents=True)
    assert find_gimp_profiles("linux", {"GIMP3_DIRECTORY": "/g"}, tmp_path) == \
        [GimpProfile("GIMP3_DIRECTORY", Path("/g"))]


def test_sandbox_notes() -> None:
    flatpak = GimpProfile("Flatpak", Path("/f")).note()
    assert "flatpak override --user --talk-name=org.freedesktop.Flatpak org.gimp.GIMP" in flatpak
    assert "confined" in GimpProfile("Snap", Path("/s")).note()
    assert GimpProfile("Linux", Path("/l")).note() == ""


def test_install_command_installs_into_every_gimp_found(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    for rel in (".config/GIMP/3.0", ".var/app/org.gimp.GIMP/config/GIMP/3.0"):
        (tmp_path / rel).mkdir(parents=True)
    monkeypatch.setattr(gimp_install.sys, "platform", "linux")
    monkeypatch.setattr(gimp_install.Path, "home", staticmethod(lambda: tmp_path))
    for var in ("GIMP3_DIRECTORY", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(var, raising=False)
    result = CliRunner().invoke(app, ["gimp", "install"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "found 2 GIMP 3 user folders: Linux" in text and "Flatpak" in text
    assert "flatpak override --user --talk-name=org.freedesktop.Flatpak org.gimp.GIMP" in text
    for rel in (".config/GIMP/3.0", ".var/app/org.gimp.GIMP/config/GIMP/3.0"):
        record = tmp_path / rel / "plug-ins" / PLUGIN / CONFIG_NAME
        assert json.loads(record.read_text()) == {"python": sys.executable}


def test_a_failed_update_leaves_the_old_install(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    dest = gimp_install.install(tmp_path, "/old/python")
    before = {p.name: p.read_bytes() for p in dest.iterdir()}

    def full_disk(src: object, dst: Path) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gimp_install.shutil, "copyfile", full_disk)
    with pytest.raises(DRCNError, match="No space left"):
        gimp_install.install(tmp_path, "/new/python")
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == before
    assert [p.name for p in dest.parent.iterdir()] == [PLUGIN]  # nothing half-built left
    with pytest.raises(DRCNError, match="give GIMP's user folder"):
        gimp_install.install(tmp_path / "plug-ins", "/new/python")


def test_flatpak_worker_runs_on_the_host(tmp_path: Path) -> None:
    (tmp_path / CONFIG_NAME).write_text(json.dumps({"python": "/home/u/env/bin/python"}))
    command = client.worker_command(tmp_path, {"FLATPAK_ID": "org.gimp.GIMP"})
    assert command == ["flatpak-spawn", "--host", "--watch-bus", "/home/u/env/bin/python", "-m",
                       "drcn_plugin.integrations.gimp_worker"]
    with pytest.raises(client.WorkerError, match="does not exist"):
        client.worker_command(tmp_path, {})  # outside the sandbox the path is checked


@pytest.mark.skipif(sys.platform == "win32", reason="shell-script stand-in for flatpak-spawn")
def test_refused_flatpak_spawn_names_the_override(tmp_path: Path) -> None:
    """Without the override, flatpak-spawn fails; the message says what to run."""
    spawn = tmp_path / "flatpak-spawn"
    spawn.write_text("#!/bin/sh\necho 'Portal call failed: org.freedesktop.DBus.Error."
                     "ServiceUnknown' >&2\nexit 1\n")
    spawn.chmod(0o755)
    (tmp_path / CONFIG_NAME).write_text(json.dumps({"python": sys.executable}))
    command = client.worker_command(tmp_path, {"FLATPAK_ID": "org.gimp.GIMP"})
    env = {**ENV, "PATH": f"{tmp_path}{os.pathsep}{ENV.get('PATH', '')}"}
    with pytest.raises(client.WorkerError) as info, client.Worker(command, env=env):
        pass
    text = str(info.value)
    assert "Portal call failed" in text and client.FLATPAK_HINT in text


# -- exact sizes through the worker -----------------------------------------------------------

@pytest.fixture(scope="module")
def worker():
    with client.Worker(WORKER, env=ENV) as w:
        yield w


def test_worker_dry_run_and_exact_size(worker, tiny_model_file: str) -> None:
    assert worker.output_size(40, 30, 2.0, {"out_width": 100, "out_height": 0}) == (100, 75)
    assert worker.output_size(40, 30, 2.5, {}) == (100, 75)
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    fmt = client.PixelFormat("R'G'B' u8", "u8", 3)
    data, w, h = worker.upscale(image.tobytes(), 40, 30, fmt, 2.0,
                                {"model": tiny_model_file, "out_width": 90, "out_height": 50})
    assert (w, h) == (90, 50)
    want = Upscaler(tiny_model_file).upscale(image, size=(50, 90))
    assert np.array_equal(np.frombuffer(data, np.uint8).reshape(50, 90, 3), want)


def test_worker_refuses_a_smaller_size_in_one_line() -> None:
    with client.Worker(WORKER, env=ENV) as w, \
            pytest.raises(client.WorkerError, match="DRCN: target size 20x15 is smaller than "
                                                    "the input 40x30"):
        w.output_size(40, 30, 2.0, {"out_width": 20})


def test_plugin_files_are_what_gets_installed(tmp_path: Path) -> None:
    dest = gimp_install.install(tmp_path)
    assert sorted(p.name for p in dest.glob("*.py")) == \
        sorted(p.name for p in PLUGIN_DIR.glob("*.py"))
    assert os.access(dest / f"{PLUGIN}.py", os.X_OK)


def test_an_install_replaces_only_what_installs_wrote(tmp_path: Path) -> None:
    dest = tmp_path / "plug-ins" / PLUGIN
    dest.mkdir(parents=True)
    (dest / "my-notes.txt").write_text("mine")  # a user's file, or another plug-in of this name
    with pytest.raises(DRCNError, match="did not write .my-notes.txt.*move it away"):
        gimp_install.install(tmp_path, "/new/python")
    assert [p.name for p in dest.iterdir()] == ["my-notes.txt"]
    assert [p.name for p in dest.parent.iterdir()] == [PLUGIN]
    (dest / "my-notes.txt").unlink()
    gimp_install.install(tmp_path, "/old/python")
    (dest / "__pycache__").mkdir()  # what GIMP's Python writes
    (dest / "__pycache__" / "drcn_worker_client.cpython-312.pyc").write_bytes(b"")
    (dest / "gone-in-this-version.py").write_text("")  # an earlier version's file, recorded
    (dest / ".drcn-installed").write_text((dest / ".drcn-installed").read_text()
                                          + "gone-in-this-version.py\n")
    gimp_install.install(tmp_path, "/new/python")
    assert json.loads((dest / CONFIG_NAME).read_text()) == {"python": "/new/python"}
    assert not (dest / "gone-in-this-version.py").exists()
    assert [p.name for p in dest.parent.iterdir()] == [PLUGIN]


@pytest.mark.parametrize("args", [["gimp", "install", "--gimp-dir", ""],
                                  ["comfyui", "install", "--comfyui-dir", ""],
                                  ["comfyui", "install", "--comfyui-dir", ".", "--python", ""]])
def test_an_empty_folder_is_refused_not_taken_as_here(tmp_path: Path, args: list[str], capsys,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from drcn_plugin.cli import main

    (tmp_path / "custom_nodes").mkdir()  # here is a ComfyUI folder, with its Python
    (tmp_path / "main.py").write_text("")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["drcn", *args])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1, err
    assert f"error: Invalid value for '{args[-2]}': an empty path (an unset variable?)" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["custom_nodes", "main.py"]
    assert list((tmp_path / "custom_nodes").iterdir()) == []


def test_each_gimp_3_versions_own_folder_is_found(tmp_path: Path) -> None:
    """GIMP 3.2 reads GIMP/3.2 alone (GIMP_USER_VERSION is major.minor): the plug-in went into
    3.0's folder, where a 3.2 never looks; 2.10's cannot load it and is passed over."""
    for rel in (".config/GIMP/2.10", ".config/GIMP/3.0", ".config/GIMP/3.2",
                ".config/GIMP/3.10-notes", ".var/app/org.gimp.GIMP/config/GIMP/3.2"):
        (tmp_path / rel).mkdir(parents=True)
    assert find_gimp_profiles("linux", {}, tmp_path) == [
        GimpProfile("Linux", tmp_path / ".config/GIMP/3.2"),
        GimpProfile("Linux", tmp_path / ".config/GIMP/3.0"),
        GimpProfile("Flatpak", tmp_path / ".var/app/org.gimp.GIMP/config/GIMP/3.2")]
    (tmp_path / "AppData/Roaming/GIMP/3.2").mkdir(parents=True)
    assert find_gimp_profiles("win32", {}, tmp_path) == \
        [GimpProfile("Windows", tmp_path / "AppData/Roaming/GIMP/3.2")]
    only_2 = tmp_path / "only-2.10"
    (only_2 / ".config/GIMP/2.10").mkdir(parents=True)
    assert find_gimp_profiles("linux", {}, only_2) == \
        [GimpProfile("Linux", only_2 / ".config/GIMP/3.0")]


def test_no_gimp_folder_found_says_which_is_made(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Only GIMP 2.10's folder (or none): the 3.0 folder made is named, a later 3.x told apart."""
    (tmp_path / ".config/GIMP/2.10").mkdir(parents=True)
    monkeypatch.setattr(gimp_install.sys, "platform", "linux")
    monkeypatch.setattr(gimp_install.Path, "home", staticmethod(lambda: tmp_path))
    for var in ("GIMP3_DIRECTORY", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(var, raising=False)
    result = CliRunner().invoke(app, ["gimp", "install"])
    text = " ".join(result.output.split())
    made = tmp_path / ".config/GIMP/3.0"
    assert result.exit_code == 0 and f"note: no GIMP 3 user folder found; making {made}" in text
    assert "run this again after its first start" in text
    assert (made / "plug-ins" / PLUGIN / CONFIG_NAME).is_file()
    result = CliRunner().invoke(app, ["gimp", "install"])  # found now: no note
    assert result.exit_code == 0 and "note" not in result.output, result.output


def test_a_gimp3_directory_yet_to_be_made_is_not_called_3_0s(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """$GIMP3_DIRECTORY is the user folder of every GIMP 3.x: made by the install, it was called
    GIMP 3.0's, with a later 3.x said to read its own (run again after its first start)."""
    folder = tmp_path / "gimp3"
    monkeypatch.setenv("GIMP3_DIRECTORY", str(folder))
    result = CliRunner().invoke(app, ["gimp", "install"])
    assert result.exit_code == 0 and "note" not in result.output, result.output
    assert (folder / "plug-ins" / PLUGIN / CONFIG_NAME).is_file()
