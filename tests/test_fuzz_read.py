"""Seeded, bounded fuzz of decoding and re-encoding: mutated bytes of small valid files of many
formats either decode or give one BadImageError; nothing else may escape."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms, features

from drcn_plugin.encoding import check_writable
from drcn_plugin.errors import DRCNError
from drcn_plugin.imagefile import read_image

CASES_PER_FORMAT = 300
SEED = 10


def _seeds() -> dict[str, bytes]:
    """Small valid files with the metadata decoding must handle: EXIF sub-IFDs, ICC, DPI,
    several frames, alpha."""
    rng = np.random.default_rng(SEED)
    rgb = Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8))
    rgba = Image.fromarray(rng.integers(0, 256, (12, 10, 4), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x010F] = "Camera"
    exif[0x0112] = 6
    exif[0x011A] = 300.0
    exif[0x8769] = {0x8827: 100, 0x829A: (1, 200)}
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    out: dict[str, bytes] = {}

    def save(name: str, im: Image.Image, fmt: str, **kw) -> None:
        buf = io.BytesIO()
        im.save(buf, fmt, **kw)
        out[name] = buf.getvalue()

    save("a.png", rgba, "PNG", exif=exif.tobytes(), icc_profile=icc, dpi=(72, 96))
    save("a.jpg", rgb, "JPEG", exif=exif.tobytes(), icc_profile=icc, quality=80)
    save("a.webp", rgb, "WEBP", exif=exif.tobytes())
    save("a.tif", rgb, "TIFF", exif=exif.tobytes(), dpi=(300, 300))
    save("b.tif", Image.fromarray(rng.random((8, 9), dtype=np.float32)), "TIFF",
         compression="tiff_adobe_deflate")
    save("a.gif", rgb.convert("P"), "GIF", save_all=True, append_images=[rgb.convert("P")])
    save("a.bmp", rgba, "BMP")
    save("a.ico", rgba, "ICO", sizes=[(8, 8)])
    save("a.ppm", rgb, "PPM")
    save("a.dds", rgba, "DDS")
    save("g16.png", Image.fromarray(rng.integers(0, 65536, (9, 7), dtype=np.uint16)), "PNG")
    if features.check("avif"):
        save("a.avif", rgba, "AVIF", exif=exif.tobytes(), quality=80)
    with contextlib.suppress(ImportError):
        from pillow_heif import from_pillow

        buf = io.BytesIO()
        from_pillow(rgb).save(buf, quality=80, exif=exif.tobytes())
        out["a.heic"] = buf.getvalue()
    return out


def _mutate(data: bytes, rng: np.random.Generator) -> bytes:
    b = bytearray(data)
    kind = rng.integers(4)
    if kind == 0:  # flip a few bytes
        for i in rng.integers(0, len(b), rng.integers(1, 9)):
            b[i] = int(rng.integers(256))
    elif kind == 1:  # truncate
        b = b[: int(rng.integers(0, len(b)))]
    elif kind == 2:  # overwrite a run with extreme values (sizes, counts, offsets)
        i = int(rng.integers(0, len(b)))
        b[i: i + 4] = bytes([int(rng.choice([0, 0xFF, 0x7F, 0x80]))] * 4)
    else:  # duplicate a slice somewhere else
        i, j = sorted(int(x) for x in rng.integers(0, len(b), 2))
        k = int(rng.integers(0, len(b)))
        b[k:k] = b[i:j][:64]
    return bytes(b)


def test_mutated_files_decode_or_give_one_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1 << 14)  # keep mutated sizes cheap
    rng = np.random.default_rng(SEED)
    decoded = refused = dropped = 0
    for name, data in _seeds().items():
        path = tmp_path / name
        for _ in range(CASES_PER_FORMAT):
            path.write_bytes(_mutate(data, rng))
            try:
                array, info = read_image(path)
            except DRCNError as e:
                assert str(path) in str(e), "the error names the file"
                refused += 1
                continue
            decoded += 1
            dropped += any(n.startswith("ICC profile dropped") for n in info.notes)
            for fmt in ("PNG", "JPEG", "TIFF", "WEBP", "AVIF", "BMP"):
                with contextlib.suppress(DRCNError):  # damaged metadata must not break writing
                    check_writable(array, fmt, info, 2.0, 90)
    assert decoded > 100 and refused > 100, (decoded, refused)
    assert dropped > 5, "damaged ICC profiles reached the profile check"


@pytest.mark.parametrize("name", ["a.jpg", "a.tif", "a.png"])
def test_seeds_round_trip_with_their_metadata(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(_seeds()[name])
    array, info = read_image(path)
    assert array.shape[:2] == (10, 12), "orientation 6 applied"
    assert info.exif is not None and info.exif.get(0x010F) == "Camera"
    assert (info.icc_profile is not None) == (name != "a.tif"), "a sound profile is kept"
