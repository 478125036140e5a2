"""The model card written beside exported weights: recipe, data, hardware, measured table."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..errors import counted
from ..scales import exact_text
from .config import TrainConfig, command_line


def _changes(history: list[dict], event: str, key: str) -> list[tuple[int, float]]:
    """The values a run trained with that a resume can change (``event`` rows of its history
    hold them under ``key``), each with the step it took over from: the first run's, then each
    resume's (several at one step: the last one trained)."""
    changes = [r for r in history if r.get("event") == event]
    values = [(0, changes[0]["was"])] if changes else []
    for r in changes:
        if values[-1][0] == r["step"]:
            values.pop()
        if not values or values[-1][1] != r[key]:
            values.append((r["step"], r[key]))
    return values


def _reproduce(c: TrainConfig, steps: int, rates: list[tuple[int, float]],
               totals: list[tuple[int, float]]) -> list[str]:
    """The commands that train the run again: one, or where a resume changed the learning rate
    or the run's length, one up to each change and a resume with its new values."""
    starts = sorted({step for step, _ in rates[1:] + totals[1:]})
    if not starts:
        return [command_line(c, steps)]
    rate, total = dict(rates), dict(totals)
    planned = int(totals[0][1]) or steps if totals else steps
    ends = [*starts[1:], 0]
    commands = [command_line(replace(c, lr=rates[0][1] if rates else c.lr), planned,
                             starts[0] if starts[0] < planned else 0)]
    for start, end in zip(starts, ends, strict=True):
        planned = int(total.get(start, planned))
        commands.append("drcn train --resume" + (f" --steps {planned}" if start in total else "")
                        + (f" --lr {exact_text(rate[start])}" if start in rate else "")
                        + (f" --stop-at {end}" if end and end < planned else ""))
    return commands


def model_card(log: dict) -> str:
    """A markdown model card from a finished run's log: recipe, data, speed, measured table."""
    c = TrainConfig.from_dict(log["config"])
    rows = []
    for ds, res in log["measured"].items():
        for s, r in res.items():
            base = log["baseline"].get(ds, {}).get(s)
            cells = [ds, f"x{s}", f"{r['bicubic_psnr']:.2f} / {r['bicubic_ssim']:.4f}",
                     f"{r['psnr']:.2f} / {r['ssim']:.4f}"]
            if log["baseline"]:
                cells += [f"{base['psnr']:.2f} / {base['ssim']:.4f}",
                          f"{r['psnr'] - base['psnr']:+.2f}"] if base else ["", ""]
            rows.append("| " + " | ".join(cells) + " |")
    head = ["dataset", "scale", "bicubic", "this model"]
    if log["baseline"]:
        head += [c.baseline, "gain (dB)"]
    alpha = (f"alpha = {c.alpha:g} decaying linearly to 0 over the first {c.alpha_decay:.0%} of "
             "the steps, then the ensemble loss alone"
             if c.alpha > 0 else "the ensemble loss alone")
    degrade = (f"; low-resolution images degraded by `{c.degrade}` ({c.degrade_copies} draws "
               "per pair, whole images)" if c.degrade else "")
    init = f"initialised from `{c.init}`" if c.init else \
        "from scratch (recursive conv near the identity, last reconstruction conv at zero)"
    names = ", ".join(f"`{Path(d).name}`" for d in c.data)
    rates = _changes(log["history"], "lr", "peak_lr")
    totals = _changes(log["history"], "steps", "total")
    length = f"{log['step']:,} steps" + (" (planned as " + ", then ".join(
        [f"{totals[0][1]:,}" if totals[0][1] else "a time budget"]
        + [f"{n:,} from step {s:,}" for s, n in totals[1:]]) + ")"
        if len(totals) > 1 else "")
    lr = ", ".join([f"{rates[0][1]:g}"] + [f"{r:g} from step {s:,}" for s, r in rates[1:]]) \
        if len(rates) > 1 else f"{c.lr:g}"
    return "\n".join([
        f"# {c.export_name()}",
        "",
        (f"DRCN (Kim, Lee & Lee, CVPR 2016), F = {c.features} features, D = {c.recursions} "
         f"recursions, {log['parameters']:,} parameters; one model for scales "
         f"{', '.join('x' + str(s) for s in c.scales)}. Input: the bicubic-interpolated Y "
         "channel in 0..1 (BT.601 studio swing); output: the super-resolved Y. File: "
         f"`{log['weights']}` (safetensors, float32), sha256 `{log['sha256']}`."),
        "",
        "## Training recipe",
        (f"- data: {names} ({counted(log['images'], 'image')}), protocol pairs (MATLAB bicubic) "
         f"at every scale of each image shrunk by {', '.join(f'{f:g}' for f in c.downscales)}; "
         f"{c.patch}x{c.patch} patches, stride {c.stride}: {log['patches']:,} patches; random "
         f"flips and transposes{degrade}"),
        f"- objective: {alpha}; weight decay {c.weight_decay:g}; gradient-norm clipping {c.clip:g}",
        (f"- optimiser: {c.optimizer}, learning rate {lr}, {c.schedule} schedule, "
         f"{c.warmup} warm-up steps; batch {c.batch}; {length}; seed {c.seed}; "
         f"{init}" + (f"; exported: the moving average of the weights (decay {c.ema:g})"
                      if c.ema else "")),
        (f"- hardware: {log['device_name']} x {log['world_size']}, torch {log['torch']}, "
         f"{log['precision']}; {log['train_seconds']:.0f} s of training "
         f"({log['steps_per_s']} steps/s), {log['data_seconds']:.0f} s to make the patches"),
        "",
        "## Measured (evaluation protocol: Y, shave = scale, fp32; PSNR dB / SSIM)",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *rows,
        "",
        "## Reproduce",
        "```",
        *_reproduce(c, log["step"], rates, totals),
        "```",
        "",
    ])


