"""``drcn upscale`` / ``drcn compare``: outputs, metadata, never losing data, bad input, torchrun."""

from __future__ import annotations

import errno
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import DATA, upscale
from PIL import Image
from typer.testing import CliRunner

from drcn_plugin import writing
from drcn_plugin.cli import app
from drcn_plugin.compare import compare_panels
from drcn_plugin.degrade import Recipe
from drcn_plugin.engine import Upscaler

runner = CliRunner()


@pytest.fixture()
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    base = Image.open(DATA / "Set5" / "bird.png").convert("RGB").crop((0, 0, 48, 40))
    base.save(folder / "a.png")
    base.save(folder / "b.jpg", quality=92)
    return folder


def test_folder_goes_beside_not_inside(photos: Path, tiny_model_file: str) -> None:
    r = upscale(str(photos), "--scale", "2.5", "--model", tiny_model_file)
    assert r.exit_code == 0, r.output
    out = photos.parent / "photos-drcn-x2.5"
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.jpg"]
    assert Image.open(out / "a.png").size == (120, 100)
    assert sorted(p.name for p in photos.iterdir()) == ["a.png", "b.jpg"], "input folder untouched"
    assert "2 done" in r.output


def test_never_overwrites_unless_asked(photos: Path, tiny_model_file: str) -> None:
    out = photos.parent / "out"
    assert upscale(str(photos / "a.png"), "-o", str(out), "--model", tiny_model_file).exit_code == 0
    target = out / "a.png"
    target.write_bytes(b"precious")
    r = upscale(str(photos / "a.png"), "-o", str(out), "--model", tiny_model_file)
    assert r.exit_code == 1 and "exists (use --overwrite or --skip-existing)" in r.output
    assert target.read_bytes() == b"precious"
    r = upscale(str(photos / "a.png"), "-o", str(out), "--skip-existing", "--model", tiny_model_file)
    assert r.exit_code == 0 and "1 skipped" in r.output and target.read_bytes() == b"precious"
    r = upscale(str(photos / "a.png"), "-o", str(out), "--overwrite", "--model", tiny_model_file)
    assert r.exit_code == 0 and Image.open(target).size == (96, 80)
    # The input itself is never replaced, even with --overwrite.
    before = (photos / "a.png").read_bytes()
    r = upscale(str(photos / "a.png"), "-o", str(photos), "--overwrite", "--model", tiny_model_file)
    assert r.exit_code == 2 and "holds the inputs" in r.output
    assert (photos / "a.png").read_bytes() == before


def test_bad_files_do_not_stop_the_batch(photos: Path, tiny_model_file: str) -> None:
    (photos / "empty.png").write_bytes(b"")
    (photos / "text.jpg").write_text("not an image")
    good = (photos / "a.png").read_bytes()
    (photos / "truncated.png").write_bytes(good[: len(good) // 2])
    r = upscale(str(photos), "--model", tiny_model_file)
    assert r.exit_code == 1
    for name in ("empty.png", "text.jpg", "truncated.png"):
        assert any(name in line and "error" in line for line in r.output.splitlines()), name
    assert "Traceback" not in r.output
    out = photos.parent / "photos-drcn-x2"
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.jpg"]


def test_pixel_count_alone_does_not_refuse_what_memory_holds(photos: Path, tiny_model_file: str,
                                                             monkeypatch, capsys) -> None:
    """Pillow's pixel limit (89 MP warns, 179 MP refuses) is not drcn's: a 100 MP photo fits in
    memory. a.png has 1,920 pixels, between the warning and the error of a 1,000-pixel limit."""
    from drcn_plugin.cli import main

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    r = upscale(str(photos / "a.png"), "-o", str(photos / "w"), "--model", tiny_model_file)
    assert r.exit_code == 0 and "decompression" not in r.output, r.output
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # over twice the limit: Pillow refuses
    r = upscale(str(photos / "a.png"), "-o", str(photos / "e"), "--model", tiny_model_file)
    assert r.exit_code == 1 and "MAX_IMAGE_PIXELS" in r.output and "Traceback" not in r.output
    monkeypatch.setattr(sys, "argv", ["drcn", "upscale", str(photos / "a.png"), "-o",
                                      str(photos / "c"), "--model", tiny_model_file])
    with pytest.raises(SystemExit) as exit_:
        main()  # the console script owns its process and checks memory instead
    assert exit_.value.code == 0, capsys.readouterr().err
    assert Image.MAX_IMAGE_PIXELS == 500  # as main() found it
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    assert Image.open(photos / "c" / "a.png").size == (96, 80)


def test_a_decode_that_cannot_fit_is_refused_from_the_header(photos: Path, tiny_model_file: str,
                                                             monkeypatch) -> None:
    from PIL import ImageFile

    from drcn_plugin import devices, imagefile

    loads = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda im: loads.append(im) or real_load(im))
    need = 48 * 40 * imagefile.DECODE_BYTES_PER_PIXEL
    monkeypatch.setattr(devices, "host_available_memory", lambda: need - 1)
    with pytest.raises(imagefile.OutOfMemoryError, match="a.png: a 48x40 image needs"):
        imagefile.read_image(photos / "a.png")
    assert not loads, "refused before any pixel was decoded"
    r = upscale(str(photos / "a.png"), "--model", tiny_model_file)
    assert r.exit_code == 1 and "to decode" in r.output and "Traceback" not in r.output
    monkeypatch.setattr(devices, "host_available_memory", lambda: need)
    assert imagefile.read_image(photos / "a.png")[0].shape == (40, 48, 3) and loads


def test_an_image_nested_in_a_file_is_checked_before_it_is_decoded(photos: Path,
                                                                   tiny_model_file: str,
                                                                   monkeypatch, capsys) -> None:
    """An icon's directory says 16x16 and its PNG frame is 200x160: the header check sees the
    16x16, so in drcn's process Pillow's own check of the frame must stand, at a limit set from
    the memory available (here room for a 100x80 decode), and refuse it before it is decoded.
    The console script leaves Pillow's process-wide limit as it found it."""
    import struct

    from PIL import ImageFile

    from drcn_plugin import devices
    from drcn_plugin.cli import main
    from drcn_plugin.imagefile import DECODE_BYTES_PER_PIXEL

    frame = io.BytesIO()
    Image.open(photos / "a.png").resize((200, 160)).save(frame, "PNG")
    (photos / "lie.ico").write_bytes(struct.pack("<3H", 0, 1, 1) + struct.pack(
        "<4B2H2I", 16, 16, 0, 0, 1, 32, len(frame.getvalue()), 22) + frame.getvalue())
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after
    before = Image.MAX_IMAGE_PIXELS
    monkeypatch.setattr(devices, "host_available_memory",
                        lambda: 100 * 80 * DECODE_BYTES_PER_PIXEL)
    loads = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda im: loads.append(im) or real_load(im))
    monkeypatch.setattr(sys, "argv", ["drcn", "upscale", str(photos / "lie.ico"), "-o",
                                      str(photos / "out"), "--model", tiny_model_file])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and "lie.ico" in err and "Traceback" not in err, err
    assert not loads, "refused before the frame was decoded"
    assert before == Image.MAX_IMAGE_PIXELS


def test_refuses_bad_options(photos: Path, tiny_model_file: str) -> None:
    for scale in ("0.5", "17"):
        r = upscale(str(photos), "--scale", scale, "--model", tiny_model_file)
        assert r.exit_code == 2 and "out of range" in r.output
    r = upscale(str(photos), "--model", "no-such-model")
    assert r.exit_code == 2 and "unknown model" in r.output and "Traceback" not in r.output
    r = upscale(str(photos / "missing*.png"), "--model", tiny_model_file)
    assert r.exit_code == 1 and "no image files" in r.output
    r = upscale(str(photos), "--format", "gif", "--model", tiny_model_file)
    assert r.exit_code == 2 and "--format" in r.output


def test_metadata_orientation_icc_dpi_16bit_alpha(tmp_path: Path, tiny_model_file: str) -> None:
    src = tmp_path / "in"
    src.mkdir()
    img = Image.open(DATA / "Set5" / "bird.png").convert("RGB").crop((0, 0, 40, 24))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    cms = pytest.importorskip("PIL.ImageCms")
    icc = cms.ImageCmsProfile(cms.createProfile("sRGB")).tobytes()  # travels byte for byte
    img.save(src / "rot.jpg", exif=exif.tobytes(), icc_profile=icc, dpi=(300, 300))
    Image.fromarray((np.arange(24 * 40).reshape(24, 40) * 60).astype(np.uint16)).save(src / "g16.png")
    Image.fromarray(np.dstack([np.asarray(img), np.full((24, 40), 77, np.uint8)])).save(src / "a.png")
    out = tmp_path / "out"
    r = upscale(str(src), "-o", str(out), "--model", tiny_model_file)
    assert r.exit_code == 0, r.output
    rot = Image.open(out / "rot.jpg")
    assert rot.size == (48, 80), "EXIF orientation applied (portrait)"
    assert rot.getexif().get(0x0112, 1) == 1
    assert rot.info.get("icc_profile") == icc
    assert round(rot.info["dpi"][0]) == 600
    g16 = Image.open(out / "g16.png")
    assert g16.mode.startswith("I") and np.asarray(g16).max() > 255
    alpha = Image.open(out / "a.png")
    assert alpha.mode == "RGBA" and np.asarray(alpha)[..., 3].min() == 77
    r = upscale(str(src / "a.png"), "-o", str(tmp_path / "j"), "--format", "jpg", "--model", tiny_model_file)
    assert r.exit_code == 1 and "alpha" in r.output


def test_interrupted_or_full_disk_leaves_no_partial_file(photos: Path, tiny_model_file: str,
                                                        monkeypatch) -> None:
    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writing.os, "fsync", disk_full)
    out = photos.parent / "out"
    r = upscale(str(photos / "a.png"), "-o", str(out), "--model", tiny_model_file)
    assert r.exit_code == 1 and "disk full" in r.output
    assert list(out.iterdir()) == [], "no half-written file, no temporary left behind"
    r = upscale(str(photos), "-o", str(out), "--model", tiny_model_file)  # the batch stops there
    assert r.exit_code == 1 and "stopped: the disk is full; 0 of 2 files written, 1 not " \
        "started" in r.output and r.output.count("disk full while writing") == 1, r.output

    def interrupted(fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(writing.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        writing.atomic_write_bytes(out / "x.json", b"{}")
    assert list(out.iterdir()) == []
    r = upscale(str(photos), "-o", str(out), "--model", tiny_model_file)  # Ctrl-C mid-batch
    assert r.exit_code == 130 and list(out.iterdir()) == []
    assert "interrupted: 0 of 2 files written" in r.output and "--skip-existing" in r.output


def test_compare_sheet(tmp_path: Path, tiny_model_file: str) -> None:
    src = tmp_path / "bird.png"
    shutil.copy(DATA / "Set5" / "bird.png", src)
    r = runner.invoke(app, ["compare", str(src), "--scale", "3", "--crop", "64",
                            "--model", tiny_model_file])
    assert r.exit_code == 0, r.output
    sheet = Image.open(tmp_path / "bird-compare-x3.png")
    assert sheet.width == 4 * 128 + 5 * 8, "nearest, bicubic, DRCN and the original, zoomed 2x"


def test_torchrun_splits_files_across_two_processes(tmp_path: Path, tiny_model_file: str) -> None:
    src = tmp_path / "many"
    src.mkdir()
    base = Image.open(DATA / "Set5" / "head.png").convert("RGB").crop((0, 0, 32, 32))
    for i in range(5):
        base.save(src / f"{i}.png")
    (src / "5.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))  # one rank's bad file
    drcn = Path(sys.executable).with_name("drcn")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
         "--master-port", "29517", str(drcn), "upscale", str(src), "--model", tiny_model_file],
        capture_output=True, text=True, env=env, timeout=300)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, "the bad file makes the run exit 1"
    out = tmp_path / "many-drcn-x2"
    assert sorted(p.name for p in out.iterdir()) == [f"{i}.png" for i in range(5)]
    assert "5 done" in text and "1 failed" in text, text[-2000:]
    # torchrun reports a non-zero exit with its own launcher traceback; none comes from drcn
    assert "drcn_plugin" not in text


def test_scale_lists_as_the_paper_writes_them() -> None:
    from drcn_plugin.cli import expand_multi_scale

    assert expand_multi_scale(["eval", "--scale", "2", "3", "4", "--json", "x"]) == [
        "eval", "--scale", "2", "--scale", "3", "--scale", "4", "--json", "x"]
    assert expand_multi_scale(["upscale", "--scale", "2", "3"]) == ["upscale", "--scale", "2", "3"]
    assert expand_multi_scale(["eval", "-s", "2.5", "3"]) == ["eval", "-s", "2.5", "-s", "3"]
    assert expand_multi_scale(["train", "--scale", "2", "--steps", "3"]) == [
        "train", "--scale", "2", "--steps", "3"]
    assert expand_multi_scale(["eval", "--scale=2", "3"]) == ["eval", "--scale=2", "--scale", "3"]


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_results_get_the_usual_file_mode(tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)  # the umask at the time of writing, not at import
    try:
        writing.atomic_write_bytes(tmp_path / "r.json", b"{}")
    finally:
        os.umask(old)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == mode


def test_compare_degrades_the_small_image_before_every_method(tiny_model_file: str) -> None:
    bird = np.asarray(Image.open(DATA / "Set5" / "bird.png").convert("RGB"))  # 288 px: x3 even
    up = Upscaler(tiny_model_file, device="cpu")
    clean = compare_panels(bird, 3, up, from_original=True)
    jpeg = compare_panels(bird, 3, up, from_original=True, degrade=Recipe.parse("jpeg:75"))
    small = clean["nearest"][::3, ::3]  # nearest x3 repeats each pixel of the shrunk image
    buf = io.BytesIO()
    Image.fromarray(small).save(buf, "JPEG", quality=75, subsampling=2)  # 4:2:0, like a camera
    expected = np.asarray(Image.open(buf))
    assert np.array_equal(jpeg["nearest"][::3, ::3], expected)
    assert np.array_equal(jpeg["original"], clean["original"])
    assert not np.array_equal(jpeg["DRCN"], clean["DRCN"])
    assert np.array_equal(jpeg["DRCN"], up.upscale(expected, size=bird.shape[:2]))


def test_compare_degrade_gives_the_same_picture_every_time(tmp_path: Path,
                                                           tiny_model_file: str) -> None:
    src = tmp_path / "bird.png"
    Image.open(DATA / "Set5" / "bird.png").crop((0, 0, 120, 120)).save(src)
    common = ["compare", str(src), "--scale", "3", "--crop", "32", "--model", tiny_model_file]
    for name, extra in (("a", ["--degrade", "noise:1-9,jpeg:40-90"]),
                        ("b", ["--degrade", "noise:1-9,jpeg:40-90"]),
                        ("seed", ["--degrade", "noise:1-9,jpeg:40-90", "--seed", "1"]),
                        ("clean", [])):
        r = runner.invoke(app, [*common, *extra, "-o", str(tmp_path / f"{name}.png")])
        assert r.exit_code == 0, r.output
    sheet = {n: (tmp_path / f"{n}.png").read_bytes() for n in ("a", "b", "seed", "clean")}
    assert sheet["a"] == sheet["b"]
    assert len(set(sheet.values())) == 3
    bad = runner.invoke(app, [*common, "--degrade", "jpeg:500", "-o", str(tmp_path / "bad.png")])
    assert bad.exit_code == 2 and "jpeg takes values from 1 to 100" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "bad.png").exists()


@pytest.mark.parametrize(("size", "args", "message"), [
    (60, ["--degrade", "noise:5", "--seed", str(10**20)], "--seed"),
    (60, ["-o", "{tmp}/sheet.jpg"], "name it .png"),
    (60, ["-o", "{tmp}/sheet"], "name it .png"),
    (1, [], "too small to shrink x3 and score (at least 7x7 pixels)"),
])
def test_compare_refuses_what_it_cannot_do_in_one_line(tmp_path: Path, tiny_model_file: str,
                                                       size: int, args: list[str],
                                                       message: str) -> None:
    src = tmp_path / "bird.png"
    Image.open(DATA / "Set5" / "bird.png").crop((0, 0, size, size)).save(src)
    before = sorted(tmp_path.iterdir())
    r = runner.invoke(app, ["compare", str(src), "--scale", "3", "--model", tiny_model_file,
                            *[a.format(tmp=tmp_path) for a in args]])
    assert r.exit_code == 2, r.output
    assert message in r.stderr and "Traceback" not in r.output
    assert sorted(tmp_path.iterdir()) == before  # nothing written


def test_compare_gives_one_panel_per_model(tiny_model_file: str, tiny_model) -> None:
    bird = np.asarray(Image.open(DATA / "Set5" / "bird.png").convert("RGB"))[:96, :96]
    first, second = Upscaler(tiny_model_file, device="cpu"), Upscaler(tiny_model, device="cpu")
    panels = compare_panels(bird, 3, {"first": first, "second": second}, from_original=True)
    assert list(panels) == ["nearest", "bicubic", "first", "second", "original"]
    alone = compare_panels(bird, 3, second, from_original=True)
    assert np.array_equal(panels["second"], alone["DRCN"])
    assert not np.array_equal(panels["first"], panels["second"])


def test_compare_labels_a_model_file_by_its_name_unless_two_read_the_same() -> None:
    from drcn_plugin.compare import panel_labels

    assert panel_labels(["drcn-lite", "/runs/a/best.safetensors", "hf:u/m", "drcn-lite"]) == {
        "drcn-lite": "drcn-lite", "/runs/a/best.safetensors": "best.safetensors", "hf:u/m": "hf:u/m"}
    both = ["/runs/a/best.safetensors", "runs/b/best.safetensors"]
    assert panel_labels(both) == {spec: spec for spec in both}
    assert panel_labels(["."]) == {".": Path.cwd().name}  # a model folder given as "."


@pytest.mark.parametrize(("args", "says"), [
    (["upscale", "IMG", "--scale", "x"], "Invalid value for '--scale' / '-s'"),
    (["upscale", "IMG", "--denoise", "nan"], "invalid value for --denoise: denoise strength nan"),
    (["upscale", "IMG", "--bogus"], "No such option: --bogus"),
    (["eval", "--dataset", "IMG", "--denoise", "2"], "invalid value for --denoise"),
    (["eval", "--dataset", "IMG", "--device", "bogus"], "invalid value for --device: unknown"),
    (["eval", "--dataset", "IMG", "--precision", "fp8"], "invalid value for --precision"),
    (["eval", "--dataset", "IMG", "-m", "drcn-lit"], "unknown model 'drcn-lit' (did you mean"),
    (["eval", "--dataset", "IMG", "-m", "hf:a/b@"], "bad Hub spec 'hf:a/b@'"),
    (["eval", "--dataset", "IMG", "--degrade", "foo:1"], "invalid value for --degrade: "),
    (["eval", "--dataset", "IMG", "-m", "bicubic", "--tta"], "invalid value for --tta: "),
    (["eval", "--dataset", "IMG", "-m", "bicubic", "--per-depth"], "invalid value for --per-depth"),
    (["eval", "--dataset", "IMG", "-m", "bicubic", "--device", "bogus"], "unknown device 'bogus'"),
    (["eval", "--dataset", "IMG", "-m", "bicubic", "--precision", "fp8"], "unknown precision"),
    (["nosuch"], "No such command 'nosuch'"),
    (["upscale", "IMG", "--scale"], "requires an argument. (see drcn upscale --help)"),
    (["gimp", "install", "--bogus"], "No such option: --bogus (see drcn gimp install --help)"),
    (["upscale", "IMG", "-o", "q" * 300], "File name too long"),
    (["upscale", "IMG", "-o", ""], "'--output' / '-o': an empty path (an unset variable?)"),
    (["eval", "--dataset", ""], "'--dataset': an empty path (an unset variable?)"),
    (["eval", "--dataset", "IMG", "--json", ""], "'--json': an empty path"),
    (["eval", "--dataset", "IMG", "--plot", ""], "'--plot': an empty path"),
    (["compare", ""], "'image': an empty path (an unset variable?)"),
    (["compare", "IMG", "-o", ""], "'--output' / '-o': an empty path"),
    (["plot-train", ""], "'run': an empty path (an unset variable?)"),
    (["plot-train", "IMG", "-o", ""], "'--output' / '-o': an empty path"),
])
def test_usage_mistakes_are_one_line_from_the_console_script(photos: Path, monkeypatch, capsys,
                                                             args: list[str], says: str) -> None:
    from drcn_plugin.cli import main

    monkeypatch.setattr(sys, "argv", ["drcn", *(str(photos / "a.png") if a == "IMG" else a
                                                for a in args)])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.startswith("error: ") and says in err and err.count("\n") == 1, err
    assert not list(photos.glob("*_x*"))  # nothing written


def test_version_is_the_packages(monkeypatch, capsys) -> None:
    from importlib.metadata import version

    from drcn_plugin.cli import main

    monkeypatch.setattr(sys, "argv", ["drcn", "--version"])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"drcn-plugin {version('drcn-plugin')}\n"


@pytest.mark.parametrize("scale", [1.0, 0.5, 17.0, float("nan")])
def test_compare_refuses_a_scale_without_panels_in_the_library_too(tiny_model_file: str,
                                                                    scale: float) -> None:
    from drcn_plugin.errors import BadOptionError

    image = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(BadOptionError, match="use more than 1, at most 16"):
        compare_panels(image, scale, Upscaler(tiny_model_file, device="cpu"), True)


@pytest.mark.usefixtures("wide_console")
def test_summary_names_files_as_the_user_did(photos: Path, tmp_path: Path, tiny_model_file: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A file under the working folder is listed by its relative path, one elsewhere in full."""
    monkeypatch.chdir(photos.parent)
    r = upscale("photos", "-o", str(tmp_path / "out"), "--model", tiny_model_file)
    assert r.exit_code == 0, r.output
    rows = [line for line in r.output.splitlines() if " done " in line]
    assert [row.split()[1] for row in rows] == [str(Path("photos", n)) for n in ("a.png", "b.jpg")]
    monkeypatch.chdir(tmp_path / "out")
    r = upscale(str(photos / "a.png"), "-o", str(tmp_path / "out2"), "--model", tiny_model_file)
    assert r.exit_code == 0 and str(photos / "a.png") in r.output, r.output


@pytest.mark.parametrize("module", ["drcn_plugin", "drcn_plugin.cli"])
def test_python_m_runs_the_command(module: str) -> None:
    """``python -m drcn_plugin.cli`` runs the command, so a user's script that calls it never
    goes on, on a status 0, as if a command that did nothing had worked."""
    run = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True,
                         text=True, timeout=120)
    assert (run.returncode, run.stdout.split()[:1]) == (0, ["drcn-plugin"]), run.stderr
