"""``drcn gimp install``: put the GIMP 3 plug-in into GIMP's plug-ins folder and record which
Python runs its worker (this one, where drcn-plugin and torch are installed)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
from collections.abc import Mapping
from pathlib import Path

from ..errors import InstallError, one_line
from ..resources import PACKAGE, bundled

PLUGIN = "drcn-super-resolution"
CONFIG_NAME = "drcn-worker.json"  # read by gimp/drcn-super-resolution/drcn_worker_client.py


def plugin_source() -> Path:
    """The plug-in folder: inside the installed wheel, else the repository's ``gimp/``."""
    source = bundled(f"gimp/{PLUGIN}", f"{PLUGIN}.py")
    if source is None:
        raise InstallError(f"the GIMP plug-in files are missing from {PACKAGE}; reinstall "
                           "drcn-plugin")
    return source


def default_gimp_dir(platform: str = sys.platform, environ: Mapping[str, str] = os.environ,
                     home: Path | None = None) -> Path:
    """GIMP 3's user folder: $GIMP3_DIRECTORY, else the platform's usual place."""
    if environ.get("GIMP3_DIRECTORY"):
        return Path(environ["GIMP3_DIRECTORY"])
    home = home or Path.home()
    if platform == "win32":
        return Path(environ.get("APPDATA") or home / "AppData" / "Roaming") / "GIMP" / "3.0"
    if platform == "darwin":
        return home / "Library" / "Application Support" / "GIMP" / "3.0"
    return Path(environ.get("XDG_CONFIG_HOME") or home / ".config") / "GIMP" / "3.0"


def install(gimp_dir: Path | None = None, python: str = sys.executable) -> Path:
    """Copy the plug-in to ``<gimp_dir>/plug-ins/<name>/``, make it executable and write the
    worker record; returns the installed folder."""
    source = plugin_source()
    dest = (gimp_dir or default_gimp_dir()) / "plug-ins" / PLUGIN
    try:
        dest.mkdir(parents=True, exist_ok=True)
        for path in source.glob("*.py"):
            shutil.copyfile(path, dest / path.name)
        main = dest / f"{PLUGIN}.py"
        main.chmod(main.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        record = {"python": python}
        (dest / CONFIG_NAME).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    except OSError as e:
        raise InstallError(f"cannot install the GIMP plug-in into {dest}: {one_line(e)}") from e
    return dest
