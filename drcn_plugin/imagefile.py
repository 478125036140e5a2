"""Image files: decode with Pillow to engine arrays with their metadata (:mod:`.pixelmodes`
turns each Pillow mode into an array; :mod:`.encoding` writes them back).

Reading applies the EXIF orientation (and resets the tag), keeps the ICC profile, DPI and
colour code points, 16-bit grey and a 10/12-bit HEIF at 16 bits; a damaged or hostile file is
one error naming it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from . import devices
from .av1header import avif_base_q_idx
from .colourspace import read_colour_chunks
from .compositing import (
    bare_gif_screen,
    behind_default_image,
    clipped_screen,
    first_animation_frame,
    shown_size,
    with_bare_screen,
)
from .compression import file_jpeg_quality, is_lossy, webp_quantizer
from .deep import read_deep, transpose16
from .errors import (
    BadImageError,
    DamagedImageError,
    DRCNError,
    OutOfMemoryError,
    memory_size,
    one_line,
    reason,
)
from .hevcheader import heif_slice_qp
from .imaging import image_y
from .iptc import tiff_iptc
from .jpegparts import damage_note, extra_images, extra_images_note, require_whole_jpeg
from .metadata import (
    IPTC,
    ORIENTATION,
    TRANSPOSE,
    Descriptive,
    apply_orientation,
    declared_dpi,
    orientation,
    read_exif,
)
from .misreads import (
    require_whole_png,
    require_whole_tiff,
    tga_alpha,
    usable_icc,
    without_damaged_chunks,
)
from .opening import (
    FileState,
    caught_warnings,
    decode_failure,
    file_state,
    load_pixels,
    open_image,
    open_regular,
    pillow_frames,
    refusal,
    refuse_preview,
    text_limit,
    tiff_pages,
)
from .pixelmodes import (
    GREY_MODES,
    NEGATIVE,
    bmp_alpha,
    held_at_8_bits,
    signed_bytes,
    stored_mode,
    to_array,
    unmarked_channels,
    white_is_zero,
)
from .planes import PEAKS, require_unit_range, to_8bit
from .tiffdeep import StandIn, decode_bytes

FORMATS = {"png": "PNG", "apng": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "jpe": "JPEG",
           "jfif": "JPEG", "mpo": "JPEG", "webp": "WEBP", "avif": "AVIF", "tiff": "TIFF",
           "tif": "TIFF", "bmp": "BMP"}
SUFFIX = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "AVIF": ".avif", "TIFF": ".tif",
          "BMP": ".bmp"}
# File suffixes taken as images when scanning folders (batches, datasets, training data).
IMAGE_SUFFIXES = frozenset({".png", ".apng", ".jpg", ".jpeg", ".jpe", ".jfif", ".mpo", ".webp",
                            ".tif", ".tiff", ".bmp", ".gif", ".ppm", ".pgm", ".pbm", ".pnm",
                            ".tga", ".jp2", ".j2k", ".j2c", ".jpf", ".jpx", ".ico", ".pcx",
                            ".sgi", ".qoi", ".dds", ".avif", ".heic", ".heif", ".hif"})
HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"})
# Most bytes a decode through Pillow takes per pixel: Pillow's 4-byte pixels, converted and
# turned, and a float32 RGBA array (measured: 10-18, CMYK the most). It stands in for Pillow's
# fixed pixel limit. A TIFF of samples Pillow has no mode for says what its own reading takes.
DECODE_BYTES_PER_PIXEL = 32


@dataclass
class ImageInfo:
    """What a file carries besides pixels, to be written back with the result."""

    format: str | None
    icc_profile: bytes | None = None
    exif: Image.Exif | None = None
    dpi: tuple[float, float] | None = None
    value_range: tuple[float, float] | None = None  # float images: outputs stay inside it
    notes: list[str] = field(default_factory=list)
    lossy: bool = False  # a lossy codec (JPEG, lossy WebP, AVIF, HEIF): artefacts are likely
    jpeg_quality: int | None = None  # from a JPEG's (or JPEG TIFF's) quantisation tables
    progressive: bool = False  # a JPEG's coding (a web export's), which a JPEG result keeps
    webp_quantizer: float | None = None  # a lossy WebP's mean quantiser index, 0..127
    av1_q_index: int | None = None  # an AVIF's base_q_idx, 0..255
    hevc_qp: int | None = None  # a HEIF's slice QP, up to 51
    about: Descriptive = field(default_factory=Descriptive)  # XMP, comments, PNG colour chunks
    frames: int = 1  # an animation's or a multi-page file's; the array is the first
    damaged_frames: bool = False  # frames after the first damaged, uncounted (.pillow_frames)
    state: FileState | None = None  # the file's when read (opening.file_state)


def read_image(path: Path) -> tuple[np.ndarray, ImageInfo]:
    """Decode ``path`` to an ``H x W x C`` array (``H x W`` for grey; uint8, uint16 or float32)
    and its metadata.

    Whatever the decoder raises on a damaged or hostile file becomes one BadImageError naming
    the file; decoder warnings become notes. An image whose decoding cannot fit in the memory
    available is refused from its header (OutOfMemoryError), whatever its pixel count.
    """
    with decoding(path):
        with caught_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # memory is checked
            warnings.filterwarnings("ignore", "Metadata Warning, tag 33723 ")  # see tiff_iptc
            # another object's file collected meanwhile says nothing about this one
            warnings.simplefilter("ignore", ResourceWarning)
            array, info = _decode(path)
        for w in dict.fromkeys(str(w.message).splitlines()[0] for w in caught if str(w.message)):
            info.notes.append(f"decoder warning: {w}")
        return array, info


def image_shape8(path: Path) -> tuple[int, ...]:
    """The shape :func:`read_image8` gives ``path`` (``(3, H, W)``, or ``(H, W)`` for grey), read
    from the file's header (orientation applied) without decoding its pixels. A PNG turned by
    anything but EXIF before its pixels (Pillow finds it only by decoding) may come back
    unturned: same sides."""
    with decoding(path), open_regular(path) as raw, \
            open_image(without_damaged_chunks(raw, [], header=True)) as im:
        h, w = upright_size(im)
        return (h, w) if im.mode in GREY_MODES else (3, h, w)


def upright_size(im: Image.Image) -> tuple[int, int]:
    """The (height, width) the opened ``im`` decodes to, turned as its orientation (EXIF, or the
    XMP Pillow falls back to) says. Pillow opens a TIFF at the size its Orientation tag turns it
    to, and one turned by XMP alone at its stored size; a PNG's orientation is read only from
    EXIF before its pixels (Pillow's getexif() decodes otherwise)."""
    w, h = shown_size(im)
    if im.format == "PNG" and "exif" not in im.info:
        return h, w
    turned_on_opening = im.format == "TIFF" and im.tag_v2.get(ORIENTATION) in (5, 6, 7, 8)
    if orientation(im) >= 5 and not turned_on_opening:
        return w, h
    return h, w


@lru_cache(maxsize=1)
def heif_opener() -> bool:
    """Let Pillow open HEIF/HEIC (phone photos) through pillow-heif, when it is installed."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return False
    register_heif_opener()
    return True


def _heif_brand(path: Path) -> bool:
    """Whether ``path`` starts as a HEIF file does (an ISO media ``ftyp`` box with a HEIF brand)."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        return False
    return head[4:8] == b"ftyp" and head[8:12] in HEIF_BRANDS


@contextmanager
def decoding(path: Path) -> Iterator[None]:
    """Turn whatever reading ``path`` raises into one error naming the file."""
    heif_opener()
    try:
        yield
    except DRCNError as e:
        if str(path) in str(e):
            raise
        raise type(e)(f"{path}: {e}") from e
    except Image.DecompressionBombError as e:
        raise BadImageError(f"{path}: more pixels than PIL.Image.MAX_IMAGE_PIXELS allows (drcn "
                            f"sets it from the memory available): {one_line(e)}") from e
    except UnidentifiedImageError as e:
        if _heif_brand(path) and not heif_opener():
            raise BadImageError(f"{path}: a HEIF/HEIC image; Pillow reads those with the "
                                "pillow-heif package (pip install pillow-heif)") from e
        raise refusal(path) from e
    except MemoryError as e:
        raise OutOfMemoryError(f"{path}: too large for this machine's memory") from e
    except IsADirectoryError as e:
        raise BadImageError(f"{path}: a folder, not an image file") from e
    except FileNotFoundError as e:
        what = f"a broken link (to {os.readlink(path)})" if os.path.islink(path) else \
            "file not found"
        raise BadImageError(f"{path}: {what}") from e
    except ValueError as e:
        if too_much := text_limit(e):
            raise BadImageError(f"{path}: {too_much}") from e
        raise decode_failure(path, e) from e
    except OSError as e:
        if e.errno is None:  # a decoder's complaint (a truncated file), not the system's
            raise decode_failure(path, e) from e
        raise BadImageError(f"{path}: cannot read ({reason(e)})") from e
    except Exception as e:  # a hostile file must not take the caller down with it
        raise decode_failure(path, e) from e


DAMAGED_FRAMES = "frames after the first are damaged or cut short: only the first was upscaled"


def first_frame_only(frames: int) -> str:
    """The note of a file of several ``frames`` whose first alone is upscaled."""
    return f"{frames} frames: only the first was upscaled"


def read_in_part(path: Path, array: np.ndarray, info: ImageInfo) -> str | None:
    """One line naming what a colour reading of ``array`` (alpha dropped), decoded from
    ``path``, leaves out of the file: frames past the first, transparency; None if nothing."""
    unread = [f"{info.frames} frames: only the first is read"] * (info.frames > 1) + \
        ["frames after the first are damaged: only the first is read"] * info.damaged_frames
    if array.ndim == 3 and array.shape[2] in (2, 4) and \
            array[..., -1].min() < PEAKS.get(array.dtype, 1.0):
        unread.append("transparent pixels are read as the colour stored under them")
    return f"{path}: {'; '.join(unread)}" if unread else None


def read_levels8(path: Path, left_out: list[str] | None = None) -> torch.Tensor:
    """An image file as 8-bit levels in uint8: ``[3, H, W]`` RGB, or ``[H, W]`` if grey.

    Decoded by :func:`read_image` (EXIF orientation applied); 16-bit and float files are scaled
    to 8 bits (floats must lie in 0..1) and alpha is dropped. Training holds its images so.
    What the levels leave out of the file (frames past the first, transparency) is added to
    ``left_out`` as one line naming it, so that a caller can say so.
    """
    array, info = read_image(path)
    if (line := read_in_part(path, array, info)) and left_out is not None:
        left_out.append(line)
    try:
        require_unit_range(array, "training, like scoring,")
    except BadImageError as e:
        raise BadImageError(f"{path}: {e}") from None
    a = torch.from_numpy(np.require(to_8bit(array), requirements=["C", "W"]))
    if a.dim() == 2 or a.shape[2] <= 2:
        return a if a.dim() == 2 else a[:, :, 0].contiguous()
    return a[:, :, :3].permute(2, 0, 1).contiguous()


def read_image8(path: Path, left_out: list[str] | None = None) -> torch.Tensor:
    """:func:`read_levels8` as float64 levels (0..255), what evaluation computes with."""
    return read_levels8(path, left_out).double()


def read_y(path: Path, left_out: list[str] | None = None) -> torch.Tensor:
    """Protocol step 1: an image file as its 8-bit Y plane (0..255, float64); grey stays as is."""
    return image_y(read_image8(path, left_out))


def _decode(path: Path) -> tuple[np.ndarray, ImageInfo]:
    # Opened from a file object, not a path: Pillow then reads the pixels instead of memory-mapping
    # them, and its mapping of an uncompressed L, P or 16-bit grey TIFF with orientation 5-8 uses
    # the turned size for the stored pixels, scrambling them.
    notes: list[str] = []
    with open_regular(path) as raw, open_image(f := without_damaged_chunks(raw, notes)) as im:
        refuse_from_header(im)
        alpha_bmp = bmp_alpha(f, im)
        stored = stored_mode(im)  # first: loading (PNG's getexif loads) clears the tiles
        bare = bare_gif_screen(im)  # from the tiles too
        screen = clipped_screen(im)  # likewise
        turn = orientation(im)  # read before loading: Pillow turns TIFF pixels upright in load()
        pillows = orientation(im, xmp=False)  # the one Pillow turns by, and resets, in load()
        white, signed = white_is_zero(im), signed_bytes(im)
        load_pixels(im)
        if im.format == "PNG":
            require_whole_png(f, im)
        turned = pillows != 1 and orientation(im, xmp=False) == 1
        icc = im.info.get("icc_profile")
        info = ImageInfo(format=im.format, icc_profile=icc if isinstance(icc, bytes) else None,
                         dpi=declared_dpi(im), lossy=is_lossy(f, im), notes=notes,
                         state=file_state(raw))
        info.icc_profile = usable_icc(info.icc_profile, info.notes)
        info.about = Descriptive.read(im, info.notes, turn, turned)
        info.about.png_colour.update(read_colour_chunks(f, im))
        info.jpeg_quality = file_jpeg_quality(im)
        info.progressive = im.format in ("JPEG", "MPO") and bool(im.info.get("progressive"))
        if damaged := damage_note(f, im, upright=turn == 1):
            info.notes.append(damaged)
        info.webp_quantizer = webp_quantizer(f) if im.format == "WEBP" else None
        info.av1_q_index = avif_base_q_idx(f) if im.format == "AVIF" else None
        info.hevc_qp = heif_slice_qp(f) if im.format == "HEIF" else None
        if extras := extra_images(f, im):  # a photo's gain map or previews, not its frames
            info.notes.append(extra_images_note(extras, info.notes))
        else:
            try:
                info.frames = frame_count(path, im)
            except DamagedImageError:  # frame 0 stands for a still; an animation is refused
                info.damaged_frames = True
                info.notes.append(DAMAGED_FRAMES)
        if info.frames > 1:
            info.notes.append(first_frame_only(info.frames))
        if unmarked := unmarked_channels(im):
            info.notes.append(f"{unmarked} extra channel(s) the TIFF does not mark as alpha "
                              "dropped")
        exif = read_exif(im, info.notes)
        if im.format == "TIFF" and exif is not None and IPTC in exif:
            # kept where a JPEG's is, so each output format puts it where its readers look
            read = exif.pop(IPTC)
            iptc = tiff_iptc(f) or read  # as stored: Pillow reads one value of it
            if isinstance(iptc, bytes):
                info.about.iptc = iptc
            else:
                info.notes.append("IPTC dropped: its TIFF tag could not be read as stored")
        if alpha_bmp is not None:
            im = alpha_bmp
        im = tga_alpha(f, im, stored)
        deep = read_deep(f, im, stored, info.notes)
        if deep is None:
            im = held_at_8_bits(im, stored, info.notes)
        elif turn != 1 and not turned:  # first: the unturned copy goes before Pillow's turn
            deep = transpose16(deep, TRANSPOSE[turn])
        if screen is not None:
            im = im.crop(screen)
        if bare is not None:
            im = with_bare_screen(im, bare)
        if deep is None and behind_default_image(im):  # the still a browser shows
            im, stored = first_animation_frame(im, f, stored, info.notes)
        im, info.dpi = apply_orientation(im, exif, info.dpi, turn, turned)
        info.exif = exif
        array = to_array(im, info, stored) if deep is None else deep
    if white:
        array = np.subtract(65535, array, dtype=np.uint16)
    if signed and array.max() >= 128:  # the bytes of negative samples; none: the levels stand
        raise BadImageError(NEGATIVE)
    if array.dtype == np.float32:
        info.value_range = (float(array.min()), float(array.max()))
    return array, info


def frame_count(path: Path, im: Image.Image) -> int:
    """How many frames (pages) ``im``, the loaded image of ``path``, has. A TIFF's are counted
    from its chain of directories, read from a file of its own: Pillow's count would set its
    reader up again at the first page, without the stand-in's modes it was opened with (for
    samples Pillow has no mode for), and reset its size but not its pixels, which Pillow turned
    upright in loading. Where a TIFF's chain is damaged the pages before the damage count
    (:func:`.tiff_pages`); a count that fails counts one: the first frame decoded, enough. Any
    other format's count fails where a frame after the first is damaged (:func:`.pillow_frames`)."""
    if im.format != "TIFF":  # an APNG's default image outside its animation is no frame
        return pillow_frames(path, im) - behind_default_image(im)
    try:
        with open_regular(path) as raw:
            return max(1, tiff_pages(raw))
    except Exception:  # noqa: BLE001 - any failure of the count, as above
        return 1


def refuse_from_header(im: Image.Image) -> None:
    """Refuse, before its pixels are decoded, what the opened ``im``'s header alone condemns: a
    decoding that cannot fit in memory, a camera raw's preview, a TIFF whose strips or a JPEG
    whose coded data fall short."""
    _check_decode_memory(im)
    refuse_preview(im)
    require_whole_tiff(im)
    require_whole_jpeg(im)


def _check_decode_memory(im: Image.Image) -> None:
    """Refuse, from the header, an image whose decoding cannot fit in the memory available (a
    small file may claim any size), by what the path that will decode it takes: a GIF clipped to
    its screen (:func:`.clipped_screen`), Pillow's grown canvas at a palette byte a pixel."""
    w, h = im.size
    if isinstance(im, StandIn):
        need = decode_bytes(im, orientation(im) != 1)
    elif (screen := clipped_screen(im)) is not None:
        shown = (screen[2] - screen[0]) * (screen[3] - screen[1])
        need = w * h + shown * DECODE_BYTES_PER_PIXEL
    else:
        need = w * h * DECODE_BYTES_PER_PIXEL
    avail = devices.host_available_memory()
    if need > avail:
        raise OutOfMemoryError(f"a {w}x{h} image needs about {memory_size(need)} of memory "
                               f"to decode; {memory_size(avail)} is available")


def memory_pixel_limit() -> int:
    """A value for ``PIL.Image.MAX_IMAGE_PIXELS`` in a process that is drcn's own: Pillow then
    refuses (at twice it) what the memory available now cannot decode. Pillow also checks the
    images nested in a file with it (an icon's frames, which it decodes on opening), where the
    check from the file's header (:func:`read_image`) sees only the size the file declares."""
    return max(1, devices.host_available_memory() // (2 * DECODE_BYTES_PER_PIXEL))
