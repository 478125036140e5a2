"""16-bit colour TIFF (what Lightroom, Capture One and darktable hand an external editor): read
at 16 bits however it is stored and compressed, where Pillow reads 8, and a 16-bit colour
result written as a 16-bit TIFF with the source's metadata; files drcn cannot read at 16 bits
are read at 8 with a note that says why."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from helpers import hand_png, upscale
from PIL import Image, ImageCms, TiffImagePlugin

from drcn_plugin import encoding, tiff16
from drcn_plugin.encoding import check_writable, encode
from drcn_plugin.errors import BadOptionError
from drcn_plugin.imagefile import ImageInfo, read_image

NONE, LZW, DEFLATE, PACKBITS, ADOBE_DEFLATE = 1, 5, 32946, 32773, 8  # TIFF Compression
UNSPECIFIED, PREMULTIPLIED, ALPHA = 0, 1, 2  # TIFF ExtraSamples
EXIF_IFD, EXPOSURE_TIME, ORIENTATION, XMP, ICC, IPTC = 34665, 33434, 274, 700, 34675, 33723
EIGHT_BITS = "16-bit colour read and written as 8 bits"


def _lzw(data: bytes) -> bytes:
    """TIFF's LZW of ``data`` in its simplest valid form: every byte a literal code of 9 bits,
    the table cleared before it would widen the codes."""
    codes = []
    for at in range(0, len(data), 250):
        codes += [256, *data[at:at + 250]]  # Clear, then literals
    bits = "".join(f"{code:09b}" for code in [*codes, 257])  # EndOfInformation
    bits += "0" * (-len(bits) % 8)
    return int(bits, 2).to_bytes(len(bits) // 8, "big")


def _packbits(data: bytes) -> bytes:
    """PackBits of ``data`` as literal runs of up to 128 bytes."""
    return b"".join(bytes([len(data[at:at + 128]) - 1]) + data[at:at + 128]
                    for at in range(0, len(data), 128))


_PACK = {NONE: bytes, LZW: _lzw, DEFLATE: zlib.compress, ADOBE_DEFLATE: zlib.compress,
         PACKBITS: _packbits}


def _tiff16(path: Path, pixels: np.ndarray, order: str = "<", compression: int = NONE,
            planar: bool = False, extra: int = ALPHA, rows: int | None = None,
            tags: dict | None = None) -> None:
    """A 16-bit RGB or RGBA TIFF of ``pixels`` in byte ``order`` ("<" or ">"), in strips of
    ``rows`` rows, each plane its own (PlanarConfiguration 2) where ``planar``; ``tags`` added."""
    h, w, channels = pixels.shape
    rows = rows or h
    planes = [pixels[..., c:c + 1] for c in range(channels)] if planar else [pixels]
    strips = [_PACK[compression](plane[y:y + rows].astype(f"{order}u2").tobytes())
              for plane in planes for y in range(0, h, rows)]
    ifd = TiffImagePlugin.ImageFileDirectory_v2(prefix=b"II" if order == "<" else b"MM")
    for tag, value in {256: w, 257: h, 258: (16,) * channels, 259: compression, 262: 2,
                       277: channels, 278: rows, 284: 2 if planar else 1,
                       **({338: extra} if channels == 4 else {}), **(tags or {})}.items():
        ifd[tag] = value
    ifd[273] = tuple(sum(map(len, strips[:i])) for i in range(len(strips)))  # from the IFD's end
    ifd[279] = tuple(map(len, strips))
    head = ifd.prefix + struct.pack(f"{order}HI", 42, 8)  # the IFD right after the header
    path.write_bytes(head + ifd.tobytes(8) + b"".join(strips))


def _levels(channels: int, seed: int = 0, h: int = 7, w: int = 9) -> np.ndarray:
    """Random 16-bit samples: every low byte matters."""
    return np.random.default_rng(seed).integers(0, 65536, (h, w, channels), dtype=np.uint16)


@pytest.mark.parametrize("compression", [NONE, LZW, ADOBE_DEFLATE, DEFLATE, PACKBITS])
@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("channels", [3, 4])
def test_16_bit_colour_tiff_is_read_at_16_bits(tmp_path: Path, compression: int, order: str,
                                               channels: int) -> None:
    """Pillow reads 16-bit colour TIFF as 8 bits; every sample's low byte is read too, RGBA's
    alpha included, whatever the compression and byte order."""
    pixels = _levels(channels)
    _tiff16(tmp_path / "d.tif", pixels, order, compression, rows=3)
    array, info = read_image(tmp_path / "d.tif")
    assert array.dtype == np.uint16 and np.array_equal(array, pixels) and not info.notes


@pytest.mark.parametrize("extra, kept", [(ALPHA, 4), (UNSPECIFIED, 3)])
@pytest.mark.parametrize("order", ["<", ">"])
def test_an_uncompressed_16_bit_tiff_stored_as_planes_is_read_at_16_bits(
        tmp_path: Path, extra: int, kept: int, order: str) -> None:
    """A scanner's planes, in strips: each plane's samples go to their own band, an extra plane
    the TIFF does not call alpha is dropped (noted) and not read into another band."""
    pixels = _levels(4, seed=1)
    _tiff16(tmp_path / "p.tif", pixels, order, planar=True, extra=extra, rows=2)
    array, info = read_image(tmp_path / "p.tif")
    assert array.dtype == np.uint16 and np.array_equal(array, pixels[..., :kept])
    assert not any(EIGHT_BITS in note for note in info.notes)


@pytest.mark.parametrize("planar, extra, why", [
    (True, ALPHA, "16-bit TIFF colour stored as separate planes is read only uncompressed"),
    (False, PREMULTIPLIED, "16-bit TIFF colour is read only with unpremultiplied alpha")])
def test_16_bit_tiff_colour_read_at_8_bits_says_why(tmp_path: Path, planar: bool, extra: int,
                                                   why: str) -> None:
    """Compressed planes (libtiff unpacks them its own way) and premultiplied alpha are read at
    8 bits, as Pillow reads them: the note names what the file does that drcn does not read at
    16."""
    pixels = _levels(4, seed=2)
    _tiff16(tmp_path / "e.tif", pixels, compression=ADOBE_DEFLATE, planar=planar, extra=extra)
    array, info = read_image(tmp_path / "e.tif")
    assert array.dtype == np.uint8 and f"{EIGHT_BITS}: {why}" in info.notes
    assert not planar or np.array_equal(array, (pixels >> 8).astype(np.uint8))  # unscrambled


@pytest.mark.parametrize("planar, compression", [(False, LZW), (True, NONE)])
def test_a_turned_16_bit_tiff_is_read_upright_at_16_bits(tmp_path: Path, planar: bool,
                                                         compression: int) -> None:
    pixels = _levels(3, seed=3)
    _tiff16(tmp_path / "t.tif", pixels, ">", compression, planar, rows=4,
            tags={ORIENTATION: 6})  # turned 90 degrees clockwise to view
    array, _ = read_image(tmp_path / "t.tif")
    assert np.array_equal(array, np.rot90(pixels, -1))


def _written(array: np.ndarray, info: ImageInfo) -> bytes:
    out = io.BytesIO()
    encode(array, "TIFF", info, 1.0).write(out)
    return out.getvalue()


@pytest.mark.parametrize("channels", [3, 4])
def test_a_16_bit_colour_result_is_written_as_16_bit_deflate_tiff(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, channels: int) -> None:
    """Strips of a few rows, Adobe Deflate with the horizontal predictor: read back exactly by
    drcn, and as its high bytes by Pillow (which reads 16-bit colour at 8 bits)."""
    monkeypatch.setattr(tiff16, "_STRIP_SIZE", 100)  # 3 rows a strip of RGB, 2 of RGBA
    pixels = _levels(channels, seed=4, h=11, w=5)
    (tmp_path / "w.tif").write_bytes(_written(pixels, ImageInfo(format="TIFF")))
    array, info = read_image(tmp_path / "w.tif")
    assert array.dtype == np.uint16 and np.array_equal(array, pixels) and not info.notes
    with Image.open(tmp_path / "w.tif") as im:
        assert im.tag_v2[258] == (16,) * channels and im.tag_v2[259] == ADOBE_DEFLATE
        assert im.tag_v2[317] == 2 and len(im.tag_v2[273]) == {3: 4, 4: 6}[channels]
        assert np.array_equal(np.asarray(im), (pixels >> 8).astype(np.uint8))


def test_a_16_bit_tiff_over_4_gb_is_written_at_8_bits_with_a_note(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A TIFF's offsets are 32-bit: a result too large for them is written as Pillow writes it."""
    monkeypatch.setattr(encoding, "TIFF16_MAX_BYTES", 100)
    info = ImageInfo(format="TIFF")
    with Image.open(io.BytesIO(_written(_levels(3, h=5, w=8), info))) as im:
        assert im.tag_v2[258] == (8, 8, 8)
    assert "a TIFF holds 4 GB: result reduced to 8 bits" in info.notes


def test_a_float_tiff_over_4_gb_is_written_at_8_bits_only_where_that_clips_nothing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Too large for 32-bit float samples, as 16-bit colour is: in 0..1, written at 8 bits with
    the note; past it (HDR), refused rather than clipped, and before any upscaling: from the
    result's size, which the 2x2 corner that check_writable encodes does not show."""
    monkeypatch.setattr(encoding, "TIFF16_MAX_BYTES", 1000)  # 20x20 float RGB: 4800 bytes
    rgb = np.random.default_rng(12).random((20, 20, 3)).astype(np.float32)
    info = ImageInfo(format="TIFF", value_range=(0.0, 1.0))
    with Image.open(io.BytesIO(_written(rgb, info))) as im:
        assert im.mode == "RGB" and np.abs(np.asarray(im) - rgb * 255).max() <= 0.5
    assert info.notes == ["a TIFF holds 4 GB: result reduced to 8 bits"]
    check_writable(rgb[:5, :5], "TIFF", info, 4.0, size=(20, 20))
    hdr = ImageInfo(format="TIFF", value_range=(-0.5, 1.5))
    why = r"span -0.5..1.5; a TIFF this large is written at 8 bits, 0..1, which would clip them"
    with pytest.raises(BadOptionError, match=why):
        _written(rgb, hdr)
    check_writable(rgb[:5, :5], "TIFF", hdr, 1.0, size=(5, 5))
    with pytest.raises(BadOptionError, match=why):
        check_writable(rgb[:5, :5], "TIFF", hdr, 4.0, size=(20, 20))
    assert not hdr.notes


def _photo(path: Path, pixels: np.ndarray) -> dict:
    """A 16-bit RGB TIFF with what a raw converter writes beside its pixels (ICC profile, 300 dpi,
    XMP, IPTC, an EXIF sub-IFD), compressed with LZW; the tags are returned."""
    tags = {ICC: ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes(),
            282: 300, 283: 300, 296: 2, 315: "A. Photographer",
            XMP: b'<x:xmpmeta xmlns:x="adobe:ns:meta/"></x:xmpmeta>',
            IPTC: b"\x1c\x02\x00\x00\x02\x00\x04\x1c\x02\x05\x00\x05Title",
            EXIF_IFD: {EXPOSURE_TIME: TiffImagePlugin.IFDRational(1, 125)}}
    _tiff16(path, pixels, ">", LZW, tags=tags)
    return tags


def test_a_16_bit_tiff_upscales_to_a_16_bit_tiff_with_its_metadata(
        folder: Path, tiny_model_file: str) -> None:
    """Lightroom's "edit in": the result is 16-bit with the ICC profile, the print size (DPI
    scaled), XMP, IPTC and EXIF (its sub-IFD compressed too, which libtiff's 8-bit writing
    cannot)."""
    pixels = _levels(3, seed=5, h=10, w=12)
    tags = _photo(folder / "edit.tif", pixels)
    r = upscale(str(folder / "edit.tif"), "-m", tiny_model_file, "-o", str(folder / "out"),
                "--scale", "2")
    assert r.exit_code == 0, r.output
    assert EIGHT_BITS not in r.output and "uncompressed" not in r.output
    array, info = read_image(folder / "out" / "edit.tif")
    assert array.dtype == np.uint16 and array.shape == (20, 24, 3)
    assert (array % 257 != 0).any()  # more than 8-bit levels stretched
    assert info.icc_profile == tags[ICC] and info.dpi == (600, 600)
    with Image.open(folder / "out" / "edit.tif") as im:
        assert im.tag_v2[259] == ADOBE_DEFLATE and im.tag_v2[XMP] == tags[XMP]
        assert bytes(im.tag_v2[IPTC]) == tags[IPTC]
        assert im.tag_v2[315] == "A. Photographer"
        assert im.getexif().get_ifd(EXIF_IFD)[EXPOSURE_TIME] == tags[EXIF_IFD][EXPOSURE_TIME]


def test_16_bits_cross_between_tiff_and_png(folder: Path, tiny_model_file: str) -> None:
    """x1 results are the input itself: a 16-bit TIFF becomes a 16-bit PNG with its exact
    samples, and a 16-bit PNG a 16-bit TIFF."""
    pixels = _levels(4, seed=6)
    _tiff16(folder / "a.tif", pixels, compression=DEFLATE)
    rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in pixels)
    (folder / "b.png").write_bytes(hand_png((9, 7), 16, 6, rows))
    for name, fmt in (("a.tif", "png"), ("b.png", "tiff")):
        r = upscale(str(folder / name), "-m", tiny_model_file, "-o", str(folder / "out"),
                    "--scale", "1", "-f", fmt)
        assert r.exit_code == 0, r.output
    for name in ("a.png", "b.tif"):
        array, info = read_image(folder / "out" / name)
        assert array.dtype == np.uint16 and np.array_equal(array, pixels), name
        assert not info.notes
