"""AVIF as an output: an AVIF stays AVIF with its metadata, `--format avif` writes what the
format holds (grey, alpha; 16-bit reduced with a note), and what it cannot write is refused
before any upscaling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import random_rgb
from PIL import Image, ImageCms, features
from typer.testing import CliRunner

from drcn_plugin.cli import app
from drcn_plugin.encoding import check_writable, save_options
from drcn_plugin.errors import BadOptionError
from drcn_plugin.imagefile import ImageInfo, read_image

if not features.check("avif"):
    pytest.skip("this Pillow has no AVIF codec", allow_module_level=True)
runner = CliRunner()
pytestmark = pytest.mark.usefixtures("wide_console")
_XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/'
        b'22-rdf-syntax-ns#"><rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/" '
        b'dc:format="image/avif"/></rdf:RDF></x:xmpmeta>')


def test_an_avif_comes_back_as_avif_with_its_metadata(folder: Path, tiny_model_file: str) -> None:
    exif = Image.Exif()
    exif[0x010F] = "Maker"
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    random_rgb(20, 16).save(folder / "web.avif", quality=90, exif=exif, icc_profile=icc, xmp=_XMP)
    r = runner.invoke(app, ["upscale", str(folder), "-s", "2", "-m", tiny_model_file])
    assert r.exit_code == 0, r.output
    out = folder.parent / "in-drcn-x2" / "web.avif"
    with Image.open(out) as im:
        assert im.format == "AVIF" and im.size == (40, 32) and im.mode == "RGB"
        assert im.getexif().get(0x010F) == "Maker" and im.info["icc_profile"] == icc
        assert b"image/avif" in im.info["xmp"]
    _, info = read_image(folder / "web.avif")
    assert info.lossy  # an AVIF's artefacts are likely: upscaled as a lossy source by default


def test_format_avif_keeps_grey_and_alpha(folder: Path, tiny_model_file: str) -> None:
    levels = (np.arange(16 * 20).reshape(16, 20) * 7 % 251).astype(np.uint8)
    Image.fromarray(levels).save(folder / "grey.png")
    grey_alpha = np.stack([levels, np.tile(np.linspace(0, 255, 20, dtype=np.uint8), (16, 1))], -1)
    Image.fromarray(grey_alpha, "LA").save(folder / "cutout.png")
    Image.fromarray(levels.astype(np.uint16) * 257).save(folder / "deep.png")
    r = runner.invoke(app, ["upscale", str(folder), "-s", "2", "-f", "avif", "-m",
                            tiny_model_file])
    assert r.exit_code == 0 and "3 done" in r.output, r.output
    out = folder.parent / "in-drcn-x2"
    with Image.open(out / "grey.avif") as im:
        assert im.mode == "L" and im.size == (40, 32)
    with Image.open(out / "cutout.avif") as im:
        alpha = np.asarray(im)[..., 3]
        assert im.mode == "RGBA" and alpha[:, 0].max() < 10 and alpha[:, -1].min() > 245
    assert "AVIF stores 8 bits: result reduced to 8 bits" in r.output


def test_a_pillow_without_avif_is_one_line_before_any_work(folder: Path, tiny_model_file: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    random_rgb().save(folder / "a.png")
    monkeypatch.delitem(Image.SAVE, "AVIF")  # as in a Pillow older than its AVIF plugin
    r = runner.invoke(app, ["upscale", str(folder), "-f", "AVIF", "-m", tiny_model_file])
    assert r.exit_code == 2 and "this Pillow cannot write AVIF" in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1
    assert not (folder.parent / "in-drcn-x2").exists()


@pytest.mark.parametrize("fmt", ["avif", "webp"])
def test_a_resolution_travels_in_exif_where_the_format_has_no_field(
        folder: Path, tiny_model_file: str, fmt: str) -> None:
    random_rgb().save(folder / "print.png", dpi=(300, 150))  # pHYs: AVIF and WebP have no such field
    out = folder.parent / "out"
    r = runner.invoke(app, ["upscale", str(folder), "-f", fmt, "-m", tiny_model_file, "-o", str(out)])
    assert r.exit_code == 0 and "dropped" not in r.output, r.output
    written = next(out.iterdir())
    with Image.open(written) as im:
        exif = im.getexif()
    assert exif[0x0128] == 2  # inches; PNG stored 300 x 150 dpi as dots per metre
    assert (float(exif[0x011A]), float(exif[0x011B])) == pytest.approx((600, 300), rel=1e-3)
    back = folder.parent / "back"
    r = runner.invoke(app, ["upscale", str(written), "-f", "png", "-m", tiny_model_file,
                            "-o", str(back)])
    assert r.exit_code == 0, r.output
    with Image.open(next(back.iterdir())) as im:  # read back as the file's resolution, scaled
        assert im.info["dpi"] == pytest.approx((1200, 600), rel=1e-3)


def test_avif_takes_the_default_or_given_quality() -> None:
    info = ImageInfo(format="PNG")
    assert save_options("AVIF", info, 2.0)["quality"] == 95
    assert save_options("AVIF", info, 2.0, quality=60)["quality"] == 60


def test_an_avif_too_large_to_open_is_refused_before_the_upscale() -> None:
    array, info = np.zeros((4, 4, 3), np.uint8), ImageInfo(format="PNG")
    with pytest.raises(BadOptionError, match="AVIF images are at most 32768 pixels a side"):
        check_writable(array, "AVIF", info, 2.0, size=(100, 32769))
    with pytest.raises(BadOptionError, match="AVIF images hold at most 268 MP"):
        check_writable(array, "AVIF", info, 2.0, size=(16385, 16384))
    check_writable(array, "AVIF", info, 2.0, size=(100, 32768))
    check_writable(array, "AVIF", info, 2.0, size=(16384, 16384))
