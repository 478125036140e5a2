"""Opening image files: regular files only, each through the Pillow reader that reads it right,
and why Pillow refused, or failed on, one it has a reader for."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import stat
import struct
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

from PIL import Image, PngImagePlugin, TiffImagePlugin, UnidentifiedImageError

from .errors import BadImageError, DamagedImageError, one_line, pillow_internal


def open_regular(path: Path) -> BinaryIO:
    """``path`` opened for reading if it is a regular file: a pipe or device put in its place (an
    input swapped during a batch) would block the read for ever, so it is refused at once."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if not stat.S_ISREG(mode):
            raise BadImageError(f"{path}: not a regular file (a pipe, device or socket)")
        if hasattr(os, "O_NONBLOCK"):  # reads of a regular file block, on every file system
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


@dataclass(frozen=True)
class FileState:
    """An open file's identity and version: device, file number, size and time of its last
    change (ns); and, for a file to be read again, a hash of its bytes, by which a file only
    touched (by a sync tool, a backup) is known unchanged."""

    version: tuple[int, int, int, int]
    digest: bytes | None = None


def file_state(f: BinaryIO) -> FileState:
    """The open file's state, without a hash (:func:`hashed` adds one)."""
    st = os.fstat(f.fileno())
    return FileState((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))


def hashed(f: BinaryIO, state: FileState) -> FileState:
    """``state``, taken of the open file ``f``, with the hash of its bytes where they are still
    those it was taken of (its version unchanged since): for a file its job reads again."""
    digest = _digest(f)
    return replace(state, digest=digest) if file_state(f).version == state.version else state


def reopen(path: Path, state: FileState | None) -> BinaryIO:
    """``path`` opened again (:func:`open_regular`) by a job that first read it in ``state``
    (:func:`file_state`; None: not known): another file put in its place during the upscale, or
    this one rewritten, is refused, as two files' frames would mix in one result. Where only
    the version differs and the bytes, of the same size, hash as in ``state``, the file is the
    one first read (touched, or replaced by a copy of itself)."""
    f = open_regular(path)
    if state is None or (now := file_state(f).version) == state.version:
        return f
    if state.digest is None or now[2] != state.version[2] or _digest(f) != state.digest:
        f.close()
        raise BadImageError(f"{path} changed while it was being upscaled: nothing written")
    return f


def _digest(f: BinaryIO) -> bytes:
    """The hash of the whole open file's bytes; ``f`` is left where it was."""
    where = f.seek(0, os.SEEK_CUR)
    f.seek(0)
    h = hashlib.blake2b()
    while chunk := f.read(1 << 20):
        h.update(chunk)
    f.seek(where)
    return h.digest()


# Pillow's words where libwebp refuses a file (on opening), and fails on a frame's data (loading)
_WEBP_UNREAD, _WEBP_UNDECODED = "could not create decoder object", "failed to read next frame"
_WEBP_DAMAGED = "the WebP is damaged or cut short (libwebp cannot read it)"
_PLANAR = 284  # the TIFF tag PlanarConfiguration (2: each channel stored as its own plane)
_TIFF_HEADS = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")  # classic and big TIFF, both byte orders
_STDERR_SWITCH = threading.Lock()
_WARNINGS_SWITCH = threading.RLock()  # held while a reading's warnings are caught (nested too)
# How libtiff's handlers write: "Module: text"; some of its decoders (LZW's) name the file as the
# module, which is "tempfile.tif", the name Pillow gives libtiff for every file it passes on
_PILLOWS_NAME = "tempfile.tif"
# Pillow logs one complaint before the refusal that says it ("More samples per pixel than can be
# decoded", of a TIFF): with no handler, logging's last resort printed it, once for each time the
# file was opened, beside drcn's one line. A host's own logging still gets it.
logging.getLogger("PIL").addHandler(logging.NullHandler())
_LIBTIFF_SAYS = re.compile(rf"(?:[A-Za-z_]\w*|{re.escape(_PILLOWS_NAME)}): \S")


def open_image(f: BinaryIO) -> Image.Image:
    """Pillow's image of the open file ``f`` (from its start). An uncompressed TIFF that stores
    each channel as its own plane is read through libtiff, as Pillow reads compressed ones:
    Pillow's own reader of such planes takes 16-bit samples for 8-bit ones (a 16-bit scan comes
    out scrambled, without an error) and refuses 16-bit grey or an unmarked extra channel. A
    TIFF of samples Pillow has no mode for (16-bit grey with alpha, float colour) is opened as
    :mod:`.tiffdeep`'s stand-in, whose pixels :mod:`.deep` reads. A WebP libwebp cannot read
    (Pillow says only that it "could not create decoder object") is refused as damaged."""
    try:
        im = Image.open(f)
    except UnidentifiedImageError:
        f.seek(0)
        if f.read(4) not in _TIFF_HEADS:
            raise
        try:
            return _through_libtiff(f)
        except UnidentifiedImageError:
            from .tiffdeep import open_stand_in  # here: tiffdeep imports this module

            if (stand_in := open_stand_in(f)) is None:
                raise
            return stand_in
    except OSError as e:
        f.seek(8)
        if str(e) != _WEBP_UNREAD or f.read(4) != b"WEBP":  # RIFF, its size, then the form
            raise
        raise DamagedImageError(_WEBP_DAMAGED) from e
    if im.format != "TIFF" or im.tag_v2.get(_PLANAR) != 2 or im.use_load_libtiff:
        return im
    return _through_libtiff(f)  # not im.close() first, which would close f too


class ThroughLibtiff(TiffImagePlugin.TiffImageFile):
    """Pillow's TIFF image read through libtiff, as its switch ``READ_LIBTIFF`` would have it,
    without setting that switch, which every thread reads (ComfyUI's nodes, the GIMP worker):
    another thread's TIFF would be opened through libtiff too."""

    @property
    def use_load_libtiff(self) -> bool:
        """Always: what Pillow's reader decides from its switch when it sets up the image."""
        return True

    @use_load_libtiff.setter
    def use_load_libtiff(self, _: bool) -> None:
        pass  # Pillow's reader sets it from READ_LIBTIFF, or the compression, at each page


def _through_libtiff(f: BinaryIO) -> ThroughLibtiff:
    """The TIFF open as ``f`` read through libtiff, refused and checked as ``Image.open`` refuses
    and checks the files it opens."""
    f.seek(0)
    try:
        im = ThroughLibtiff(f)
    except (SyntaxError, IndexError, TypeError, struct.error) as e:  # Image.open's refusals
        raise UnidentifiedImageError(f"cannot identify image file {f!r}") from e
    Image._decompression_bomb_check(im.size)  # noqa: SLF001 - as Image.open checks
    return im


@contextmanager
def caught_warnings(record: bool = False) -> Iterator[list[warnings.WarningMessage] | None]:
    """``warnings.catch_warnings(record=record)``, one thread's at a time: before Python 3.14 it
    swaps the process's filters and recorder for every thread, and put back out of order by two
    threads reading at once (a host's thread pool), one image's warnings became the other's
    notes and the host's later warnings went to a finished reading's list, for good."""
    with _WARNINGS_SWITCH, warnings.catch_warnings(record=record) as caught:
        yield caught


def load_pixels(im: Image.Image) -> None:
    """``im.load()``. libtiff (Pillow's decoder of compressed and planar TIFFs) writes its reasons
    straight to the process's stderr, beside drcn's own line, and Pillow then says only "decoder
    error -2": what it writes is caught, and becomes the error's reason, or on success a
    warning (which :func:`.imagefile.read_image` makes a note). What others write meanwhile (a
    live progress display) is passed on to stderr. A WebP whose data libwebp fails on is refused
    as damaged, as on opening (Pillow says only that it "failed to read next frame")."""
    if not getattr(im, "use_load_libtiff", False):
        try:
            im.load()
        except OSError as e:
            if im.format == "WEBP" and str(e) == _WEBP_UNDECODED:
                raise DamagedImageError(_WEBP_DAMAGED) from e
            raise
        return
    with _STDERR_SWITCH:  # one thread's catch at a time, each putting back the stderr it found
        try:
            sys.stderr.flush()
            caught = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the with below
        except (AttributeError, OSError, ValueError):  # no stderr (a GUI host's), or no room for
            im.load()  # a temporary file: libtiff's lines go where they would
            return
        with caught:
            try:
                saved = os.dup(2)
            except OSError:  # no file descriptor 2 to catch
                im.load()
                return
            os.dup2(caught.fileno(), 2)
            try:
                im.load()
            except OSError as e:
                failed: OSError | None = e
            else:
                failed = None
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            caught.seek(0)
            lines = caught.read().decode("utf-8", "surrogateescape").splitlines(keepends=True)
    said = [re.sub(rf"^{re.escape(_PILLOWS_NAME)}:", "libtiff:", line.strip().rstrip("."))
            for line in lines if _LIBTIFF_SAYS.match(line)]  # not the user's file's name
    others = "".join(line for line in lines if not _LIBTIFF_SAYS.match(line))
    if others:  # another thread's, a live progress display's: theirs, written where they meant
        with suppress(OSError):  # a reader of stderr that left fails their write, not this image
            os.write(2, others.encode("utf-8", "surrogateescape"))
    if failed is not None:
        raise DamagedImageError(f"cannot decode image ({'; '.join(said) or one_line(failed)})") \
            from failed
    for line in said:
        warnings.warn(line, stacklevel=2)


def refuse_preview(im: Image.Image) -> None:
    """Refuse a TIFF whose image is a reduced-resolution copy of another (NewSubfileType bit
    0), as a camera raw's first image (DNG, NEF, ...) is a preview of the raw Pillow cannot
    read: upscaled, the preview would pass for the photo."""
    subfile = im.tag_v2.get(_NEW_SUBFILE_TYPE, 0) if im.format == "TIFF" else 0
    if isinstance(subfile, int) and subfile & _REDUCED:
        raise BadImageError(f"its image is a {im.width}x{im.height} reduced-resolution preview, "
                            "not the photo (a camera raw file?): convert it to TIFF or JPEG first")


def refusal(path: Path) -> BadImageError:
    """The error for ``path`` that no Pillow reader opened: why the reader that claims its first
    bytes refused it (a 12-bit JPEG, a half-float TIFF), which Pillow's own "cannot identify
    image file" leaves out; that the file is empty; or, where the reader failed on the values
    of a damaged file, that it is damaged (:func:`pillow_internal`)."""
    try:
        with open_regular(path) as f, caught_warnings():
            warnings.simplefilter("ignore")  # the reader's complaints on the way are not the reason
            head = f.read(16)
            if not head:  # an interrupted copy, a cloud drive's placeholder
                return BadImageError(f"{path}: not an image Pillow can read (the file is empty: "
                                     "0 bytes)")
            for fmt, factory in _claimants(head):
                f.seek(0)
                try:
                    factory(f, str(path)).close()
                except Exception as e:  # noqa: BLE001 - its reason is what is wanted
                    if pillow_internal(e):
                        return damaged(path, fmt)
                    layout = _tiff_layout(f) if fmt == "TIFF" and str(e) == _NO_MODE else ""
                    return BadImageError(f"{path}: not an image Pillow can read (its {fmt} "
                                         f"reader: {layout or one_line(e)})")
    except (OSError, BadImageError):
        pass
    return BadImageError(f"{path}: not an image Pillow can read")


def decode_failure(path: Path, error: Exception) -> DamagedImageError:
    """The error for ``path``, opened, whose reading failed with ``error``: the reason Pillow or
    its decoder gives ("image file is truncated", "Truncated IHDR chunk"), or the file named
    damaged where Python's own error stands for it (:func:`pillow_internal`)."""
    if not pillow_internal(error):
        return DamagedImageError(f"{path}: cannot decode image ({one_line(error)})")
    try:
        with open_regular(path) as f:
            fmt = next((fmt for fmt, _ in _claimants(f.read(16))), "image")
    except (OSError, BadImageError):
        fmt = "image"
    return damaged(path, fmt)


def damaged(path: Path, fmt: str) -> DamagedImageError:
    """The plain refusal of a file whose ``fmt`` reader (``"TIFF"``) failed on what it holds."""
    return DamagedImageError(f"{path}: damaged or not a valid {fmt} file")


def _claimants(head: bytes) -> Iterator[tuple[str, Callable]]:
    """The Pillow readers (format, factory) that claim a file starting with ``head``, in the
    order Image.open tries them; a reader taking any bytes (no check) says little, and is left
    out."""
    Image.init()
    for fmt in Image.ID:
        factory, accept = Image.OPEN[fmt]
        try:
            claimed = accept(head) if accept else False
        except Exception:  # noqa: BLE001 - bytes too few for its check: not its format
            continue
        if claimed and not isinstance(claimed, str):
            yield fmt, factory


def text_limit(e: ValueError) -> str:
    """Why Pillow's PNG reader refused a file for the size of its text (or ICC profile), in
    words for a user: Pillow names its limits by constant, and the file is not damaged but
    holds more than they allow, in one chunk or in all of them; empty for other errors."""
    if "MAX_TEXT_CHUNK" in str(e):
        return "an embedded ICC profile or text chunk is larger than Pillow's " \
               f"{PngImagePlugin.MAX_TEXT_CHUNK >> 20} MB safety limit"
    if "MAX_TEXT_MEMORY" in str(e):
        return "its text chunks hold more text in all than Pillow's " \
               f"{PngImagePlugin.MAX_TEXT_MEMORY >> 20} MB safety limit"
    return ""


_NEW_SUBFILE_TYPE, _REDUCED = 254, 1  # a TIFF's tag, and its bit for a reduced-resolution copy
# A TIFF's tags ImageWidth and ImageLength, looked for among a directory's first entries (sorted
# by tag, as TIFF asks, they are among its first four).
_IMAGE_SIZE, _MOST_ENTRIES = frozenset({256, 257}), 256
_NO_MODE = "unknown pixel mode"  # Pillow's TIFF reader on samples it has no mode for
_SAMPLE_KINDS = {2: "signed ", 3: "float "}  # TIFF's SampleFormat, beside unsigned integers
_PHOTOMETRIC = {0: "grey", 1: "grey", 2: "RGB", 3: "palette", 4: "mask", 5: "CMYK",
                6: "YCbCr", 8: "CIELab", 32844: "LogL", 32845: "LogLuv"}


def as_tuple(value: object) -> tuple:
    """``value`` as a tuple: Pillow gives the value of a TIFF tag holding one, and the pixel of a
    one-band image, as itself."""
    return value if isinstance(value, tuple) else (value,)


def first_ifd(f: BinaryIO) -> TiffImagePlugin.ImageFileDirectory_v2 | None:
    """The tags of a TIFF's or BigTIFF's first image, read from ``f`` by Pillow, which keeps each
    tag's stored bytes until it is read; None when ``f`` holds no TIFF header."""
    f.seek(0)
    head = f.read(16)
    try:
        ifd = TiffImagePlugin.ImageFileDirectory_v2(head if head[2:3] == b"+" else head[:8])
        f.seek(ifd.next)
    except (SyntaxError, struct.error, OverflowError, ValueError):  # no header, or an offset past
        return None                                                # what a file can hold
    ifd.load(f)  # damaged entries: Pillow's warnings, and the tags before them
    return ifd


def tiff_pages(f: BinaryIO) -> int:
    """How many images (pages) the TIFF or BigTIFF open as ``f`` chains, from its directories'
    entries and links alone (their tags' values and pixels unread: Pillow has no mode for some).
    The count ends at a directory cut off by the file's end, at one without an image's width
    and height among its first entries (a link into zeros or other data: Pillow says "Missing
    dimensions"), and at a link back to one already counted (a loop); 0 when ``f`` holds no
    TIFF header."""
    f.seek(0)
    head = f.read(16)
    if head[:4] not in _TIFF_HEADS:
        return 0
    order, big = "<" if head[:2] == b"II" else ">", head[:4] in _TIFF_HEADS[2:]
    count, entry, link = (f"{order}Q", 20, f"{order}Q") if big else (f"{order}H", 12, f"{order}L")
    try:
        (where,) = struct.unpack_from(link, head, 8 if big else 4)
    except struct.error:  # a header cut off
        return 0
    end, seen = f.seek(0, os.SEEK_END), set()
    while where and where not in seen:
        f.seek(min(where, end))
        raw = f.read(struct.calcsize(count))
        if len(raw) < struct.calcsize(count):
            break
        entries = struct.unpack(count, raw)[0]
        table = f.read(min(entries, _MOST_ENTRIES) * entry)
        tags = {struct.unpack_from(f"{order}H", table, k)[0]
                for k in range(0, len(table) - entry + 1, entry)}
        if not tags >= _IMAGE_SIZE:
            break
        f.seek(min(where + len(raw) + entries * entry, end))
        raw = f.read(struct.calcsize(link))
        if len(raw) < struct.calcsize(link):
            break
        seen.add(where)
        (where,) = struct.unpack(link, raw)
    return len(seen)


def _tiff_layout(f: BinaryIO) -> str:
    """What a TIFF's first image holds that Pillow has no mode for, from its tags, as ``no mode
    for 16-bit grey with alpha``; empty when the tags cannot be read."""
    try:
        if (ifd := first_ifd(f)) is None:
            return ""
        bits, kinds = ifd.get(258, (1,)), ifd.get(339, (1,))
        colour, extra = _PHOTOMETRIC.get(ifd.get(262), "colour"), ifd.get(338, ())
    except Exception:  # noqa: BLE001 - damaged tags: Pillow's reason alone
        return ""
    depth = "/".join(map(str, dict.fromkeys(bits))) + "-bit"  # 16-bit, or 16/8-bit if mixed
    kind = _SAMPLE_KINDS.get(kinds[0], "") if kinds else ""
    alpha = sum(e in (1, 2) for e in extra)  # associated or unassociated alpha
    others = len(extra) - alpha
    return (f"no mode for {depth} {kind}{colour}" + (" with alpha" if alpha else "")
            + (f" and {others} extra channel(s)" if others else ""))


def pillow_frames(path: Path, im: Image.Image) -> int:
    """How many frames Pillow counts in ``im``, opened from ``path`` (1 where its format has
    none). Pillow counts by reading past each frame to the next's start, so a count that fails
    met a frame after the first cut short or damaged (a GIF cut in a later frame's header):
    :func:`later_frames_damaged`, which an animated result is refused for, not made of the frames
    before the damage without a word; a still of the first frame takes a note."""
    try:
        return int(getattr(im, "n_frames", 1))
    except Exception as e:  # noqa: BLE001 - IndexError, struct.error: Pillow's, for bytes cut off
        raise later_frames_damaged(path) from e


def later_frames_damaged(path: Path) -> DamagedImageError:
    """The refusal of an animation at ``path`` whose frames after the first Pillow cannot count."""
    return DamagedImageError(f"{path}: a frame after the first is damaged or cut short")
