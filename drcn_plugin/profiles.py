"""Pixels taken through their ICC profile to sRGB where the profile cannot go with them: CMYK and
other colour spaces as they are read (:mod:`.pixelmodes`), a grey profile where the output stores
grey as RGB and any profile in a BMP (:mod:`.encoding`), so the colours look as they did.
littlecms (Pillow's ImageCms) does the conversion."""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
from PIL import Image

from .colourspace import SRGB_CHROMATICITIES, icc_profile


@lru_cache(maxsize=1)
def srgb_profile() -> bytes:
    """littlecms's sRGB profile, which a result taken to sRGB is tagged with; made once, as its
    header holds the time it was made (to the second), so that every result is tagged alike."""
    from PIL import ImageCms  # a Pillow built without littlecms lacks it

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def acts_as_srgb(icc: bytes, grey: bool) -> bool:
    """Whether taking pixels through ``icc`` to sRGB leaves them within a level (every grey
    level, or a 16-step grid of RGB): its pixels are sRGB's already. Its name is no proof: a
    linear profile may be called "Linear sRGB"."""
    levels = np.arange(0, 256, 1 if grey else 17, dtype=np.uint8)
    grid = np.stack(np.meshgrid(levels, levels, levels), -1)
    probe = levels[None] if grey else grid.reshape(16, 256, 3)
    out = np.asarray(to_srgb(Image.fromarray(probe), icc), dtype=np.int16)
    return bool(np.abs(out - probe).max() <= 1)


def to_srgb(im: Image.Image, icc: bytes) -> Image.Image:
    """``im`` through ``icc``, its ICC profile, to sRGB, an alpha kept: grey to grey on sRGB's
    curve, any other space to RGB. Raises ImportError without littlecms and ImageCms's errors
    for a profile it cannot use."""
    from PIL import ImageCms

    alpha = im.getchannel("A") if im.mode in ("LA", "RGBA") else None
    colour = im.convert(im.mode[:-1]) if alpha is not None else im
    grey = colour.mode == "L"
    target = icc_profile(SRGB_CHROMATICITIES, None, grey=True) if grey else srgb_profile()
    out = ImageCms.profileToProfile(colour, ImageCms.ImageCmsProfile(io.BytesIO(icc)),
                                    ImageCms.ImageCmsProfile(io.BytesIO(target)),
                                    outputMode="L" if grey else "RGB")
    if alpha is not None:
        out.putalpha(alpha)
    return out
