"""HEIF/HEIC photos, phones' default format: read through pillow-heif when it is installed
(upright, metadata kept, found in folders, counted lossy), one line naming the package when not."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import random_rgb
from PIL import Image
from typer.testing import CliRunner

from drcn_plugin.cli import app
from drcn_plugin.hub import choose_for_source
from drcn_plugin.imagefile import image_shape8, read_image

pillow_heif = pytest.importorskip("pillow_heif")
pytestmark = pytest.mark.usefixtures("wide_console")


@pytest.fixture
def phone_photo(tmp_path: Path) -> Path:
    """A 40x24 HEIC taken with the phone turned (EXIF orientation 6) and a camera make."""
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "PhoneMaker"
    path = tmp_path / "photos" / "IMG_0001.HEIC"
    path.parent.mkdir()
    # written by pillow-heif itself: reading must not rely on an opener the test registered
    pillow_heif.from_pillow(random_rgb(40, 24)).save(path, quality=90, exif=exif.tobytes())
    return path


def test_a_heic_is_read_upright_with_its_metadata(phone_photo: Path) -> None:
    array, info = read_image(phone_photo)
    assert array.shape == (40, 24, 3) and array.dtype.name == "uint8"  # turned: 24 wide
    assert image_shape8(phone_photo) == (3, 40, 24)
    assert info.format == "HEIF" and info.lossy
    assert info.exif is not None and info.exif.get(0x010F) == "PhoneMaker"
    assert info.exif.get(0x0112, 1) == 1  # the pixels are upright: no second turn


def test_a_deep_heic_is_read_at_16_bits_and_upright(tmp_path: Path) -> None:
    """A 10-bit HEIC (an HDR phone photo) keeps its precision: its pixels are the 8-bit
    reading's to within two 8-bit levels, in more than 256 levels, turned the same way."""
    levels = (np.arange(64 * 80 * 3, dtype=np.uint32) * 2654435761 % 65536).astype(np.uint16)
    deep = pillow_heif.from_bytes(mode="RGB;16", size=(80, 64), data=levels.tobytes())
    exif = Image.Exif()
    exif[0x0112] = 6
    deep.save(tmp_path / "deep.heic", quality=80, exif=exif.tobytes())
    array, info = read_image(tmp_path / "deep.heic")
    assert array.dtype == np.uint16 and array.shape == (80, 64, 3) and not info.notes
    assert len(np.unique(array)) > 256
    with Image.open(tmp_path / "deep.heic") as im:
        eight = np.asarray(im.convert("RGB"), dtype=int)
    assert np.abs((array.astype(int) >> 8) - eight).max() <= 2  # libheif rounds apart


def test_a_folder_of_heic_photos_is_upscaled_not_passed_over(phone_photo: Path,
                                                            tiny_model_file: str) -> None:
    Image.new("RGB", (8, 8)).save(phone_photo.parent / "other.png")
    r = CliRunner().invoke(app, ["upscale", str(phone_photo.parent), "-o",
                                 str(phone_photo.parent.parent / "out"), "--model",
                                 tiny_model_file])
    assert r.exit_code == 0 and "2 done" in r.output, r.output
    result = Image.open(phone_photo.parent.parent / "out" / "IMG_0001.png")
    assert result.size == (48, 80) and result.getexif().get(0x010F) == "PhoneMaker"


def test_without_pillow_heif_a_heic_names_the_package(phone_photo: Path) -> None:
    code = ("import sys; sys.modules['pillow_heif'] = None\n"  # as if it were not installed
            "from pathlib import Path\n"
            "from drcn_plugin.imagefile import read_image\n"
            f"read_image(Path({str(phone_photo)!r}))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode != 0 and "BadImageError" in last and "pip install pillow-heif" in last


def test_a_heic_gets_the_clean_model_when_none_is_named(phone_photo: Path) -> None:
    """HEVC's in-loop deblocking leaves little for the photo model at the qualities phones save
    (benchmarks/codec_strength.py --codec heif): a quality-90 HEIC is upscaled as drcn-lite, and
    so is one whose QP is not read, where other lossy files of unknown quality get a quality-80
    JPEG's strength."""
    assert choose_for_source(True, None, fmt="HEIF").label == "drcn-lite"
    assert choose_for_source(True, None, fmt="JPEG2000") == choose_for_source(True, 80)
    out = phone_photo.parent.parent / "out"
    r = CliRunner().invoke(app, ["upscale", str(phone_photo), "-o", str(out)])
    row = next(line for line in r.output.splitlines() if "IMG_0001" in line and "done" in line)
    assert r.exit_code == 0 and "│ drcn-lite │" in row, r.output


@pytest.mark.parametrize(("quality", "model"), [(30, "drcn-lite-photo"), (50, "drcn-lite denoise 0.5")])
def test_a_heavily_compressed_heic_gets_the_photo_model(tmp_path: Path, quality: int,
                                                        model: str) -> None:
    """Its slice QP is read (32 at x265 quality 30, 22 at 50), where the photo model is best on
    Set5/Set14 x3 at 30 and 0.5 at 50."""
    path = tmp_path / "IMG_0002.HEIC"
    pillow_heif.from_pillow(random_rgb(40, 24)).save(path, quality=quality)
    r = CliRunner().invoke(app, ["upscale", str(path), "-o", str(tmp_path / "out")])
    row = next(line for line in r.output.splitlines() if "IMG_0002" in line and "done" in line)
    assert r.exit_code == 0 and f"│ {model} │" in row, r.output
