"""Files shipped beside the code: weights, the GIMP plug-in, the ComfyUI nodes.

An installed wheel holds them inside the package (``drcn_plugin/weights``, ...); a source
checkout holds them at the repository's top level (``weights/``, ...). :func:`bundled` looks in
that order, so the same call works in both.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def bundled(relative: str, marker: str = "", package: Path = PACKAGE) -> Path | None:
    """The folder ``relative`` inside ``package`` (this one, or a copy installed for another
    Python), else in its source checkout; the first that exists (and holds ``marker``, when
    given), or None."""
    for base in (package, package.parent):
        folder = base / relative
        if (folder / marker).is_file() if marker else folder.is_dir():
            return folder
    return None


def source_checkout() -> Path | None:
    """The repository root when running from a source checkout (not an installed wheel)."""
    root = PACKAGE.parent
    return root if (root / "pyproject.toml").is_file() and (root / "comfyui_nodes").is_dir() \
        else None
