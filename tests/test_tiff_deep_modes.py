"""TIFFs Pillow has no mode for: 16-bit grey with alpha (GIMP's export of a 16-bit grey layer
with transparency) and float grey with alpha, RGB and RGBA (Photoshop's and GIMP's 32-bit, half
floats): read exactly however they are stored and compressed, upscaled end to end, and written
at their depth (16-bit or 32-bit float TIFF) with their alpha and metadata; what drcn cannot
read of them is refused in one line."""

from __future__ import annotations

import struct
import threading
from pathlib import Path

import numpy as np
import pytest
from helpers import upscale
from PIL import Image, ImageCms, TiffImagePlugin, UnidentifiedImageError
from test_tiff16 import _PACK, ADOBE_DEFLATE, ALPHA, ICC, LZW, NONE, PACKBITS, PREMULTIPLIED

from drcn_plugin import tiffdeep
from drcn_plugin.encoding import encode
from drcn_plugin.errors import BadImageError, BadOptionError
from drcn_plugin.imagefile import ImageInfo, read_image
from drcn_plugin.opening import first_ifd
from drcn_plugin.tiffdeep import deep_layout, stand_in_modes

pytestmark = pytest.mark.usefixtures("wide_console")
ORIENTATION, XMP, JPEG = 274, 700, 7
# name: (sample type, PhotometricInterpretation, channels, SampleFormat)
KINDS = {"grey16+alpha": (np.uint16, 1, 2, 1), "rgb-float32": (np.float32, 2, 3, 3),
         "rgba-float32": (np.float32, 2, 4, 3), "rgb-float16": (np.float16, 2, 3, 3),
         "grey-float32+alpha": (np.float32, 1, 2, 3)}


def _samples(kind: str, seed: int = 0, h: int = 7, w: int = 9) -> np.ndarray:
    """Random samples of ``kind``: every low byte matters; floats past 0..1 as HDR has them."""
    dtype, _, channels, _ = KINDS[kind]
    rng = np.random.default_rng(seed)
    if dtype == np.uint16:
        return rng.integers(0, 65536, (h, w, channels), dtype=np.uint16)
    pixels = (rng.random((h, w, channels)) * 2.5 - 0.5).astype(dtype)
    if channels in (2, 4):
        pixels[..., -1] = rng.random((h, w))  # alpha in 0..1
    return pixels


def _predicted(block: np.ndarray, predictor: int) -> bytes:
    """The bytes of ``block`` (rows x pixels x samples, in the file's byte order) as TIFF's
    predictor ``predictor`` stores them, row by row."""
    if predictor == 1:
        return block.tobytes()
    if predictor == 2:  # each sample less the same sample a pixel before
        diffs = block.astype(block.dtype.newbyteorder("="))
        diffs[:, 1:] -= block[:, :-1].astype(diffs.dtype)
        return diffs.astype(block.dtype).tobytes()
    rows = []  # 3: each value's bytes, most significant first, in planes; then differenced
    samples, size = block.shape[2], block.dtype.itemsize
    for row in block.astype(block.dtype.newbyteorder(">")):
        values = row.reshape(-1).view(np.uint8).reshape(-1, size)
        planes = bytearray(values.T.tobytes())
        for i in range(len(planes) - 1, samples - 1, -1):
            planes[i] = (planes[i] - planes[i - samples]) % 256
        rows.append(bytes(planes))
    return b"".join(rows)


def _deep_tiff(path: Path, pixels: np.ndarray, kind: str, order: str = "<",
               compression: int = NONE, predictor: int = 1, rows: int = 3,
               tile: int | None = None, planar: bool = False, extra: int = ALPHA,
               tags: dict | None = None) -> None:
    """A TIFF of ``pixels`` as ``kind`` stores them, in byte ``order``: strips of ``rows`` rows,
    or ``tile`` x ``tile`` tiles (padded at the edges), each channel its own plane where
    ``planar``; ``tags`` added."""
    _, photometric, channels, sample_format = KINDS[kind]
    h, w = pixels.shape[:2]
    stored = pixels.astype(pixels.dtype.newbyteorder(order))
    planes = [stored[..., c:c + 1] for c in range(channels)] if planar else [stored]
    pieces = []
    for plane in planes:
        if tile:
            padded = np.zeros((-(-h // tile) * tile, -(-w // tile) * tile, plane.shape[2]),
                              plane.dtype)
            padded[:h, :w] = plane
            pieces += [padded[y:y + tile, x:x + tile] for y in range(0, h, tile)
                       for x in range(0, w, tile)]
        else:
            pieces += [plane[y:y + rows] for y in range(0, h, rows)]
    data = [_PACK[compression](_predicted(piece, predictor)) for piece in pieces]
    ifd = TiffImagePlugin.ImageFileDirectory_v2(prefix=b"II" if order == "<" else b"MM")
    layout = {322: tile, 323: tile} if tile else {278: rows}
    for tag, value in {256: w, 257: h, 258: (8 * pixels.dtype.itemsize,) * channels,
                       259: compression, 262: photometric, 277: channels, 284: 2 if planar else 1,
                       317: predictor, 339: (sample_format,) * channels, **layout,
                       **({338: extra} if channels in (2, 4) else {}), **(tags or {})}.items():
        ifd[tag] = value
    where, sizes = (324, 325) if tile else (273, 279)
    ifd[where] = tuple(sum(map(len, data[:i])) for i in range(len(data)))
    ifd[sizes] = tuple(map(len, data))
    ifd.tagtype[where] = ifd.tagtype[sizes] = 4  # LONG
    if tile:  # Pillow moves only strip offsets past the directory: tiles' are given so
        start = 8 + len(ifd.tobytes(8))
        ifd[where] = tuple(start + offset for offset in ifd[where])
    head = ifd.prefix + struct.pack(f"{order}HI", 42, 8)
    path.write_bytes(head + ifd.tobytes(8) + b"".join(data))


@pytest.mark.parametrize("compression", [NONE, LZW, ADOBE_DEFLATE, PACKBITS])
@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_samples_pillow_has_no_mode_for_are_read_exactly(tmp_path: Path, kind: str, order: str,
                                                         compression: int) -> None:
    """Pillow refuses these files ("no mode"); every sample comes back as written, alpha
    included, half floats as float32."""
    pixels = _samples(kind)
    _deep_tiff(tmp_path / "d.tif", pixels, kind, order, compression)
    array, info = read_image(tmp_path / "d.tif")
    assert array.dtype == (np.uint16 if pixels.dtype == np.uint16 else np.float32)
    assert array.shape == pixels.shape and np.array_equal(array, pixels) and not info.notes


@pytest.mark.parametrize("layout", [{"rows": 2}, {"tile": 16}, {"planar": True, "rows": 4}])
@pytest.mark.parametrize("kind", ["grey16+alpha", "rgba-float32", "rgb-float16"])
def test_predictors_tiles_and_planes_are_undone(tmp_path: Path, kind: str,
                                                layout: dict) -> None:
    """The horizontal predictor (integers) and the floating-point one (floats), in strips, in
    tiles cut off at the image's edges, and in separate planes, compressed as GIMP and
    Photoshop compress them."""
    pixels = _samples(kind, seed=1, h=20, w=18)
    predictor = 2 if pixels.dtype == np.uint16 else 3
    _deep_tiff(tmp_path / "p.tif", pixels, kind, ">", LZW, predictor, **layout)
    array, _ = read_image(tmp_path / "p.tif")
    assert np.array_equal(array, pixels)


@pytest.mark.parametrize("kind, colour, alpha, stored", [
    ("grey16+alpha", 30000, 32768, 15000), ("rgba-float32", 0.5, 0.5, 0.25)])
def test_premultiplied_alpha_is_undone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str,
                                       colour: float, alpha: float, stored: float) -> None:
    """Colour stored multiplied by alpha comes back as meant; under no alpha, as stored. Undone
    a block of rows at a time: here a row or two each."""
    monkeypatch.setattr(tiffdeep, "_PIECE_BYTES", 150)
    pixels = _samples(kind, seed=2)
    pixels[..., :-1], pixels[..., -1] = stored, alpha
    pixels[0, 0, -1] = 0
    _deep_tiff(tmp_path / "m.tif", pixels, kind, extra=PREMULTIPLIED)
    array, _ = read_image(tmp_path / "m.tif")
    assert np.abs(array[1:, :, :-1].astype(np.float64) - colour).max() <= 1  # 16 bits: rounding
    assert np.array_equal(array[..., -1], pixels[..., -1]) and (array[0, 0, :-1] == stored).all()


def _second_page(path: Path, then: str = "end") -> None:
    """The classic TIFF at ``path`` given a second page: a copy of its directory, appended, whose
    values' offsets still reach the first's tables and strips. Its link to a next page is 0
    ("end"), leads back to the first ("loop"), as a damaged file's may, or to a directory of no
    image: zeros ("zeros": no entries) or one entry, no width or height ("sizeless")."""
    data = path.read_bytes()
    order = "<" if data[:2] == b"II" else ">"
    (first,) = struct.unpack_from(f"{order}L", data, 4)
    (count,) = struct.unpack_from(f"{order}H", data, first)
    link = first + 2 + 12 * count  # where the first directory names the next one
    second = len(data) + len(data) % 2
    sizeless = struct.pack(f"{order}HHHLH2xL", 1, 259, 3, 1, 1, 0)  # one entry: Compression 1
    third = {"zeros": bytes(6), "sizeless": sizeless}.get(then, b"")
    after = first if then == "loop" else second + link + 4 - first if third else 0
    copy = data[first:link] + struct.pack(f"{order}L", after)
    path.write_bytes(data[:link] + struct.pack(f"{order}L", second) + data[link + 4:]
                     + bytes(len(data) % 2) + copy + third)


@pytest.mark.parametrize("then", ["end", "loop", "zeros", "sizeless"])
@pytest.mark.parametrize("kind", ["grey16+alpha", "rgb-float32"])
def test_a_second_page_is_named_in_the_first_frame_note(tmp_path: Path, kind: str,
                                                        then: str) -> None:
    """As for any TIFF of several pages: the first alone is upscaled, and the note says so; a
    chain of pages that loops back is counted once round, and one that goes on to a directory
    of no image (zeros, no width or height: Pillow's "Missing dimensions") ends before it."""
    pixels = _samples(kind, seed=11)
    _deep_tiff(tmp_path / "two.tif", pixels, kind, ">")
    _second_page(tmp_path / "two.tif", then)
    array, info = read_image(tmp_path / "two.tif")
    assert np.array_equal(array, pixels) and info.frames == 2
    assert info.notes == ["2 frames: only the first was upscaled"]


def test_white_is_zero_grey_with_alpha_is_inverted(tmp_path: Path) -> None:
    pixels = _samples("grey16+alpha", seed=3)
    stored = pixels.copy()
    stored[..., 0] = 65535 - pixels[..., 0]
    _deep_tiff(tmp_path / "w.tif", stored, "grey16+alpha", tags={262: 0})
    assert np.array_equal(read_image(tmp_path / "w.tif")[0], pixels)


@pytest.mark.parametrize("tags, why", [
    ({259: JPEG}, "32-bit float RGB is read only uncompressed or LZW, Deflate or PackBits "
                  "compressed, not JPEG"),
    ({317: 5}, "32-bit float RGB with TIFF predictor 5 is not supported"),
    ({262: 0, 338: ALPHA, 277: 2, 258: (32, 32), 339: (3, 3)},
     "float grey stored white-is-zero"),
    ({262: 1, 338: ALPHA, 277: 2, 258: (16, 16), 339: (1, 1), 317: 3},
     "16-bit grey with alpha with TIFF predictor 3 is not supported: it is the floating-point "
     "predictor, for float samples")])
def test_what_cannot_be_read_is_refused_in_one_line(folder: Path, tiny_model_file: str,
                                                    tags: dict, why: str) -> None:
    _deep_tiff(folder / "r.tif", _samples("rgb-float32"), "rgb-float32", tags=tags)
    with pytest.raises(BadImageError, match=why):
        read_image(folder / "r.tif")
    r = upscale(str(folder / "r.tif"), "-m", tiny_model_file, "-o", str(folder.parent / "o"))
    assert r.exit_code != 0 and why in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("damage", ["cut", "stream"])
def test_a_damaged_file_is_one_line(folder: Path, tiny_model_file: str, damage: str) -> None:
    """A truncated copy, or a Deflate stream that is not one: libtiff's reason, once."""
    _deep_tiff(folder / "d.tif", _samples("rgba-float32", h=12), "rgba-float32",
               compression=ADOBE_DEFLATE, rows=12)
    data = (folder / "d.tif").read_bytes()
    with open(folder / "d.tif", "rb") as f:
        stream = first_ifd(f)[273][0]  # the one strip's start, its zlib header
    (folder / "d.tif").write_bytes(data[:-200] if damage == "cut" else
                                   data[:stream] + b"\x78\x9c" + bytes(len(data) - stream - 2))
    with pytest.raises(BadImageError, match="d.tif: cannot decode image"):
        read_image(folder / "d.tif")
    r = upscale(str(folder / "d.tif"), "-m", tiny_model_file, "-o", str(folder.parent / "o"))
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert not (folder.parent / "o" / "d.tif").exists()


def test_gimps_16_bit_grey_with_alpha_upscales_to_16_bit_grey_with_alpha(
        folder: Path, tiny_model_file: str) -> None:
    """Alpha kept (a transparent corner stays transparent), 16 bits kept, turned upright as
    its orientation says, print size kept (DPI doubled), XMP kept."""
    pixels = _samples("grey16+alpha", seed=4, h=10, w=12)
    pixels[..., 1] = 65535
    pixels[:4, :4, 1] = 0
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"></x:xmpmeta>'
    _deep_tiff(folder / "g.tif", pixels, "grey16+alpha", ">", ADOBE_DEFLATE, 2,
               tags={ORIENTATION: 6, 282: 300, 283: 300, 296: 2, XMP: xmp})
    r = upscale(str(folder / "g.tif"), "-m", tiny_model_file, "-o", str(folder.parent / "o"),
                "--scale", "2")
    assert r.exit_code == 0, r.output
    assert "8 bits" not in r.output
    array, info = read_image(folder.parent / "o" / "g.tif")
    assert array.dtype == np.uint16 and array.shape == (24, 20, 2)  # turned: 12x10 to 10x12
    assert (array[..., 0] % 257 != 0).any()  # more than 8-bit levels
    alpha = np.rot90(array[..., 1], 1)  # back as stored
    assert (alpha[:6, :6] == 0).all() and (alpha[12:, 12:] == 65535).all()
    assert info.dpi == (600, 600)
    with open(folder.parent / "o" / "g.tif", "rb") as f:  # Pillow opens no 16-bit LA TIFF
        tags = first_ifd(f)
    assert tags[258] == (16, 16) and tags[338] == (ALPHA,) and tags[262] == 1
    assert tags[XMP] == xmp and ORIENTATION not in tags


def test_hdr_float_rgb_upscales_to_float_tiff_with_its_range_and_icc(
        folder: Path, tiny_model_file: str) -> None:
    """Values past 0..1 stay past it; the ICC profile and the artist travel."""
    pixels = _samples("rgb-float32", seed=5, h=10, w=12)
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    _deep_tiff(folder / "h.tif", pixels, "rgb-float32", "<", LZW, 3,
               tags={ICC: icc, 315: "A. Photographer"})
    r = upscale(str(folder / "h.tif"), "-m", tiny_model_file, "-o", str(folder.parent / "o"),
                "--scale", "2")
    assert r.exit_code == 0, r.output
    array, info = read_image(folder.parent / "o" / "h.tif")
    assert array.dtype == np.float32 and array.shape == (20, 24, 3)
    assert array.min() < -0.1 and array.max() > 1.5 and info.icc_profile == icc
    with open(folder.parent / "o" / "h.tif", "rb") as f:  # Pillow opens no float colour
        tags = first_ifd(f)
    assert tags[339] == (3, 3, 3) and tags[258] == (32, 32, 32) and tags[317] == 3
    assert tags[315] == "A. Photographer"


@pytest.mark.parametrize("kind", ["grey16+alpha", "rgba-float32", "grey-float32+alpha"])
def test_x1_results_are_the_input_itself_at_their_depth(folder: Path, tiny_model_file: str,
                                                        kind: str) -> None:
    """Written back exactly: 16-bit as 16-bit TIFF, float as 32-bit float TIFF."""
    pixels = _samples(kind, seed=6)
    _deep_tiff(folder / "a.tif", pixels, kind, compression=PACKBITS)
    r = upscale(str(folder / "a.tif"), "-m", tiny_model_file, "-o", str(folder.parent / "o"),
                "--scale", "1")
    assert r.exit_code == 0, r.output
    array, info = read_image(folder.parent / "o" / "a.tif")
    assert array.dtype == pixels.dtype and np.array_equal(array, pixels) and not info.notes


def test_16_bit_grey_with_alpha_goes_to_a_16_bit_grey_with_alpha_png(
        folder: Path, tiny_model_file: str) -> None:
    """PNG's colour type 4 at 16 bits, which drcn reads back exactly (Pillow at 8 bits: its
    high bytes, as RGBA)."""
    pixels = _samples("grey16+alpha", seed=8)
    _deep_tiff(folder / "a.tif", pixels, "grey16+alpha")
    r = upscale(str(folder / "a.tif"), "-m", tiny_model_file, "-o", str(folder.parent / "o"),
                "--scale", "1", "-f", "png")
    assert r.exit_code == 0, r.output
    data = (folder.parent / "o" / "a.png").read_bytes()
    assert data[24:26] == bytes([16, 4])  # IHDR's bit depth and colour type
    with Image.open(folder.parent / "o" / "a.png") as im:
        high = np.asarray(im)
    assert np.array_equal(high[..., [0, 3]], pixels >> 8)
    array, info = read_image(folder.parent / "o" / "a.png")
    assert array.dtype == np.uint16 and np.array_equal(array, pixels) and not info.notes


def test_float_colour_goes_to_png_as_16_bits_or_is_refused_where_it_would_clip(
        tmp_path: Path) -> None:
    """As float grey does: PNG stores integers, so 16 bits with a note, or a refusal before any
    work where its values leave 0..1."""
    rgb = np.random.default_rng(7).random((5, 6, 3)).astype(np.float32)
    info = ImageInfo(format="TIFF", value_range=(0.0, 1.0))
    with open(tmp_path / "f.png", "wb") as f:
        encode(rgb, "PNG", info, 1.0).write(f)
    assert "PNG stores integers: float result stored as 16-bit" in info.notes
    array, _ = read_image(tmp_path / "f.png")
    assert array.dtype == np.uint16 and np.array_equal(array, np.round(rgb * 65535))
    with pytest.raises(BadOptionError, match="span -0.5..1; PNG stores 0..1"):
        encode(rgb, "PNG", ImageInfo(format="TIFF", value_range=(-0.5, 1.0)), 1.0)


_BIG_TYPES = {3: "H", 4: "L", 16: "Q"}  # SHORT, LONG and BigTIFF's LONG8, as struct packs them


def _big_tiff(path: Path, pixels: np.ndarray, kind: str, compression: int, predictor: int,
              rows: int = 3) -> None:
    """A little-endian BigTIFF (8-byte offsets and counts, 20-byte entries) of ``pixels`` as
    ``kind`` stores them, in strips of ``rows`` rows, written with struct as libtiff does."""
    _, photometric, channels, sample_format = KINDS[kind]
    h, w = pixels.shape[:2]
    stored = pixels.astype(pixels.dtype.newbyteorder("<"))
    strips = [_PACK[compression](_predicted(stored[y:y + rows], predictor))
              for y in range(0, h, rows)]
    bits = (8 * pixels.dtype.itemsize,) * channels
    tags = {256: (4, (w,)), 257: (4, (h,)), 258: (3, bits), 259: (3, (compression,)),
            262: (3, (photometric,)), 273: (16, ()), 277: (3, (channels,)), 278: (4, (rows,)),
            279: (16, tuple(map(len, strips))), 317: (3, (predictor,)),
            339: (3, (sample_format,) * channels)}
    if channels in (2, 4):
        tags[338] = (3, (ALPHA,))
    at = 16 + 8 + 20 * len(tags) + 8  # past the header and the directory: its tables, strips
    starts = (0,) * len(strips)
    for _ in range(2):  # the second time with the strips' starts, past the tables' known size
        tags[273] = (16, starts)
        tables, entries = b"", []
        for tag, (kind_, values) in sorted(tags.items()):
            packed = struct.pack(f"<{len(values)}{_BIG_TYPES[kind_]}", *values)
            if len(packed) > 8:  # what does not fit an entry goes after the directory
                packed, tables = struct.pack("<Q", at + len(tables)), tables + packed
            entries.append(struct.pack("<HHQ", tag, kind_, len(values))
                           + packed.ljust(8, b"\0"))
        starts = tuple(at + len(tables) + sum(map(len, strips[:i])) for i in range(len(strips)))
    head = b"II" + struct.pack("<HHHQ", 43, 8, 0, 16)
    ifd = struct.pack("<Q", len(tags)) + b"".join(entries) + bytes(8)
    path.write_bytes(head + ifd + tables + b"".join(strips))


@pytest.mark.parametrize("compression", [NONE, ADOBE_DEFLATE])
@pytest.mark.parametrize("kind", ["grey16+alpha", "rgb-float32"])
def test_a_bigtiff_is_read_exactly(tmp_path: Path, kind: str, compression: int) -> None:
    """BigTIFF (what libtiff writes past 4 GB, and on request) of 16-bit grey with alpha and of
    float RGB, with the predictor each is stored with. Little-endian only: Pillow 13 takes a
    big-endian BigTIFF's header for a classic one's (it looks for 43 in its third byte)."""
    pixels = _samples(kind, seed=10, h=11, w=13)
    predictor = 1 if compression == NONE else 2 if pixels.dtype == np.uint16 else 3
    _big_tiff(tmp_path / "b.tif", pixels, kind, compression, predictor)
    assert (tmp_path / "b.tif").read_bytes()[:4] == b"II+\0"
    array, info = read_image(tmp_path / "b.tif")
    assert array.dtype == pixels.dtype and np.array_equal(array, pixels) and not info.notes


def test_a_stand_in_opened_in_one_thread_leaves_other_threads_tiffs_alone(tmp_path: Path) -> None:
    """ComfyUI's nodes and the GIMP worker read in threads: while one thread opens a stand-in,
    another reads a TIFF of the same layout exactly, and Pillow there still refuses it (its
    table of modes is one for every thread: swapped, it would open the file in the stand-in's
    mode, whose pixels no decoder reads)."""
    pixels = _samples("grey16+alpha")
    _deep_tiff(tmp_path / "d.tif", pixels, "grey16+alpha")
    with open(tmp_path / "d.tif", "rb") as f:
        layout = deep_layout(first_ifd(f))
    seen: dict[str, object] = {}

    def other_thread() -> None:
        try:
            with Image.open(tmp_path / "d.tif") as im:
                seen["pillow"] = f"opened as {im.mode}"
        except UnidentifiedImageError:
            seen["pillow"] = "refused"
        try:
            seen["array"] = read_image(tmp_path / "d.tif")[0]
        except BadImageError as e:
            seen["error"] = str(e)

    with stand_in_modes(layout):  # this thread, opening its stand-in
        reader = threading.Thread(target=other_thread, daemon=True)
        reader.start()
        reader.join(10)
    reader.join(10)
    assert seen.get("pillow") == "refused", seen
    assert np.array_equal(seen.get("array"), pixels), seen.get("error")


def test_a_nested_stand_in_leaves_the_enclosing_one_its_layout(tmp_path: Path) -> None:
    """A stand-in opened inside another's gives the outer one back its layout on leaving, not
    none: Pillow there still opens the file in the stand-in's mode, and refuses it after."""
    _deep_tiff(tmp_path / "d.tif", _samples("grey16+alpha"), "grey16+alpha")
    with open(tmp_path / "d.tif", "rb") as f:
        layout = deep_layout(first_ifd(f))
    with stand_in_modes(layout):
        with stand_in_modes(layout):
            pass
        with Image.open(tmp_path / "d.tif") as im:
            assert im.mode == layout.mode
    with pytest.raises(UnidentifiedImageError):
        Image.open(tmp_path / "d.tif")
