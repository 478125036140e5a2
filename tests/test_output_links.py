"""Where results land when output names are links, other names of a file, or protected files:
written through a link to its target (as cp, ImageMagick and GIMP do), never over an input, a
link to nothing refused, a replaced file's mode kept."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from helpers import random_rgb, tiny, upscale
from PIL import Image
from typer.testing import CliRunner

from drcn_plugin import writing
from drcn_plugin.cli import app
from drcn_plugin.errors import BadOptionError
from drcn_plugin.training.runfolder import check_run_folder

pytestmark = [pytest.mark.usefixtures("wide_console"),
              pytest.mark.skipif(not hasattr(os, "symlink") or os.name == "nt",
                                 reason="POSIX links and modes")]


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_result_is_written_through_a_link_to_its_target(folder: Path,
                                                          tiny_model_file: str) -> None:
    """A named output file, or a result's place in the output folder, that is a link to a file
    elsewhere: the target gets the result and the link stays (not replaced by a regular file,
    the target left stale)."""
    random_rgb().save(folder / "a.png")
    elsewhere = folder.parent / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "big.png").write_bytes(b"old")
    link = folder.parent / "big.png"
    link.symlink_to(elsewhere / "big.png")
    r = upscale(str(folder / "a.png"), "-o", str(link), "--overwrite", "--model", tiny_model_file)
    assert r.exit_code == 0, r.output
    assert link.is_symlink() and Image.open(elsewhere / "big.png").size == (40, 32)
    assert sorted(p.name for p in elsewhere.iterdir()) == ["big.png"], "no part left"
    out = folder.parent / "out"
    out.mkdir()
    (elsewhere / "kept.png").write_bytes(b"old")
    (out / "a.png").symlink_to("../elsewhere/kept.png")  # relative, as ln -s makes them
    r = upscale(str(folder), "-o", str(out), "--overwrite", "--model", tiny_model_file)
    assert r.exit_code == 0, r.output
    assert (out / "a.png").is_symlink() and Image.open(elsewhere / "kept.png").size == (40, 32)


def test_a_write_makes_its_part_beside_the_file_a_link_leads_to(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The part is renamed over the link's target, so it is made in the target's folder: a
    rename from the link's folder fails across devices. Every writer shares this (``compare``'s
    sheet, charts, a training run's checkpoints and logs)."""
    made: list[Path] = []
    new_part = writing._new_part
    monkeypatch.setattr(writing, "_new_part", lambda p: (made.append(p), new_part(p))[1])
    (tmp_path / "disk").mkdir()
    (tmp_path / "disk" / "log.json").write_bytes(b"old")
    (tmp_path / "log.json").symlink_to("disk/log.json")
    writing.atomic_write_bytes(tmp_path / "log.json", b"{}")
    assert made == [tmp_path / "disk" / "log.json"]
    assert (tmp_path / "log.json").is_symlink() and (tmp_path / "disk" / "log.json").read_bytes() \
        == b"{}"


def test_a_link_to_nothing_is_refused_before_any_work(folder: Path, tiny_model_file: str) -> None:
    """Like GNU cp ("not writing through dangling symlink"): a link whose target is gone (a disk
    not mounted, a moved folder) is refused in one line, the link kept and nothing made where it
    points; with --overwrite it is not replaced, with --skip-existing not taken for a result."""
    random_rgb().save(folder / "a.png")
    link = folder.parent / "big.png"
    link.symlink_to(folder.parent / "card" / "big.png")
    for extra in ([], ["--overwrite"]):
        r = upscale(str(folder / "a.png"), "-o", str(link), *extra, "--model", tiny_model_file)
        assert r.exit_code == 2 and r.output.count("\n") == 1, r.output
        assert f"{link} is a link to {folder.parent / 'card' / 'big.png'}, which does not " \
               "exist" in r.output
    out = folder.parent / "out"
    out.mkdir()
    (out / "a.png").symlink_to("gone.png")
    for extra in (["--overwrite"], ["--skip-existing"]):
        r = upscale(str(folder), "-o", str(out), *extra, "--model", tiny_model_file)
        assert r.exit_code == 1 and "0 done, 0 skipped, 1 failed" in r.output, r.output
        assert "a link to gone.png, which does not exist" in r.output
    assert link.is_symlink() and (out / "a.png").is_symlink()
    assert sorted(p.name for p in out.iterdir()) == ["a.png"]
    assert sorted(p.name for p in folder.parent.iterdir()) == ["big.png", "in", "out"]
    with pytest.raises(writing.WriteError, match="which does not exist"):
        writing.atomic_write_bytes(out / "a.png", b"{}")


def test_a_link_in_a_loop_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "a.json").symlink_to("b.json")
    (tmp_path / "b.json").symlink_to("a.json")
    with pytest.raises(writing.WriteError, match="a link in a loop"):
        writing.atomic_write_bytes(tmp_path / "a.json", b"{}")
    assert (tmp_path / "a.json").is_symlink() and len(list(tmp_path.iterdir())) == 2


def test_an_output_that_leads_to_an_input_is_never_written(folder: Path,
                                                          tiny_model_file: str) -> None:
    """A result's place that is a link to another input, or the input's own name through a
    linked folder: refused even with --overwrite, the input unchanged (links are written
    through, so the resolved file is what is checked)."""
    random_rgb().save(folder / "a.png")
    random_rgb(seed=1).save(folder / "b.png")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    out = folder.parent / "out"
    out.mkdir()
    (out / "a.png").symlink_to(folder / "b.png")
    r = upscale(str(folder), "-o", str(out), "--overwrite", "--model", tiny_model_file)
    assert r.exit_code == 1 and f"its output {out / 'a.png'} would replace an input" in r.output
    (folder.parent / "alias").symlink_to("in")
    r = upscale(str(folder / "a.png"), "-o", str(folder.parent / "alias" / "a.png"),
                "--overwrite", "--model", tiny_model_file)
    assert r.exit_code == 2 and "would replace an input" in r.output, r.output
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_replacing_keeps_the_replaced_files_mode(folder: Path, tiny_model_file: str) -> None:
    """--overwrite replaces a result as cp, ImageMagick and GIMP do: the file keeps its mode
    (a shared folder's 0664 stays group-writable), through a link too; a new result takes its
    input's bits, which the umask limits as it does every new file."""
    random_rgb().save(folder / "a.png")
    os.chmod(folder / "a.png", 0o644)
    old = folder.parent / "old.png"
    old.write_bytes(b"old")
    os.chmod(old, 0o664)
    (folder.parent / "link.png").symlink_to("old.png")
    for name in ("old.png", "link.png"):
        r = upscale(str(folder / "a.png"), "-o", str(folder.parent / name), "--overwrite",
                    "--model", tiny_model_file)
        assert r.exit_code == 0, r.output
        assert mode_of(old) == 0o664 and Image.open(old).size == (40, 32)
    umask = os.umask(0o077)
    try:
        r = upscale(str(folder / "a.png"), "-o", str(folder.parent / "new.png"), "--model",
                    tiny_model_file)
    finally:
        os.umask(umask)
    assert r.exit_code == 0 and mode_of(folder.parent / "new.png") == 0o600, r.output


def test_a_read_only_file_is_not_replaced(folder: Path, tiny_model_file: str) -> None:
    """A write-protected result is not replaced even with --overwrite (cp, ImageMagick and GIMP
    stop there too; the rename would not, the folder being writable): the file's job fails
    before its upscale, as for an existing file; --skip-existing still skips it. Every writer
    refuses it."""
    random_rgb().save(folder / "a.png")
    kept = folder.parent / "kept.png"
    kept.write_bytes(b"old")
    os.chmod(kept, 0o444)
    r = upscale(str(folder / "a.png"), "-o", str(kept), "--overwrite", "--model", tiny_model_file)
    assert r.exit_code == 1 and "0 done, 0 skipped, 1 failed" in r.output, r.output
    assert f"{kept} is read-only: make it writable" in r.output and kept.read_bytes() == b"old"
    r = upscale(str(folder / "a.png"), "-o", str(kept), "--skip-existing", "--model",
                tiny_model_file)
    assert r.exit_code == 0 and "0 done, 1 skipped" in r.output, r.output
    with pytest.raises(writing.WriteError, match="is read-only"):
        writing.atomic_write_bytes(kept, b"{}")
    assert kept.read_bytes() == b"old" and sorted(p.name for p in folder.parent.iterdir()) == \
        ["in", "kept.png"]


@pytest.mark.parametrize(("command", "flag"), [("eval", "--json"), ("eval", "--plot"),
                                               ("compare", "-o"), ("plot-train", "-o")])
def test_a_read_only_result_is_refused_as_existing_first(
        folder: Path, tiny_model_file: str, command: str, flag: str) -> None:
    """A write-protected file the command would not replace anyway (no --overwrite) exists:
    that is what the user is told first; with --overwrite its protection is. Nothing is
    written either way (its mode has no write bits, so root is refused too)."""
    random_rgb(24, 24).save(folder / "a.png")
    (folder / "log.json").write_text('{"history": []}')
    kept = folder.parent / ("kept.json" if flag == "--json" else "kept.png")
    kept.write_bytes(b"old")
    os.chmod(kept, 0o444)
    first = {"eval": ["eval", "--dataset", str(folder), "-m", tiny_model_file, "-s", "2"],
             "compare": ["compare", str(folder / "a.png"), "-s", "2", "-m", tiny_model_file],
             "plot-train": ["plot-train", str(folder / "log.json")]}[command]
    r = CliRunner().invoke(app, [*first, flag, str(kept)])
    assert r.exit_code == 2 and f"{kept} exists" in r.output and "read-only" not in r.output, \
        r.output
    r = CliRunner().invoke(app, [*first, flag, str(kept), "--overwrite"])
    assert r.exit_code == 2 and f"{kept} is read-only: make it writable" in r.output, r.output
    assert kept.read_bytes() == b"old" and mode_of(kept) == 0o444
    assert sorted(p.name for p in folder.parent.iterdir()) == ["in", kept.name]


def test_compare_writes_its_sheet_through_a_link(folder: Path, tiny_model_file: str) -> None:
    """``drcn compare`` shares the writer: its sheet goes through a link, and a link to nothing
    is one line before the upscale."""
    random_rgb(48, 48).save(folder / "a.png")
    (folder.parent / "sheets").mkdir()
    (folder.parent / "sheets" / "s.png").write_bytes(b"old")
    link = folder.parent / "s.png"
    link.symlink_to("sheets/s.png")
    common = ["compare", str(folder / "a.png"), "--crop", "24", "--model", tiny_model_file]
    r = CliRunner().invoke(app, [*common, "-o", str(link), "--overwrite"])
    assert r.exit_code == 0, r.output
    assert link.is_symlink() and Image.open(folder.parent / "sheets" / "s.png").format == "PNG"
    (folder.parent / "gone.png").symlink_to("nowhere/s.png")
    r = CliRunner().invoke(app, [*common, "-o", str(folder.parent / "gone.png")])
    assert r.exit_code == 2 and "which does not exist" in r.output, r.output


def test_two_results_never_land_on_one_file(folder: Path, tiny_model_file: str) -> None:
    """A result's place that is a link to another result's file: written through, one result
    would replace the other's (both reported done); that job is refused and the other's result
    kept, as two results sharing a name are given two names."""
    random_rgb().save(folder / "a.png")
    random_rgb(seed=1).save(folder / "b.png")
    out = folder.parent / "out"
    out.mkdir()
    (out / "b.png").write_bytes(b"old")
    (out / "a.png").symlink_to("b.png")
    r = upscale(str(folder), "-o", str(out), "--overwrite", "--model", tiny_model_file)
    assert r.exit_code == 1 and "1 done, 0 skipped, 1 failed" in r.output, r.output
    assert f"its output {out / 'a.png'} leads to {out / 'b.png'}, another result" in r.output
    alone = folder.parent / "alone"
    assert upscale(str(folder / "b.png"), "-o", str(alone), "--model", tiny_model_file).exit_code == 0
    assert (out / "a.png").is_symlink()
    assert Image.open(out / "b.png").tobytes() == Image.open(alone / "b.png").tobytes()


def test_a_training_run_folder_with_a_link_to_nothing_is_refused_before_its_first_step(
        tmp_path: Path) -> None:
    """A run's files share the writer: a link among them that leads nowhere is refused when the
    run is checked, not at its first checkpoint; --overwrite removes it as it does the rest."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "log.json").symlink_to("gone/log.json")
    cfg = tiny(tmp_path, out)
    with pytest.raises(BadOptionError, match="log.json is a link to gone/log.json, which does "
                                             "not exist"):
        check_run_folder(cfg, resume=False, overwrite=False)
    check_run_folder(cfg, resume=False, overwrite=True)
