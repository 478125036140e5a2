"""Files a photographer really has: stale EXIF sizes, EXIF thumbnails, 12-bit JPEGs and half-float
TIFFs, animations and multi-page files, premultiplied alpha. Each comes out the right size and
colour, or says in a note what it lost, or is one line saying why it cannot be read."""

from __future__ import annotations

import io
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
from helpers import hand_tiff, random_rgb
from PIL import Image
from typer.testing import CliRunner

from drcn_plugin.cli import app
from drcn_plugin.errors import BadImageError
from drcn_plugin.imagefile import read_image

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("wide_console")
EXIF_IFD, PIXEL_X, PIXEL_Y = 0x8769, 0xA002, 0xA003
RGB, EXTRA_SAMPLES, ASSOCIATED = 2, 338, 1


def _exif_with_thumbnail(thumbnail: bytes) -> bytes:
    """Little-endian EXIF as cameras write it: IFD0 (a make), then IFD1 holding a JPEG preview."""
    ifd0 = struct.pack("<HHHI", 1, 0x010F, 2, 4) + b"Cam\0"
    ifd1_at = 8 + len(ifd0) + 4
    preview_at = ifd1_at + 2 + 2 * 12 + 4
    ifd1 = struct.pack("<HHHII", 2, 513, 4, 1, preview_at) + \
        struct.pack("<HHII", 514, 4, 1, len(thumbnail)) + b"\0\0\0\0"
    return b"Exif\0\0II*\0" + struct.pack("<I", 8) + ifd0 + struct.pack("<I", ifd1_at) + ifd1 + \
        thumbnail


def test_stale_exif_pixel_dimensions_become_the_results_size(folder: Path,
                                                              tiny_model_file: str) -> None:
    """An editor's crop that left PixelXDimension at the camera's size gets the result's size,
    not the stale one scaled (999x7 must not become 1998x14 for an 80x48 result)."""
    exif = Image.Exif()
    exif[EXIF_IFD] = {PIXEL_X: 999, PIXEL_Y: 7}
    random_rgb(40, 24).save(folder / "crop.jpg", exif=exif, quality=95)
    r = runner.invoke(app, ["upscale", str(folder / "crop.jpg"), "-m", tiny_model_file, "-o",
                            str(folder.parent / "out"), "--scale", "2"])
    assert r.exit_code == 0, r.output
    out = Image.open(folder.parent / "out" / "crop.jpg")
    tags = out.getexif().get_ifd(EXIF_IFD)
    assert out.size == (80, 48) and (tags[PIXEL_X], tags[PIXEL_Y]) == (80, 48)


def test_a_dropped_exif_thumbnail_is_named(tmp_path: Path) -> None:
    """Pillow writes no IFD1, so a camera JPEG's preview vanished without a word; a TIFF's next
    IFD is its next page, which the frame note names instead."""
    preview = io.BytesIO()
    random_rgb(8, 5).save(preview, "JPEG")
    random_rgb(40, 24).save(tmp_path / "cam.jpg", exif=_exif_with_thumbnail(preview.getvalue()))
    _, info = read_image(tmp_path / "cam.jpg")
    assert info.exif is not None and info.exif[0x010F] == "Cam"
    assert any("EXIF thumbnail dropped" in n for n in info.notes), info.notes
    random_rgb().save(tmp_path / "pages.tif", save_all=True, append_images=[random_rgb(seed=1)])
    _, info = read_image(tmp_path / "pages.tif")
    assert info.notes == ["2 frames: only the first was upscaled"]


def _twelve_bit_jpeg(path: Path) -> None:
    """A JPEG whose frame header declares 12-bit samples (as scientific and medical cameras
    write), which Pillow's 8-bit libjpeg interface cannot decode."""
    data = io.BytesIO()
    random_rgb().save(data, "JPEG")
    raw = bytearray(data.getvalue())
    raw[raw.index(b"\xff\xc0") + 4] = 12  # SOF0's sample precision
    path.write_bytes(bytes(raw))


def test_a_file_its_reader_refuses_says_why(tmp_path: Path) -> None:
    """A 12-bit JPEG and a 32-bit integer RGB TIFF are named with their reader's reason, not Pillow's
    "cannot identify image file" (which would make them "not an image", like a text file); an
    empty file is named as one."""
    _twelve_bit_jpeg(tmp_path / "deep.jpg")
    with pytest.raises(BadImageError, match=r"deep\.jpg: .*JPEG reader: cannot handle 12-bit"):
        read_image(tmp_path / "deep.jpg")
    hand_tiff(tmp_path / "int32.tif", np.zeros((4, 6, 3), np.uint32), RGB)
    with pytest.raises(BadImageError, match=r"int32\.tif: .*its TIFF reader: "):
        read_image(tmp_path / "int32.tif")
    (tmp_path / "notes.jpg").write_text("not an image")
    with pytest.raises(BadImageError, match=r"notes\.jpg: not an image Pillow can read$"):
        read_image(tmp_path / "notes.jpg")
    (tmp_path / "placeholder.jpg").write_bytes(b"")  # an interrupted copy, a cloud placeholder
    with pytest.raises(BadImageError, match=r"placeholder\.jpg: .* \(the file is empty: 0 bytes\)$"):
        read_image(tmp_path / "placeholder.jpg")


@pytest.mark.parametrize("samples, photometric, tags, words", [
    (np.zeros((4, 6, 2), np.uint32), 1, {EXTRA_SAMPLES: [2]}, "32-bit grey with alpha"),
    (np.zeros((4, 6, 3), np.int16), RGB, {339: [2] * 3}, "16-bit signed RGB"),
    (np.zeros((4, 6, 4), np.uint32), RGB, {EXTRA_SAMPLES: [2]}, "32-bit RGB with alpha"),
])
def test_a_tiff_pillow_has_no_mode_for_is_named_by_what_it_holds(
        tmp_path: Path, samples: np.ndarray, photometric: int, tags: dict, words: str) -> None:
    """32-bit integer and signed samples (16-bit grey with alpha and float colour are read: see
    test_tiff_deep_modes): valid TIFFs, named by their samples rather than by Pillow's "unknown
    pixel mode"."""
    hand_tiff(tmp_path / "x.tif", samples, photometric, tags)
    with pytest.raises(BadImageError, match=rf"x\.tif: .*\(its TIFF reader: no mode for {words}\)$"):
        read_image(tmp_path / "x.tif")


@pytest.mark.parametrize("subfile_type", [0, 1, 3])
def test_a_tiffs_reduced_resolution_preview_is_not_upscaled_as_the_photo(
        tmp_path: Path, subfile_type: int) -> None:
    """A camera raw (DNG, NEF, ...) is a TIFF whose first image is a small preview of the raw,
    which Pillow cannot read: upscaled, the preview would pass for the photo."""
    hand_tiff(tmp_path / "IMG_1.dng", np.full((6, 8, 3), 200, np.uint8), RGB,
              {254: [subfile_type]})
    if subfile_type & 1:  # reduced resolution (3: also a page of several)
        with pytest.raises(BadImageError, match=r"IMG_1\.dng: its image is a 8x6 reduced-"
                                                r"resolution preview, not the photo"):
            read_image(tmp_path / "IMG_1.dng")
    else:  # the full-resolution image itself
        assert read_image(tmp_path / "IMG_1.dng")[0].shape == (6, 8, 3)


@pytest.mark.parametrize("name, save", [
    ("a.apng", dict(format="PNG")), ("a.gif", dict()), ("a.webp", dict(lossless=True)),
    ("a.tif", dict()),
])
def test_every_animation_or_multi_frame_file_names_the_frames_it_drops(
        tmp_path: Path, name: str, save: dict) -> None:
    first, *more = [random_rgb(seed=s) for s in range(3)]
    first.save(tmp_path / name, save_all=True, append_images=more, **save)
    array, info = read_image(tmp_path / name)
    assert array.shape[:2] == (16, 20)
    assert "3 frames: only the first was upscaled" in info.notes


def test_premultiplied_tiff_alpha_is_unpremultiplied(tmp_path: Path) -> None:
    """TIFF ExtraSamples 1 (associated alpha, Photoshop's and compositors' choice) stores colour
    times alpha; the result must carry the true colour, as an unassociated TIFF does."""
    colour = np.asarray(random_rgb(), dtype=np.uint16)
    alpha = np.tile(np.linspace(60, 255, 20).astype(np.uint16), (16, 1))
    hand_tiff(tmp_path / "pre.tif",
              np.dstack([colour * alpha[..., None] // 255, alpha]).astype(np.uint8), RGB,
              {EXTRA_SAMPLES: [ASSOCIATED]})
    array, info = read_image(tmp_path / "pre.tif")
    assert array.shape == (16, 20, 4) and not info.notes
    assert np.array_equal(array[..., 3], alpha)
    assert np.abs(array[..., :3].astype(int) - colour).max() <= 5  # rounding at low alpha


@pytest.mark.parametrize("primaries, kept", [(12, True), (1, False)])
def test_a_heic_whose_colours_only_nclx_describes_keeps_them(
        tmp_path: Path, primaries: int, kept: bool) -> None:
    """A phone's Display P3 HEIC without an ICC profile (nclx primaries 12) keeps its colour
    space as PNG's cICP code points (written to PNG, or as an ICC profile); sRGB needs none."""
    pillow_heif = pytest.importorskip("pillow_heif")
    nclx = {"color_primaries": primaries, "transfer_characteristics": 13,
            "matrix_coefficients": 6, "full_range_flag": 1}
    pillow_heif.from_pillow(random_rgb()).save(tmp_path / "p.heic", nclx_profile=nclx)
    _, info = read_image(tmp_path / "p.heic")
    assert info.about.png_colour == ({b"cICP": bytes([12, 13, 0, 1])} if kept else {})
    assert not info.notes


def test_a_file_left_open_elsewhere_is_not_a_note_on_the_image(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoder warnings become the image's notes; a ResourceWarning is Python collecting some
    other file left open (a caller's, a test's) while this one decodes, not about the image."""
    from drcn_plugin import imagefile

    decode = imagefile._decode

    def collected_meanwhile(path: Path):
        warnings.warn("unclosed file <_io.FileIO name='other.jpg'>", ResourceWarning, stacklevel=1)
        return decode(path)

    monkeypatch.setattr(imagefile, "_decode", collected_meanwhile)
    random_rgb().save(tmp_path / "a.png")
    assert read_image(tmp_path / "a.png")[1].notes == []
