"""The image files of a dataset folder (``drcn eval --dataset``, ``drcn train --data``): which
files are read, and why a folder that gives none is refused."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import DatasetError, reason
from .imagefile import IMAGE_SUFFIXES


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name; refuses a missing or empty folder.

    Hidden files are skipped, as ``drcn upscale`` skips them: macOS leaves a ``._NAME.png`` of
    metadata beside each image on the drives and shares it copies to."""
    if not os.path.isdir(folder):  # os.path: a name too long is "not found", not an OSError
        raise DatasetError(f"{folder} is a file, not a folder of images"
                           if os.path.exists(folder) else _not_found(folder))
    try:
        files = sorted(filter(_listed, folder.iterdir()))
    except OSError as e:
        raise DatasetError(f"cannot read folder {folder}: {reason(e)}") from e
    if not files:
        raise DatasetError(f"no images in {folder}{_image_folders_hint(folder)}")
    return files


def _listed(path: Path) -> bool:
    """Whether :func:`list_images` reads ``path``: an image suffix, not hidden, no FIFO."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".") \
        and (path.is_file() or path.is_dir() or not path.exists())


def _image_folders_hint(folder: Path) -> str:
    """Where ``folder`` holds none, name (up to three of) its subfolders that hold images: a
    dataset such as DIV2K unpacks as ``DIV2K_train_HR`` beside its low-resolution folders."""
    def holds_images(d: Path) -> bool:
        try:
            return not d.name.startswith(".") and d.is_dir() and any(map(_listed, d.iterdir()))
        except OSError:  # the hint is a courtesy: a subfolder that cannot be read goes unnamed
            return False

    try:
        held = sorted(d.name for d in folder.iterdir() if holds_images(d))
    except OSError:
        return ""
    more = f" (and {len(held) - 3} more)" if len(held) > 3 else ""
    return f"; subfolders are not read, give one that holds images: {', '.join(held[:3])}" \
        f"{more}" if held else ""


def _not_found(folder: Path) -> str:
    """Why a dataset folder that is not there is not, naming a link that leads nowhere."""
    try:
        os.stat(folder)
    except OSError as e:
        if os.path.islink(folder):
            return f"dataset folder {folder} is a link that leads nowhere: {reason(e)}"
    return f"dataset folder not found: {folder}"
