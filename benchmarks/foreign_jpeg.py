"""The denoise strength for JPEGs whose tables are not IJG's (libjpeg's, Pillow's): mozjpeg's,
Photoshop's and flat tables. Set5/Set14 at x3, the protocol's low-res image saved with each table
set (and read back), upscaled at denoise 0, 0.5 and 1: Y PSNR against the original, the best
strength, the qualities the per-file default reads from the files' tables and from their pixels,
and what the default's strength loses to the best: for the JPEG from its tables alone, as
``drcn upscale`` does (its tables, or its pixels when they ask for more), and for a PNG kept
from it (its pixels). PSNRs are cached as JSON in ``--results``; the readings are taken afresh.

    python benchmarks/foreign_jpeg.py --data ../shared/data --results runs/foreign-jpeg
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from codec_strength import CodecRoundTrip

from drcn_plugin.engine import Upscaler
from drcn_plugin.evaluation import evaluate
from drcn_plugin.hub import SHIPPED, choose_for_source, load_denoised

ROOT = Path(__file__).resolve().parents[1]
STRENGTHS = (0.0, 0.5, 1.0)

# Luminance and chrominance base tables, natural (row-major) order, as data.
# mozjpeg jcparam.c (github.com/mozilla/mozjpeg), std_luminance/chrominance_quant_tbl: index 3
# (N. Robidoux's, from the ImageMagick forum; cjpeg's default quant_table) and index 2 (tuned
# for MS-SSIM on Kodak); both scaled per quality like IJG's, jpeg_quality_scaling.
MOZJPEG_3 = (16, 16, 16, 18, 25, 37, 56, 85, 16, 17, 20, 27, 34, 40, 53, 75,
             16, 20, 24, 31, 43, 62, 91, 135, 18, 27, 31, 40, 53, 74, 106, 156,
             25, 34, 43, 53, 69, 94, 131, 189, 37, 40, 62, 74, 94, 124, 169, 238,
             56, 53, 91, 106, 131, 169, 226, 311, 85, 75, 135, 156, 189, 238, 311, 418)
MOZJPEG_2_LUMA = (12, 17, 20, 21, 30, 34, 56, 63, 18, 20, 20, 26, 28, 51, 61, 55,
                  19, 20, 21, 26, 33, 58, 69, 55, 26, 26, 26, 30, 46, 87, 86, 66,
                  31, 33, 36, 40, 46, 96, 100, 73, 40, 35, 46, 62, 81, 100, 111, 91,
                  46, 66, 76, 86, 102, 121, 120, 101, 68, 90, 90, 96, 113, 102, 105, 103)
MOZJPEG_2_CHROMA = (8, 12, 15, 15, 86, 96, 96, 98, 13, 13, 15, 26, 90, 96, 99, 98,
                    12, 15, 18, 96, 99, 99, 99, 99, 17, 16, 90, 96, 99, 99, 99, 99,
                    96, 96, 99, 99, 99, 99, 99, 99, *(99,) * 24)
# Photoshop's tables: Pillow's PIL.JpegPresets ("JPEG quality settings equivalent to the
# Photoshop settings"), by preset name, read from Pillow when the table is built.
PHOTOSHOP = ("maximum", "high", "medium", "low", "web_medium", "web_low")


def scaled(base: tuple[int, ...], quality: int) -> list[int]:
    """``base`` at an IJG-style ``quality`` (libjpeg's and mozjpeg's jpeg_quality_scaling),
    limited to baseline's 1..255 as cjpeg does by default."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return [min(max((v * scale + 50) // 100, 1), 255) for v in base]


def conditions() -> dict[str, dict]:
    """Label -> JPEG writer options (``qtables``, ``subsampling``) of each measured table set."""
    from PIL.JpegPresets import presets

    out: dict[str, dict] = {}
    for q in (95, 90, 85, 75, 60):  # mozjpeg's default tables, 4:2:0 as cjpeg writes
        out[f"mozjpeg q{q}"] = {"qtables": [scaled(MOZJPEG_3, q)] * 2, "subsampling": 2}
    for q in (95, 85):
        out[f"mozjpeg table 2 q{q}"] = {
            "qtables": [scaled(MOZJPEG_2_LUMA, q), scaled(MOZJPEG_2_CHROMA, q)], "subsampling": 2}
    for name in PHOTOSHOP:
        preset = presets[name]
        out[f"Photoshop {name}"] = {"qtables": [list(t) for t in preset["quantization"]],
                                    "subsampling": preset["subsampling"]}
    for step in (2, 5, 8):  # flat tables, as some cameras write (4:2:2, a camera's usual)
        out[f"flat {step}"] = {"qtables": [[step] * 64] * 2, "subsampling": 1}
    return out


def psnr_at(strength: float, label: str, options: dict, folder: Path, cache: Path,
            precision: str) -> dict[str, float]:
    """Each image's Y PSNR at x3 over ``folder`` at ``strength`` with the table set, cached by
    the shipped weights' sha256 and the tables themselves."""
    weights = "-".join(m.sha256[:8] for m in SHIPPED.values())
    key = hashlib.sha256(json.dumps([options, weights], sort_keys=True).encode()).hexdigest()
    path = cache / f"{folder.name}-{label.replace(' ', '_')}-{strength:g}-{precision}-{key[:8]}.json"
    if path.is_file():
        return json.loads(path.read_text())
    upscaler = Upscaler(load_denoised(strength), device="cpu", precision=precision)
    res = evaluate(upscaler, folder, [3], degrade=CodecRoundTrip("jpeg", None, **options))[3]
    scores = {name: row.psnr for name, row in res.images.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(scores, indent=2))
    return scores


def readings(options: dict, folder: Path) -> list[tuple[int | None, int | None]]:
    """Per image, in the order evaluated: the quality from the file's tables and from its
    pixels, as the per-file default reads them."""
    recipe = CodecRoundTrip("jpeg", None, **options)
    evaluate(None, folder, [3], degrade=recipe)
    return recipe.jpeg


def rule(quality: int | None) -> float:
    """The per-file default strength of a JPEG read as ``quality`` (None: clean pixels)."""
    return choose_for_source(quality is not None, quality).denoise


def measure(label: str, options: dict, data: Path, sets: list[str], cache: Path,
            precision: str) -> tuple[list[float], dict[str, float], list]:
    """The mean of the sets' PSNR at each strength, the readings, and what the default loses
    to the best of those strengths: as a JPEG read from its tables alone, and as ``drcn upscale``
    reads it (its tables, or its pixels when they ask for more; means of the sets), and as a PNG kept from it (its pixels alone; over the images whose
    pixels show a JPEG, so a grid missed on a small image does not count as a wrong quality)."""
    curve, seen, kept = np.zeros(len(STRENGTHS)), [], []
    got = {"tables": 0.0, "jpeg": 0.0}
    for ds in sets:
        scores = [psnr_at(s, label, options, data / ds, cache, precision) for s in STRENGTHS]
        read = readings(options, data / ds)
        seen += read
        curve += [np.mean(list(sc.values())) for sc in scores]
        rows = [[sc[name] for sc in scores] for name in scores[0]]
        for key, pick in (("tables", lambda q, h: rule(q)),
                          ("jpeg", lambda q, h: max(rule(q), rule(h)))):
            got[key] += np.mean([row[STRENGTHS.index(pick(q, h))]
                                 for row, (q, h) in zip(rows, read, strict=True)])
        kept += [(row, h) for row, (_, h) in zip(rows, read, strict=True) if h is not None]
    curve /= len(sets)
    best = int(np.argmax(curve))
    loss = {key: float(curve[best] - v / len(sets)) for key, v in got.items()}
    loss["png"] = (float(np.mean([row[best] - row[STRENGTHS.index(rule(h))] for row, h in kept]))
                   if kept else float("nan"))
    return list(curve), loss, seen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--sets", nargs="+", default=["Set5", "Set14"])
    ap.add_argument("--results", type=Path, default=ROOT / "runs" / "foreign-jpeg")
    ap.add_argument("--precision", default="auto", help="auto: bf16 on bf16-capable CPUs")
    ap.add_argument("--only", nargs="*", help="measure only these labels")
    args = ap.parse_args()
    torch.set_num_threads(2)
    print("| tables | file q | pixels q | " + " | ".join(f"denoise {s:g}" for s in STRENGTHS)
          + " | best | loses: tables | JPEG | PNG |")
    print("|---|---|---|" + "---|" * (len(STRENGTHS) + 4))
    losses: dict[str, list[float]] = {"tables": [], "jpeg": [], "png": []}
    for label, options in conditions().items():
        if args.only and label not in args.only:
            continue
        curve, loss, seen = measure(label, options, args.data, args.sets, args.results,
                                    args.precision)
        for key in losses:
            losses[key] += [] if np.isnan(loss[key]) else [loss[key]]
        print(f"| {label} | {_span([q for q, _ in seen])} | {_span([h for _, h in seen])} | "
              + " | ".join(f"{v:.2f}" for v in curve)
              + f" | {STRENGTHS[int(np.argmax(curve))]:g} | "
              + " | ".join("-" if np.isnan(loss[k]) else f"{loss[k]:.2f}" for k in losses) + " |",
              flush=True)
    for key, values in losses.items():
        print(f"mean loss to the best of {STRENGTHS} ({key}): {np.mean(values):.3f} dB "
              f"(worst {max(values):.2f})")


def _span(values: list[int | None]) -> str:
    found = sorted(v for v in values if v is not None)
    clean = len(values) - len(found)
    text = "-" if not found else f"{found[0]}" if found[0] == found[-1] else \
        f"{found[0]}-{found[-1]}"
    return text + (f" ({clean} clean)" if clean else "")


if __name__ == "__main__":
    main()
