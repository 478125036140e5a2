"""Options that would do nothing, or read as something else, as the user wrote them: one line
saying so before any work, with how to say what was meant."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from helpers import random_rgb, upscale


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """A PNG and a JPEG in ``photos/``."""
    folder = tmp_path / "photos"
    folder.mkdir()
    random_rgb().save(folder / "a.png")
    random_rgb(seed=1).save(folder / "b.jpg", quality=92)
    return folder


def test_a_quality_no_result_takes_is_refused_before_any_work(photos: Path,
                                                               tiny_model_file: str) -> None:
    """--quality on a batch whose every result is lossless (PNG, TIFF, BMP) would change
    nothing: one line naming why; where one result is a JPEG, WebP or AVIF it is taken."""
    args = ("--quality", "60", "--model", tiny_model_file, "-o", str(photos.parent / "q"))
    for fmt in ("png", "tiff", "bmp"):
        r = upscale(str(photos), "--format", fmt, *args)
        assert r.exit_code == 2 and r.output == (
            f"error: invalid value for --quality: no result takes a quality: {fmt.upper()} is "
            "lossless (it sets JPEG, WebP and AVIF quality)\n"), r.output
    assert not (photos.parent / "q").exists()
    r = upscale(str(photos), "--format", "webp", *args)
    assert r.exit_code == 0 and {p.suffix for p in (photos.parent / "q").iterdir()} == {".webp"}


def test_a_file_whose_name_starts_with_a_dash_is_named_how_to_give(
        photos: Path, monkeypatch, capsys) -> None:
    """``drcn upscale -night.png`` reads as options: the one line says how to name the file;
    an unknown option that is no file's name gets no such hint."""
    from drcn_plugin.cli import main

    (photos / "a.png").rename(photos / "-night.png")
    monkeypatch.chdir(photos)
    for args, hint in ((["-night.png"], True), (["b.jpg", "--bogus"], False)):
        monkeypatch.setattr(sys, "argv", ["drcn", "upscale", *args])
        with pytest.raises(SystemExit) as exit_:
            main()
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.count("\n") == 1, err
        said = "; -night.png is a file: name it ./-night.png, or put -- before it\n"
        assert err.endswith(said) == hint, err
    assert sorted(p.name for p in photos.iterdir()) == ["-night.png", "b.jpg"]


@pytest.mark.parametrize(("args", "said"), [
    (["--scale", "abc"], "Invalid value for '--scale' / '-s': Input should be a valid number, "
                         "unable to parse string as a number, got 'abc'"),
    (["--tile", "1.5"], "Invalid value for '--tile': Input should be a valid integer, unable to "
                        "parse string as an integer, got '1.5'"),
    (["--quality", "0"], "Invalid value for '--quality': Input should be greater than or equal "
                         "to 1, got '0'"),
    (["--scale", "-o", "out"], "Invalid value for '--scale' / '-s': Input should be a valid "
                               "number, unable to parse string as a number, got '-o'"),
    (["--denoise", "a\nb"], "Invalid value for '--denoise': Input should be a valid number, "
                            "unable to parse string as a number, got 'a\\nb'"),
])
def test_a_value_typer_refuses_is_named_in_the_one_line(args: list[str], said: str, monkeypatch,
                                                        capsys) -> None:
    """typer checks numbers with pydantic, whose message says what the value should be but not
    what it was (``--scale -o out`` took ``-o`` for the scale): the one line names it."""
    from drcn_plugin.cli import main

    monkeypatch.setattr(sys, "argv", ["drcn", "upscale", "a.png", *args])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    assert capsys.readouterr().err == f"error: {said} (see drcn upscale --help)\n"
