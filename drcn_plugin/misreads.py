"""What Pillow reads wrong without a word, refused or mended as a careful reader would: a PNG
whose compressed pixels end early (Pillow leaves the missing rows black), an ICC profile no
colour engine can use (it would be copied into the result), a 16-bit TGA's alpha bit (Pillow
reads it inverted, and also where the header declares none), a PNG's cICP, mDCv and cLLi
chunks (Pillow reads past them), a PNG chunk whose checksum is wrong (Pillow refuses the whole
file for a damaged text chunk, and reads damaged pixel data)."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator
from typing import BinaryIO

from PIL import Image

from .errors import BadImageError, DamagedImageError, one_line
from .opening import as_tuple

_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # samples per pixel of each PNG colour type
# Adam7's passes: first column, first row, column step, row step
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
          (0, 1, 1, 2))
_INFLATE_STEP = 1 << 20  # bytes inflated at a time: the check holds no more


def png_data_size(width: int, height: int, depth: int, colour: int, interlaced: bool) -> int:
    """How many bytes a PNG's pixels inflate to: each row of each pass, a filter byte first."""
    bits = depth * _CHANNELS.get(colour, 1)
    total = 0
    for x0, y0, dx, dy in _ADAM7 if interlaced else ((0, 0, 1, 1),):
        columns, rows = max(0, -(-(width - x0) // dx)), max(0, -(-(height - y0) // dy))
        if columns and rows:
            total += rows * (1 + (columns * bits + 7) // 8)
    return total


def require_whole_png(f: BinaryIO, im: Image.Image) -> None:
    """Refuse a loaded PNG whose pixel data (its IDAT chunks, zlib) inflates to less than its
    header's size needs: Pillow stops where the zlib stream ends and leaves the rows after it
    black (zero), libpng refuses it ("Not enough image data"). A non-interlaced image whose last
    pixel is not zero was decoded to its end, and is not inflated again. Read from ``f``, the
    open file, whose position is kept."""
    last = im.getpixel((im.width - 1, im.height - 1))
    if not im.info.get("interlace") and any(as_tuple(last)):
        return
    where = f.tell()
    try:
        need, got = _png_inflated(f)
    except zlib.error as e:
        raise BadImageError(f"damaged PNG: its pixel data cannot be inflated ({e})") from e
    finally:
        f.seek(where)
    if got < need:
        raise BadImageError(f"damaged PNG: its pixel data ends early ({got} of {need} bytes; "
                            "the rest would be black)")


def require_whole_tiff(im: Image.Image) -> None:
    """Refuse, before loading, a TIFF whose strips or tiles cover less of the image than its
    header declares, where Pillow reads them itself (uncompressed): it leaves the rest black
    (a 2 KB file may so declare a 100-megapixel image), and libtiff, its reader of compressed
    TIFFs, refuses the file."""
    if im.format != "TIFF" or getattr(im, "use_load_libtiff", False) or not im.tile:
        return
    covered = sum(max(0, x1 - x0) * max(0, y1 - y0) for x0, y0, x1, y1 in
                  (tile.extents for tile in im.tile))
    planes = len(im.getbands()) if getattr(im, "tag_v2", {}).get(284) == 2 else 1
    need = im.width * im.height * planes
    if covered < need:
        raise BadImageError(f"damaged TIFF: its strips or tiles hold {covered} of the "
                            f"{need} pixels its header declares (the rest would be black)")


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# What the image loses with a dropped chunk of each kind, where more than words about it
_DROPPING_COSTS = {b"tRNS": "its transparency is lost",
                   b"eXIf": "its EXIF, orientation included, is lost",
                   **dict.fromkeys((b"iCCP", b"sRGB", b"gAMA", b"cHRM", b"cICP"),
                                   "its colours are read as sRGB")}


def without_damaged_chunks(f: BinaryIO, notes: list[str], header: bool = False) -> BinaryIO:
    """``f``, the open file, or where it is a PNG with an ancillary chunk (text, time, physical
    size...) whose checksum is wrong, a copy in memory without that chunk, named in ``notes``:
    Pillow refuses the whole file (or keeps such a chunk after the pixels), where libpng, which
    browsers and GIMP read with, drops the chunk and shows the image. A critical chunk's (IHDR,
    PLTE, IDAT) wrong checksum is refused as libpng refuses it: Pillow reads damaged pixel data
    without a word. A file that ends before its pixel data is refused as damaged (Pillow's
    reason is its own); one cut short in them is left to the decoder, which says so. With
    ``header``, only the chunks before the pixel data are checked: all that opening a file (not
    decoding it) reads, so the rest of the file is not read."""
    f.seek(0)
    if f.read(8) != _PNG_SIGNATURE:
        f.seek(0)
        return f
    damaged: list[tuple[bytes, int, int]] = []  # type, start, end
    pixels = False  # whether the walk reaches the pixel data
    for kind, length in png_chunks(f):
        pixels = pixels or kind == b"IDAT"
        if kind == b"IEND" or not kind.isalpha() or (header and kind == b"IDAT"):
            break
        start, crc, left = f.tell() - 8, zlib.crc32(kind), length
        while left and (data := f.read(min(_INFLATE_STEP, left))):
            crc, left = zlib.crc32(data, crc), left - len(data)
        stored = f.read(4)
        if left or len(stored) < 4:
            break
        if crc != int.from_bytes(stored, "big"):
            name = kind.decode("ascii")
            if not kind[0] & 0x20:  # an upper-case first letter: a critical chunk
                raise BadImageError(f"damaged PNG: its {name} chunk's checksum is wrong "
                                    f"({'its pixel data is' if name == 'IDAT' else 'it is'} "
                                    "damaged)")
            damaged.append((kind, start, start + 12 + length))
    if not pixels:  # Pillow's reason then is its own ("unpack_from requires a buffer ...")
        raise DamagedImageError(f"the PNG is damaged or cut short (no pixel data in its "
                                f"{f.seek(0, io.SEEK_END):,} bytes)")
    f.seek(0)
    if not damaged:
        return f
    data, kept, pos = f.read(), [], 0
    for _, start, end in damaged:
        kept.append(data[pos:start])
        pos = end
    names = ", ".join(dict.fromkeys(kind.decode("ascii") for kind, _, _ in damaged))
    costs = "; ".join(dict.fromkeys(_DROPPING_COSTS[kind] for kind, _, _ in damaged
                                    if kind in _DROPPING_COSTS)) or "the pixels are whole"
    notes.append(f"damaged PNG chunk dropped: {names} (wrong checksum; {costs})")
    return io.BytesIO(b"".join(kept) + data[pos:])


def png_chunks(f: BinaryIO) -> Iterator[tuple[bytes, int]]:
    """A PNG's chunks as (type, length), with ``f`` at each one's data; the next step moves past
    the chunk, whatever of it was read, and its CRC."""
    f.seek(8)  # past the signature
    while len(head := f.read(8)) == 8:
        length, kind = struct.unpack(">I4s", head)
        end = f.tell() + length + 4
        yield kind, length
        f.seek(end)


def _png_inflated(f: BinaryIO) -> tuple[int, int]:
    """The bytes a PNG's pixels need, and those its IDAT chunks inflate to (counted up to the
    need, holding one step of them at a time)."""
    need = got = 0
    inflate, started = zlib.decompressobj(), False
    for kind, length in png_chunks(f):
        if kind == b"IHDR" and length >= 13:
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", f.read(13))
            need = png_data_size(width, height, depth, colour, interlace == 1)
        elif kind == b"IDAT":
            started = True
            while length and got < need and not inflate.eof:
                data = f.read(min(_INFLATE_STEP, length))
                if not data:
                    return need, got
                length -= len(data)
                while True:  # more may wait inside zlib when a step came out full
                    out = len(inflate.decompress(data, _INFLATE_STEP))
                    got, data = got + out, inflate.unconsumed_tail
                    if (not data and out < _INFLATE_STEP) or got >= need:
                        break
            if got >= need or inflate.eof:
                return need, got
        elif started:  # the IDAT chunks are consecutive: the pixel data is over
            return need, got
    return need, got


_HDR_CHUNKS = {b"cICP": 4, b"mDCv": 24, b"cLLi": 8}  # and the length each has


def png_hdr_chunks(f: BinaryIO) -> dict[bytes, bytes]:
    """A PNG's cICP chunk (coding-independent code points: BT.2020 primaries, PQ or HLG
    transfer) and the mDCv and cLLi chunks that go with it (mastering display, content light
    levels), by type, the first of each; Pillow reads past them, and writes back only cICP
    (:func:`.colourspace.with_chunks` inserts the others). Without cICP an HDR or wide-gamut
    PNG is shown as sRGB. Read from ``f``, the open file, whose position is kept."""
    where, found = f.tell(), {}
    try:
        for kind, length in png_chunks(f):
            if kind == b"IDAT":  # they come before the pixel data
                break
            if _HDR_CHUNKS.get(kind) == length and kind not in found:
                found[kind] = f.read(length)
    finally:
        f.seek(where)
    return found


_CMS_MODES = {"RGB": "RGB", "GRAY": "L", "CMYK": "CMYK"}  # ICC colour spaces as Pillow modes


def usable_icc(profile: bytes | None, notes: list[str]) -> bytes | None:
    """``profile`` when littlecms reads it and can build a transform from it to sRGB (which
    reads the tags a viewer needs); else None, with a note: a damaged profile copied into the
    result makes viewers fail on it or ignore it. Kept unchecked where Pillow has no littlecms."""
    if not profile:
        return profile
    try:
        from PIL import ImageCms
    except ImportError:
        return profile
    try:
        opened = ImageCms.ImageCmsProfile(io.BytesIO(profile))
        mode = _CMS_MODES.get(opened.profile.xcolor_space.strip())
        if mode is not None:
            ImageCms.buildTransform(opened, ImageCms.createProfile("sRGB"), mode, "RGB")
    except Exception as e:  # noqa: BLE001 - littlecms's many ways to say "damaged"
        notes.append(f"ICC profile dropped: damaged (littlecms: {one_line(e)})")
        return None
    return profile


_TGA_16_BITS = "BGRA;15Z"  # Pillow's raw mode of 16-bit TGA colours: the top bit read as 0 alpha
_TGA_ALPHA_BITS = 0x0F  # of the descriptor (header byte 17): how many bits of a pixel are alpha


def tga_alpha(f: BinaryIO, im: Image.Image, stored: str) -> Image.Image:
    """A loaded TGA of 16-bit colours (in its pixels or its colour map) with the alpha its
    header declares: the top bit, 1 opaque (as GIMP, ImageMagick and stb read it), where the
    descriptor declares an attribute bit and some pixel sets it (all clear is an alpha no writer
    meant: the image would be invisible); else no alpha. Pillow reads the bit inverted, whatever
    the header says. Other images are returned as they are; ``f`` is the open file, whose
    position is kept."""
    if im.format != "TGA" or im.mode not in ("RGBA", "P"):
        return im
    where = f.tell()
    try:
        f.seek(0)
        head = f.read(18)
    finally:
        f.seek(where)
    mapped16 = im.mode == "P" and len(head) == 18 and head[7] == 16  # the map's entry size
    if stored != _TGA_16_BITS and not mapped16:
        return im
    rgba = im.convert("RGBA")
    alpha = rgba.getchannel("A")  # 0 where the bit is set, 255 where it is clear
    if not head[17] & _TGA_ALPHA_BITS or alpha.getextrema()[0] == 255:
        return rgba.convert("RGB")
    rgba.putalpha(alpha.point(lambda v: 255 - v))
    return rgba
