"""Charts for people who look before they read: training curves, the recursion study, tile speed.

matplotlib is an optional extra (``pip install "drcn-plugin[plot]"``). Figures are drawn on the
Agg canvas, so no display is needed, and written as PNGs 800 px wide (README width). Each function
takes plain data, saves the PNG atomically and returns the ``Figure``, whose lines carry the
plotted series (``ax.get_lines()``) for callers and tests to read back.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import (
    BadOptionError,
    DRCNError,
    MissingDependencyError,
    one_line,
)
from .writing import atomic_write_bytes, check_file_target, probe_folder, refuse_input_target

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from .evaluation import ScaleResult

INSTALL_HINT = 'charts need matplotlib: pip install "drcn-plugin[plot]"'
WIDTH_PX, DPI = 800, 100


def require_matplotlib() -> None:
    """Raise :class:`MissingDependencyError` (a line saying what to install) without matplotlib."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise MissingDependencyError(INSTALL_HINT) from None


def check_png_target(path: Path, inputs: Iterable[Path] = (), overwrite: bool = False,
                     option: str = "output") -> None:
    """Refuse, before any long work, a chart target that is not a ``.png`` file name, is one of
    the command's ``inputs``, no write may make or replace (:func:`.writing.check_file_target`:
    a pipe, an existing file unless ``overwrite``, a write-protected one), cannot be written (its
    folder), or cannot be drawn because matplotlib is missing. ``option`` names the target's
    option in the errors."""
    path = Path(path)
    if path.is_dir():
        raise BadOptionError(f"{path} is a folder; give a file name ending in .png",
                             option=option)
    if path.suffix.lower() != ".png":
        raise BadOptionError(f"{path}: charts are written as PNG; give a file name ending in "
                             ".png", option=option)
    refuse_input_target(path, inputs)
    check_file_target(path, option, overwrite)
    probe_folder(path.parent)
    require_matplotlib()


def new_figure(height_px: int, rows: int = 1, cols: int = 1) -> tuple[Figure, list[Axes]]:
    """An 800 px wide figure on the Agg canvas with a grid of axes (flattened, row by row)."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH_PX / DPI, height_px / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, [ax for row in axes for ax in row]


def save_png(fig: Figure, path: Path) -> None:
    """Write ``fig`` as a PNG, atomically (a reader never sees half a file)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    atomic_write_bytes(Path(path), buf.getvalue())


# -- training ---------------------------------------------------------------------------------
_LIMIT = 1e100  # magnitudes past this overflow matplotlib's scale and tick arithmetic


def _drawable(value: object, positive: bool = False) -> bool:
    """A real number an axis can place: finite, within :data:`_LIMIT`, and (on a log axis,
    ``positive``) above 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return (1 / _LIMIT if positive else -_LIMIT) <= value <= _LIMIT  # NaN is neither


class _Points:
    """The drawable points of a run's curves, counting per curve the ones left out."""

    def __init__(self) -> None:
        self.skipped: dict[str, list[int]] = {}  # curve -> [left out, of]

    def __call__(self, rows: Sequence[dict], curve: str, key: str | Callable[[dict], object],
                 positive: bool = False) -> tuple[list, list]:
        """Steps and values of ``key`` (a field, or a function of a row) in ``rows``."""
        xs, ys = [], []
        for r in rows:
            x, y = r["step"], r[key] if isinstance(key, str) else key(r)
            if _drawable(x) and _drawable(y, positive):
                xs.append(x)
                ys.append(y)
        count = self.skipped.setdefault(curve, [0, 0])
        count[0] += len(rows) - len(xs)
        count[1] += len(rows)
        return xs, ys

    def report(self) -> str | None:
        """One line naming what was left out, or None when everything was drawn."""
        left = [f"{n} of {of} {curve} points" for curve, (n, of) in self.skipped.items() if n]
        return None if not left else ("skipped what cannot be drawn (not a finite number, past "
                                      f"{_LIMIT:.0e}, or a loss not above 0): ".replace("e+", "e")
                                      + ", ".join(left))


def short_labels(ticks: Sequence[float]) -> list[str]:
    """Tick labels with the fewest significant digits, at least 2, that tell every tick apart
    (a loss that moves little has ticks 0.00215, 0.0022, 0.00225)."""
    for digits in range(2, 7):
        labels = [f"{t:.{digits}g}" for t in ticks]
        if len(set(labels)) == len(labels):
            break
    return labels


def training_curves(log: dict, path: Path, notify: Callable[[str], None] | None = None) -> Figure:
    """Loss (log scale), validation PSNR per scale, learning rate and alpha against the step.

    ``log`` is a run's ``log.json``: its ``history`` rows are drawn as they are, so a resumed run
    continues its curve; each resume is marked with a dotted vertical line. Rows without
    ``val_psnr_per_scale`` are drawn as their mean validation PSNR. Points no axis can place
    (inf, NaN, a loss not above 0) are left out, and ``notify`` is told so in one line.
    """
    rows = log.get("history", [])
    steps = [r for r in rows if "loss" in r]
    vals = [r for r in rows if r.get("val_psnr") is not None]
    points = _Points()
    fig, (loss, psnr, lr, alpha) = new_figure(560, 2, 2)
    xs, ys = points(steps, "training loss", "loss", positive=True)
    loss.plot(xs, ys, color="C0", label="training loss")
    if ys:
        from matplotlib.ticker import Formatter

        class Short(Formatter):  # not 2.2x10^-3 on every minor tick
            def __call__(self, x: float, pos: int | None = None) -> str:
                return short_labels([x])[0]

            def format_ticks(self, values: Sequence[float]) -> list[str]:
                return short_labels(values)

        loss.set_yscale("log")
        short = Short()
        loss.yaxis.set_major_formatter(short)
        loss.yaxis.set_minor_formatter(short)
    per_scale = [r for r in vals if r.get("val_psnr_per_scale")]
    if per_scale:
        scales = sorted({s for r in per_scale for s in r["val_psnr_per_scale"]}, key=int)
        for i, s in enumerate(scales):
            xs, ys = points([r for r in per_scale if s in r["val_psnr_per_scale"]],
                            "validation PSNR", lambda r, s=s: r["val_psnr_per_scale"][s])
            psnr.plot(xs, ys, marker="o", ms=3, color=f"C{i}", label=f"x{s}")
    elif vals:
        psnr.plot(*points(vals, "validation PSNR", "val_psnr"), marker="o", ms=3, color="C0",
                  label="mean over scales")
    lr.plot(*points(steps, "learning rate", "lr"), color="C2", label="learning rate")
    lr.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    alpha.plot(*points(steps, "alpha", "alpha"), color="C3", label="alpha")
    titles = ("training loss (log scale)", "validation PSNR (dB)", "learning rate",
              "alpha (weight of the per-depth loss)")
    resumes = [r["step"] for r in rows if r.get("event") == "start" and _drawable(r["step"])
               and r["step"] > 0]
    for ax, title in zip((loss, psnr, lr, alpha), titles, strict=True):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step", fontsize=9)
        ax.tick_params(which="both", labelsize=8)
        ax.grid(alpha=0.3)
        # asked before the resume marks, which are lines too; a curve with no point is none
        if not any(len(line.get_xdata()) for line in ax.get_lines()):
            ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes)
        for step in resumes:
            ax.axvline(step, color="grey", ls=":", lw=1)
    if vals:
        psnr.legend(fontsize=8)
    cfg = log.get("config", {})
    name = cfg.get("name") or f"F={cfg.get('features', '?')}, D={cfg.get('recursions', '?')}"
    fig.suptitle(f"{name}: step {log.get('step', '?')} of {log.get('total') or '?'}"
                 + (f" on {log['device_name']}" if log.get("device_name") else "")
                 + (" (dotted: resumed)" if resumes else ""), fontsize=11, parse_math=False)
    save_png(fig, path)
    if notify is not None and points.report():
        notify(points.report())
    return fig


def redraw_training_curves(source: Path, output: Path | None = None, overwrite: bool = False,
                           notify: Callable[[str], None] | None = None) -> Path:
    """Draw a run's curves from its folder or log file; returns the PNG's path (default, redrawn
    in place: the run's ``curves.png`` or ``NAME-curves.png``; another file needs overwrite).
    ``notify`` hears of the points no axis can place, which are left out."""
    source = Path(source)
    log_file = source / "log.json" if source.is_dir() else source
    stem = source.name.removesuffix(".json").removesuffix(".log")
    default = source / "curves.png" if source.is_dir() else source.with_name(f"{stem}-curves.png")
    output = default if output is None else Path(output)
    check_png_target(output, [log_file], overwrite or output == default)
    try:
        if log_file.exists() and not log_file.is_file():  # a FIFO would block the read
            raise DRCNError(f"{log_file} is not a regular file")
        text = log_file.read_text(encoding="utf-8")
        log = json.loads(text)
    except FileNotFoundError:
        raise DRCNError(f"{log_file} not found: give a run folder or its log.json") from None
    except json.JSONDecodeError as e:  # a log cut short, or another file
        what = "it is empty" if not text.strip() else \
            f"it is not JSON ({e.msg.lower()} at line {e.lineno}, column {e.colno})"
        raise DRCNError(f"{log_file} is not a drcn training log: {what}") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise DRCNError(f"cannot read {log_file}: {one_line(e)}") from None
    if not isinstance(log, dict) or not isinstance(log.get("history"), list):
        raise DRCNError(f"{log_file} is not a drcn training log (no history)")
    try:
        training_curves(log, output, notify)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError) as e:
        raise DRCNError(f"{log_file} is not a drcn training log "
                        f"({type(e).__name__}: {e})") from None
    return output


# -- the recursion study ----------------------------------------------------------------------
def recursion_chart(results: Mapping[int, ScaleResult], path: Path, title: str) -> Figure:
    """PSNR of each depth's prediction against the depth, one line per scale, and the ensemble
    as a dashed level of the same colour (the paper's Figure 6/7 argument).

    ``results`` is what ``evaluate(..., per_depth=True)`` returns.
    """
    fig, (ax,) = new_figure(520)
    depth_max = 1
    for i, (scale, r) in enumerate(results.items()):
        if r.depth_psnr is None or r.ensemble_psnr is None:
            raise DRCNError(f"x{scale} was evaluated without per-depth scores; nothing to draw")
        depths = list(range(1, len(r.depth_psnr) + 1))
        depth_max = max(depth_max, depths[-1])
        ax.plot(depths, r.depth_psnr, marker="o", ms=4, color=f"C{i}", label=f"x{scale}")
        ax.axhline(r.ensemble_psnr, color=f"C{i}", ls="--", lw=1.2,
                   label=f"x{scale} ensemble {r.ensemble_psnr:.2f} dB")
    ax.set_xlabel("recursion depth (prediction taken after this many recursions)")
    ax.set_ylabel("PSNR (dB, Y)")
    ax.set_xticks(range(1, depth_max + 1))
    ax.set_title(title, fontsize=11, parse_math=False)  # names in it: a "$" is no TeX
    ax.grid(alpha=0.3)
    fig.legend(fontsize=8, ncol=len(results), loc="outside lower center")  # clear of the lines
    save_png(fig, path)
    return fig


# -- speed ------------------------------------------------------------------------------------
def tile_speed_chart(sweeps: Sequence[dict], path: Path, machine: str) -> Figure:
    """Output Mpx/s against tile size, one line per model and precision; the engine's default
    tile, where given, is a star on its line.

    Each sweep: ``{"model", "precision", "points": [{"tile", "mpx_s"}, ...], ["default_tile",
    "default_mpx_s"]}``.
    """
    fig, (ax,) = new_figure(480)
    for i, sw in enumerate(sweeps):
        pts = sorted((p["tile"], p["mpx_s"]) for p in sw["points"])
        label = f"{sw['model']} {sw['precision']}"
        ax.plot(*zip(*pts, strict=True), marker="o", ms=4, color=f"C{i}", label=label)
        if sw.get("default_tile"):
            ax.plot([sw["default_tile"]], [sw["default_mpx_s"]], marker="*", ms=12, ls="none",
                    color=f"C{i}", label=f"{label}, default tile {sw['default_tile']} px")
    ax.set_xscale("log", base=2)
    ticks = sorted({p["tile"] for sw in sweeps for p in sw["points"]})
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("tile core size (px, log scale)")
    ax.set_ylabel("output Mpx/s")
    ax.set_title(machine, fontsize=10, parse_math=False)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    save_png(fig, path)
    return fig
