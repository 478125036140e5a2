"""The README's quality table: shipped models vs bicubic and the paper, with the protocol.

Runs ``drcn eval``'s code for each model and dataset (fp32), keeps each result as JSON in
``--results`` (reused on the next run, so the slow F=256 CPU run happens once), and writes the
table into README.md between the ``<!-- quality -->`` markers with ``--readme``.

    python benchmarks/quality.py --data ../shared/data --results runs/quality --readme
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from readme_markers import fill_readme

from drcn_plugin.engine import Upscaler
from drcn_plugin.evaluation import evaluate, results_json

ROOT = Path(__file__).resolve().parents[1]
PAPER = {  # DRCN row of the paper's table (PSNR / SSIM)
    ("Set5", 2): (37.63, 0.9588), ("Set5", 3): (33.82, 0.9226), ("Set5", 4): (31.53, 0.8854),
    ("Set14", 2): (33.04, 0.9118), ("Set14", 3): (29.79, 0.8311), ("Set14", 4): (28.02, 0.7670),
}
MODELS = ("drcn-lite", "drcn")


def results_for(model: str, dataset: Path, cache: Path, device: str) -> dict:
    """``drcn eval``'s JSON of ``model`` on ``dataset`` at x2-x4 in fp32, cached in ``cache``."""
    path = cache / f"{model}-{dataset.name}.json"
    if path.is_file():
        return json.loads(path.read_text())
    res = results_json(evaluate(Upscaler(model, device=device, precision="fp32"), dataset,
                                [2, 3, 4]))
    cache.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=2))
    return res


def render(tables: dict[tuple[str, str], dict]) -> str:
    """The README's table: PSNR / SSIM of bicubic, each model and the paper, per dataset and
    scale."""
    rows = ["| dataset | scale | bicubic | drcn-lite (F=64) | drcn (F=256) | paper DRCN |",
            "|---|---|---|---|---|---|"]
    for (dataset, scale), paper in PAPER.items():
        cells = []
        lite = tables.get(("drcn-lite", dataset))
        if lite is None:
            continue
        r = lite[str(scale)]
        cells.append(f"{r['bicubic_psnr']:.2f} / {r['bicubic_ssim']:.4f}")
        for model in MODELS:
            t = tables.get((model, dataset))
            cells.append(f"{t[str(scale)]['psnr']:.2f} / {t[str(scale)]['ssim']:.4f}" if t else "-")
        rows.append(f"| {dataset} | x{scale} | " + " | ".join(cells)
                    + f" | {paper[0]:.2f} / {paper[1]:.4f} |")
    return "\n".join(rows)


def main() -> None:
    """Print the quality table; ``--readme`` writes it into README.md."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--results", type=Path, default=ROOT / "runs" / "quality")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--readme", action="store_true")
    args = ap.parse_args()
    tables = {(m, d): results_for(m, args.data / d, args.results, args.device)
              for d in ("Set5", "Set14") for m in MODELS}
    text = render(tables)
    print(text)
    if args.readme:
        fill_readme({"quality": text})


if __name__ == "__main__":
    main()
