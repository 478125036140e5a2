"""Image files: decode with Pillow to engine arrays, encode back with metadata, write atomically.

Reading applies the EXIF orientation (and resets the tag), keeps the ICC profile and DPI, and
keeps 16-bit grey at 16 bits. Writing goes to a temporary file in the target folder, then a
rename, so an interrupted run never leaves a half-written image and never replaces a file it
was told not to.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import secrets
import shutil
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from .compression import is_lossy, jpeg_quality
from .errors import (
    BadImageError,
    BadOptionError,
    DatasetError,
    DRCNError,
    InputConflictError,
    OutOfMemoryError,
    OutputExistsError,
    WriteError,
    one_line,
)
from .imaging import image_y
from .metadata import (
    Descriptive,
    apply_orientation,
    declared_dpi,
    exif_for,
    orientation,
    read_exif,
)
from .planes import require_unit_range, to_8bit

FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "jpe": "JPEG", "jfif": "JPEG",
           "mpo": "JPEG", "webp": "WEBP", "tiff": "TIFF", "tif": "TIFF", "bmp": "BMP"}
SUFFIX = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "TIFF": ".tif", "BMP": ".bmp"}
# File suffixes taken as images when scanning folders (batches, datasets, training data).
IMAGE_SUFFIXES = frozenset({".png", ".apng", ".jpg", ".jpeg", ".jpe", ".jfif", ".mpo", ".webp",
                            ".tif", ".tiff", ".bmp", ".gif", ".ppm", ".pgm", ".pbm", ".pnm",
                            ".tga", ".jp2", ".j2k", ".j2c", ".jpf", ".jpx", ".ico", ".pcx",
                            ".sgi", ".qoi", ".dds", ".avif"})


@dataclass
class ImageInfo:
    """What a file carries besides pixels, to be written back with the result."""

    format: str | None
    icc_profile: bytes | None = None
    exif: Image.Exif | None = None
    dpi: tuple[float, float] | None = None
    value_range: tuple[float, float] | None = None  # float images: outputs stay inside it
    notes: list[str] = field(default_factory=list)
    lossy: bool = False  # JPEG or lossy WebP: compression artefacts are likely
    jpeg_quality: int | None = None  # estimated from a JPEG's quantisation tables
    about: Descriptive = field(default_factory=Descriptive)  # XMP, comments, PNG colour chunks


def read_image(path: Path) -> tuple[np.ndarray, ImageInfo]:
    """Decode ``path`` to an ``H x W x C`` array (uint8, uint16 or float32) and its metadata.

    Whatever the decoder raises on a damaged or hostile file becomes one BadImageError naming
    the file; decoder warnings become notes.
    """
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            array, info = _decode(path)
        for w in dict.fromkeys(str(w.message).splitlines()[0] for w in caught if str(w.message)):
            info.notes.append(f"decoder warning: {w}")
        return array, info
    except DRCNError as e:
        if str(path) in str(e):
            raise
        raise type(e)(f"{path}: {e}") from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadImageError(f"{path}: too large to upscale safely ({e})") from e
    except UnidentifiedImageError as e:
        raise BadImageError(f"{path}: not an image Pillow can read") from e
    except MemoryError as e:
        raise OutOfMemoryError(f"{path}: too large for this machine's memory") from e
    except FileNotFoundError as e:
        raise BadImageError(f"{path}: file not found") from e
    except ValueError as e:
        if "MAX_TEXT_CHUNK" in str(e):
            raise BadImageError(
                f"{path}: an embedded ICC profile or text chunk is larger than Pillow's "
                f"{PngImagePlugin.MAX_TEXT_CHUNK >> 20} MB safety limit") from e
        raise BadImageError(f"{path}: cannot decode image ({one_line(e)})") from e
    except Exception as e:  # a hostile file must not take the caller down with it
        raise BadImageError(f"{path}: cannot decode image ({one_line(e)})") from e


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name; refuses a missing or empty folder."""
    if not folder.is_dir():
        raise DatasetError(f"{folder} is a file, not a folder of images" if folder.exists()
                           else f"dataset folder not found: {folder}")
    try:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    except OSError as e:
        raise DatasetError(f"cannot read folder {folder}: {e.strerror or e}") from e
    if not files:
        raise DatasetError(f"no images in {folder}")
    return files


def read_image8(path: Path) -> torch.Tensor:
    """An image file as 8-bit levels (0..255, float64): ``[3, H, W]`` RGB, or ``[H, W]`` if grey.

    Decoded by :func:`read_image` (EXIF orientation applied); 16-bit and float files are scaled
    to 8 bits (floats must lie in 0..1) and alpha is dropped. Evaluation and training read
    through this.
    """
    array, _ = read_image(path)
    try:
        require_unit_range(array, "scoring")
    except BadImageError as e:
        raise BadImageError(f"{path}: {e}") from None
    a = torch.from_numpy(np.asarray(to_8bit(array), dtype=np.float64))
    if a.dim() == 2 or a.shape[2] <= 2:
        return a if a.dim() == 2 else a[:, :, 0].contiguous()
    return a[:, :, :3].permute(2, 0, 1).contiguous()


def read_y(path: Path) -> torch.Tensor:
    """Protocol step 1: an image file as its 8-bit Y plane (0..255, float64); grey stays as is."""
    return image_y(read_image8(path))


def _decode(path: Path) -> tuple[np.ndarray, ImageInfo]:
    with Image.open(path) as im:
        alpha_bmp = _bmp_alpha(path, im)
        turn = orientation(im)  # read before loading: Pillow turns TIFF pixels upright in load()
        im.load()
        turned = turn != 1 and orientation(im) == 1
        icc = im.info.get("icc_profile")
        info = ImageInfo(format=im.format, icc_profile=icc if isinstance(icc, bytes) else None,
                         dpi=declared_dpi(im), lossy=is_lossy(path, im),
                         about=Descriptive.read(im))
        if im.format in ("JPEG", "MPO"):
            layers = getattr(im, "layer", None)  # (component, h, v, quantisation table)
            info.jpeg_quality = jpeg_quality(getattr(im, "quantization", None),
                                             layers[0][3] if layers else 0)
        try:
            frames = int(getattr(im, "n_frames", 1))
        except Exception:  # noqa: BLE001 - a damaged frame table: the first frame decoded, that is enough
            frames = 1
        if frames > 1:
            info.notes.append(f"{frames} frames: only the first was upscaled")
        exif = read_exif(im, info.notes)
        if alpha_bmp is not None:
            im = alpha_bmp
        im, info.dpi = apply_orientation(im, exif, info.dpi, turn, turned)
        info.exif = exif
        array = _to_array(im, info)
    if array.dtype == np.float32:
        info.value_range = (float(array.min()), float(array.max()))
    return array, info


def _bmp_alpha(path: Path, im: Image.Image) -> Image.Image | None:
    """A 32-bit BMP's fourth byte as alpha (Pillow reads it as padding) when it is not all zero;
    Pillow itself writes RGBA that way."""
    tile = im.tile[0] if im.format == "BMP" and len(im.tile) == 1 else None
    if tile is None or tile.codec_name != "raw" or tile.args[0] != "BGRX":
        return None
    _, stride, orient = tile.args
    with open(path, "rb") as f:
        f.seek(tile.offset)
        data = f.read(stride * im.height)
    if len(data) < stride * im.height:
        return None
    rgba = Image.frombuffer("RGBA", im.size, data, "raw", "BGRA", stride, orient)
    return rgba if rgba.getextrema()[3] != (0, 0) else None


def _to_array(im: Image.Image, info: ImageInfo) -> np.ndarray:
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return np.asarray(im, dtype=np.uint16)
    if mode == "I":
        a = np.asarray(im)
        if a.min() < 0 or a.max() > 65535:
            raise BadImageError("32-bit integer images are not supported")
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
    if a.ndim == 2 and a.dtype == np.uint16:
        return Image.fromarray(a)  # I;16
    if a.ndim == 2 and np.issubdtype(a.dtype, np.floating):
        return Image.fromarray(a.astype(np.float32))
    return Image.fromarray(to_8bit(a))  # Pillow has no 16-bit or float colour


# What each output format can store; other modes are converted (or refused) by ``encode``.
_STORES = {"JPEG": {"L", "RGB"}, "BMP": {"L", "RGB", "RGBA"},
           "WEBP": {"L", "LA", "RGB", "RGBA"}, "PNG": {"L", "LA", "I;16", "RGB", "RGBA"},
           "TIFF": {"L", "LA", "I;16", "F", "RGB", "RGBA"}}


def encode(array: np.ndarray, fmt: str, info: ImageInfo) -> Image.Image:
    """The output image in a mode ``fmt`` stores; refuses combinations that would lose data."""
    if info.value_range is not None and np.issubdtype(array.dtype, np.floating):
        array = np.clip(array, *info.value_range)
    im = to_pil(array)
    if im.mode in _STORES[fmt]:
        return im
    if fmt == "JPEG" and im.mode in ("LA", "RGBA"):
        raise BadOptionError("JPEG cannot store the alpha channel: use PNG, WebP or TIFF",
                             option="format")
    if im.mode == "LA":  # BMP: grey with alpha as RGBA
        return im.convert("RGBA")
    low, high = info.value_range or (0.0, 1.0)
    if im.mode == "F" and (low < 0 or high > 1):
        raise BadOptionError(f"the float values span {low:g}..{high:g}; {fmt} stores 0..1 and "
                             "would clip them: write TIFF instead", option="format")
    if im.mode == "F" and fmt == "PNG":
        info.notes.append("PNG stores integers: float result stored as 16-bit")
        return Image.fromarray((np.clip(np.asarray(im), 0, 1) * 65535).round().astype(np.uint16))
    if im.mode in ("I;16", "F"):
        info.notes.append(f"{fmt} stores 8 bits: result reduced to 8 bits")
        return Image.fromarray(to_8bit(np.asarray(im)))
    raise BadImageError(f"{fmt} cannot store {im.mode} images")


def check_writable(array: np.ndarray, fmt: str, info: ImageInfo,
                   scale: float | tuple[float, float], quality: int) -> None:
    """Encode a 2x2 corner with the real options, so an impossible mode, format or metadata
    combination is refused before any upscaling is spent on it."""
    probe = replace(info, notes=[])
    try:
        image = encode(array[:2, :2], fmt, probe)
        image.save(io.BytesIO(), format=fmt, **save_options(fmt, probe, scale, quality))
    except DRCNError:
        raise
    except Exception as e:  # Pillow's many ways to say "cannot write this"
        raise BadImageError(f"cannot write this image as {fmt}: {one_line(e)}") from e


def save_options(fmt: str, info: ImageInfo, scale: float | tuple[float, float],
                 quality: int) -> dict:
    """Pillow save options carrying ICC, EXIF and DPI, resolutions scaled so the print size
    stays the same; ``scale`` is one factor or (horizontal, vertical)."""
    opts: dict = {}
    if info.icc_profile:
        opts["icc_profile"] = info.icc_profile
    sx, sy = scale if isinstance(scale, tuple) else (scale, scale)
    exif_tags = info.about.with_xmp(info.exif, (sx, sy)) if fmt == "TIFF" else info.exif
    exif, sub_ifds = exif_for(exif_tags, fmt, (sx, sy), info.notes) if fmt != "BMP" else \
        (None, False)
    if exif:
        opts["exif"] = exif
    opts.update(info.about.save_options(fmt, (sx, sy), info.notes))
    if info.dpi and fmt in ("JPEG", "PNG", "TIFF", "BMP"):
        opts["dpi"] = (info.dpi[0] * sx, info.dpi[1] * sy)
    if fmt in ("JPEG", "WEBP"):
        opts["quality"] = quality
    if fmt == "JPEG":
        opts["subsampling"] = 0 if quality >= 90 else 2
    if fmt == "TIFF":
        if sub_ifds:  # libtiff cannot write EXIF sub-IFDs; Pillow's own writer can
            info.notes.append("TIFF written uncompressed to keep the EXIF sub-IFDs")
        else:
            opts["compression"] = "tiff_adobe_deflate"
    return opts


def refuse_input_target(path: Path, inputs: Iterable[Path]) -> None:
    """No command may write over one of its own inputs, even when asked to overwrite."""
    real = os.path.realpath(path)
    if any(os.path.realpath(p) == real for p in inputs):
        raise InputConflictError(f"{path} is an input of this command; choose another file")


def atomic_save(image: Image.Image, path: Path, fmt: str, overwrite: bool = False,
                mode: int | None = None, **options) -> None:
    """Save through a temporary file in the same folder, then rename into place; ``mode``
    sets the result's permission bits (default: the usual ones from the umask)."""
    _atomic(path, overwrite, lambda f: image.save(_WithoutFileno(f), format=fmt, **options), mode)


class _WithoutFileno:
    """The temporary file as Pillow sees it. Given a descriptor, some encoders (JPEG, BMP) write
    to it in C and ignore short writes: a full disk then leaves a cut-off file that looks saved.
    Without one they write through ``write``, which raises."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f

    def __getattr__(self, name: str) -> object:
        if name == "fileno":
            raise AttributeError(name)
        return getattr(self._f, name)


def atomic_write_bytes(path: Path, data: bytes, overwrite: bool = True) -> None:
    """Write bytes atomically (JSON logs, cards)."""
    _atomic(path, overwrite, lambda f: f.write(data))


NAME_MAX = 255  # bytes in a file name on common file systems
_PART = re.compile(r"^\..*\.(\d+)\.[a-z0-9_]{8}\.part$", re.DOTALL)


def _part_prefix(name: str) -> str:
    """``.NAME.PID.`` with NAME cut so the temporary name fits the 255-byte name limit."""
    tail = f".{os.getpid()}."
    room = NAME_MAX - len(tail.encode()) - 1 - 8 - len(".part")
    raw = name.encode("utf-8", "surrogateescape")[:room]
    return "." + raw.decode("utf-8", "ignore") + tail


def _new_part(path: Path) -> tuple[int, str]:
    """A new temporary file beside ``path`` with the mode any new file gets (0666 less the
    umask, which the kernel applies: reading it would change it for every thread)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = str(path.parent / f"{_part_prefix(path.name)}{secrets.token_hex(4)}.part")
        with contextlib.suppress(FileExistsError):
            return os.open(tmp, flags, 0o666), tmp
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(path))


def clean_stale_parts(folder: Path) -> int:
    """Remove temporary files left in ``folder`` by writers that no longer run (killed by a
    signal or a crash); returns how many were removed. Live writers' files are left alone."""
    removed = 0
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    for name in names:
        m = _PART.match(name)
        if m and not _alive(int(m.group(1))):
            try:
                os.unlink(os.path.join(folder, name))
                removed += 1
            except OSError:
                pass
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True
    return True


def _atomic(path: Path, overwrite: bool, write, mode: int | None = None) -> None:
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _new_part(path)
        if mode is not None:
            os.chmod(tmp, mode)
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
    except BaseException as e:
        _remove(tmp)
        if not isinstance(e, Exception) or isinstance(e, DRCNError):
            raise
        # A specific errno (permission, read-only) is the reason; encoders that report a full
        # disk only as a generic error (no errno, or EIO) are told apart by the free space.
        specific = isinstance(e, OSError) and e.errno not in (None, errno.EIO)
        if (isinstance(e, OSError) and e.errno == errno.ENOSPC) or \
                (not specific and _disk_full(path.parent)):
            raise WriteError(f"disk full while writing {path}; nothing was written") from e
        reason = e.strerror if isinstance(e, OSError) and e.strerror else one_line(e)
        raise WriteError(f"cannot write {path}: {reason}") from e


def _disk_full(folder: Path) -> bool:
    """True when ``folder``'s file system has (almost) no space left: encoders such as libtiff
    report a full disk only as a generic error."""
    try:
        return shutil.disk_usage(folder).free < (1 << 20)
    except OSError:
        return False


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


def _remove(path: str | None) -> None:
    if path is not None:
        with contextlib.suppress(OSError):
            os.unlink(path)
