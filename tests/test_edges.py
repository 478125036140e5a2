"""Edge cases of eval, compare, plot-train and the summary table: exact scores, odd names, odd
ranges, charts over existing files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import DATA, random_rgb
from PIL import Image
from typer.testing import CliRunner

from drcn_plugin.cli import app

runner = CliRunner()


def test_eval_json_stays_valid_json_when_a_score_is_exact(tmp_path: Path,
                                                          tiny_model_file: str) -> None:
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (40, 40), (128, 128, 128)).save(flat / "f.png")
    out = tmp_path / "r.json"
    r = runner.invoke(app, ["eval", "--dataset", str(flat), "-s", "2", "-m", tiny_model_file,
                            "--json", str(out)])
    assert r.exit_code == 0, r.output
    text = out.read_text()
    assert "Infinity" not in text and "NaN" not in text
    assert json.loads(text)["2"]["bicubic_psnr"] is None  # bicubic is exact on a flat image


def test_charts_never_replace_a_file_unasked(tmp_path: Path, tiny_model_file: str) -> None:
    precious = tmp_path / "precious.png"
    random_rgb().save(precious)
    before = precious.read_bytes()
    r = runner.invoke(app, ["eval", "--dataset", str(DATA / "Set5"), "-s", "2", "-m",
                            tiny_model_file, "--plot", str(precious)])
    assert r.exit_code == 2 and "exists" in r.output and "--overwrite" in r.output
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.json").write_text(json.dumps({"history": [
        {"step": s, "loss": 0.1 / s, "lr": 1e-3, "alpha": 0.0} for s in (1, 2, 3)]}))
    r = runner.invoke(app, ["plot-train", str(run), "-o", str(precious)])
    assert r.exit_code == 2 and "--overwrite" in r.output
    assert precious.read_bytes() == before
    for _ in range(2):  # the run's own chart is redrawn in place
        assert runner.invoke(app, ["plot-train", str(run)]).exit_code == 0
    r = runner.invoke(app, ["plot-train", str(run), "-o", str(precious), "--overwrite"])
    assert r.exit_code == 0 and precious.read_bytes() != before


@pytest.mark.parametrize("log", [
    {"history": [{"step": 1, "loss": 0.1, "lr": 1e-3, "alpha": 0.5, "val_psnr": 30,
                  "val_psnr_per_scale": [2, 3]}]},
    {"history": [{"step": 10**400, "loss": 0.1, "lr": 1e-3, "alpha": 0.5}]},
    '{"history": ' + "[" * 100_000,
])
def test_damaged_training_logs_are_one_line(tmp_path: Path, log: dict | str) -> None:
    path = tmp_path / "log.json"
    path.write_text(log if isinstance(log, str) else json.dumps(log))
    r = runner.invoke(app, ["plot-train", str(path)])
    assert r.exit_code == 2 and "Traceback" not in r.output and r.output.startswith("error:")


def test_compare_works_up_to_the_largest_factor(tmp_path: Path, tiny_model_file: str) -> None:
    src = tmp_path / "w.png"
    Image.open(DATA / "Set5" / "woman.png").save(src)
    r = runner.invoke(app, ["compare", str(src), "-s", "16", "--crop", "32", "-m",
                            tiny_model_file])
    assert r.exit_code == 0, r.output


def test_float_images_outside_0_1_are_refused_where_they_must_become_8_bit(
        tmp_path: Path, tiny_model_file: str) -> None:
    folder = tmp_path / "floats"
    folder.mkdir()
    levels = np.asarray(Image.open(DATA / "Set5" / "bird.png").convert("L"))[:64, :64]
    Image.fromarray(levels.astype(np.float32)).save(folder / "f.tif")  # 0..255 stored as float
    r = runner.invoke(app, ["eval", "--dataset", str(folder), "-s", "2"])
    assert r.exit_code == 2 and "float values span" in r.output
    r = runner.invoke(app, ["compare", str(folder / "f.tif"), "-m", tiny_model_file])
    assert r.exit_code == 2 and "float values span" in r.output


def test_a_float_image_with_nan_is_refused_by_eval(tmp_path: Path) -> None:
    folder = tmp_path / "nan"
    folder.mkdir()
    plane = np.full((48, 48), 0.5, np.float32)
    plane[3, 3] = np.nan
    Image.fromarray(plane).save(folder / "a.tif")
    r = runner.invoke(app, ["eval", "--dataset", str(folder), "-s", "2"])
    assert r.exit_code == 2 and "NaN or infinite" in r.output


def test_names_with_markup_brackets_are_shown_as_they_are(tmp_path: Path,
                                                          tiny_model_file: str) -> None:
    folder = tmp_path / "x["
    folder.mkdir()
    random_rgb().save(folder / "[bold]a[red].png")
    r = runner.invoke(app, ["upscale", str(folder), "-m", tiny_model_file, "-o",
                            str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    assert "[bold]a[red].png" in r.output and (tmp_path / "out" / "[bold]a[red].png").is_file()
