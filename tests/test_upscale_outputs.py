"""``drcn upscale`` output places under hostile conditions: reruns, results beside their inputs."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from helpers import random_rgb, upscale
from PIL import Image

pytestmark = pytest.mark.usefixtures("wide_console")


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_results_beside_their_inputs_are_not_upscaled_again(folder: Path,
                                                            tiny_model_file: str) -> None:
    """-o on the input folder with a --suffix: the next run (resumed with --skip-existing, or
    redone with --overwrite) takes the first run's results for results, not for inputs."""
    random_rgb().save(folder / "a.png")
    random_rgb(seed=1).save(folder / "b.jpg")
    args = (str(folder), "-o", str(folder), "--suffix", "_x", "--model", tiny_model_file)
    assert upscale(*args).exit_code == 0
    first = names(folder)
    assert first == ["a.png", "a_x.png", "b.jpg", "b_x.jpg"]
    r = upscale(*args, "--skip-existing")
    assert r.exit_code == 0 and "0 done, 2 skipped, 0 failed" in r.output, r.output
    r = upscale(*args, "--overwrite")
    assert r.exit_code == 0 and "2 done, 0 skipped, 0 failed" in r.output, r.output
    assert names(folder) == first


def test_an_output_folder_that_is_a_broken_link_is_one_line_before_any_work(
        folder: Path, tiny_model_file: str) -> None:
    """A link to nothing where the output folder (or a subfolder of it) goes: one line before
    the upscale, not one "File exists" per file after it."""
    (folder / "sub").mkdir()
    random_rgb().save(folder / "sub" / "a.png")
    out = folder.parent / "out"
    out.symlink_to(folder.parent / "nowhere")
    r = upscale(str(folder), "-r", "-o", str(out), "--model", tiny_model_file)
    assert r.exit_code == 2 and r.output.startswith("error: invalid value for --output: ")
    assert "is a broken link, not an output folder" in r.output and r.output.count("\n") == 1
    out.unlink()
    out.mkdir()
    (out / "sub").symlink_to(folder.parent / "nowhere")
    r = upscale(str(folder), "-r", "-o", str(out), "--model", tiny_model_file)
    assert r.exit_code == 1 and r.output.count("\n") == 1, "nothing to do: no empty table"
    assert f"{out / 'sub'} is a broken link (1 file not upscaled)" in r.output
    assert names(out) == ["sub"] and not (folder.parent / "nowhere").exists()


def test_an_output_folder_inside_the_scanned_one_takes_only_results_for_results(
        folder: Path, tiny_model_file: str) -> None:
    """``-r -o in/sub``: the photos already in ``in/sub`` are inputs like the others; only the
    files where another input's result goes are an earlier run's results."""
    (folder / "sub").mkdir()
    random_rgb().save(folder / "a.png")
    random_rgb(seed=1).save(folder / "sub" / "b.png")
    args = (str(folder), "-r", "-o", str(folder / "sub"), "--model", tiny_model_file)
    r = upscale(*args)
    assert r.exit_code == 0 and "2 done, 0 skipped, 0 failed" in r.output, r.output
    assert names(folder / "sub") == ["a.png", "b.png", "sub"]
    assert names(folder / "sub" / "sub") == ["b.png"]
    r = upscale(*args, "--skip-existing")
    assert r.exit_code == 0 and "0 done, 2 skipped, 0 failed" in r.output, r.output


def test_broken_links_and_missing_inputs_are_named(folder: Path, tiny_model_file: str) -> None:
    """A link to nothing in a scanned folder fails as its own job, saying where it points; a
    named input that is not there is one line, with no empty table after it."""
    random_rgb().save(folder / "a.png")
    (folder / "gone.png").symlink_to("elsewhere.png")
    r = upscale(str(folder), "--model", tiny_model_file)
    assert r.exit_code == 1 and "1 done, 0 skipped, 1 failed" in r.output, r.output
    assert "gone.png: a broken link (to elsewhere.png)" in r.output
    assert "Traceback" not in r.output and "unexpected" not in r.output
    r = upscale(str(folder / "gone.png"), "--model", tiny_model_file)
    assert r.exit_code == 1 and "gone.png: a broken link (to elsewhere.png)" in r.output
    missing = str(folder / "missing.png")
    r = upscale(missing, "--model", tiny_model_file)
    assert r.exit_code == 1 and r.output == f"error: {missing}: no such file or folder\n"
    os.mkfifo(folder / "pipe.png")  # named: a clear line, not "no such file", and no hang
    r = upscale(str(folder / "pipe.png"), "--model", tiny_model_file)
    assert r.exit_code == 1 and "pipe.png: not a file or folder (a pipe" in r.output, r.output


def test_an_empty_input_is_one_line_not_the_current_folder(folder: Path, tiny_model_file: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """``drcn upscale "$UNSET"`` names the mistake; it does not upscale the folder it runs in."""
    random_rgb().save(folder / "a.png")
    monkeypatch.chdir(folder)
    r = upscale("", "--model", tiny_model_file)
    assert r.exit_code == 1 and r.output == "error: '': an empty path (an unset variable?)\n"
    assert names(folder.parent) == ["in"]
    r = upscale("", "a.png", "--model", tiny_model_file)
    assert r.exit_code == 1 and "1 done" in r.output and "an empty path" in r.output, r.output


def test_a_link_in_a_loop_fails_as_its_own_job(folder: Path, tiny_model_file: str) -> None:
    """Links that point at each other in a scanned folder are named in the summary, as a link to
    nothing is, in the system's words, not passed over without a word nor called undecodable."""
    random_rgb().save(folder / "a.png")
    (folder / "b.png").symlink_to("c.png")
    (folder / "c.png").symlink_to("b.png")
    r = upscale(str(folder), "--model", tiny_model_file)
    assert r.exit_code == 1 and "1 done, 0 skipped, 2 failed" in r.output, r.output
    assert "b.png: cannot read (Too many levels of symbolic links)" in r.output, r.output
    assert "decode" not in r.output and "Errno" not in r.output


def test_a_subfolder_that_cannot_be_read_costs_only_its_own_images(
        folder: Path, tiny_model_file: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder the user may not list inside the one scanned (a drive's ``lost+found``) is one
    line naming it; the images beside it and in the other subfolders are still upscaled, by a
    folder walk and by a ``**`` glob alike."""
    for sub in ("lost+found", "trip"):
        (folder / sub).mkdir()
        random_rgb().save(folder / sub / "b.png")
    random_rgb().save(folder / "a.png")
    locked, listing = folder / "lost+found", os.scandir

    def scandir(path="."):
        if Path(path) == locked:  # as for a folder of mode 700 another user owns
            raise PermissionError(13, "Permission denied", str(path))
        return listing(path)

    monkeypatch.setattr(os, "scandir", scandir)
    for spec in (str(folder), str(folder / "**" / "*.png")):
        r = upscale(spec, "-r", "-o", str(folder.parent / "out"), "--model", tiny_model_file,
                    "--overwrite")
        assert r.exit_code == 1 and "2 done, 0 skipped, 0 failed" in r.output, r.output
        assert f"{locked}: cannot read this folder (Permission denied)" in r.output, r.output
    assert names(folder.parent / "out") == ["a.png", "trip"]


def test_a_glob_left_unexpanded_takes_the_folders_it_matches(folder: Path,
                                                             tiny_model_file: str) -> None:
    """``drcn upscale "shoot*"`` as Windows' cmd passes it (bash expands it first): the folders
    it matches are upscaled as folders named alone are, beside the files it matches; on the
    next run the folders of the first one's results are not taken for inputs."""
    for name in ("shoot1", "shoot2"):
        (folder / name).mkdir()
        random_rgb().save(folder / name / f"{name}.png")
    random_rgb().save(folder / "shoot3.png")
    args = (str(folder / "shoot*"), "--model", tiny_model_file)
    r = upscale(*args)
    assert r.exit_code == 0 and "3 done, 0 skipped, 0 failed" in r.output, r.output
    assert names(folder) == ["drcn-x2", "shoot1", "shoot1-drcn-x2", "shoot2", "shoot2-drcn-x2",
                             "shoot3.png"]
    assert names(folder / "shoot2-drcn-x2") == ["shoot2.png"]
    r = upscale(*args, "--skip-existing")
    assert r.exit_code == 0 and "0 done, 3 skipped, 0 failed" in r.output, r.output
    r = upscale(*args, "--scale", "3")
    assert r.exit_code == 0 and "3 done, 0 skipped, 0 failed" in r.output, r.output
    assert "shoot1-drcn-x2-drcn-x3" not in names(folder)


def test_a_recursive_scan_passes_over_the_folders_of_earlier_results(
        folder: Path, tiny_model_file: str) -> None:
    """Results written beside a file (``drcn-x2/``) or a subfolder (``trip-drcn-w40/``) by
    earlier runs are not upscaled again when the folder holding them is scanned with -r; a
    folder of results named on its own is an input like any other."""
    (folder / "trip").mkdir()
    random_rgb().save(folder / "a.png")
    random_rgb().save(folder / "trip" / "b.png")
    assert upscale(str(folder / "a.png"), "--model", tiny_model_file).exit_code == 0
    assert upscale(str(folder / "trip"), "--width", "40", "--model", tiny_model_file).exit_code == 0
    assert names(folder) == ["a.png", "drcn-x2", "trip", "trip-drcn-w40"]
    r = upscale(str(folder), "-r", "--model", tiny_model_file)
    assert r.exit_code == 0 and "2 done, 0 skipped, 0 failed" in r.output, r.output
    assert sorted(str(p.relative_to(folder.parent / "in-drcn-x2"))
                  for p in (folder.parent / "in-drcn-x2").rglob("*.png")) == ["a.png", "trip/b.png"]
    r = upscale(str(folder / "drcn-x2"), "--model", tiny_model_file)
    assert r.exit_code == 0 and "1 done" in r.output, r.output


def test_a_glob_matching_its_own_results_folder_does_not_upscale_it_again(
        folder: Path, tiny_model_file: str) -> None:
    """``drcn upscale "*"`` as Windows' cmd passes it: the second run's ``*`` also matches the
    ``drcn-x2/`` folder the first run wrote the matched files' results to; those results are not
    inputs (no ``drcn-x2-drcn-x2/``)."""
    (folder / "trip").mkdir()
    random_rgb().save(folder / "a.png")
    random_rgb().save(folder / "trip" / "b.png")
    args = (str(folder / "*"), "--model", tiny_model_file)
    assert upscale(*args).exit_code == 0
    assert names(folder) == ["a.png", "drcn-x2", "trip", "trip-drcn-x2"]
    r = upscale(*args, "--skip-existing")
    assert r.exit_code == 0 and "0 done, 2 skipped, 0 failed" in r.output, r.output
    assert names(folder) == ["a.png", "drcn-x2", "trip", "trip-drcn-x2"]


@pytest.mark.parametrize("where", ["cwd", "home"])
def test_a_glob_under_a_folder_named_with_brackets_finds_its_files(
        folder: Path, tiny_model_file: str, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """``drcn upscale "*.png"`` run in ``Trip [2020]`` (or ``~/*.png`` with that home folder):
    the folder's own name is not glob syntax, so its images are found."""
    trip = folder / "Trip [2020]"
    trip.mkdir()
    random_rgb().save(trip / "a.png")
    if where == "cwd":
        monkeypatch.chdir(trip)
        spec = "*.png"
    else:
        monkeypatch.setenv("HOME", str(trip))
        spec = "~/*.png"
    r = upscale(spec, "--model", tiny_model_file)
    assert r.exit_code == 0 and "1 done, 0 skipped, 0 failed" in r.output, r.output
    assert names(trip / "drcn-x2") == ["a.png"]


def written_as(path: Path) -> str:
    """The format a file's first bytes say it is, whatever its name says."""
    head = path.read_bytes()[:12]
    magics = (("PNG", b"\x89PNG\r\n\x1a\n"), ("JPEG", b"\xff\xd8\xff"), ("TIFF", b"II*\0"),
              ("TIFF", b"MM\0*"), ("BMP", b"BM"))
    found = next((fmt for fmt, magic in magics if head.startswith(magic)), "?")
    return "WEBP" if head[:4] == b"RIFF" and head[8:12] == b"WEBP" else found


def test_an_output_file_is_written_in_the_format_its_extension_names(
        folder: Path, tiny_model_file: str) -> None:
    """``drcn upscale photo.jpg -o big.png``: exactly that file, in the format of its extension
    (any case), its missing folders made as for an output folder, its name the user's (``con``
    too: only a suffix is refused for making a Windows device name); a folder that exists, or
    a name ending in ``/``, stays the output folder whatever its name."""
    random_rgb().save(folder / "photo.jpg")
    out = folder.parent / "out"
    for name, fmt in [("big.png", "PNG"), ("big.WEBP", "WEBP"), ("new/deep/big.tif", "TIFF"),
                      ("big.jpeg", "JPEG"), ("con.bmp", "BMP")]:
        r = upscale(str(folder / "photo.jpg"), "-o", str(out / name), "--model", tiny_model_file)
        assert r.exit_code == 0 and "1 done" in r.output, r.output
        assert (out / name).is_file() and written_as(out / name) == fmt, name
        assert Image.open(out / name).size == (40, 32)
    assert names(out) == ["big.WEBP", "big.jpeg", "big.png", "con.bmp", "new"]
    assert names(out / "new" / "deep") == ["big.tif"], "nothing but the file"
    assert names(folder) == ["photo.jpg"]
    r = upscale(str(folder / "photo.jpg"), "-o", f"{out}/made.png/", "--model", tiny_model_file)
    assert r.exit_code == 0 and names(out / "made.png") == ["photo.jpg"], "a '/' says folder"
    (out / "dir.png").mkdir()
    r = upscale(str(folder / "photo.jpg"), "-o", str(out / "dir.png"), "--model", tiny_model_file)
    assert r.exit_code == 0 and names(out / "dir.png") == ["photo.jpg"]
    assert written_as(out / "dir.png" / "photo.jpg") == "JPEG"


@pytest.mark.parametrize(("extra", "message"), [
    (["-o", "{out}/big.png", "-f", "jpg"],
     "invalid value for --format: jpg contradicts the output file {out}/big.png, whose extension "
     "says PNG"),
    (["-o", "{out}/big.png", "--suffix", "_x2"],
     "invalid value for --suffix: '_x2' has no place when the output names the file itself"),
    (["-o", "{out}/big.gif"],
     "invalid value for --output: {out}/big.gif names a GIF file, which drcn does not write"),
    (["-o", "{out}/big.png."],
     "invalid value for --output: '{out}/big.png.' ends in a dot or space after its extension, "
     "which Windows drops: name the file big.png, or a folder"),
    (["-o", "{out}/big.PNG "], "'{out}/big.PNG ' ends in a dot or space after its extension"),
    (["{in}/b.png", "-o", "{out}/big.png"],
     "invalid value for --output: {out}/big.png names a file, but 2 images were given: name a "
     "folder"),
    (["-o", "{in}/a.png", "--overwrite"], "{in}/a.png would replace an input"),
    (["-o", "{in}/link.png", "--overwrite"], "{in}/link.png would replace an input"),
    (["-o", "{in}/hard.png", "--overwrite"], "{in}/hard.png would replace an input"),
    (["-o", "{in}/../in/./a.png", "--overwrite"], "{in}/a.png would replace an input"),
])
def test_an_output_file_that_cannot_be_is_one_line_before_any_work(
        folder: Path, tiny_model_file: str, extra: list[str], message: str) -> None:
    """A ``--format`` or ``--suffix`` the file's name contradicts, an extension drcn does not
    write, several images for one file, or the input itself under any name: one line, exit
    code 2, nothing written and no input replaced, even with ``--overwrite``."""
    random_rgb().save(folder / "a.png")
    random_rgb(seed=1).save(folder / "b.png")
    (folder / "link.png").symlink_to(folder / "a.png")
    os.link(folder / "a.png", folder / "hard.png")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    out = folder.parent / "out"
    args = [a.format(out=out, **{"in": folder}) for a in extra]
    r = upscale(str(folder / "a.png"), *args, "--model", tiny_model_file)
    assert r.exit_code == 2 and r.output.count("\n") == 1, r.output
    assert message.format(out=out, **{"in": folder}) in r.output
    assert not out.exists()
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_an_output_of_a_dash_is_refused_not_made_a_folder(folder: Path, tiny_model_file: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """``-o -`` asks for standard output, which drcn does not write: one line, no folder named
    ``-``; an existing folder of that name stays an output folder."""
    random_rgb().save(folder / "a.png")
    monkeypatch.chdir(folder.parent)
    r = upscale(str(folder / "a.png"), "-o", "-", "--model", tiny_model_file)
    assert r.exit_code == 2 and r.output.count("\n") == 1, r.output
    assert "drcn writes results to files, not to standard output" in r.output
    assert names(folder.parent) == ["in"]
    (folder.parent / "-").mkdir()
    r = upscale(str(folder / "a.png"), "-o", "-", "--model", tiny_model_file)
    assert r.exit_code == 0 and names(folder.parent / "-") == ["a.png"], r.output


def test_several_images_found_for_an_output_file_are_refused(folder: Path,
                                                             tiny_model_file: str) -> None:
    """A folder or glob is fine when it holds one image; more is one line before any work."""
    random_rgb().save(folder / "a.png")
    out = folder.parent / "big.jpg"
    r = upscale(str(folder), "-o", str(out), "--model", tiny_model_file)
    assert r.exit_code == 0 and written_as(out) == "JPEG", r.output
    out.unlink()
    random_rgb(seed=1).save(folder / "b.png")
    for spec in (str(folder), str(folder / "*.png")):
        r = upscale(spec, "-o", str(out), "--model", tiny_model_file)
        assert r.exit_code == 2 and "but 2 images were given" in r.output, r.output
        assert not out.exists() and names(folder.parent) == ["in"]


def test_an_existing_output_file_is_replaced_only_when_asked(folder: Path,
                                                             tiny_model_file: str) -> None:
    """As in an output folder: kept (``--no-overwrite``, the default) with one line and exit
    code 1, kept by ``--skip-existing``, replaced by ``--overwrite``."""
    random_rgb().save(folder / "a.png")
    out = folder.parent / "big.png"
    out.write_bytes(b"precious")
    for flags in ([], ["--no-overwrite"]):
        r = upscale(str(folder / "a.png"), "-o", str(out), *flags, "--model", tiny_model_file)
        assert r.exit_code == 1 and f"{out} exists (use --overwrite or --skip-existing)" in r.output
        assert out.read_bytes() == b"precious"
    r = upscale(str(folder / "a.png"), "-o", str(out), "--skip-existing", "--model",
                tiny_model_file)
    assert r.exit_code == 0 and "0 done, 1 skipped" in r.output, r.output
    assert out.read_bytes() == b"precious"
    r = upscale(str(folder / "a.png"), "-o", str(out), "--overwrite", "--model", tiny_model_file)
    assert r.exit_code == 0 and "1 done" in r.output and written_as(out) == "PNG", r.output
    assert names(folder.parent) == ["big.png", "in"], "no temporary file left"
    r = upscale(str(folder), "-o", str(folder / "a.png"), "--overwrite", "--model",
                tiny_model_file)
    assert r.exit_code == 2 and "would replace an input" in r.output, "a found file is an input"


def test_an_output_file_where_none_can_be_made_is_one_line(folder: Path,
                                                           tiny_model_file: str) -> None:
    """Its folder cannot be made (a file is in the way): one line naming it, nothing else."""
    random_rgb().save(folder / "a.png")
    r = upscale(str(folder / "a.png"), "-o", str(folder / "a.png" / "big.png"), "--model",
                tiny_model_file)
    assert r.exit_code == 1 and r.output.count("\n") == 1, r.output
    assert f"cannot make the folder {folder / 'a.png'}: {folder / 'a.png'} is a file (1 file " \
           "not upscaled)" in r.output


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX FIFOs")
def test_an_output_file_that_is_a_pipe_is_never_replaced(folder: Path, tiny_model_file: str) -> None:
    """Even with ``--overwrite``: the atomic rename would put a regular file in a pipe's place
    (a device's, as root); the write refuses it in one line and the pipe stays."""
    random_rgb().save(folder / "a.png")
    pipe = folder.parent / "big.png"
    os.mkfifo(pipe)
    r = upscale(str(folder / "a.png"), "-o", str(pipe), "--overwrite", "--model", tiny_model_file)
    assert r.exit_code == 1 and "a pipe, device or socket, not a regular file" in r.output, \
        r.output
    assert stat.S_ISFIFO(os.lstat(pipe).st_mode) and names(folder.parent) == ["big.png", "in"]
