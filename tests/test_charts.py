"""Charts: old training logs redrawn, the tile-speed sweep drawn from its own numbers, bad input."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import warnings
from pathlib import Path

import pytest
import typer
from helpers import check_png, plotted_lines
from typer.testing import CliRunner

from drcn_plugin.charts import training_curves
from drcn_plugin.cli import app

ROOT = Path(__file__).resolve().parents[1]
H200_LOG = ROOT / "docs" / "training-runs" / "h200-2026-11-26" / "drcn-f64-d16-x234-v2.log.json"


def plot_train(*args: str):
    return CliRunner().invoke(app, ["plot-train", *args])


def test_plot_train_redraws_an_old_log(tmp_path: Path, drawn: list) -> None:
    # A log from before per-scale validation: the mean validation PSNR is drawn instead.
    log_file = tmp_path / "drcn-f64-d16-x234-v2.log.json"
    shutil.copy(H200_LOG, log_file)
    r = plot_train(str(log_file))
    assert r.exit_code == 0, r.output
    check_png(tmp_path / "drcn-f64-d16-x234-v2-curves.png")
    history = json.loads(log_file.read_text())["history"]
    lines = plotted_lines(drawn[-1])
    rows = [h for h in history if "loss" in h]
    assert lines["training loss"] == [(h["step"], h["loss"]) for h in rows]
    assert lines["mean over scales"] == [(h["step"], h["val_psnr"]) for h in history
                                         if h.get("val_psnr") is not None]
    assert drawn[-1].axes[0].get_yscale() == "log"



def test_plot_train_help_names_where_a_log_files_curves_go() -> None:
    """The default output of a NAME.log.json (as the test above writes) is in --help, beside
    the run folder's curves.png."""
    text = " ".join(plot_train("--help").output.split())
    assert "curves.png in the run folder" in text and "NAME-curves.png beside" in text, text


def test_plot_train_run_folder_and_output(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(H200_LOG, run / "log.json")
    assert plot_train(str(run)).exit_code == 0
    check_png(run / "curves.png")
    r = plot_train(str(run), "-o", str(tmp_path / "elsewhere" / "c.png"))
    assert r.exit_code == 0, r.output
    check_png(tmp_path / "elsewhere" / "c.png")


@pytest.mark.parametrize(("content", "message"), [
    (None, "not found"),
    ("{not json", "log.json is not a drcn training log: it is not JSON (expecting property "
                  "name enclosed in double quotes at line 1, column 2)"),
    ("\n", "log.json is not a drcn training log: it is empty"),  # a log cut short
    ('{"config": {}}', "not a drcn training log"),
    ('{"history": [{"step": 5, "loss": 0.1}]}', "not a drcn training log"),  # no lr, alpha
    ('[1, 2]', "not a drcn training log"),
])
def test_plot_train_bad_logs_are_one_line(tmp_path: Path, content: str | None,
                                          message: str) -> None:
    log_file = tmp_path / "log.json"
    if content is not None:
        log_file.write_text(content)
    r = plot_train(str(log_file))
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.output
    assert list(tmp_path.glob("*.png")) == []


def test_plot_train_draws_what_it_can_and_names_what_it_skipped(tmp_path: Path,
                                                               drawn: list) -> None:
    """Absurd numbers (inf, NaN, a loss not above 0, magnitudes matplotlib overflows on) are
    left out with one line saying so, never a matplotlib warning or a refusal."""
    row = {"loss": 0.01, "lr": 1e-3, "alpha": 0.5}
    rows = [{"step": 10, **row}, {"step": 20, **row, "loss": float("inf"), "val_psnr": 1e308},
            {"step": 30, **row, "loss": float("nan"), "lr": 1e308, "alpha": float("nan")},
            {"step": 40, **row, "loss": -1.0, "val_psnr": 30.0},
            {"step": 50, **row, "loss": 1e-300}, {"step": 1e308, **row}, {"step": 10**400, **row},
            {"step": 60, **row}]
    (tmp_path / "log.json").write_text(json.dumps({"history": rows}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's overflow warnings, printed by matplotlib
        r = plot_train(str(tmp_path))
    assert r.exit_code == 0, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[1].startswith("wrote"), r.output
    assert "skipped" in lines[0] and "6 of 8 training loss" in lines[0], lines[0]
    assert "1 of 2 validation PSNR" in lines[0] and "3 of 8 learning rate" in lines[0]
    drawn_lines = plotted_lines(drawn[-1])
    assert drawn_lines["training loss"] == [(10, 0.01), (60, 0.01)]
    assert drawn_lines["mean over scales"] == [(40, 30.0)]
    check_png(tmp_path / "curves.png")


def test_plot_train_refuses_to_write_over_its_log(tmp_path: Path) -> None:
    shutil.copy(H200_LOG, tmp_path / "log.json")
    before = (tmp_path / "log.json").read_bytes()
    r = plot_train(str(tmp_path), "-o", str(tmp_path / "log.json"))
    assert r.exit_code == 2 and "ending in .png" in r.stderr
    assert (tmp_path / "log.json").read_bytes() == before


def test_plot_train_without_matplotlib(tmp_path: Path, no_matplotlib: None) -> None:
    shutil.copy(H200_LOG, tmp_path / "log.json")
    r = plot_train(str(tmp_path))
    assert r.exit_code == 2
    assert r.stderr.strip() == 'error: charts need matplotlib: pip install "drcn-plugin[plot]"'


def test_curves_of_a_run_before_its_first_loss(tmp_path: Path) -> None:
    fig = training_curves({"history": [{"step": 0, "event": "start", "seconds": 0.0}]},
                          tmp_path / "c.png")
    check_png(tmp_path / "c.png")
    assert plotted_lines(fig)["training loss"] == []
    assert [[t.get_text() for t in ax.texts] for ax in fig.axes] == [["no data yet"]] * 4


def test_a_loss_that_moves_little_has_a_different_label_on_every_tick(tmp_path: Path) -> None:
    rows = [{"step": s, "loss": loss, "lr": 1e-3, "alpha": 0.5}
            for s, loss in ((25, 0.00222), (50, 0.00218), (100, 0.00205))]
    fig = training_curves({"history": rows}, tmp_path / "c.png")
    axis = fig.axes[0].yaxis
    low, high = axis.get_view_interval()
    ticks = [t for t in axis.get_major_ticks() + axis.get_minor_ticks()
             if low <= t.get_loc() <= high and t.label1.get_text()]
    labels = [t.label1.get_text() for t in ticks]
    assert len(labels) >= 4 and len(set(labels)) == len(labels), labels
    assert all(float(t.label1.get_text()) == pytest.approx(t.get_loc(), rel=0.01) for t in ticks)


def test_curves_of_a_resumed_run_without_validation(tmp_path: Path) -> None:
    rows = [{"step": s, "loss": 0.01, "lr": 1e-3, "alpha": 0.5} for s in (25, 50)]
    log = {"history": [{"step": 0, "event": "start"}, rows[0], {"step": 25, "event": "start"},
                       rows[1]]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "no artists with labels" legend warning
        fig = training_curves(log, tmp_path / "c.png")
    psnr = fig.axes[1]
    assert [t.get_text() for t in psnr.texts] == ["no data yet"] and psnr.get_legend() is None


@pytest.fixture
def bench_engine(monkeypatch: pytest.MonkeyPatch):
    """``benchmarks/bench_engine.py`` as a module (its folder on the path, as when it is run)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("bench_engine",
                                                  ROOT / "benchmarks" / "bench_engine.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_plot_draws_its_own_tile_sweep(tmp_path: Path, tiny_model_file: str, bench_engine,
                                             drawn: list, monkeypatch: pytest.MonkeyPatch) -> None:
    chart, numbers = tmp_path / "speed.png", tmp_path / "speed.json"
    monkeypatch.setattr(sys, "argv", [
        "bench_engine.py", "--models", tiny_model_file, "--precisions", "fp32", "--side", "48",
        "--tiles", "16", "32", "64", "--repeat", "1", "--plot", str(chart), "--json", str(numbers)])
    bench_engine.main()
    check_png(chart)
    result = json.loads(numbers.read_text())
    (sweep,) = result["tile_sweep"]
    assert [p["tile"] for p in sweep["points"]] == [16, 32]  # 64 > the 48 px plane: not a tile
    assert all(p["mpx_s"] > 0 for p in sweep["points"])
    lines = plotted_lines(drawn[-1])
    label = f"{tiny_model_file} float32"
    assert lines[label] == [(p["tile"], p["mpx_s"]) for p in sweep["points"]]
    default = lines[f"{label}, default tile {sweep['default_tile']} px"]
    assert default == [(sweep["default_tile"], sweep["default_mpx_s"])]
    assert result["machine"] in drawn[-1].axes[0].get_title()  # labelled with the CPU model


def test_train_curves_switch_off() -> None:
    train = typer.main.get_command(app).commands["train"]  # type: ignore[attr-defined]
    assert train.make_context("train", ["--data", "x"]).params["curves"] is True
    assert train.make_context("train", ["--data", "x", "--no-curves"]).params["curves"] is False


def test_readme_tables_fill_their_markers_or_leave_the_file_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from readme_markers import fill_readme

    readme = tmp_path / "README.md"
    readme.write_text("a\n<!-- t -->\nold\n<!-- /t -->\nb\n")
    fill_readme({"t": "new | 1"}, readme)
    assert readme.read_text() == "a\n<!-- t -->\nnew | 1\n<!-- /t -->\nb\n"
    with pytest.raises(SystemExit, match="no <!-- other --> markers"):
        fill_readme({"t": "newer", "other": "x"}, readme)
    assert readme.read_text() == "a\n<!-- t -->\nnew | 1\n<!-- /t -->\nb\n"
