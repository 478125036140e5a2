"""Odd and hostile HDR, wide-gamut and deep-colour files: whatever their XMP, colour chunks or
pixel depth, the result is written whole and right, or the file is refused in one line."""

from __future__ import annotations

import io
import os
import signal
import struct
import subprocess
import sys
import tracemalloc
from dataclasses import replace
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
from helpers import hand_png, png_chunk, random_rgb, time_growth, upscale
from PIL import Image, ImageCms
from PIL.PngImagePlugin import PngInfo

pytestmark = pytest.mark.usefixtures("wide_console")
_NS = (b'xmlns:x="adobe:ns:meta/" xmlns:hdrgm="http://ns.adobe.com/hdr-gain-map/1.0/" '
       b'xmlns:Container="http://ns.google.com/photos/1.0/container/" '
       b'xmlns:Item="http://ns.google.com/photos/1.0/container/item/"')


def _png_with_xmp(path: Path, xmp: bytes) -> None:
    info = PngInfo()
    info.add_itxt("XML:com.adobe.xmp", xmp.decode())
    Image.new("RGB", (8, 6), (90, 120, 150)).save(path, pnginfo=info)


def _xmp_of(path: Path) -> bytes:
    with Image.open(path) as im:
        return im.text["XML:com.adobe.xmp"].encode()


def test_unclosed_gain_map_tags_in_a_large_xmp_do_not_hang_the_read(folder: Path) -> None:
    """An unclosed <hdrgm: tag does not send the search to the end of the XMP (a 1 MB XMP of
    them would take minutes to read); the rest of the XMP is kept as it was."""
    from drcn_plugin.imagefile import read_image

    xmp = b"<x:xmpmeta " + _NS + b">" + b"<hdrgm:Gain>" * 100_000 + b"</x:xmpmeta>"
    _png_with_xmp(folder / "big.png", xmp)

    def hung(signum: int, frame: object) -> None:
        raise TimeoutError("reading a 1 MB XMP took over 30 s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(30)
    try:
        _, info = read_image(folder / "big.png")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert info.about.xmp == xmp


@pytest.mark.parametrize("inner, gone", [
    (b"<hdrgm:Min><hdrgm:Min>0.5</hdrgm:Min></hdrgm:Min>", True),  # nested, one name
    (b'<Container:Directory><Item:Seq Item:Semantic="GainMap"/></Container:Directory>', True),
    (b'<Container:Directory><Item:Seq Item:Semantic="MotionPhoto"/></Container:Directory>',
     False),  # a motion photo's directory: no gain map promised
    (b'<x:Note>the hdrgm:Version="1.0" attribute</x:Note>', False),  # text, not an attribute
], ids=["nested", "gain-map-directory", "motion-photo-directory", "text"])
def test_only_the_gain_map_promise_goes_and_the_xmp_stays_well_formed(
        folder: Path, tiny_model_file: str, inner: bytes, gone: bool) -> None:
    """A nested element goes with its end tag (XML every reader parses); a directory of other
    items, or text that quotes the attribute, is no gain map's promise and stays."""
    xmp = b'<x:xmpmeta ' + _NS + b' x:Rating="4">' + inner + b"</x:xmpmeta>"
    _png_with_xmp(folder / "p.png", xmp)
    r = upscale(str(folder / "p.png"), "-m", tiny_model_file, "-o", str(folder / "out"))
    assert r.exit_code == 0, r.output
    assert ("HDR gain map dropped" in r.output) == gone
    kept = _xmp_of(folder / "out" / "p.png")
    ElementTree.fromstring(kept)
    assert (inner not in kept) == gone and b'x:Rating="4"' in kept


def test_chromaticities_beyond_an_icc_profile_drop_the_chunks_with_a_note(
        folder: Path, tiny_model_file: str) -> None:
    """A grey PNG's gAMA with a white point of y near 0 makes a number no ICC profile holds:
    its chunks are named as dropped, not the image failed with "'i' format requires ..."."""
    info = PngInfo()
    info.add(b"gAMA", struct.pack(">I", 100000))
    info.add(b"cHRM", struct.pack(">8I", 90000, 1, 95000, 1, 1, 1, 1, 99000))
    Image.new("L", (8, 6), 100).save(folder / "g.png", pnginfo=info)
    r = upscale(str(folder / "g.png"), "-m", tiny_model_file, "-o", str(folder / "out"),
                "--format", "jpeg")
    assert r.exit_code == 0, r.output
    assert "(gAMA, cHRM) dropped" in r.output
    with Image.open(folder / "out" / "g.jpg") as im:
        assert im.size == (16, 12) and "icc_profile" not in im.info


def test_a_16_bit_png_result_is_written_without_copies_of_its_pixels(folder: Path) -> None:
    """Its 16-bit pixel data is built a block of rows at a time, not whole (big-endian copy,
    filtered rows, their bytes, the compressed data and the file, each as large as the
    pixels); the file still holds every sample."""
    from drcn_plugin.encoding import encode
    from drcn_plugin.imagefile import ImageInfo, read_image
    from drcn_plugin.writing import atomic_save

    y, x = np.mgrid[0:1500, 0:2000]
    pixels = np.stack([x * 32, y * 43, (x + y) * 19], axis=-1).astype(np.uint16)
    encoded = encode(pixels, "PNG", ImageInfo(format="PNG"), 1.0)
    tracemalloc.start()
    try:
        atomic_save(encoded, folder / "deep.png")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < pixels.nbytes / 2, peak
    assert (read_image(folder / "deep.png")[0] == pixels).all()


def test_a_16_bit_png_result_is_encoded_without_an_8_bit_image(folder: Path) -> None:
    """A 16-bit colour PNG result makes no full-size 8-bit Pillow image (its array and the
    image: 7 bytes an output pixel) for the 1x1 stand-in that is all Pillow writes of it."""
    from drcn_plugin.encoding import encode
    from drcn_plugin.imagefile import ImageInfo

    y, x = np.mgrid[0:1500, 0:2000]
    pixels = np.stack([x * 32, y * 43, (x + y) * 19], axis=-1).astype(np.uint16)
    tracemalloc.start()
    try:
        encode(pixels, "PNG", ImageInfo(format="PNG"), 2.0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < pixels.nbytes / 50, peak


def test_a_16_bit_png_result_keeps_pillows_chunks_without_an_8_bit_encoding(
        folder: Path) -> None:
    """Pillow writes a 1x1 image for the chunks around its pixel data, not a full-size 8-bit
    stand-in (whole-image float32 copies: 24 bytes an output pixel, over a GiB at 48 MP): the
    same chunks, in the same order, as Pillow's 8-bit file with every option."""
    from drcn_plugin.colourspace import icc_profile, with_chunks
    from drcn_plugin.encoding import encode
    from drcn_plugin.imagefile import ImageInfo, read_image
    from drcn_plugin.misreads import png_chunks
    from drcn_plugin.planes import to_8bit
    from drcn_plugin.writing import atomic_save

    y, x = np.mgrid[0:1000, 0:1500]
    pixels = np.stack([x * 40, y * 60, (x + y) * 25, x * 13 + 9], axis=-1).astype(np.uint16)
    text = PngInfo()
    text.add_itxt("Title", "deep")
    text.add(b"cICP", bytes([9, 16, 0, 1]))
    exif = Image.Exif()
    exif[0x0131] = "drcn"
    options = {"icc_profile": icc_profile((.3127, .329, .64, .33, .3, .6, .15, .06), None),
               "exif": exif.tobytes(), "dpi": (300, 300), "pnginfo": text}
    hdr = {b"mDCv": bytes(range(24)), b"cLLi": struct.pack(">II", 10000000, 400000)}
    tracemalloc.start()
    try:
        encoded = replace(encode(pixels, "PNG", ImageInfo(format="PNG"), 1.0),
                          options=options, chunks=hdr)
        atomic_save(encoded, folder / "deep.png")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < pixels.nbytes / 2, peak  # blocks of rows

    def chunks(data: bytes) -> list[tuple[bytes, bytes]]:
        f = io.BytesIO(data)
        return [(kind, f.read(length)) for kind, length in png_chunks(f)]

    eight = io.BytesIO()
    Image.fromarray(to_8bit(pixels)).save(eight, format="PNG", **options)
    want = chunks(b"".join(with_chunks(eight.getvalue(), "PNG", hdr)))
    got = chunks((folder / "deep.png").read_bytes())
    assert [c for c in got if c[0] != b"IDAT"] == [
        (b"IHDR", struct.pack(">IIBBBBB", 1500, 1000, 16, 6, 0, 0, 0)),
        *(c for c in want if c[0] not in (b"IHDR", b"IDAT"))]
    assert (read_image(folder / "deep.png")[0] == pixels).all()


def test_hdr_chunks_are_added_to_a_png_result_without_copies_of_the_file(folder: Path) -> None:
    """The mDCv and cLLi chunks that Pillow does not write are added by writing the file's
    parts from the one encoding, not by slicing and joining it (three copies of it at once)."""
    from drcn_plugin.misreads import png_hdr_chunks
    from drcn_plugin.writing import Encoded, atomic_save

    pixels = np.random.default_rng(0).integers(0, 256, (1000, 1000, 3), np.uint8)
    hdr = {b"mDCv": bytes(range(24)), b"cLLi": struct.pack(">II", 10000000, 400000)}
    tracemalloc.start()
    try:
        atomic_save(Encoded(Image.fromarray(pixels), "PNG", chunks=hdr), folder / "hdr.png")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * (folder / "hdr.png").stat().st_size, peak
    with open(folder / "hdr.png", "rb") as f, Image.open(f) as im:
        assert png_hdr_chunks(f) == hdr and (np.asarray(im) == pixels).all()


def test_a_16_bit_png_is_read_without_whole_image_copies(folder: Path) -> None:
    """Its two 8-bit decodes (high bytes, low bytes) are joined a block of rows at a time, not
    through whole-image copies (15 bytes a pixel of arrays for a 6-byte result)."""
    from drcn_plugin.imagefile import read_image

    y, x = np.mgrid[0:1000, 0:1500]
    pixels = np.stack([x * 40, y * 60, (x + y) * 25], axis=-1).astype(np.uint16)
    rows = np.zeros((1000, 1 + 1500 * 6), np.uint8)  # filter type 0 (none) before each row
    rows[:, 1:] = pixels.astype(">u2").view(np.uint8).reshape(1000, -1)
    (folder / "deep.png").write_bytes(hand_png((1500, 1000), 16, 2, rows.tobytes()))
    tracemalloc.start()
    try:
        array = read_image(folder / "deep.png")[0]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (array == pixels).all() and peak < pixels.nbytes * 1.5, peak


_READ_PEAK = """
import sys
import time
from drcn_plugin.imagefile import read_image
def vm(key):
    return int(next(l for l in open("/proc/self/status") if l.startswith(key)).split()[1]) * 1024
read_image(sys.argv[2])  # warm: lazy imports, Pillow's plugins
open("/proc/self/clear_refs", "w").write("5")  # the peak is reset to what is resident now
base = vm("VmRSS:")
read_image(sys.argv[1])
print(vm("VmHWM:") - base)
"""


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="Linux peak RSS")
def test_a_turned_16_bit_png_is_read_in_about_the_memory_of_an_upright_one(folder: Path) -> None:
    """The 16-bit pixels are turned first, and their unturned copy is gone before Pillow turns
    its 8-bit decode: holding both 8-bit images and both 16-bit arrays at once would take 20
    bytes a pixel against 14 upright."""
    y, x = np.mgrid[0:1500, 0:2000]
    pixels = np.stack([x * 32, y * 43, (x + y) * 19], axis=-1).astype(np.uint16)
    rows = np.zeros((1500, 1 + 2000 * 6), np.uint8)  # filter type 0 (none) before each row
    rows[:, 1:] = pixels.astype(">u2").view(np.uint8).reshape(1500, -1)
    exif = Image.Exif()
    exif[0x0112] = 6  # turned a quarter
    turned = png_chunk(b"eXIf", exif.tobytes())
    (folder / "upright.png").write_bytes(hand_png((2000, 1500), 16, 2, rows.tobytes()))
    (folder / "turned.png").write_bytes(hand_png((2000, 1500), 16, 2, rows.tobytes(), turned))
    (folder / "small.png").write_bytes(hand_png((2, 1), 16, 2, bytes(13), turned))
    peaks = {name: int(subprocess.run([sys.executable, "-c", _READ_PEAK, str(folder / name),
                                       str(folder / "small.png")], capture_output=True,
                                      text=True, timeout=120, check=True).stdout)
             for name in ("upright.png", "turned.png")}
    assert peaks["turned.png"] < 1.25 * peaks["upright.png"], peaks


def _avif_pq_elsewhere(path: Path, where: str) -> None:
    """An RGBA AVIF whose nclx box says PQ for an image other than the primary one: its alpha
    plane's (Pillow writes one colour box, for the colour image: it moves to the alpha), or
    beside an ICC profile, which viewers take over it."""
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    random_rgb(12, 8).convert("RGBA").save(path, icc_profile=icc if where == "icc" else None)
    data = bytearray(path.read_bytes())
    at = data.find(b"colrnclx") + 8
    data[at:at + 4] = struct.pack(">HH", 9, 16)
    if where == "alpha":
        ipma = data.find(b"ipma") + 4  # version, flags, 2 entries: ID, count, 4 indices each
        assert data[ipma + 11:ipma + 15] == bytes([1, 2, 0x83, 4]), "Pillow's ipma changed"
        data[ipma + 14] = 1  # the colour image: ispe again in place of colr
        data[ipma + 19] = 4  # the alpha plane: colr in place of its pixi
    path.write_bytes(data)


@pytest.mark.parametrize("where", ["alpha", "icc"])
def test_an_avif_nclx_box_that_is_not_the_images_own_is_not_carried(
        folder: Path, tiny_model_file: str, where: str) -> None:
    """Only the image's own nclx box is carried, and never over an ICC profile: another item's
    box would mark an SDR image PQ (shown far too bright)."""
    _avif_pq_elsewhere(folder / "a.avif", where)
    r = upscale(str(folder / "a.avif"), "-m", tiny_model_file, "-o", str(folder / "out"),
                "--format", "png")
    assert r.exit_code == 0, r.output
    data = (folder / "out" / "a.png").read_bytes()
    assert b"cICP" not in data[:data.find(b"IDAT")]
    with Image.open(folder / "out" / "a.png") as im:
        assert im.size == (24, 16) and ("icc_profile" in im.info) == (where == "icc")


@pytest.mark.parametrize("xmp, kept", [
    (b"<x:xmpmeta><!-- <hdrgm:Version>1.0</hdrgm:Version> --></x:xmpmeta>",
     b"<x:xmpmeta><!-- <hdrgm:Version>1.0</hdrgm:Version> --></x:xmpmeta>"),
    (b"<x:xmpmeta><hdrgm:Version><![CDATA[<b>]]>1.0</hdrgm:Version></x:xmpmeta>",
     b"<x:xmpmeta></x:xmpmeta>"),
], ids=["comment", "cdata"])
def test_a_comment_or_cdata_is_text_to_the_gain_map_scan(xmp: bytes, kept: bytes) -> None:
    """A comment and CDATA are text to the scan, as jpegmeta's walk over the same tags reads
    them: a gain-map element commented out is not cut from inside the comment (nor named as a
    gain map dropped), and CDATA holding a "<" does not keep the gain-map element around it."""
    from drcn_plugin.colourspace import without_gain_map

    assert without_gain_map(xmp) == kept


@pytest.mark.parametrize("junk", [b"<!--", b"<![CDATA[", b"<?", b"<!"])
def test_unclosed_comments_in_a_large_xmp_are_scanned_in_linear_time(junk: bytes) -> None:
    """Each unclosed comment, CDATA or declaration is looked past once: searching for its end
    from each of them would take time growing as their number's square (minutes on 300 KB of
    them)."""
    from drcn_plugin.colourspace import without_gain_map

    def scan(size: int) -> None:
        repeated = junk * (size // len(junk))
        assert without_gain_map(b"<x:xmpmeta><hdrgm:Version>1</hdrgm:Version>" + repeated) \
            == b"<x:xmpmeta>" + repeated

    assert time_growth(scan, 30_000) < 10
