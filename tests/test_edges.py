"""Edge cases of eval, compare, plot-train and the summary table: exact scores, odd names, odd
ranges, charts over existing files."""

from __future__ import annotations

import io
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


def _swap_jpeg_tables(data: bytes) -> bytes:
    """The same JPEG with quantisation tables 0 and 1 renumbered (and each component's choice)."""
    d = bytearray(data)
    sof = d.find(b"\xff\xc0")
    for k in range(d[sof + 9]):
        d[sof + 10 + 3 * k + 2] ^= 1
    pos = 0
    while (pos := d.find(b"\xff\xdb", pos)) >= 0:
        end, p = pos + 2 + int.from_bytes(d[pos + 2: pos + 4], "big"), pos + 4
        while p < end:
            precision = d[p] >> 4
            d[p] ^= 1
            p += 1 + 64 * (2 if precision else 1)
        pos = end
    return bytes(d)


def test_jpeg_quality_comes_from_the_table_the_luma_uses(tmp_path: Path) -> None:
    from drcn_plugin.compression import jpeg_quality
    from drcn_plugin.imagefile import read_image

    buf = io.BytesIO()
    random_rgb(48, 48).save(buf, "JPEG", quality=20)
    luma = list(Image.open(io.BytesIO(buf.getvalue())).quantization[0])
    buf = io.BytesIO()
    random_rgb(48, 48).save(buf, "JPEG", qtables=[luma, [1] * 64])
    (tmp_path / "swapped.jpg").write_bytes(_swap_jpeg_tables(buf.getvalue()))
    assert Image.open(tmp_path / "swapped.jpg").quantization[0] == [1] * 64
    assert read_image(tmp_path / "swapped.jpg")[1].jpeg_quality == 20
    assert jpeg_quality({1: luma}) is None  # no table 0: not a guess


def test_webp_lossiness_comes_from_its_image_chunk(tmp_path: Path) -> None:
    from drcn_plugin.imagefile import read_image

    image = random_rgb(32, 32)
    image.save(tmp_path / "lossy-big-icc.webp", quality=50, icc_profile=b"\0" * 70_000)
    image.save(tmp_path / "lossless-odd-icc.webp", lossless=True, icc_profile=b"xxVP8 yy" * 20)
    image.save(tmp_path / "anim.webp", save_all=True, append_images=[image.rotate(90)],
               quality=50)
    image.save(tmp_path / "anim-lossless.webp", save_all=True, append_images=[image],
               lossless=True)
    lossy = {p.stem: read_image(p)[1].lossy for p in tmp_path.iterdir()}
    assert lossy == {"lossy-big-icc": True, "lossless-odd-icc": False, "anim": True,
                     "anim-lossless": False}


@pytest.mark.usefixtures("wide_console")
def test_jpeg_suffixes_are_scanned_and_kept(tmp_path: Path, tiny_model_file: str) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    random_rgb().save(folder / "a.jfif", "JPEG")
    random_rgb().save(folder / "b.jpe", "JPEG")
    random_rgb().save(folder / "c.gif", "JPEG")  # a JPEG named .gif: written as PNG
    random_rgb().save(tmp_path / "noext", "JPEG")
    r = runner.invoke(app, ["upscale", str(folder), str(tmp_path / "noext"), "-m",
                            tiny_model_file, "-o", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "a.jfif", "b.jpe", "c.png", "noext.png"]
    text = " ".join(r.output.split())
    assert "content is JPEG, not .gif as the name says" in text
    assert "a name without an extension is not an output format" in text


def test_an_empty_model_name_is_refused(tmp_path: Path) -> None:
    random_rgb().save(tmp_path / "a.png")
    r = runner.invoke(app, ["upscale", str(tmp_path / "a.png"), "-m", ""])
    assert r.exit_code == 2 and "no model named" in r.output


def _interrupt_on_call(monkeypatch: pytest.MonkeyPatch, module: object, name: str,
                       call: int = 1) -> None:
    """``module.name`` raises KeyboardInterrupt (Ctrl-C) on its ``call``-th call."""
    real, calls = getattr(module, name), []

    def stopped(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, stopped)


def test_ctrl_c_mid_eval_is_one_line_and_keeps_the_old_results(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from drcn_plugin import evaluation

    folder = tmp_path / "two"
    folder.mkdir()
    for seed in (1, 2):
        random_rgb(40, 40, seed).save(folder / f"{seed}.png")
    out = tmp_path / "r.json"
    args = ["eval", "--dataset", str(folder), "-s", "2", "-m", "bicubic", "--json", str(out)]
    assert runner.invoke(app, args).exit_code == 0
    before = out.read_bytes()
    _interrupt_on_call(monkeypatch, evaluation, "ssim", call=2)  # after the first image
    r = runner.invoke(app, [*args, "-s", "3"])
    assert r.exit_code == 130, r.output
    assert r.stderr.strip().splitlines() == ["error: interrupted: nothing written"]
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "r.json", "two"]


def test_ctrl_c_in_compare_and_plot_train_is_one_line(tmp_path: Path, tiny_model_file: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from drcn_plugin import charts, compare

    random_rgb(40, 40).save(tmp_path / "a.png")
    _interrupt_on_call(monkeypatch, compare, "_sheet")
    r = runner.invoke(app, ["compare", str(tmp_path / "a.png"), "-m", tiny_model_file])
    assert r.exit_code == 130, r.output
    assert r.stderr.strip().splitlines() == ["error: interrupted: nothing written"]
    (tmp_path / "log.json").write_text(json.dumps({"history": [{"step": 1, "loss": 0.1,
                                                                "lr": 1e-3, "alpha": 1.0}]}))
    _interrupt_on_call(monkeypatch, charts, "save_png")
    r = runner.invoke(app, ["plot-train", str(tmp_path)])
    assert r.exit_code == 130, r.output
    assert r.stderr.strip().splitlines() == ["error: interrupted: nothing written"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "log.json"]


def test_compare_output_that_cannot_be_written_is_refused_before_the_work(
        tmp_path: Path, tiny_model_file: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from drcn_plugin import compare

    calls: list = []
    monkeypatch.setattr(compare, "compare_image", lambda *a, **k: calls.append(a))
    random_rgb(40, 40).save(tmp_path / "a.png")
    r = runner.invoke(app, ["compare", str(tmp_path / "a.png"), "-m", tiny_model_file, "-o",
                            str(tmp_path / "a.png" / "sheet.png")])
    assert r.exit_code == 2 and calls == []
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "is a file" in lines[0], r.output


def test_a_folder_where_an_image_is_expected_is_named_so(
        tmp_path: Path, tiny_model_file: str, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ds" / "sub.png").mkdir(parents=True)  # a folder with an image's name
    random_rgb(40, 40).save(tmp_path / "ds" / "a.png")
    monkeypatch.chdir(tmp_path / "ds")
    for args in (["compare", str(tmp_path / "ds"), "-m", tiny_model_file],
                 ["compare", ".", "-m", tiny_model_file],  # the current folder: no name
                 ["eval", "--dataset", str(tmp_path / "ds"), "-s", "2", "-m", "bicubic"]):
        r = runner.invoke(app, args)
        assert r.exit_code == 2
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].endswith("a folder, not an image file"), r.output


def test_a_tilde_path_naming_no_user_is_a_path_as_written(tmp_path: Path, tiny_model_file: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # as a shell leaves a quoted "~nosuchuser/...": relative
    r = runner.invoke(app, ["upscale", "~nosuchuser/a.png", "-m", tiny_model_file],
                      catch_exceptions=False)
    assert r.exit_code == 1 and "~nosuchuser/a.png" in r.output, r.output
    random_rgb(12, 12).save(tmp_path / "a.png")
    r = runner.invoke(app, ["upscale", "a.png", "-o", "~nosuchuser/out", "-m", tiny_model_file],
                      catch_exceptions=False)
    assert r.exit_code == 0 and (tmp_path / "~nosuchuser" / "out" / "a.png").is_file(), r.output


@pytest.mark.parametrize("scale", [float("nan"), float("inf"), 0.5, 17.0])
@pytest.mark.parametrize("from_original", [False, True])
def test_compare_input_names_a_bad_scale_first(scale: float, from_original: bool) -> None:
    """The library's check names a bad scale as out of range before anything else: NaN is no
    ValueError, 17 no 'too small to shrink' from the original."""
    from drcn_plugin.compare import check_compare_input
    from drcn_plugin.errors import BadOptionError

    with pytest.raises(BadOptionError, match="out of range"):
        check_compare_input(np.zeros((32, 32, 3), np.uint8), scale, 1, from_original)
