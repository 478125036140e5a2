"""``drcn upscale``'s live tile bar: it says what each file makes (its size, its result's, an
animation's frames), the reason beside a long estimate, on one line that gives way before the
count and the times do; a log or a pipe gets the bar as before."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from helpers import random_rgb
from rich.console import Console

from drcn_plugin import engine
from drcn_plugin.batch import Job, Outcome, run_job
from drcn_plugin.progress import BatchProgress


def _made(tmp_path: Path, model: str, source: Path, terminal: bool = True) -> str:
    """The tile bar's label once ``source``'s job has run x2 under a :class:`BatchProgress`."""
    console = Console(file=io.StringIO(), width=200, force_terminal=terminal)
    bar = BatchProgress(console, total=1, enabled=False)
    job = Job(source, tmp_path / f"out-{terminal}" / f"{source.stem}.png")
    bar.start(job)
    outcome = run_job(job, engine.Upscaler(model, device="cpu"), 2.0, progress=bar.tiles,
                      sized=bar.sized)
    assert outcome.status == "done", outcome.message
    return bar.progress.tasks[bar.tile_task].description


def test_the_tile_bar_says_the_size_made_and_an_animation_s_frames(tmp_path: Path,
                                                                  tiny_model_file: str) -> None:
    random_rgb(24, 20).save(tmp_path / "photo.jpg", quality=90)
    assert _made(tmp_path, tiny_model_file, tmp_path / "photo.jpg") == "photo.jpg 24x20 → 48x40"
    frames = [random_rgb(12, 10, seed=k) for k in range(3)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:], duration=100)
    assert _made(tmp_path, tiny_model_file, tmp_path / "a.gif") == \
        "a.gif 12x10 → 24x20, 3 frames"


def test_an_odd_name_stays_one_escaped_line_and_a_log_gets_the_name_alone(
        tmp_path: Path, tiny_model_file: str) -> None:
    """A line break and rich markup in a name are shown escaped, as the name alone was; off a
    terminal (a log, a pipe: only the last frame is printed) the label is the name as before."""
    source = tmp_path / "[red]x\ny.png"
    random_rgb(8, 6).save(source, "PNG")
    assert _made(tmp_path, tiny_model_file, source) == r"\[red]x\ny.png 8x6 → 16x12"
    assert _made(tmp_path, tiny_model_file, source, terminal=False) == r"\[red]x\ny.png"


@pytest.mark.parametrize("columns", [120, 80])
def test_in_a_narrow_terminal_the_bar_and_label_give_way_not_the_times(columns: int) -> None:
    """An 80-column terminal cannot hold the label, a whole bar, the count and both times: the
    bar narrows, then the label is cut, and the count and the times stay whole on one line."""
    console = Console(file=io.StringIO(), width=columns, force_terminal=True, color_system=None)
    bar = BatchProgress(console, total=3)
    bar.start(Job(Path("IMG_20240101_123456.jpg"), Path("out.png")))
    bar.sized((4000, 3000), (8000, 6000), 1000)
    bar.tiles(3, 1000)
    console.print(bar.progress.make_tasks_table(bar.progress.tasks))
    rows = console.file.getvalue().splitlines()
    assert len(rows) == 2 and rows[1].startswith("IMG_20240101_123456.jpg 4000x"), rows
    assert rows[1].split()[-3:] == ["3/1000", "0:00:00", "-:--:--"], rows
    whole = "IMG_20240101_123456.jpg 4000x3000 → 8000x6000, 1000 frames"
    assert (whole in rows[1]) == (columns == 120), rows


@pytest.mark.parametrize("columns", [80, 50, 40])
def test_the_count_rate_and_times_stay_whole_beside_the_batch_rate(columns: int) -> None:
    """Once a file is done the images bar shows the batch's Mpx/s, one more column: rich's
    columns all gave way with the label then, so at 50 the tile count read "3/1…" and at 40
    the times "0:0… -:--:…"; only the label and the bar give way."""
    console = Console(file=io.StringIO(), width=columns, force_terminal=True, color_system=None)
    bar = BatchProgress(console, total=3)
    bar.start(Job(Path("IMG_20240101_123456.jpg"), Path("out.png")))
    bar.progress.update(bar.images, advance=1, rate="2.00 Mpx/s")
    bar.sized((4000, 3000), (8000, 6000), 1)
    bar.tiles(3, 1000)
    console.print(bar.progress.make_tasks_table(bar.progress.tasks))
    images, tiles = console.file.getvalue().splitlines()
    assert images.split()[-5:] == ["1/3", "2.00", "Mpx/s", "0:00:00", "-:--:--"], images
    assert tiles.split()[-3:] == ["3/1000", "0:00:00", "-:--:--"], tiles


@pytest.mark.parametrize("status", ["failed", "skipped"])
def test_a_file_that_failed_or_was_skipped_leaves_no_empty_tile_bar(status: str) -> None:
    """The tile bar of a file that made nothing goes with it (its line says why): left, it
    read ``name 0/1`` above the next files or at the end."""
    bar = BatchProgress(Console(file=io.StringIO(), force_terminal=True), total=2)
    job = Job(Path("bad.jpg"), Path("out.png"))
    bar.start(job)
    bar.finish(Outcome(job, status, "bad.jpg: damaged"))
    assert not bar.progress.tasks[bar.tile_task].visible
    bar.start(Job(Path("good.jpg"), Path("good.png")))
    bar.finish(Outcome(job, "done", out_size=(4, 4)))
    assert bar.progress.tasks[bar.tile_task].visible
