"""``drcn eval`` and ``drcn compare`` against awkward datasets and inputs (a hostile pass)."""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path

import pytest
import torch
from helpers import random_rgb
from typer.testing import CliRunner

from drcn_plugin import compare, devices
from drcn_plugin.cli import app
from drcn_plugin.errors import BadImageError
from drcn_plugin.evaluation import ScaleResult, evaluate


def test_images_sharing_a_stem_are_each_scored(folder: Path) -> None:
    random_rgb(24, 24, seed=1).save(folder / "a.png")
    random_rgb(24, 24, seed=2).save(folder / "a.jpg", quality=90)
    both = evaluate(None, folder, [2])[2]
    assert set(both.images) == {"a.jpg", "a.png"}
    alone = {}
    for name in ("a.png", "a.jpg"):
        single = folder.parent / name.replace(".", "-")
        single.mkdir()
        (folder / name).rename(single / name)
        alone[name] = evaluate(None, single, [2])[2].psnr
    assert both.images["a.png"].psnr == alone["a.png"] != alone["a.jpg"]
    assert both.psnr == pytest.approx((alone["a.png"] + alone["a.jpg"]) / 2)


def test_compare_too_big_for_memory_is_one_line_before_any_work(
        tmp_path: Path, tiny_model_file: str, monkeypatch: pytest.MonkeyPatch) -> None:
    random_rgb(30, 20).save(tmp_path / "in.png")
    monkeypatch.setattr(devices, "host_available_memory", lambda: 1 << 20)
    panels = []
    monkeypatch.setattr(compare, "compare_panels", lambda *a, **k: panels.append(a))
    out = tmp_path / "sheet.png"
    result = CliRunner().invoke(app, ["compare", str(tmp_path / "in.png"), "--scale", "16",
                                      "--no-from-original", "-m", tiny_model_file, "-o", str(out)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "480x320 panels needs about" in lines[0], result.output
    assert "available" in lines[0] and not panels and not out.exists()


@pytest.mark.parametrize("shape", [(40, 400), (400, 40)])
def test_the_crop_of_a_strip_shorter_than_it_finds_the_detail(shape: tuple[int, int]) -> None:
    y = torch.zeros(shape, dtype=torch.float64)
    detail = torch.rand(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y[-200:, -200:] = 255 * detail[-200:, -200:]  # only the far end has any detail
    r, c = compare._busiest_crop(y, 160)
    assert max(r, c) >= 200 - 40 and min(r, c) == 0


@pytest.mark.parametrize("spec", [".", ".."])
def test_eval_of_the_current_folder_names_it(folder: Path, spec: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    random_rgb(24, 24).save(folder / "a.png")
    sub = folder / "sub"
    sub.mkdir()
    monkeypatch.chdir(folder if spec == "." else sub)
    result = CliRunner().invoke(app, ["eval", "--dataset", spec, "-m", "bicubic", "-s", "2"])
    assert result.exit_code == 0, result.output
    assert "bicubic on in (PSNR" in " ".join(result.output.split())


@pytest.mark.usefixtures("wide_console")
def test_eval_names_a_file_it_scores_in_part(folder: Path) -> None:
    """A cut-out is scored on the colour under its transparent pixels, an animation on its first
    frame: each such file is named once, the clean ones not at all."""
    random_rgb(24, 24, seed=1).save(folder / "plain.png")
    cut = random_rgb(24, 24, seed=2).convert("RGBA")
    cut.putpixel((3, 3), (0, 0, 0, 0))
    cut.save(folder / "cut.png")
    frames = [random_rgb(24, 24, seed=s) for s in (3, 4)]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:])
    result = CliRunner().invoke(app, ["eval", "--dataset", str(folder), "-m", "bicubic",
                                      "-s", "2", "-s", "3"])
    assert result.exit_code == 0, result.output
    said = [line for line in result.output.splitlines() if str(folder) in line]
    assert len(said) == 2 and "plain" not in " ".join(said), said
    assert any("anim.gif: 2 frames" in line for line in said)
    assert any("cut.png: transparent pixels" in line for line in said)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
@pytest.mark.parametrize(("command", "flag"), [("eval", "--json"), ("eval", "--plot"),
                                               ("compare", "-o"), ("plot-train", "-o")])
def test_an_output_that_is_a_pipe_is_refused_even_with_overwrite(
        folder: Path, tiny_model_file: str, command: str, flag: str) -> None:
    """An atomic write renames a file over its target: over a pipe or a device (``/dev/null``,
    as root) it would put a file in its place."""
    random_rgb(24, 24).save(folder / "a.png")
    (folder / "log.json").write_text(json.dumps({"history": []}))
    pipe = folder.parent / ("out.json" if flag == "--json" else "out.png")
    os.mkfifo(pipe)
    first = {"eval": ["eval", "--dataset", str(folder), "-m", tiny_model_file, "-s", "2"],
             "compare": ["compare", str(folder / "a.png"), "-s", "2", "-m", tiny_model_file],
             "plot-train": ["plot-train", str(folder / "log.json")]}[command]
    result = CliRunner().invoke(app, [*first, flag, str(pipe), "--overwrite"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "is not a regular file" in lines[0], result.output
    assert stat.S_ISFIFO(os.lstat(pipe).st_mode)


def test_a_dollar_in_a_charts_title_is_drawn_as_it_is(tmp_path: Path, tiny_model_file: str,
                                                      drawn: list) -> None:
    """Folder and run names go into the titles: "$...$" in one is text, not matplotlib's TeX
    (which drew "a$b$c" in italics and refused "a$^$b" after the whole evaluation)."""
    data = tmp_path / "a$^$b"
    data.mkdir()
    random_rgb(24, 24).save(data / "a.png")
    result = CliRunner().invoke(app, ["eval", "--dataset", str(data), "-m", tiny_model_file,
                                      "-s", "2", "--plot", str(tmp_path / "depth.png")])
    assert result.exit_code == 0, result.output
    (log := tmp_path / "log.json").write_text(json.dumps({"config": {"name": "x$_$y"},
                                                          "history": []}))
    result = CliRunner().invoke(app, ["plot-train", str(log)])
    assert result.exit_code == 0, result.output
    assert "a$^$b" in drawn[0].axes[0].get_title()
    assert (tmp_path / "depth.png").exists() and (tmp_path / "log-curves.png").exists()


def test_every_depth_score_is_printed_whole_in_80_columns(folder: Path, tmp_path: Path) -> None:
    """A 16-depth model's table, as a file or a narrow terminal gets it: a row per depth, so no
    score is cut to "1…"."""
    random_rgb(24, 24).save(folder / "a.png")
    out = tmp_path / "o.json"
    result = CliRunner().invoke(app, ["eval", "--dataset", str(folder), "-m", "drcn-lite",
                                      "-s", "2", "3", "--per-depth", "--json", str(out)],
                                env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "…" not in result.stdout
    cells = [line.replace("│", " ").split() for line in result.stdout.splitlines()]
    rows = {row[0]: row[1:] for row in cells if row[:1] and row[0].startswith(("d", "ens"))}
    for column, r in enumerate(json.loads(out.read_text()).values()):
        assert [rows[f"d{d + 1}"][column] for d in range(16)] == \
            [f"{v:.2f}" for v in r["depth_psnr"]]
        assert rows["ensemble"][column] == f"{r['ensemble_psnr']:.2f}"


@pytest.mark.parametrize(("scale", "least"), [(2, 16), (3, 18), (4, 20), (5, 25)])
def test_the_smallest_size_eval_names_is_one_it_scores(folder: Path, scale: int,
                                                        least: int) -> None:
    """The image is cropped to a multiple of the scale before the border is shaved: a 15-pixel
    side at x2 is 14 pixels scored, so the least size named is 16, and 16 is scored."""
    random_rgb(least, least - 1).save(folder / "a.png")
    with pytest.raises(BadImageError, match=f"too small to score at x{scale} "
                                            rf"\(at least {least}x{least} pixels\)"):
        evaluate(None, folder, [scale])
    random_rgb(least, least).save(folder / "a.png")
    assert evaluate(None, folder, [scale])[scale].images["a"].psnr > 0


@pytest.mark.parametrize("crop", ["0", "-5"])
def test_compare_refuses_a_bad_crop_before_reading_or_loading_anything(tmp_path: Path,
                                                                       crop: str) -> None:
    (tmp_path / "in.png").write_bytes(b"not a png")  # neither it nor the model is read
    result = CliRunner().invoke(app, ["compare", str(tmp_path / "in.png"), "--crop", crop,
                                      "-m", str(tmp_path / "none.safetensors")])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: invalid value for --crop: crop size {crop} is too small: at least 1 pixel"]


@pytest.mark.parametrize(("args", "says"), [
    ([], "at x1.001 the 64x48 image shrinks to its own size: every panel would be the image itself"),
    (["--no-from-original"], "at x1.001 the 64x48 image enlarges to its own size: every panel "
                             "would be the image itself"),
])
def test_compare_refuses_a_scale_that_rounds_back_to_the_image(folder: Path, tmp_path: Path,
                                                               tiny_model_file: str,
                                                               args: list[str], says: str) -> None:
    """x1.001 of a small image rounds to its own size: refused, as the sheet would be four
    copies of the image, each labelled inf dB, as if every method reproduced it exactly."""
    random_rgb(64, 48).save(folder / "a.png")
    out = tmp_path / "sheet.png"
    result = CliRunner().invoke(app, ["compare", str(folder / "a.png"), "-s", "1.001", "-o",
                                      str(out), "-m", tiny_model_file, "--device", "cpu", *args])
    assert result.exit_code == 2 and not out.exists()
    assert result.output.strip().splitlines() == [
        f"error: invalid value for --scale: {says}; use a larger scale"], result.output


@pytest.mark.parametrize(("name", "says"), [
    ("a.gif", "2 frames: only the first is read"),
    ("a.png", "transparent pixels are read as the colour stored under them"),
])
@pytest.mark.usefixtures("wide_console")
def test_compare_names_what_it_leaves_out_of_the_file(folder: Path, tmp_path: Path,
                                                      tiny_model_file: str, name: str,
                                                      says: str) -> None:
    """An animation's later frames and an image's transparency, which the sheet leaves out,
    are named in a note, as eval and training name the file."""
    first = random_rgb(32, 32)
    if name.endswith(".gif"):
        first.save(folder / name, save_all=True, append_images=[random_rgb(32, 32, seed=1)])
    else:
        rgba = first.convert("RGBA")
        rgba.putpixel((0, 0), (0, 0, 0, 0))
        rgba.save(folder / name)
    result = CliRunner().invoke(app, ["compare", str(folder / name), "-o", str(tmp_path / "s.png"),
                                      "-m", tiny_model_file, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert f"{folder / name}: {says}\n" in result.output


def test_each_score_is_the_protocols_on_that_image_alone(folder: Path, tiny_model) -> None:
    """Read one image at a time, eval still scores each as the protocol does (the degradation
    seeded by the image's name and scale): the same numbers as computed directly."""
    from drcn_plugin.degrade import Recipe, degraded_pair, seed_for
    from drcn_plugin.engine import Upscaler
    from drcn_plugin.imagefile import read_image8, read_y
    from drcn_plugin.imaging import make_pair, quantize8
    from drcn_plugin.metrics import psnr, ssim

    random_rgb(26, 21, seed=1).save(folder / "a.png")
    random_rgb(24, 30, seed=2).convert("L").save(folder / "b.png")
    up, recipe = Upscaler(tiny_model, device="cpu"), Recipe.parse("noise:5,jpeg:60")
    for degrade in (None, recipe):
        results = evaluate(up, folder, [2, 3], degrade=degrade)
        for s, name in ((s, n) for s in (2, 3) for n in ("a", "b")):
            if degrade is None:
                hr, _, ilr = make_pair(read_y(folder / f"{name}.png"), s)
            else:
                hr, ilr, _ = degraded_pair(read_image8(folder / f"{name}.png"), s, recipe,
                                           torch.Generator().manual_seed(seed_for(name, s)))
            sr = quantize8(up.run_y(ilr / 255.0).double() * 255.0)
            row = results[s].images[name]
            assert (row.bicubic_psnr, row.bicubic_ssim, row.psnr, row.ssim) == \
                (psnr(ilr, hr, s), ssim(ilr, hr, s), psnr(sr, hr, s), ssim(sr, hr, s))


@pytest.mark.parametrize("degrade", [None, "jpeg:75"])
def test_eval_holds_one_image_at_a_time(folder: Path, monkeypatch: pytest.MonkeyPatch,
                                        degrade: str | None) -> None:
    """A folder of camera photos would fill memory held all at once: when an image is read, no
    image read before it is alive any more."""
    import weakref

    from drcn_plugin import evaluation
    from drcn_plugin.degrade import Recipe

    for seed in range(4):
        random_rgb(24, 20, seed=seed).save(folder / f"{seed}.png")
    read, alive_at_read = {"read_y": evaluation.read_y, "read_image8": evaluation.read_image8}, []
    refs: list[weakref.ref] = []

    def counted(name: str):
        def reader(*args, **kwargs):
            alive_at_read.append(sum(r() is not None for r in refs))
            image = read[name](*args, **kwargs)
            refs.append(weakref.ref(image))
            return image
        return reader

    for name in read:
        monkeypatch.setattr(evaluation, name, counted(name))
    evaluate(None, folder, [2, 3], degrade=Recipe.parse(degrade) if degrade else None)
    assert len(alive_at_read) >= 4 and set(alive_at_read) == {0}, alive_at_read


@pytest.mark.usefixtures("wide_console")
def test_a_flat_image_both_reconstruct_exactly_gains_nothing(folder: Path, tmp_path: Path) -> None:
    """Bicubic and the model both exact (PSNR inf): the gain is +0.00, not inf - inf's +nan; the
    JSON keeps null for an infinite PSNR."""
    from PIL import Image

    Image.new("RGB", (24, 24), (90, 120, 200)).save(folder / "flat.png")
    out = tmp_path / "o.json"
    result = CliRunner().invoke(app, ["eval", "--dataset", str(folder), "-m", "bicubic",
                                      "-s", "2", "--json", str(out)])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.stdout.splitlines() if "x2" in line)
    assert "inf / 1.0000" in row and "nan" not in result.stdout.lower(), result.stdout
    assert json.loads(out.read_text())["2"]["psnr"] is None
    assert ScaleResult(2, math.inf, 1.0, math.inf, 1.0, 0.0, {}).gain == 0.0  # a model's gain


def test_an_image_too_large_to_score_is_refused_from_its_header_first(
        folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 12000x9000 header (a small file) among small images: one line naming it before any
    image is read or scored, from the header alone (as drcn's own process limits Pillow)."""
    import struct

    from helpers import hand_png
    from PIL import Image

    from drcn_plugin import evaluation
    from drcn_plugin.imagefile import memory_pixel_limit

    random_rgb(24, 24).save(folder / "a.png")
    (folder / "b.png").write_bytes(hand_png((12000, 9000), 8, 2, b""))
    assert struct.unpack(">II", (folder / "b.png").read_bytes()[16:24]) == (12000, 9000)
    monkeypatch.setattr(devices, "host_available_memory", lambda: 8 << 30)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", memory_pixel_limit())
    reads = []
    monkeypatch.setattr(evaluation, "read_y", lambda *a, **k: reads.append(a))
    result = CliRunner().invoke(app, ["eval", "--dataset", str(folder), "-m", "bicubic",
                                      "-s", "2"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "scoring " + str(folder / "b.png") + " (12000x9000)" in lines[0], lines
    assert "GiB of memory; 8.0 GiB is available" in lines[0] and reads == []


def test_per_depth_refuses_an_image_too_large_for_every_depth_before_scoring(
        folder: Path, tiny_model_file: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """--per-depth runs the network on the whole image and holds every depth's prediction: an
    image whose plain scoring fits but whose per-depth run does not is one line, before any
    image is scored (plain eval of the same folder runs)."""
    from drcn_plugin import evaluation

    random_rgb(64, 64).save(folder / "a.png")
    plain = evaluation._SCORING_BYTES_PER_PIXEL[False] * 64 * 64
    monkeypatch.setattr(devices, "host_available_memory", lambda: plain + 40 * 64 * 64)
    scored = []

    def score(*args: object) -> None:
        scored.append(args)
        raise LookupError("scored")

    monkeypatch.setattr(evaluation, "_score", score)
    result = CliRunner().invoke(app, ["eval", "--dataset", str(folder), "-m", tiny_model_file,
                                      "-s", "2", "--per-depth", "--device", "cpu"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and f"scoring {folder / 'a.png'} (64x64) at every depth" in lines[0]
    assert "available" in lines[0] and scored == []
    with pytest.raises(LookupError, match="scored"):  # the plain run gets to the scoring
        evaluate(None, folder, [2])
    assert len(scored) == 1


@pytest.mark.parametrize("args", [[], ["--per-depth", "--tta"], ["--plot", "p.png", "--tta"]])
def test_eval_of_a_hub_model_refuses_before_downloading_it(
        folder: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]) -> None:
    """The refusals that need no model (options, the dataset's files, memory) come before the
    Hub download, which can take minutes."""
    from drcn_plugin import hub

    random_rgb(200, 200).save(folder / "a.png")
    if not args:  # the memory refusal
        monkeypatch.setattr(devices, "host_available_memory", lambda: 1 << 20)
    downloads = []
    monkeypatch.setattr(hub, "_hub_folder", lambda *a, **k: downloads.append(a))
    monkeypatch.chdir(folder.parent)
    result = CliRunner().invoke(app, ["eval", "--dataset", str(folder), "-m", "hf:owner/name",
                                      "-s", "2", *args])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and downloads == [], result.output
    assert ("needs about" if not args else "self-ensemble") in lines[0], lines


def test_per_depth_on_a_gpu_counts_the_network_in_its_memory(
        tiny_model: torch.nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a GPU the whole-image run is held in the GPU's memory, the scoring in the host's."""
    from drcn_plugin import engine, memory
    from drcn_plugin.errors import OutOfMemoryError
    from drcn_plugin.evaluation import DatasetFile, check_scoring_memory

    upscaler = engine.Upscaler(tiny_model, device="cpu", precision="fp32")
    upscaler.device = torch.device("cuda", 0)
    files = [DatasetFile("a", Path("a.png"), (3, 1000, 1000))]
    room = {"cpu": 1 << 30, "cuda": 1 << 20}
    monkeypatch.setattr(memory, "_available_memory", lambda device: room[device.type])
    with pytest.raises(OutOfMemoryError, match=r"a.png \(1000x1000\) at every depth .* on cuda:0"):
        check_scoring_memory(files, False, upscaler)
    room["cuda"] = 1 << 30
    check_scoring_memory(files, False, upscaler)


@pytest.mark.parametrize("size", [(2, 2), (300, 300)])
def test_compare_of_a_hub_model_refuses_before_downloading_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: tuple[int, int]) -> None:
    """An image too small to shrink and score, or panels too large for memory: one line before
    the Hub download."""
    from drcn_plugin import hub

    random_rgb(*size).save(tmp_path / "in.png")
    monkeypatch.setattr(devices, "host_available_memory", lambda: 8 << 20)  # decodes it
    downloads = []
    monkeypatch.setattr(hub, "_hub_folder", lambda *a, **k: downloads.append(a))
    result = CliRunner().invoke(app, ["compare", str(tmp_path / "in.png"), "-s", "3",
                                      "-m", "hf:owner/name", "-m", "hf:owner/other"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and downloads == [], result.output
    assert ("too small" if size == (2, 2) else "needs about") in lines[0], lines


def test_a_file_cut_short_among_good_ones_is_named_before_any_is_scored(
        folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its header reads (so the size checks pass) but its pixels do not: one line naming it
    before the first image is scored, not after the images before it were."""
    from drcn_plugin import evaluation

    random_rgb(24, 24, seed=1).save(folder / "a.png")
    random_rgb(24, 24, seed=2).save(folder / "b.png")
    (folder / "b.png").write_bytes((folder / "b.png").read_bytes()[:200])
    scored = []
    monkeypatch.setattr(evaluation, "_score", lambda *a: scored.append(a))
    result = CliRunner().invoke(app, ["eval", "--dataset", str(folder), "-m", "bicubic",
                                      "-s", "2"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and str(folder / "b.png") in lines[0] and scored == [], lines


def test_running_out_of_memory_at_every_depth_is_one_line(
        folder: Path, tiny_model_file: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory taken by another process after the check: the allocator's error (a GPU's, here
    raised by hand) is the one line of an out-of-memory refusal, not a traceback."""
    from drcn_plugin.model import DRCN

    random_rgb(24, 24).save(folder / "a.png")
    forward = DRCN.forward

    def short_of_memory(self: DRCN, x: torch.Tensor, all_depths: bool = False) -> object:
        if all_depths:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(self, x)

    monkeypatch.setattr(DRCN, "forward", short_of_memory)
    result = CliRunner().invoke(app, ["eval", "--dataset", str(folder), "-m", tiny_model_file,
                                      "-s", "2", "--per-depth", "--device", "cpu"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "not enough memory for a 24x24 image at every depth" in lines[0]


@pytest.mark.parametrize(("target", "why"), [("loop", "Too many levels of symbolic links"),
                                             ("nowhere", "No such file or directory")])
def test_a_dataset_link_that_leads_nowhere_is_named_as_one(tmp_path: Path, target: str,
                                                           why: str) -> None:
    """A link in a loop or to a removed folder is named as a link that leads nowhere, not
    'dataset folder not found', as if mistyped."""
    (tmp_path / "loop").symlink_to(tmp_path / target)
    r = CliRunner().invoke(app, ["eval", "--dataset", str(tmp_path / "loop"), "-s", "2",
                                 "-m", "bicubic"])
    assert r.exit_code == 2 and r.output.strip() == (
        f"error: dataset folder {tmp_path / 'loop'} is a link that leads nowhere: {why}"), r.output
