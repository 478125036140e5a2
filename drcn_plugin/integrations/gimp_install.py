"""``drcn gimp install``: put the GIMP 3 plug-in into GIMP's plug-ins folder and record which
Python runs its worker (this one, where drcn-plugin and torch are installed)."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import InstallError, reason
from ..resources import PACKAGE, bundled
from ..writing import probe_folder
from .owned import building, check_replaceable, record_files, uninstall

PLUGIN = "drcn-super-resolution"
CONFIG_NAME = "drcn-worker.json"  # read by gimp/drcn-super-resolution/drcn_worker_client.py


def plugin_source() -> Path:
    """The plug-in folder: inside the installed wheel, else the repository's ``gimp/``."""
    source = bundled(f"gimp/{PLUGIN}", f"{PLUGIN}.py")
    if source is None:
        raise InstallError(f"the GIMP plug-in files are missing from {PACKAGE}; reinstall "
                           "drcn-plugin")
    return source


@dataclass(frozen=True)
class GimpProfile:
    """One GIMP 3 user folder and the kind of GIMP that uses it."""

    kind: str  # "GIMP3_DIRECTORY", "Linux", "Flatpak", "Snap", "macOS" or "Windows"
    path: Path

    def note(self) -> str:
        """What a user of this kind of GIMP must know for the worker to start, or ""."""
        if self.kind == "Flatpak":
            return ("a Flatpak GIMP cannot start a Python outside its sandbox until allowed to; "
                    f"run once: {FLATPAK_OVERRIDE}")
        if self.kind == "Snap":
            return ("a Snap GIMP is confined and cannot start a Python outside the snap; use "
                    "GIMP from your distribution or Flatpak for this plug-in")
        return ""


FLATPAK_APP = "org.gimp.GIMP"
# The plug-in then starts the worker on the host through `flatpak-spawn --host`.
FLATPAK_OVERRIDE = f"flatpak override --user --talk-name=org.freedesktop.Flatpak {FLATPAK_APP}"


def gimp_profiles(platform: str = sys.platform, environ: Mapping[str, str] = os.environ,
                  home: Path | None = None) -> list[GimpProfile]:
    """Where GIMP 3 keeps its user folders on this platform, most usual first:
    $GIMP3_DIRECTORY alone when set; else in Windows' %APPDATA%, macOS' Application Support, or
    on Linux the native (XDG), Flatpak and Snap folders, each GIMP 3.x's own (see
    :func:`gimp3_folders`)."""
    if environ.get("GIMP3_DIRECTORY"):
        return [GimpProfile("GIMP3_DIRECTORY", Path(environ["GIMP3_DIRECTORY"]))]
    home = home or Path.home()
    if platform == "win32":
        bases = [("Windows", Path(environ.get("APPDATA") or home / "AppData" / "Roaming"))]
    elif platform == "darwin":
        bases = [("macOS", home / "Library" / "Application Support")]
    else:
        bases = [("Linux", Path(environ.get("XDG_CONFIG_HOME") or home / ".config")),
                 ("Flatpak", home / ".var" / "app" / FLATPAK_APP / "config"),
                 ("Snap", home / "snap" / "gimp" / "current" / ".config")]
    return [GimpProfile(kind, folder) for kind, base in bases
            for folder in gimp3_folders(base / "GIMP")]


def gimp3_folders(gimp: Path) -> list[Path]:
    """The GIMP 3 user folders in ``gimp``, newest first: GIMP 3.N reads ``3.N`` alone (copied
    from the last one on its first start), so 3.0's is not 3.2's; ``3.0`` when there is none
    (2.10's cannot load this plug-in)."""
    try:
        names = os.listdir(gimp)
    except OSError:  # none there (or unreadable: then the install names the error)
        names = []
    found = sorted(((int(m[1]), gimp / name) for name in names
                    if (m := re.fullmatch(r"3\.(\d+)", name)) and (gimp / name).is_dir()),
                   reverse=True)
    return [folder for _, folder in found] or [gimp / "3.0"]


def find_gimp_profiles(platform: str = sys.platform, environ: Mapping[str, str] = os.environ,
                       home: Path | None = None) -> list[GimpProfile]:
    """The GIMP 3 user folders that exist (GIMP creates its own on first start); when none does,
    the platform's usual one, to be created."""
    candidates = gimp_profiles(platform, environ, home)
    return [p for p in candidates if p.path.is_dir()] or candidates[:1]


def installed_plugin(gimp_dir: Path) -> Path:
    """Where the plug-in goes in ``gimp_dir``, or InstallError when that place holds something
    else (a file, a link, a folder with files no install wrote)."""
    if gimp_dir.name == "plug-ins":
        raise InstallError(f"{gimp_dir} is a plug-ins folder: give GIMP's user folder, the one "
                           "that holds plug-ins/")
    dest = gimp_dir / "plug-ins" / PLUGIN
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise InstallError(f"{dest} exists and is not a plug-in folder: move it away first")
    check_replaceable(dest, [p.name for p in plugin_source().glob("*.py")] + [CONFIG_NAME])
    return dest


def remove_plugin(gimp_dir: Path) -> Path | None:
    """Remove the plug-in from ``gimp_dir`` (never a file no install wrote); the folder removed,
    or None when there was none."""
    dest = installed_plugin(gimp_dir)
    return dest if uninstall(dest) else None


def install(gimp_dir: Path, python: str = sys.executable) -> Path:
    """Copy the plug-in to ``<gimp_dir>/plug-ins/<name>/`` with its worker record, built beside
    it and swapped in whole (a failure leaves the old install, and a folder holding files no
    install wrote is refused); returns the installed folder."""
    dest = installed_plugin(gimp_dir)
    files = sorted(plugin_source().glob("*.py"))
    probe_folder(dest.parent)  # a file or a read-only folder in the way, named as such
    try:
        with building(dest) as new:
            new.mkdir(parents=True)
            for path in files:
                shutil.copyfile(path, new / path.name)
            main = new / f"{PLUGIN}.py"
            main.chmod(main.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
            record = {"python": python}
            (new / CONFIG_NAME).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
            record_files(new)
    except OSError as e:
        raise InstallError(f"cannot install the GIMP plug-in into {dest}: {reason(e)}") from e
    return dest
