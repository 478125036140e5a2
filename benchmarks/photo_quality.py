"""The README's photo tables: bicubic, drcn-lite and drcn-lite-photo on degraded low-res inputs.

Each condition degrades the protocol's low-resolution image the way ``drcn eval --degrade`` does
(seeded per image), and scores Y against the original. Results are cached as JSON in
``--results``; ``--readme`` writes the tables between the ``<!-- photo -->`` and
``<!-- denoise -->`` markers of README.md.

    python benchmarks/photo_quality.py --data ../shared/data --results runs/photo-quality --readme
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from readme_markers import fill_readme

from drcn_plugin.degrade import Recipe
from drcn_plugin.engine import Upscaler
from drcn_plugin.evaluation import evaluate, results_json
from drcn_plugin.hub import DEFAULT_MODEL, PHOTO_VARIANTS, SHIPPED, load_denoised

ROOT = Path(__file__).resolve().parents[1]
CONDITIONS = {"clean": "", "JPEG q95": "jpeg:95", "JPEG q90": "jpeg:90", "JPEG q75": "jpeg:75",
              "JPEG q50": "jpeg:50", "noise 5 + JPEG q85": "noise:5,jpeg:85"}
TABLE_CONDITIONS = ("clean", "JPEG q90", "JPEG q75", "JPEG q50", "noise 5 + JPEG q85")
STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
# q95 is in the curve for the default rule: it is where camera and phone JPEGs sit
CURVE_CONDITIONS = ("clean", "JPEG q95", "JPEG q90", "JPEG q75", "JPEG q50")


def results_for(strength: float, dataset: Path, condition: str, scales: list[int], cache: Path,
                device: str, precision: str) -> dict:
    """``drcn eval`` of drcn-lite blended toward drcn-lite-photo by ``strength`` (cached).

    The cache key names the weights (their sha256), so new shipped weights are measured afresh.
    """
    models = (DEFAULT_MODEL, PHOTO_VARIANTS[DEFAULT_MODEL])[:1 + (strength > 0)]
    weights = "-".join(SHIPPED[m].sha256[:8] for m in models)
    name = (f"denoise{strength:g}-{weights}-{dataset.name}-{condition.replace(' ', '_')}-"
            f"x{''.join(map(str, scales))}-{precision}")
    path = cache / f"{name}.json"
    if path.is_file():
        return json.loads(path.read_text())
    recipe = Recipe.parse(CONDITIONS[condition]) if CONDITIONS[condition] else None
    upscaler = Upscaler(load_denoised(strength), device=device, precision=precision)
    res = results_json(evaluate(upscaler, dataset, scales, degrade=recipe))
    for r in res.values():
        r.pop("images", None)
    cache.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=2))
    return res


def photo_table(data: Path, cache: Path, device: str, precision: str) -> str:
    """Y PSNR per scale and input: bicubic, drcn-lite, drcn-lite-photo (photo - bicubic)."""
    head = " | ".join(f"{ds} bicubic | {ds} drcn-lite | {ds} photo (vs bicubic)"
                      for ds in ("Set5", "Set14"))
    rows = [f"| scale | low-res input | {head} |", "|---|---|" + "---|" * 6]
    for s in (2, 3, 4):
        for cond in TABLE_CONDITIONS:
            cells = []
            for ds in ("Set5", "Set14"):
                lite, photo = (results_for(t, data / ds, cond, [2, 3, 4], cache, device,
                                           precision)[str(s)] for t in (0.0, 1.0))
                bic = lite["bicubic_psnr"]
                cells += [f"{bic:.2f}", f"{lite['psnr']:.2f}",
                          f"{photo['psnr']:.2f} ({photo['psnr'] - bic:+.2f})"]
            rows.append(f"| x{s} | {cond} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def strength_curve(data: Path, cache: Path, device: str,
                   precision: str) -> dict[str, tuple[float, list[float]]]:
    """Per curve condition: bicubic and the PSNR at each strength (mean of Set5 and Set14, x3)."""
    curve = {}
    for cond in CURVE_CONDITIONS:
        psnrs, bic = [], 0.0
        for t in STRENGTHS:
            scales = [2, 3, 4] if t in (0, 1) else [3]  # the ends are in the photo table too
            per_ds = [results_for(t, data / ds, cond, scales, cache, device, precision)["3"]
                      for ds in ("Set5", "Set14")]
            bic = sum(r["bicubic_psnr"] for r in per_ds) / 2
            psnrs.append(sum(r["psnr"] for r in per_ds) / 2)
        curve[cond] = (bic, psnrs)
    return curve


def strength_table(curve: dict[str, tuple[float, list[float]]]) -> str:
    """The curve as a Markdown table, the best strength of each row in bold."""
    head = " | ".join(f"{t:g}" for t in STRENGTHS)
    rows = [f"| Set5 + Set14, x3 | bicubic | {head} |", "|---|---|" + "---|" * len(STRENGTHS)]
    for cond, (bic, psnrs) in curve.items():
        best = max(psnrs)
        cells = [f"**{v:.2f}**" if v == best else f"{v:.2f}" for v in psnrs]
        rows.append(f"| {cond} | {bic:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def fitted_rule(curve: dict[str, tuple[float, list[float]]]) -> tuple[tuple[int, float], ...]:
    """The rule the curve gives: each measured JPEG quality's best strength (clean counts as
    quality 100), switching halfway between neighbouring qualities. ``hub.DENOISE_BY_QUALITY``
    follows it except where its comment says (benchmarks/foreign_jpeg.py moved a boundary)."""
    quality = {cond: 100 if cond == "clean" else int(cond.rsplit("q", 1)[1]) for cond in curve}
    best = sorted(((quality[cond], STRENGTHS[psnrs.index(max(psnrs))])
                   for cond, (_, psnrs) in curve.items()), reverse=True)
    rows = [((q + lower) // 2 if lower is not None else 0, t)
            for (q, t), lower in zip(best, [q for q, _ in best[1:]] + [None], strict=True)]
    merged: list[tuple[int, float]] = []
    for q, t in rows:  # one row per strength: the lowest quality that still gets it
        merged = [*merged[:-1], (q, t)] if merged and merged[-1][1] == t else [*merged, (q, t)]
    return tuple(merged)


def main() -> None:
    """Print the strength curve, the fitted rule and the photo table; ``--readme`` writes them."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--results", type=Path, default=ROOT / "runs" / "photo-quality")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto", help="auto: bf16 on GPUs and bf16-capable CPUs")
    ap.add_argument("--readme", action="store_true")
    args = ap.parse_args()
    curve = strength_curve(args.data, args.results, args.device, args.precision)
    print(strength_table(curve))
    print(f"DENOISE_BY_QUALITY fitted on this curve: {fitted_rule(curve)}")
    photo = photo_table(args.data, args.results, args.device, args.precision)
    print(photo)
    if args.readme:
        fill_readme({"photo": photo, "denoise": strength_table(curve)})


if __name__ == "__main__":
    main()
