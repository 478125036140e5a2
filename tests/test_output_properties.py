"""What a photographer expects of an upscaled file's own properties, as mature tools (Photoshop,
Lightroom, ImageMagick) write them: a progressive JPEG stays progressive, a derived file gets
its own XMP instance and names the one it came from."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import random_rgb, upscale
from PIL import Image

pytestmark = pytest.mark.usefixtures("wide_console")


@pytest.mark.parametrize("progressive", [True, False])
def test_a_jpeg_result_keeps_the_sources_progressive_coding(folder: Path, tiny_model_file: str,
                                                           progressive: bool) -> None:
    """A web export saved progressive comes back progressive (SOF2), a baseline one baseline;
    a PNG made from the progressive one is written as usual."""
    random_rgb(24, 16).save(folder / "web.jpg", quality=85, progressive=progressive)
    for fmt in ("same", "png"):
        r = upscale(str(folder / "web.jpg"), "-m", tiny_model_file, "-o", str(folder / "out"),
                    "-f", fmt)
        assert r.exit_code == 0, r.output
    with Image.open(folder / "out" / "web.jpg") as im:
        assert im.size == (48, 32)
        assert bool(im.info.get("progressive")) is progressive
        assert (b"\xff\xc2" in (folder / "out" / "web.jpg").read_bytes()) is progressive
    with Image.open(folder / "out" / "web.png") as im:
        assert im.format == "PNG" and im.size == (48, 32)
