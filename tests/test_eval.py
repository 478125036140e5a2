"""``drcn eval``: the protocol's bicubic table, the shipped models' tables, the depth study."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import check_png, plotted_lines
from PIL import Image
from safetensors.torch import save_file
from typer.testing import CliRunner

from drcn_plugin.cli import app
from drcn_plugin.engine import Upscaler
from drcn_plugin.errors import BadOptionError
from drcn_plugin.evaluation import evaluate
from drcn_plugin.model import DRCN

# ../shared/docs/evaluation-protocol.md and ../shared/weights/README.md: (PSNR, SSIM) per scale.
BICUBIC = {"Set5": {2: (33.65, 0.9296), 3: (30.39, 0.8681), 4: (28.42, 0.8103)},
           "Set14": {2: (30.23, 0.8684), 3: (27.54, 0.7735), 4: (26.00, 0.7018)}}
LITE_SET5 = {2: (36.73, 0.9537), 3: (33.09, 0.9143), 4: (30.84, 0.8724)}
FULL_SET5 = {2: (37.19, 0.9560), 3: (33.45, 0.9185), 4: (31.21, 0.8799)}
SUMMARY_KEYS = {"psnr", "ssim", "bicubic_psnr", "bicubic_ssim", "seconds_per_image", "images"}


def run_eval(json_path: Path, *args: str) -> dict:
    """Run ``drcn eval ARGS --json json_path`` in-process and return the parsed JSON."""
    result = CliRunner().invoke(app, ["eval", *args, "--json", str(json_path)])
    assert result.exit_code == 0, result.output
    return json.loads(json_path.read_text())


def scale_args(scales) -> list[str]:
    return [a for s in scales for a in ("--scale", str(s))]


def check_table(results: dict, table: dict, model_keys: tuple[str, str], psnr_tol: float) -> None:
    assert set(results) == {str(s) for s in table}
    for s, (p, q) in table.items():
        r = results[str(s)]
        assert set(r) >= SUMMARY_KEYS
        assert r[model_keys[0]] == pytest.approx(p, abs=psnr_tol), f"x{s} PSNR"
        assert r[model_keys[1]] == pytest.approx(q, abs=0.001), f"x{s} SSIM"


@pytest.mark.parametrize("dataset", ["Set5", pytest.param("Set14", marks=pytest.mark.slow)])
def test_bicubic_reproduces_the_protocol_table(tmp_path, request, dataset):
    folder = request.getfixturevalue(dataset.lower())
    results = run_eval(tmp_path / "out.json", "--model", "bicubic", "--dataset", str(folder),
                       *scale_args([2, 3, 4]))
    check_table(results, BICUBIC[dataset], ("bicubic_psnr", "bicubic_ssim"), 0.01)
    check_table(results, BICUBIC[dataset], ("psnr", "ssim"), 0.01)  # the model *is* bicubic
    assert len(results["2"]["images"]) == len(list(folder.glob("*.png")))


@pytest.fixture(scope="module")
def lite_set5_x3(tmp_path_factory, set5) -> dict:
    """One drcn-lite run on Set5 x3 with --per-depth (shared by the tests below)."""
    out = tmp_path_factory.mktemp("eval") / "lite.json"
    return run_eval(out, "--model", "drcn-lite", "--dataset", str(set5), "--scale", "3",
                    "--device", "cpu", "--precision", "fp32", "--per-depth")


def test_lite_reproduces_its_set5_x3_score(lite_set5_x3):
    check_table(lite_set5_x3, {3: LITE_SET5[3]}, ("psnr", "ssim"), 0.02)
    check_table(lite_set5_x3, {3: BICUBIC["Set5"][3]}, ("bicubic_psnr", "bicubic_ssim"), 0.01)
    assert set(lite_set5_x3["3"]["images"]) == {"baby", "bird", "butterfly", "head", "woman"}


def test_per_depth_ensemble_beats_every_depth(lite_set5_x3):
    r = lite_set5_x3["3"]
    depths = r["depth_psnr"]
    assert len(depths) == 16
    assert r["ensemble_psnr"] > max(depths)
    assert r["ensemble_psnr"] == pytest.approx(r["psnr"], abs=0.01)  # same network, two paths
    assert min(depths) > r["bicubic_psnr"]  # every depth already improves on its input


@pytest.mark.slow
@pytest.mark.parametrize(("model", "table"), [("drcn-lite", LITE_SET5), ("drcn", FULL_SET5)])
def test_shipped_model_reproduces_its_set5_table(tmp_path, set5, model, table):
    results = run_eval(tmp_path / "out.json", "--model", model, "--dataset", str(set5),
                       "--device", "auto", "--precision", "fp32", *scale_args(table))
    check_table(results, table, ("psnr", "ssim"), 0.02)


@pytest.fixture
def small_folder(tmp_path) -> Path:
    """Three small images of different modes: RGB, grey and RGBA, plus a non-image file."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "imgs"
    folder.mkdir()
    base = np.kron(rng.integers(0, 256, (6, 8, 3)), np.ones((5, 5, 1))).astype(np.uint8)
    Image.fromarray(base).save(folder / "a.png")
    Image.fromarray(base[..., 0]).save(folder / "b.png")
    Image.fromarray(np.dstack([base, np.full(base.shape[:2], 255, np.uint8)])).save(folder / "c.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_eval_any_folder_with_a_local_model(tmp_path, small_folder, tiny_model):
    weights = tmp_path / "tiny.safetensors"
    save_file(tiny_model.state_dict(), str(weights))
    result = CliRunner().invoke(app, ["eval", "--model", str(weights), "--dataset",
                                      str(small_folder), "--scale", "2", "--json",
                                      str(tmp_path / "o.json")])
    assert result.exit_code == 0, result.output
    assert "x2" in result.stdout  # the rich table
    r = json.loads((tmp_path / "o.json").read_text())["2"]
    assert set(r["images"]) == {"a", "b", "c"}
    assert np.isfinite([r["psnr"], r["ssim"], r["bicubic_psnr"]]).all()
    assert r["psnr"] != r["bicubic_psnr"]  # the network really ran


def test_eval_output_says_what_was_measured(tmp_path, small_folder):
    clean = run_eval(tmp_path / "c.json", "--model", "bicubic", "--dataset", str(small_folder),
                     "--scale", "2")["2"]
    result = CliRunner().invoke(app, ["eval", "--model", "bicubic", "--dataset",
                                      str(small_folder), "--scale", "2", "--degrade", "jpeg:60",
                                      "--json", str(tmp_path / "d.json")])
    assert result.exit_code == 0, result.output
    assert "LR degraded by jpeg:60" in result.stdout
    degraded = json.loads((tmp_path / "d.json").read_text())["2"]
    assert (clean["model"], clean["degrade"]) == ("bicubic", None)
    assert (degraded["model"], degraded["degrade"]) == ("bicubic", "jpeg:60")
    assert degraded["psnr"] < clean["psnr"]
    header = next(line for line in result.stdout.splitlines() if "scale" in line)
    assert header.count("bicubic") == 1 and "gain" not in header  # no bicubic-vs-bicubic column


def test_scales_as_documented(tmp_path, small_folder):
    # The documented form: --scale 2 3 4 (several values after one option).
    result = CliRunner().invoke(app, ["eval", "--model", "bicubic", "--dataset", str(small_folder),
                                      "--scale", "2", "3", "4", "--json", str(tmp_path / "o.json")])
    assert result.exit_code == 0, result.output
    assert set(json.loads((tmp_path / "o.json").read_text())) == {"2", "3", "4"}


@pytest.mark.parametrize(("args", "message"), [
    (["--dataset", "{missing}"], "dataset folder not found"),
    (["--dataset", "{empty}"], "no images"),
    (["--dataset", "{file}"], "is a file, not a folder of images"),
    (["--dataset", "{empty}", "--scale", "1"], "--scale"),
])
def test_eval_user_errors_are_one_line(tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "one.png").write_bytes(b"")
    args = [a.format(missing=tmp_path / "nope", empty=tmp_path / "empty",
                     file=tmp_path / "one.png") for a in args]
    result = CliRunner().invoke(app, ["eval", "--model", "bicubic", *args])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
    assert "Traceback" not in result.output


def test_a_dataset_of_folders_names_those_that_hold_images(tmp_path, small_folder):
    """DIV2K unpacks as DIV2K_train_HR beside its LR folders: the parent gets one line naming
    where the images are, not a bare 'no images'."""
    root = tmp_path / "DIV2K"
    for name in ("DIV2K_valid_HR", "DIV2K_valid_LR_bicubic", ".cache"):
        (root / name).mkdir(parents=True)
    (root / "DIV2K_valid_LR_bicubic" / "X3").mkdir()
    shutil.copy(small_folder / "a.png", root / "DIV2K_valid_HR" / "0801.png")
    shutil.copy(small_folder / "a.png", root / ".cache" / "0801.png")
    result = CliRunner().invoke(app, ["eval", "--model", "bicubic", "--dataset", str(root)])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: no images in {root}; subfolders are not read, give one that holds images: "
        "DIV2K_valid_HR"]


def test_a_subfolder_named_holds_images_that_would_be_read(tmp_path: Path) -> None:
    """The hint names a subfolder only for images :func:`.datasets.list_images` reads there:
    a folder of macOS's ``._NAME.png`` metadata files alone would be refused in turn; one that
    cannot be listed goes unnamed, the others still are."""
    from drcn_plugin.datasets import list_images
    from drcn_plugin.errors import DatasetError

    for name in ("HR/0801.png", "meta/._0801.png", "locked/0802.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        Image.new("L", (16, 16)).save(tmp_path / name, "PNG")
    iterdir = Path.iterdir

    def unreadable_locked(self: Path):  # a subfolder this user may not list
        if self.name == "locked":
            raise PermissionError(13, "Permission denied", str(self))
        return iterdir(self)

    with pytest.MonkeyPatch.context() as mp, pytest.raises(DatasetError) as error:
        mp.setattr(Path, "iterdir", unreadable_locked)
        list_images(tmp_path)
    assert str(error.value) == f"no images in {tmp_path}; subfolders are not read, give one " \
                               "that holds images: HR"


def test_eval_json_to_a_dash_is_one_line_not_a_file_named_dash(tmp_path, small_folder,
                                                                monkeypatch):
    """``--json -`` reads as standard output, which holds the tables: refused as upscale's
    ``-o -`` is, before any work, rather than a file named '-' in the current folder."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["eval", "--model", "bicubic", "--dataset",
                                      str(small_folder), "-s", "2", "--json", "-"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: invalid value for --json: '-' would be a file named '-': drcn writes results "
        "to files, not to standard output (name a file)"]
    assert not (tmp_path / "-").exists()


def test_eval_plot_draws_the_per_depth_numbers_of_the_json(tmp_path, small_folder, tiny_model_file,
                                                           drawn):
    chart = tmp_path / "depth.png"  # no --per-depth: --plot implies it
    results = run_eval(tmp_path / "o.json", "--model", tiny_model_file, "--dataset",
                       str(small_folder), "--scale", "2", "3", "--plot", str(chart))
    check_png(chart)
    lines = plotted_lines(drawn[-1])
    for s in ("2", "3"):
        r = results[s]
        assert len(r["depth_psnr"]) == 3
        assert lines[f"x{s}"] == list(zip([1.0, 2.0, 3.0], r["depth_psnr"], strict=True))
        (ensemble,) = [pts for label, pts in lines.items() if label.startswith(f"x{s} ensemble")]
        assert {y for _, y in ensemble} == {r["ensemble_psnr"]}


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "bicubic", "--plot", "{out}/d.png"], "bicubic has none"),
    (["--model", "{tiny}", "--plot", "{out}/d.jpg"], "ending in .png"),
    (["--model", "{tiny}", "--plot", "{data}/a.png"], "is an input of this command"),
    (["--model", "{tiny}", "--plot", "{data}/d.png"], "the next eval would score the chart"),
    (["--model", "{tiny}", "--plot", "{out}"], "is a folder"),
    (["--model", "{tiny}", "--plot", "{out}/d.png", "--tta"], "--plot: it draws the plain"),
])
def test_eval_plot_refuses_bad_targets_before_evaluating(tmp_path, small_folder, tiny_model_file,
                                                        args, message):
    before = {p: p.read_bytes() for p in small_folder.iterdir()}
    args = [a.format(out=tmp_path, data=small_folder, tiny=tiny_model_file) for a in args]
    result = CliRunner().invoke(app, ["eval", "--dataset", str(small_folder), *args,
                                      "--json", str(tmp_path / "o.json")])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.output
    assert not (tmp_path / "o.json").exists()  # refused before the evaluation
    assert {p: p.read_bytes() for p in small_folder.iterdir()} == before


def test_eval_plot_without_matplotlib_says_what_to_install(tmp_path, small_folder,
                                                           tiny_model_file, no_matplotlib):
    result = CliRunner().invoke(app, ["eval", "--dataset", str(small_folder), "--model",
                                      tiny_model_file, "--plot", str(tmp_path / "d.png")])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        'error: charts need matplotlib: pip install "drcn-plugin[plot]"']
    assert list(tmp_path.glob("*.png")) == []


def test_per_depth_scores_refuse_the_self_ensemble(tiny_model: DRCN, tmp_path: Path) -> None:
    # The depth table scores the plain network: beside a TTA score it would not be comparable.
    with pytest.raises(BadOptionError, match="plain network, without the self-ensemble"):
        evaluate(Upscaler(tiny_model, device="cpu", tta=True), tmp_path, [3], per_depth=True)


@pytest.mark.parametrize("flag", ["--json", "--plot"])
def test_an_output_that_cannot_be_written_is_refused_before_evaluating(
        tmp_path, small_folder, tiny_model_file, flag, monkeypatch):
    from drcn_plugin import evaluation

    calls = []
    monkeypatch.setattr(evaluation, "evaluate", lambda *a, **k: calls.append(a))
    (tmp_path / "file").write_text("a file, not a folder")
    name = "o.json" if flag == "--json" else "d.png"
    result = CliRunner().invoke(app, ["eval", "--dataset", str(small_folder), "-m",
                                      tiny_model_file, flag, str(tmp_path / "file" / name)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "is a file" in lines[0], result.output
    assert calls == []  # refused before the (long) evaluation, not after it


def test_a_scale_given_twice_is_evaluated_once(small_folder):
    done = []
    results = evaluate(None, small_folder, [2, 3, 2], on_image=lambda s, name: done.append(s))
    assert list(results) == [2, 3] and done == [2, 2, 2, 3, 3, 3]
