"""The denoise strength for AVIF and HEIF files: Set5/Set14 at x3, the protocol's low-res image
saved as AVIF (Pillow's libavif) or HEIF (pillow-heif's x265), 4:2:0, at several qualities, each
read back and upscaled at denoise 0, 0.5 and 1; Y PSNR against the original, and the quantiser
each quality gave (an AVIF's ``base_q_idx``, a HEIF's slice QP).

    python benchmarks/codec_strength.py --data ../shared/data [--codec heif]
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from drcn_plugin.av1header import avif_base_q_idx
from drcn_plugin.compression import file_jpeg_quality, jpeg_history
from drcn_plugin.engine import Upscaler
from drcn_plugin.evaluation import evaluate
from drcn_plugin.hevcheader import heif_slice_qp
from drcn_plugin.hub import load_denoised

QUALITIES = {"avif": (50, 70, 80, 90, 95), "heif": (30, 50, 70, 80, 90, 95)}
STRENGTHS = (0.0, 0.5, 1.0)


class CodecRoundTrip:
    """A degradation (as :class:`drcn_plugin.degrade.Recipe` is used) that saves the low-res
    colour image as ``codec`` at ``quality`` (or with the writer's ``options`` alone, such as a
    JPEG's own ``qtables``) and reads it back; notes an AVIF's ``base_q_idx`` (a HEIF's slice QP)
    and a JPEG's quality as the per-file default reads it, from its tables and from its pixels."""

    def __init__(self, codec: str, quality: int | None, **options: object) -> None:
        self.codec, self.quality, self.options = codec, quality, options
        self.q_idx: list[int] = []
        self.jpeg: list[tuple[int | None, int | None]] = []  # (file_jpeg_quality, jpeg_history)

    def __str__(self) -> str:
        return f"{self.codec}:{self.quality}"

    def draw(self, lr: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, bool]:
        """``lr`` (``[3, H, W]`` or grey ``[H, W]``, 0..255) through a file; never clean."""
        a = lr.round().clamp(0, 255).to(torch.uint8).numpy()
        colour = a.ndim == 3
        buf = io.BytesIO()
        quality = {} if self.quality is None else {"quality": self.quality}
        Image.fromarray(np.ascontiguousarray(a.transpose(1, 2, 0) if colour else a)).save(
            buf, self.codec.upper(), **quality, **self.options)
        buf.seek(0)
        if self.codec in ("avif", "heif"):
            self.q_idx.append((avif_base_q_idx if self.codec == "avif" else heif_slice_qp)(buf))
        with Image.open(buf) as im:
            levels = np.array(im.convert("RGB" if colour else "L"))
            if self.codec == "jpeg":
                self.jpeg.append((file_jpeg_quality(im), jpeg_history(levels)))
        out = torch.from_numpy(levels).to(lr.dtype)
        return (out.permute(2, 0, 1) if colour else out), False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--sets", nargs="+", default=["Set5", "Set14"])
    ap.add_argument("--codec", choices=sorted(QUALITIES), default="avif")
    args = ap.parse_args()
    if args.codec == "heif":
        from pillow_heif import register_heif_opener

        register_heif_opener()
    torch.set_num_threads(2)
    upscalers = {s: Upscaler(load_denoised(s), device="cpu") for s in STRENGTHS}
    print(f"| set | quality | {'base_q_idx' if args.codec == 'avif' else 'slice QP'} | " + " | ".join(f"denoise {s:g}" for s in STRENGTHS)
          + " | best |")
    print("|---|---|---|" + "---|" * (len(STRENGTHS) + 1))
    for name in args.sets:
        for quality in QUALITIES[args.codec]:
            psnr, q_idx = [], []
            for s in STRENGTHS:
                recipe = CodecRoundTrip(args.codec, quality)
                psnr.append(evaluate(upscalers[s], args.data / name, [3], degrade=recipe)[3].psnr)
                q_idx += recipe.q_idx
            best = STRENGTHS[int(np.argmax(psnr))]
            found = f"{min(q_idx)}-{max(q_idx)}" if q_idx else "-"
            print(f"| {name} | {quality} | {found} | "
                  + " | ".join(f"{p:.2f}" for p in psnr) + f" | {best:g} |", flush=True)


if __name__ == "__main__":
    main()
