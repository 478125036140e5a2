"""A TIFF's own metadata tags. Its IPTC records (captions, keywords, credits: its tag 33723,
beside the EXIF) travel as stored, also where the writer typed the tag LONG as Photoshop does
(Pillow keeps 4 bytes of that), in a classic TIFF or a BigTIFF, and go to a JPEG result where JPEG's readers look for them: its
Photoshop APP13 block; a format with no place for them drops them with a note. What describes
the image before the upscale (Photoshop's resources and layers, tifffile's shape) is dropped
with a note."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from helpers import random_rgb, upscale
from PIL import Image, IptcImagePlugin
from PIL.TiffImagePlugin import ImageFileDirectory_v2

pytestmark = pytest.mark.usefixtures("wide_console")
_IPTC = b"\x1c\x02\x00\x00\x02\x00\x04\x1c\x02\x78\x00\x07Caption\x1c\x02\x19\x00\x04tree"
_UNDEFINED, _LONG, _SHORT = 7, 4, 3


def _photoshop_tiff(path: Path, tagtype: int, big_tiff: bool = False) -> None:
    """A TIFF (or BigTIFF) with IPTC records and an artist, its IPTC tag typed ``tagtype``
    (LONG as Photoshop types it; SHORT as no writer does)."""
    tags = ImageFileDirectory_v2()
    tags[33723], tags.tagtype[33723] = _IPTC, _UNDEFINED
    tags[315] = "Jane"
    random_rgb().save(path, tiffinfo=tags, big_tiff=big_tiff)
    if tagtype != _UNDEFINED:  # the same bytes, counted in 4- or 2-byte numbers
        data = path.read_bytes()
        entry = "<HHQ" if big_tiff else "<HHI"  # a BigTIFF counts in 8 bytes
        assert data.count(struct.pack(entry, 33723, _UNDEFINED, len(_IPTC))) == 1
        count = len(_IPTC) // (4 if tagtype == _LONG else 2)
        path.write_bytes(data.replace(struct.pack(entry, 33723, _UNDEFINED, len(_IPTC)),
                                      struct.pack(entry, 33723, tagtype, count)))


@pytest.mark.parametrize(("tagtype", "big_tiff"),
                         [(_UNDEFINED, False), (_LONG, False), (_LONG, True)])
def test_a_tiffs_iptc_goes_to_a_jpegs_app13(folder: Path, tiny_model_file: str,
                                            tagtype: int, big_tiff: bool) -> None:
    _photoshop_tiff(folder / "ps.tif", tagtype, big_tiff)
    out = folder.parent / "out"
    r = upscale(str(folder / "ps.tif"), "-f", "jpg", "-o", str(out), "-m", tiny_model_file)
    assert r.exit_code == 0, r.output
    with Image.open(out / "ps.jpg") as im:
        records = IptcImagePlugin.getiptcinfo(im)
        exif = im.getexif()
    assert records is not None, "no IPTC where JPEG's readers look"
    assert records[(2, 120)] == b"Caption" and records[(2, 25)] == b"tree"
    assert 33723 not in exif and exif[315] == "Jane"  # moved, not copied; the rest stays
    assert "IPTC" not in r.output and "warning" not in r.output


@pytest.mark.parametrize("fmt", ["webp", "png", "avif"])
def test_a_tiffs_iptc_is_dropped_with_a_note_where_the_format_has_no_place(
        folder: Path, tiny_model_file: str, fmt: str) -> None:
    """Not written as tag 33723 in the output's EXIF, where no reader looks for it."""
    _photoshop_tiff(folder / "ps.tif", _UNDEFINED)
    out = folder.parent / "out"
    r = upscale(str(folder / "ps.tif"), "-f", fmt, "-o", str(out), "-m", tiny_model_file)
    assert r.exit_code == 0, r.output
    with Image.open(out / f"ps.{fmt}") as im:
        exif = im.getexif()
    assert 33723 not in exif and exif[315] == "Jane"
    assert f"IPTC dropped: {fmt.upper()} has no place for it" in r.output


@pytest.mark.parametrize("big_tiff", [False, True])
def test_a_tiffs_iptc_typed_long_travels_as_stored(folder: Path, tiny_model_file: str,
                                                   big_tiff: bool) -> None:
    _photoshop_tiff(folder / "ps.tif", _LONG, big_tiff)
    out = folder.parent / "out"
    r = upscale(str(folder / "ps.tif"), "-o", str(out), "-m", tiny_model_file)
    assert r.exit_code == 0, r.output
    with Image.open(out / "ps.tif") as im:
        assert im.tag_v2[33723] == _IPTC  # not b"540", its first 4 bytes as a number
    assert "warning" not in r.output


def test_a_tiffs_iptc_read_only_in_part_is_dropped_with_a_note(folder: Path,
                                                               tiny_model_file: str) -> None:
    """Typed SHORT, Pillow reads it as numbers: not the records as stored."""
    _photoshop_tiff(folder / "ps.tif", _SHORT)
    out = folder.parent / "out"
    r = upscale(str(folder / "ps.tif"), "-o", str(out), "-m", tiny_model_file)
    assert r.exit_code == 0, r.output
    with Image.open(out / "ps.tif") as im:
        assert 33723 not in im.tag_v2 and im.tag_v2[315] == "Jane"
    assert "IPTC dropped: its TIFF tag could not be read as stored" in r.output


def test_stale_photoshop_data_is_dropped_and_iptc_kept(folder: Path,
                                                       tiny_model_file: str) -> None:
    """Photoshop's resources and layers (tags 34377, 37724) described the small original."""
    tags = ImageFileDirectory_v2()
    iptc = b"\x1c\x02\x05\x00\x04test"
    for tag, value in ((34377, b"8BIM\x04\x04\x00\x00\x00\x00\x00\x00"),
                       (37724, b"Adobe Photoshop Document Data Block\x00"), (33723, iptc)):
        tags[tag] = value
        tags.tagtype[tag] = 7  # UNDEFINED
    random_rgb().save(folder / "ps.tif", tiffinfo=tags)
    r = upscale(str(folder / "ps.tif"), "-m", tiny_model_file, "-o", str(folder / "out"))
    assert r.exit_code == 0, r.output
    written = Image.open(folder / "out" / "ps.tif").tag_v2
    assert 34377 not in written and 37724 not in written and written[33723] == iptc
    assert "Photoshop resources and layers dropped" in r.output


@pytest.mark.parametrize(("description", "kept"), [('{"shape": [12, 18, 3]}', False),
                                                   ("Sunset over the harbour", True)])
def test_tifffile_shape_description_is_dropped_and_a_caption_kept(
        folder: Path, tiny_model_file: str, description: str, kept: bool) -> None:
    """tifffile reads the pixels by the shape its JSON description states: the small one."""
    random_rgb().save(folder / "t.tif", tiffinfo={270: description})
    r = upscale(str(folder / "t.tif"), "-m", tiny_model_file, "-o", str(folder / "out"))
    assert r.exit_code == 0, r.output
    with Image.open(folder / "out" / "t.tif") as im:
        assert (im.tag_v2.get(270) == description) == kept
    assert ("shape description dropped" in r.output) != kept
