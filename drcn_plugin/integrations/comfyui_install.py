"""``drcn comfyui install``: put the DRCN nodes into ComfyUI's ``custom_nodes/`` and install
drcn-plugin into ComfyUI's Python, pinning the torch it already has so pip never swaps it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

from .. import __version__
from ..errors import InstallError, reason
from ..resources import PACKAGE, bundled, source_checkout
from ..writing import probe_folder
from .owned import (
    building,
    check_replaceable,
    copy_files,
    files_under,
    record_files,
    uninstall,
)

NODES_NAME = "comfyui-drcn"  # the folder name under custom_nodes/ (never "drcn_plugin")
MODELS_SUBDIR = "drcn"  # ComfyUI/models/drcn, registered by the nodes through folder_paths
# Files the nodes held in versions that recorded no .drcn-installed list (before 2026-11-30):
# a copy one of them made is theirs to replace
EARLIER_FILES = ("tests/check_real_comfyui.py", "tests/comfy_client.py",
                 "workflows/drcn_upscale_api.json", "workflows/drcn_upscale_ui.json")
_PROBE = ("import importlib.metadata as m, importlib.util as u, json\n"
          "try:\n    torch = m.version('torch')\nexcept m.PackageNotFoundError:\n    torch = None\n"
          "spec = u.find_spec('drcn_plugin')\n"
          "print(json.dumps([torch, spec.origin if spec else None]))")


@dataclass
class Installed:
    """What ``install`` did."""

    nodes: Path
    linked: bool
    python: Path
    pip_command: list[str] | None  # None: drcn-plugin was already importable there, from here
    models: Path
    disabled: list[Path]  # copies ComfyUI-Manager disabled, left as they are

    def note(self) -> str:
        """What a user of ComfyUI-Manager must know about its disabled copies, or ""."""
        return disabled_note(self.disabled, " and not updated; ComfyUI loads the one installed "
                             "now: remove the disabled one in the Manager rather than enable it")

    def __str__(self) -> str:
        how = f"linked to {self.nodes.resolve()}" if self.linked else "copied"
        pip = "installed drcn-plugin" if self.pip_command else "drcn-plugin already installed"
        return (f"nodes in {self.nodes} ({how}); {pip} for {self.python}; put your .safetensors "
                f"weights in {self.models}; restart ComfyUI to load the nodes")


def nodes_source() -> Path:
    """The nodes folder: inside the installed wheel, else the repository's ``comfyui_nodes/``."""
    source = bundled("comfyui_nodes", "drcn_nodes.py")
    if source is None:
        raise InstallError(f"the ComfyUI node files are missing from {PACKAGE}; reinstall "
                           "drcn-plugin")
    return source


def comfyuis_nodes(python: Path, comfyui_dir: Path) -> Path:
    """The nodes shipped with the drcn-plugin that ComfyUI's Python imports, else this copy's:
    linked to this environment's, they would break once it is removed and drift from ComfyUI's
    package when only this one is upgraded."""
    _, origin = probe_python(python, comfyui_dir)
    found = bundled("comfyui_nodes", "drcn_nodes.py", Path(origin).resolve().parent) \
        if origin else None
    return found or nodes_source()


def default_python(comfyui_dir: Path) -> Path:
    """ComfyUI's own interpreter: its venv/ or .venv/, the portable build's python_embeded/,
    else the Python running drcn."""
    for candidate in (comfyui_dir / "venv", comfyui_dir / ".venv",
                      comfyui_dir.parent / "python_embeded"):
        for exe in ("bin/python", "Scripts/python.exe", "python.exe"):
            if (candidate / exe).is_file():
                return candidate / exe
    return Path(sys.executable)


def is_comfyui(folder: Path) -> bool:
    """Whether ``folder`` is a ComfyUI folder: its main.py and custom_nodes/."""
    return (folder / "main.py").is_file() and (folder / "custom_nodes").is_dir()


def check_comfyui_folder(comfyui_dir: Path) -> Path:
    """``comfyui_dir``'s ``custom_nodes/``, or InstallError when it is not a ComfyUI folder,
    naming the one beside when it is the portable build's folder or one inside ComfyUI's."""
    if is_comfyui(comfyui_dir):
        return comfyui_dir / "custom_nodes"
    near = [comfyui_dir / "ComfyUI", *list(comfyui_dir.parents)[:2]]
    found = next((folder for folder in near if is_comfyui(folder)), None)
    there = f"; ComfyUI's is {found}: give that" if found else ""
    raise InstallError(f"{comfyui_dir} is not a ComfyUI folder (needs main.py and "
                       f"custom_nodes/){there}")


def disabled_copies(custom_nodes: Path) -> list[Path]:
    """The DRCN nodes ComfyUI-Manager disabled: moved to ``custom_nodes/.disabled/`` as
    ``comfyui-drcn`` or ``comfyui-drcn@<version>`` (``1_0_2``, ``nightly``, ``unknown``)."""
    folder = custom_nodes / ".disabled"
    try:
        names = os.listdir(folder)
    except OSError:  # none there: the Manager disabled nothing
        return []
    return sorted(folder / name for name in names
                  if re.fullmatch(rf"{NODES_NAME}(@.*)?", name, re.IGNORECASE)
                  and (folder / name / "drcn_nodes.py").is_file())


def disabled_note(copies: list[Path], advice: str) -> str:
    """The note naming the ``copies`` ComfyUI-Manager disabled, which installs and uninstalls
    leave as they are, then ``advice``; "" when there are none."""
    if not copies:
        return ""
    return (f"ComfyUI-Manager holds a disabled copy of the nodes in "
            f"{', '.join(map(str, copies))}, left as it is{advice}")


def check_nodes_folder(comfyui_dir: Path, source: Path | None = None) -> Path:
    """Where the nodes go, or InstallError when the folder is not ComfyUI's or that place holds
    something an install of the nodes (from ``source``, default this copy's) did not write (a
    git clone, another pack)."""
    dest = check_comfyui_folder(comfyui_dir) / NODES_NAME
    # a link is replaced only while it leads to DRCN nodes, or nowhere (into a removed venv)
    if dest.exists() and not (dest / "drcn_nodes.py").is_file():
        raise InstallError(f"{dest} exists and is not the DRCN nodes: move it away first")
    writes = files_under(source or nodes_source())
    check_replaceable(dest, [n for n in writes if "__pycache__" not in n] + list(EARLIER_FILES))
    return dest


def remove_nodes(comfyui_dir: Path) -> Path | None:
    """Remove the nodes from ComfyUI (never a file no install wrote; ``models/drcn`` and the
    package in ComfyUI's Python stay); the place removed, or None when there was none."""
    dest = check_nodes_folder(comfyui_dir.resolve())
    return dest if uninstall(dest) else None


def link_nodes(comfyui_dir: Path, copy: bool = False,
               source: Path | None = None) -> tuple[Path, bool]:
    """Symlink (or copy) the nodes folder ``source`` (default this copy's) to
    ``custom_nodes/comfyui-drcn``, replacing an earlier install only once the new one is complete
    and only while it holds nothing an install did not write; returns the destination and
    whether it is a link."""
    source = source or nodes_source()
    dest = check_nodes_folder(comfyui_dir, source)
    try:
        with building(dest) as new:
            linked = False
            if not copy:
                try:
                    new.symlink_to(source, target_is_directory=True)
                    linked = True
                except OSError:
                    pass  # e.g. Windows without the right to make links: copy instead
            if not linked:
                copy_files(source, new)
                record_files(new)
    except OSError as e:
        raise InstallError(f"cannot put the nodes into {dest}: {reason(e)}") from e
    return dest, linked


def probe_python(python: Path, cwd: Path) -> tuple[str | None, str | None]:
    """The torch version installed for ``python`` and where it imports drcn_plugin from when
    run in ``cwd`` (as ComfyUI runs in its folder)."""
    try:
        done = subprocess.run([str(python), "-c", _PROBE], capture_output=True, text=True,
                              timeout=120, cwd=cwd)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise InstallError(f"cannot run ComfyUI's Python {python}: {reason(e)}") from e
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise InstallError(f"cannot run ComfyUI's Python {python}: {last}")
    try:
        torch, origin = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError, TypeError):
        raise InstallError(f"{python} did not answer like a Python interpreter") from None
    return torch, origin


def package_spec() -> list[str]:
    """What pip installs: this source checkout as editable, else the wheel or folder this copy
    was installed from (pip's ``direct_url.json``) while it is still there, else this version by
    name."""
    root = source_checkout()
    if root is not None:
        return ["-e", str(root)]
    try:
        origin = json.loads(metadata.distribution("drcn-plugin").read_text("direct_url.json")
                            or "null")
    except (metadata.PackageNotFoundError, ValueError):
        origin = None
    url = str(origin.get("url", "")) if isinstance(origin, dict) else ""
    if url.startswith("file:") and Path(url2pathname(urlparse(url).path)).exists():
        return [url]
    return [f"drcn-plugin=={__version__}"]


def pip_command(python: Path, constraints: Path) -> list[str]:
    """``python -m pip install`` of drcn-plugin under a constraints file that pins torch."""
    return [str(python), "-m", "pip", "install", "-c", str(constraints), *package_spec()]


def install_package(python: Path, comfyui_dir: Path) -> list[str] | None:
    """Install drcn-plugin for ``python`` unless it already imports this very copy; returns the
    pip command run, or None."""
    torch, origin = probe_python(python, comfyui_dir)
    if torch is None:
        raise InstallError(f"{python} has no torch: set up ComfyUI's own requirements first (else "
                        "pip would pick a torch build by itself)")
    if origin and Path(origin).resolve() == PACKAGE / "__init__.py":
        return None
    with tempfile.TemporaryDirectory() as tmp:
        constraints = Path(tmp) / "constraints.txt"
        constraints.write_text(f"torch=={torch}\n", encoding="utf-8")
        command = pip_command(python, constraints)
        if subprocess.run(command).returncode != 0:
            raise InstallError(f"pip could not install drcn-plugin for {python} (its output is "
                            "above); ComfyUI's torch was left as it was")
    return command


def install(comfyui_dir: Path, python: Path | None = None, copy: bool = False) -> Installed:
    """Install the package into ComfyUI's Python, make models/drcn, then link the nodes of the
    package it installed: a failed step leaves ComfyUI as it was (no nodes that cannot import)."""
    comfyui_dir = comfyui_dir.resolve()
    models = comfyui_dir / "models" / MODELS_SUBDIR
    for folder in (check_nodes_folder(comfyui_dir).parent, models):
        probe_folder(folder)  # before pip changes ComfyUI's Python, not after
    # absolute, not resolved: a venv's python is a link whose target is not the venv
    python = Path(os.path.abspath(python)) if python else \
        default_python(comfyui_dir)
    command = install_package(python, comfyui_dir)
    try:
        models.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InstallError(f"cannot create {models}: {reason(e)}") from e
    source = comfyuis_nodes(python, comfyui_dir) if command else nodes_source()
    nodes, linked = link_nodes(comfyui_dir, copy, source)
    return Installed(nodes, linked, python, command, models, disabled_copies(nodes.parent))
