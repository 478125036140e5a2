"""What a photographer's everyday files carry that the result cannot: the images behind a phone's
or camera's JPEG (gain maps, depth maps, previews), named for what they are, not as frames; and
JPEG data damaged on the way, which Pillow decodes without a word."""

from __future__ import annotations

import io
import itertools
import re
from pathlib import Path

import numpy as np
import pytest
from helpers import jpeg_bytes, mpf_jpeg, random_rgb, upscale
from PIL import Image

from drcn_plugin.imagefile import read_image
from drcn_plugin.jpegparts import damage_note

pytestmark = pytest.mark.usefixtures("wide_console")
UNDEFINED, PREVIEW_VGA, PREVIEW_HD, DISPARITY = 0x000000, 0x010001, 0x010002, 0x020002
_XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-'
        b'rdf-syntax-ns#"><rdf:Description %s/></rdf:RDF></x:xmpmeta>')
_ULTRA_HDR_PHOTO = _XMP % (b'xmlns:hdrgm="http://ns.adobe.com/hdr-gain-map/1.0/" '
                           b'hdrgm:Version="1.0"')
_ULTRA_HDR_MAP = _XMP % (b'xmlns:hdrgm="http://ns.adobe.com/hdr-gain-map/1.0/" '
                         b'hdrgm:Version="1.0" hdrgm:GainMapMax="2.3"')
_APPLE_GAIN_MAP = _XMP % (b'xmlns:apdi="http://ns.apple.com/pixeldatainfo/1.0/" '
                          b'apdi:AuxiliaryImageType="urn:com:apple:photo:2020:aux:hdrgainmap"')
_APPLE_DEPTH = _XMP % b'xmlns:depthData="http://ns.apple.com/depthData/1.0/" depthData:Quality="1"'


def _extra(seed: int, xmp: bytes | None = None) -> bytes:
    """A small grey JPEG, as gain maps and depth maps are, with ``xmp`` if given."""
    return jpeg_bytes(random_rgb(6, 4, seed).convert("L"), **({"xmp": xmp} if xmp else {}))


@pytest.mark.parametrize("extras, photo_xmp, note", [
    ([(PREVIEW_VGA, _extra(1)), (PREVIEW_HD, _extra(2))], None,
     "2 preview images dropped (the result is the photo alone)"),
    ([(UNDEFINED, _extra(1, _ULTRA_HDR_MAP))], _ULTRA_HDR_PHOTO,
     "HDR gain map dropped (the result is the SDR photo alone); its XMP no longer promises a "
     "gain map"),
    ([(UNDEFINED, _extra(1, _APPLE_GAIN_MAP)), (UNDEFINED, _extra(2, _APPLE_DEPTH))], None,
     "HDR gain map and depth map dropped (the result is the SDR photo alone)"),
    ([(DISPARITY, _extra(1))], None, "stereo (3D) view dropped (the result is the photo alone)"),
    ([(UNDEFINED, _extra(1))], None, "extra image dropped (the result is the photo alone)"),
], ids=["camera-previews", "ultra-hdr", "iphone", "3d-camera", "unknown"])
def test_the_images_behind_a_photo_are_named_for_what_they_are(
        tmp_path: Path, extras: list[tuple[int, bytes]], photo_xmp: bytes | None,
        note: str) -> None:
    """A camera JPEG's MPF previews and a phone photo's HDR images are no animation's frames:
    the photo is the one upscaled, and one note says what was left out (not "2 frames: only
    the first was upscaled")."""
    photo = random_rgb(24, 16)
    path = tmp_path / "photo.jpg"
    path.write_bytes(mpf_jpeg(jpeg_bytes(photo, **({"xmp": photo_xmp} if photo_xmp else {})),
                              extras))
    array, info = read_image(path)
    assert info.notes == [note] and info.frames == 1
    with Image.open(path) as im:
        assert array.shape == (16, 24, 3) and (array == im.convert("RGB")).all()


def test_a_camera_photos_previews_are_one_line_in_the_batch(folder: Path,
                                                            tiny_model_file: str) -> None:
    """``drcn upscale`` prints what a camera JPEG's MPF previews are, not frames."""
    (folder / "DSC_0001.JPG").write_bytes(mpf_jpeg(jpeg_bytes(random_rgb(24, 16)),
                                                   [(PREVIEW_HD, _extra(1))]))
    r = upscale(str(folder), "-m", tiny_model_file, "-o", str(folder.parent / "out"))
    assert r.exit_code == 0, r.output
    assert "preview image dropped" in r.output and "frames" not in r.output


def test_a_true_animation_still_names_its_frames(tmp_path: Path) -> None:
    """A GIF's frames are frames: the note stays."""
    first, *more = [random_rgb(seed=s) for s in range(3)]
    first.save(tmp_path / "a.gif", save_all=True, append_images=more)
    assert read_image(tmp_path / "a.gif")[1].notes == ["3 frames: only the first was upscaled"]


def _restart_jpeg() -> tuple[bytes, list[int]]:
    """A JPEG of 128x96 noise with a restart marker after each MCU row (16 pixels: 4:2:0), and
    where each marker is."""
    data = jpeg_bytes(random_rgb(128, 96), quality=90, restart_marker_rows=1)
    return data, [m.start() for m in re.finditer(rb"\xff[\xd0-\xd7]", data)]


@pytest.mark.parametrize("damage, row", [
    (lambda d, rst: d[:rst[1]] + d[rst[2]:], 16),  # rows 32..47 and a marker lost
    (lambda d, rst: d[:rst[3]] + b"\xff\xd9", 48),  # cut short after row 63, an EOI added
], ids=["data-lost", "cut-short"])
def test_a_jpeg_with_damaged_data_is_upscaled_with_a_note(tmp_path: Path, damage, row: int) -> None:
    """libjpeg decodes damaged data as it can and warns; Pillow drops the warning, so the
    result held garbage without a word. The restart markers show the damage; the file is still
    read (what can be saved is wanted), with a note saying from where."""
    data, rst = _restart_jpeg()
    (tmp_path / "damaged.jpg").write_bytes(damage(data, rst))
    array, info = read_image(tmp_path / "damaged.jpg")
    assert info.notes == [f"the JPEG's data is damaged from about row {row}: the result may "
                          "show it"]
    with Image.open(io.BytesIO(data)) as clean:
        differs = np.abs(array.astype(int) - np.asarray(clean.convert("RGB"))).max(axis=(1, 2))
    assert not differs[:row].any() and differs[row:].max() > 40


@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
def test_whole_jpegs_of_every_kind_are_not_taken_for_damaged_ones(mode: str) -> None:
    """Qualities, progressive and optimised coding, restart intervals, every chroma
    subsampling, odd sizes, flat images (whose optimised data is mostly zero bytes), MPO."""
    for (w, h), flat, quality, progressive, optimize, subsampling, restart in itertools.product(
            [(1, 1), (17, 33), (130, 47)], [False, True], [5, 100], [False, True],
            [False, True], [0, 1, 2], [{}, {"restart_marker_blocks": 5},
                                       {"restart_marker_rows": 1}]):
        im = random_rgb(w, h).convert(mode) if not flat else Image.new(mode, (w, h), 90)
        data = jpeg_bytes(im, quality=quality, progressive=progressive, optimize=optimize,
                          subsampling=subsampling, **restart)
        with Image.open(io.BytesIO(data)) as opened:
            assert damage_note(io.BytesIO(data), opened, True) is None, (
                w, h, flat, quality, progressive, optimize, subsampling, restart)
    stereo = io.BytesIO()
    random_rgb(40, 24).save(stereo, "MPO", save_all=True, append_images=[random_rgb(seed=1)],
                            restart_marker_blocks=2)
    with Image.open(stereo) as opened:
        assert damage_note(stereo, opened, True) is None


def test_a_redundant_restart_marker_at_the_end_of_a_scan_is_not_damage(tmp_path: Path) -> None:
    """Some encoders write a restart marker after the last interval too when the MCU count is a
    multiple of the interval; libjpeg decodes such a file whole, so no damage is noted."""
    data, rst = _restart_jpeg()
    assert data.endswith(b"\xff\xd9") and len(rst) == 5  # 6 MCU rows: 5 markers between them
    (tmp_path / "trailing.jpg").write_bytes(data[:-2] + b"\xff\xd5\xff\xd9")
    array, info = read_image(tmp_path / "trailing.jpg")
    assert info.notes == []
    with Image.open(io.BytesIO(data)) as clean:
        assert (array == np.asarray(clean.convert("RGB"))).all()
