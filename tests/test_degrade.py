"""Degradations: the recipe grammar, determinism, the JPEG block grid, 4:2:0 chroma, training use."""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from helpers import DATA
from typer.testing import CliRunner

from drcn_plugin.cli import app
from drcn_plugin.degrade import Recipe, degraded_pair, gaussian_blur, jpeg
from drcn_plugin.errors import DRCNError
from drcn_plugin.evaluation import evaluate
from drcn_plugin.imagefile import read_image8
from drcn_plugin.training.data import make_patches


def _photo() -> torch.Tensor:
    return read_image8(DATA / "Set5" / "butterfly.png")


@pytest.mark.parametrize("text", ["jpeg:75", "noise:5,jpeg:85", "blur:0.5-1.5@0.3,jpeg:30-95",
                                  "noise:1-10@0.5,jpeg:40,clean:0.2", "noise:1.23456789",
                                  "blur:0.1234567-1.7654321@0.3333333,clean:0.1234567"])
def test_recipe_text_round_trips(text: str) -> None:
    """The text is what eval's title and JSON name: every digit given is the value drawn from."""
    recipe = Recipe.parse(text)
    assert str(recipe) == text
    assert Recipe.parse(str(recipe)) == recipe


def test_a_negative_zero_is_written_as_zero() -> None:
    assert str(Recipe.parse("blur:-0,noise:-0-1")) == "blur:0,noise:0-1"


@pytest.mark.parametrize("text", ["", "jpeg", "jpeg:abc", "jpeg:0", "jpeg:101", "noise:-1",
                                  "jpeg:90-30", "blur:1@0", "clean:2", "clean:0.5", "sharpen:1",
                                  "jpeg:nan", "noise:5@", "jpeg:75.5"])
def test_bad_recipes_are_refused_with_the_reason(text: str) -> None:
    with pytest.raises(DRCNError, match="degradation"):
        Recipe.parse(text)


@pytest.mark.parametrize(("text", "reason"), [("noise:-1", "noise takes values from 0 to 50"),
                                              ("blur:-0.5-1", "blur takes values from 0 to 5"),
                                              ("jpeg:74.5", "whole numbers"),
                                              ("noise:2@", "'' is not a number")])
def test_a_negative_or_fractional_value_gets_the_real_reason(text: str, reason: str) -> None:
    with pytest.raises(DRCNError, match=re.escape(reason)):
        Recipe.parse(text)


@pytest.mark.parametrize("text", ["jpeg:7_5", "jpeg: 75", "jpeg:\u0667\u0665", "jpeg:\u00a075",
                                  "noise:1_0-20", "noise:1-2_0", "blur:1@0.5_0", "jpeg:75,clean:0._1",
                                  "noise:\uff15", "jpeg:75@\t1", "jpeg:infinity", "noise:-nan",
                                  "jpeg:nan"])
def test_numbers_are_plain_ascii_decimals(text: str) -> None:
    """Python's float() also reads 7_5, spaces, other scripts' digits, inf and nan: a typo must
    not pass as another number."""
    with pytest.raises(DRCNError, match="is not a number"):
        Recipe.parse(text)


def test_the_clean_share_is_given_once() -> None:
    with pytest.raises(DRCNError, match="clean share is given twice"):
        Recipe.parse("jpeg:75,clean:0.1,clean:0.2")
    assert len(Recipe.parse("jpeg:90,jpeg:60").steps) == 2  # a re-compression is a recipe


def test_exponents_are_numbers_not_ranges() -> None:
    assert Recipe.parse("blur:5e-1").steps[0].low == 0.5
    step = Recipe.parse("noise:1e-1-2e0").steps[0]
    assert (step.low, step.high) == (0.1, 2.0)


def test_same_seed_same_images_other_seed_other_images() -> None:
    recipe = Recipe.parse("blur:0.3-1.2@0.5,noise:1-10,jpeg:30-95")
    image = _photo()[:, :96, :120]
    a = degraded_pair(image, 3, recipe, torch.Generator().manual_seed(7))
    b = degraded_pair(image, 3, recipe, torch.Generator().manual_seed(7))
    c = degraded_pair(image, 3, recipe, torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert torch.equal(a[0], c[0]) and not torch.equal(a[1], c[1])  # HR never degraded


def test_jpeg_blocks_sit_on_the_low_resolution_grid() -> None:
    """Compressing the whole LR image puts block edges at multiples of 8 from its corner."""
    grey = read_image8(DATA / "Set5" / "baby.png")[1, :128, :128]
    out = jpeg(grey, 10)
    col_jump = (out[:, 1:] - out[:, :-1]).abs().mean(dim=0)  # jump between col x and x+1
    on_grid = col_jump[7::8].mean()
    off_grid = torch.cat([col_jump[k::8] for k in range(7)]).mean()
    assert on_grid > 1.5 * off_grid


def test_colour_jpeg_subsamples_chroma_420() -> None:
    """Alternating red and blue columns survive 4:4:4 but blur to purple under 4:2:0."""
    stripes = torch.zeros(3, 32, 32, dtype=torch.float64)
    stripes[0, :, 0::2] = 255
    stripes[2, :, 1::2] = 255
    out = jpeg(stripes, 100)
    assert (out[0, :, 0::2] - out[0, :, 1::2]).abs().mean() < 100  # the red columns blur together


def test_noise_has_the_asked_sigma_and_blur_smooths() -> None:
    flat = torch.full((3, 64, 64), 128.0, dtype=torch.float64)
    noisy = Recipe.parse("noise:6").apply(flat, torch.Generator().manual_seed(0))
    assert abs(float((noisy - flat).std()) - 6) < 0.3
    blurred = gaussian_blur(noisy, 1.0)
    assert float((blurred - flat).std()) < 0.5 * float((noisy - flat).std())


def test_training_patches_are_windows_of_whole_degraded_images() -> None:
    image = _photo()[:, :100, :100]
    recipe = Recipe.parse("noise:3,jpeg:50")
    patches = make_patches([("b", image)], [2], patch=50, stride=50, downscales=[1.0],
                           degrade=recipe, copies=2, seed=3)
    gen = torch.Generator().manual_seed(3)
    for copy in range(2):
        hr, ilr, _ = degraded_pair(image, 2, recipe, gen)
        want = torch.stack([ilr[:50, :50], hr[:50, :50]]).to(torch.uint8)
        assert torch.equal(patches.pairs[copy * 4], want)


def test_patches_know_which_draws_were_left_clean() -> None:
    """A clean draw's patches are the undegraded pipeline's; a degraded draw's are not."""
    image = _photo()[:, :96, :96]
    patches = make_patches([("b", image)], [3], patch=48, stride=48, downscales=[1.0],
                           degrade=Recipe.parse("jpeg:40,clean:0.5"), copies=8, seed=5)
    _, clean_ilr, _ = degraded_pair(image, 3, Recipe.parse("jpeg:40,clean:1"),
                                    torch.Generator())
    want = clean_ilr.to(torch.uint8).unfold(0, 48, 48).unfold(1, 48, 48).reshape(-1, 48, 48)
    per_copy = patches.pairs[:, 0].reshape(8, 4, 48, 48)
    flags = patches.clean.reshape(8, 4)
    assert flags.all(dim=1).sum() not in (0, 8) and (flags.all(dim=1) == flags.any(dim=1)).all()
    for copy, clean in zip(per_copy, flags[:, 0], strict=True):
        assert torch.equal(copy, want) == bool(clean)
    plain = make_patches([("b", image)], [3], patch=48, stride=48, downscales=[1.0])
    assert plain.clean.all() and len(plain.clean) == len(plain)


def test_a_folder_named_twice_counts_twice_with_its_own_draws(tmp_path: Path) -> None:
    """``--data A --data A`` weights A double, each copy degraded with its own draws."""
    from PIL import Image

    from drcn_plugin.training.data import image_files, load_images

    folder = tmp_path / "a"
    folder.mkdir()
    Image.fromarray(_photo()[:, :64, :64].permute(1, 2, 0).to(torch.uint8).numpy()).save(
        folder / "one.png")
    once, twice = (load_images(image_files(f)) for f in ([folder], [folder, folder]))
    assert len(twice) == 2 * len(once) == 2
    recipe = Recipe.parse("noise:3,jpeg:40-90")
    one = make_patches(once, [2], 32, 32, [1.0], degrade=recipe, seed=1)
    two = make_patches(twice, [2], 32, 32, [1.0], degrade=recipe, seed=1)
    assert len(two) == 2 * len(one)
    half = len(one)
    assert torch.equal(two.pairs[:half, 1], two.pairs[half:, 1])  # the same HR patches
    assert not torch.equal(two.pairs[:half, 0], two.pairs[half:, 0])  # other degradations


def test_degraded_evaluation_is_reproducible_and_harder(set5: Path, tmp_path: Path) -> None:
    folder = tmp_path / "two"
    folder.mkdir()
    for name in ("bird.png", "butterfly.png"):
        shutil.copy(set5 / name, folder)
    clean = evaluate(None, folder, [3])[3]
    first = evaluate(None, folder, [3], degrade=Recipe.parse("jpeg:50"))[3]
    again = evaluate(None, folder, [3], degrade=Recipe.parse("jpeg:50"))[3]
    assert first.psnr == again.psnr
    assert first.psnr < clean.psnr - 0.5


def test_a_file_name_that_is_not_utf8_is_degraded_by_its_bytes(set5: Path, tmp_path: Path) -> None:
    folder = tmp_path / "odd"
    folder.mkdir()
    shutil.copy(set5 / "bird.png", folder / os.fsdecode(b"bird\xe9.png"))  # Latin-1, as old drives
    first = evaluate(None, folder, [3], degrade=Recipe.parse("jpeg:50"))[3]
    assert first.psnr == evaluate(None, folder, [3], degrade=Recipe.parse("jpeg:50"))[3].psnr


def test_adding_an_image_never_changes_another_images_degradation(tmp_path: Path) -> None:
    """Draws are seeded by the file's stem, not by the name the results give it: ``a.jpg`` added
    beside ``a.png`` renames a.png's row, and leaves its score as it was."""
    from helpers import random_rgb

    folder, recipe = tmp_path / "in", Recipe.parse("noise:1-10,jpeg:30-95")
    folder.mkdir()
    random_rgb(30, 30, seed=1).save(folder / "a.png")
    alone = evaluate(None, folder, [2], degrade=recipe)[2].images["a"].psnr
    random_rgb(30, 30, seed=2).save(folder / "a.jpg", quality=90)
    beside = evaluate(None, folder, [2], degrade=recipe)[2].images
    assert set(beside) == {"a.png", "a.jpg"}
    assert beside["a.png"].psnr == alone


def test_a_name_is_seeded_the_same_in_either_unicode_form(tmp_path: Path) -> None:
    """macOS (HFS+) stores caf\u00e9 decomposed, Linux as typed: one dataset, one table."""
    from helpers import random_rgb

    recipe, scores = Recipe.parse("noise:1-10,jpeg:30-95"), []
    for form, name in (("nfc", "caf\u00e9.png"), ("nfd", "cafe\u0301.png")):
        (tmp_path / form).mkdir()
        random_rgb(30, 30, seed=1).save(tmp_path / form / name)
        scores.append(evaluate(None, tmp_path / form, [2], degrade=recipe)[2].psnr)
    assert scores[0] == scores[1]


def test_eval_cli_refuses_a_bad_recipe_in_one_line(set5: Path) -> None:
    result = CliRunner().invoke(app, ["eval", "--dataset", str(set5), "-s", "3", "--model",
                                      "bicubic", "--degrade", "jpeg:200"])
    assert result.exit_code == 2
    assert "jpeg takes values from 1 to 100" in result.output
    assert "Traceback" not in result.output


@pytest.mark.usefixtures("one_thread")
def test_tiny_degraded_run_beats_bicubic_on_degraded_set5(set5: Path, tmp_path: Path) -> None:
    from test_train import tiny

    from drcn_plugin.engine import Upscaler
    from drcn_plugin.hub import load_model
    from drcn_plugin.training.trainer import train

    data = tmp_path / "t8"
    data.mkdir()
    for p in sorted((DATA / "T91").iterdir())[:8]:
        shutil.copy(p, data)
    cfg = replace(tiny(data, tmp_path / "run"), features=16, recursions=4, steps=300,
                  degrade="noise:1-8@0.5,jpeg:40-90", degrade_copies=2)
    train(cfg)
    model = load_model(str(tmp_path / "run" / "drcn-f16-d4-x3.safetensors"))
    res = evaluate(Upscaler(model, device="cpu", precision="fp32"), set5, [3],
                   degrade=Recipe.parse("jpeg:75"))[3]
    assert res.psnr > res.bicubic_psnr + 0.1


@pytest.mark.parametrize("quality", [30, 50, 75, 85, 90, 95])
def test_jpeg_quality_is_read_back_from_the_tables(quality: int, tmp_path: Path) -> None:
    from PIL import Image

    from drcn_plugin.compression import jpeg_quality

    path = tmp_path / "q.jpg"
    Image.new("RGB", (24, 16), (90, 140, 30)).save(path, quality=quality)
    with Image.open(path) as im:
        assert jpeg_quality(im.quantization) == quality
    assert jpeg_quality(None) is None and jpeg_quality({}) is None


def test_read_image_tells_lossy_sources_and_their_jpeg_quality(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image, features

    from drcn_plugin.imagefile import read_image

    pixels = Image.fromarray((np.random.default_rng(0).random((40, 50, 3)) * 255).astype("uint8"))
    cases = {"q.jpg": ({"quality": 63}, True, 63), "lossy.webp": ({"quality": 70}, True, None),
             "lossless.webp": ({"lossless": True}, False, None), "p.png": ({}, False, None),
             "a.avif": ({"quality": 50}, True, None),
             "j.tif": ({"compression": "jpeg", "quality": 50}, True, 50),
             "lzw.tif": ({"compression": "tiff_lzw"}, False, None),
             "wavelet97.jp2": ({"irreversible": True}, True, None),
             "wavelet53.jp2": ({}, False, None)}
    if not features.check("avif"):  # Pillow < 11.2 wheels read no AVIF
        del cases["a.avif"]
    for name, (options, lossy, quality) in cases.items():
        pixels.save(tmp_path / name, **options)
        _, info = read_image(tmp_path / name)
        assert (info.lossy, info.jpeg_quality) == (lossy, quality), name


def test_a_jpeg_quality_range_draws_each_quality_equally_often(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``jpeg:30-32`` means each of 30, 31 and 32 a third of the time: the ends are whole
    qualities of the range, not halves of a rounding bin."""
    from drcn_plugin import degrade

    drawn: list[int] = []
    monkeypatch.setattr(degrade, "jpeg", lambda image, quality: drawn.append(quality) or image)
    recipe, gen = Recipe.parse("jpeg:30-32"), torch.Generator().manual_seed(0)
    for _ in range(3000):
        recipe.apply(torch.zeros(8, 8), gen)
    shares = [drawn.count(q) / len(drawn) for q in (30, 31, 32)]
    assert set(drawn) == {30, 31, 32} and all(abs(s - 1 / 3) < 0.03 for s in shares), shares
