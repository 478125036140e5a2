"""Image files: decode with Pillow to engine arrays, encode back with metadata, write atomically.

Reading applies the EXIF orientation (and resets the tag), keeps the ICC profile and DPI, and
keeps 16-bit grey at 16 bits. Writing goes to a temporary file in the target folder, then a
rename, so an interrupted run never leaves a half-written image and never replaces a file it
was told not to.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .degrade import jpeg_quality
from .errors import (
    BadImageError,
    BadOptionError,
    DatasetError,
    OutputExistsError,
    WriteError,
    one_line,
)
from .imaging import image_y

FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP", "tiff": "TIFF",
           "tif": "TIFF", "bmp": "BMP"}
_UMASK = os.umask(0o022)
os.umask(_UMASK)
SUFFIX = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "TIFF": ".tif", "BMP": ".bmp"}
# File suffixes taken as images when scanning folders (batches, datasets, training data).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif",
                            ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".jp2", ".ico", ".pcx",
                            ".sgi", ".qoi", ".dds", ".avif"})


@dataclass
class ImageInfo:
    """What a file carries besides pixels, to be written back with the result."""

    format: str | None
    icc_profile: bytes | None = None
    exif: bytes | None = None
    dpi: tuple[float, float] | None = None
    notes: list[str] = field(default_factory=list)
    lossy: bool = False  # JPEG or lossy WebP: compression artefacts are likely
    jpeg_quality: int | None = None  # estimated from a JPEG's quantisation tables


def read_image(path: Path) -> tuple[np.ndarray, ImageInfo]:
    """Decode ``path`` to an ``H x W x C`` array (uint8, uint16 or float32) and its metadata."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                fmt = im.format
                im.load()
                info = ImageInfo(format=fmt, icc_profile=im.info.get("icc_profile"),
                                 dpi=_dpi(im.info.get("dpi")), lossy=_lossy(path, fmt))
                if fmt in ("JPEG", "MPO"):
                    info.jpeg_quality = jpeg_quality(getattr(im, "quantization", None))
                if getattr(im, "n_frames", 1) > 1:
                    info.notes.append(f"{im.n_frames} frames: only the first was upscaled")
                im = ImageOps.exif_transpose(im)
                exif = im.getexif()
                if exif:
                    info.exif = exif.tobytes()
                return _to_array(im, info), info
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadImageError(f"{path}: too large to upscale safely ({one_line(e)})") from e
    except UnidentifiedImageError as e:
        raise BadImageError(f"{path}: not an image Pillow can read") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise BadImageError(f"{path}: cannot decode image ({one_line(e)})") from e
    except MemoryError as e:
        raise BadImageError(f"{path}: too large for this machine's memory") from e


def _lossy(path: Path, fmt: str | None) -> bool:
    """JPEG, or WebP whose first image chunk is ``VP8 `` (lossy) rather than ``VP8L``."""
    if fmt in ("JPEG", "MPO"):
        return True
    if fmt != "WEBP":
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError:
        return False
    vp8, vp8l = head.find(b"VP8 ", 12), head.find(b"VP8L", 12)
    return vp8 >= 0 and (vp8l < 0 or vp8 < vp8l)


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name; refuses a missing or empty folder."""
    if not folder.is_dir():
        raise DatasetError(f"dataset folder not found: {folder}")
    try:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    except OSError as e:
        raise DatasetError(f"cannot read folder {folder}: {e.strerror or e}") from e
    if not files:
        raise DatasetError(f"no images in {folder}")
    return files


def read_image8(path: Path) -> torch.Tensor:
    """An image file as 8-bit levels (0..255, float64): ``[3, H, W]`` RGB, or ``[H, W]`` if grey.

    Decoded by :func:`read_image` (EXIF orientation applied); deeper files are rounded to 8 bits
    and alpha is dropped. The evaluation protocol and training read images through this.
    """
    array, _ = read_image(path)
    if array.dtype == np.uint16:
        array = np.round(array / 257.0)
    elif array.dtype != np.uint8:
        array = np.round(np.clip(array, 0, 1) * 255.0)
    a = torch.from_numpy(np.asarray(array, dtype=np.float64))
    if a.dim() == 2 or a.shape[2] <= 2:
        return a if a.dim() == 2 else a[:, :, 0].contiguous()
    return a[:, :, :3].permute(2, 0, 1).contiguous()


def read_y(path: Path) -> torch.Tensor:
    """Protocol step 1: an image file as its 8-bit Y plane (0..255, float64); grey stays as is."""
    return image_y(read_image8(path))


def _dpi(value) -> tuple[float, float] | None:
    try:
        return (float(value[0]), float(value[1])) if value else None
    except (TypeError, ValueError, IndexError):
        return None


def _to_array(im: Image.Image, info: ImageInfo) -> np.ndarray:
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return np.asarray(im, dtype=np.uint16)
    if mode == "I":
        a = np.asarray(im)
        if a.min() < 0 or a.max() > 65535:
            raise ValueError("32-bit integer images are not supported")
        return a.astype(np.uint16)
    if mode == "F":
        return np.asarray(im, dtype=np.float32)
    if mode in ("1", "L"):
        return np.asarray(im.convert("L"))
    if mode in ("LA", "La"):
        return np.asarray(im.convert("LA"))
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode in ("RGBa", "PA"):
        im = im.convert("RGBA")
    elif mode not in ("RGB", "RGBA"):
        info.notes.append(f"{mode} converted to RGB")
        info.icc_profile = None  # the profile described the old colour space
        im = im.convert("RGB")
    return np.asarray(im)


def to_pil(array: np.ndarray) -> Image.Image:
    """An engine array back to a Pillow image (16-bit grey as I;16, float grey as F)."""
    a = array[:, :, 0] if array.ndim == 3 and array.shape[2] == 1 else array
    if a.dtype == np.uint16:
        if a.ndim == 2:
            return Image.fromarray(a)  # I;16
        a = (a.astype(np.float32) / 257.0).round().astype(np.uint8)  # Pillow has no 16-bit RGB
    if np.issubdtype(a.dtype, np.floating):
        if a.ndim == 2:
            return Image.fromarray(a.astype(np.float32))
        a = (np.clip(a, 0, 1) * 255).round().astype(np.uint8)
    return Image.fromarray(a)


def encode(array: np.ndarray, fmt: str, info: ImageInfo) -> Image.Image:
    """Build the output image and its save options; refuses combinations that would lose data."""
    im = to_pil(array)
    if fmt == "JPEG" and im.mode in ("LA", "RGBA"):
        raise BadOptionError("JPEG cannot store the alpha channel: use PNG, WebP or TIFF",
                             option="format")
    if fmt in ("JPEG", "WEBP", "BMP") and im.mode in ("I;16", "F"):
        im = im.point(lambda v: v / 257).convert("L") if im.mode == "I;16" else \
            Image.fromarray((np.clip(np.asarray(im), 0, 1) * 255).round().astype(np.uint8))
        info.notes.append(f"{fmt} stores 8 bits: result reduced to 8 bits")
    return im


def save_options(fmt: str, info: ImageInfo, scale: float, quality: int) -> dict:
    """Pillow save options carrying ICC, EXIF and scaled DPI (print size stays the same)."""
    opts: dict = {}
    if info.icc_profile:
        opts["icc_profile"] = info.icc_profile
    if info.exif and fmt in ("JPEG", "PNG", "WEBP", "TIFF"):
        opts["exif"] = info.exif
    if info.dpi and fmt in ("JPEG", "PNG", "TIFF", "BMP"):
        opts["dpi"] = (info.dpi[0] * scale, info.dpi[1] * scale)
    if fmt in ("JPEG", "WEBP"):
        opts["quality"] = quality
    if fmt == "JPEG":
        opts["subsampling"] = 0 if quality >= 90 else 2
    if fmt == "TIFF":
        opts["compression"] = "tiff_adobe_deflate"
    return opts


def atomic_save(image: Image.Image, path: Path, fmt: str, overwrite: bool = False,
                **options) -> None:
    """Save through a temporary file in the same folder, then rename into place."""
    _atomic(path, overwrite, lambda f: image.save(f, format=fmt, **options))


def atomic_write_bytes(path: Path, data: bytes, overwrite: bool = True) -> None:
    """Write bytes atomically (JSON logs, cards)."""
    _atomic(path, overwrite, lambda f: f.write(data))


def _atomic(path: Path, overwrite: bool, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; results get the usual mode
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            _link_new(tmp, path)
    except FileExistsError as e:
        _remove(tmp)
        raise OutputExistsError(f"{path} exists", path=path) from e
    except OSError as e:
        _remove(tmp)
        if e.errno == errno.ENOSPC:
            raise WriteError(f"disk full while writing {path}; nothing was written") from e
        raise WriteError(f"cannot write {path}: {e.strerror or e}") from e
    except BaseException:
        _remove(tmp)
        raise


def _link_new(tmp: str, path: Path) -> None:
    """Move ``tmp`` to ``path`` only if ``path`` does not exist (hard link where supported)."""
    try:
        os.link(tmp, path)  # atomic and fails if the target appeared meanwhile
    except FileExistsError:
        raise
    except OSError:  # file systems without hard links
        if path.exists():
            raise FileExistsError(path) from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
