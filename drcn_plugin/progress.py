"""The CLI's rich progress displays: batch upscaling (images, tiles, Mpx/s, summary), training."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column, Table
from rich.text import Text

from .batch import Job, Outcome
from .engine import Upscaler
from .errors import single_line
from .terminal import print_table

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self from Python 3.11

    from .training.trainer import Progress as TrainStep


class _Label(TextColumn):
    """A bar's label, on one line: in a terminal too narrow for the row, it gives way (cut with
    an ellipsis) with the bar, not the count and the times, which say how long it takes."""

    def __init__(self) -> None:
        super().__init__("{task.description}", table_column=Column())  # rich's own: no_wrap

    def render(self, task: Task) -> Text:
        text = super().render(task)
        text.no_wrap, text.overflow = True, "ellipsis"
        return text


_BAR_WIDTH, _BAR_MIN = 40, 10  # rich's bar, and the least it narrows to


def _whole() -> Column:
    """A table column rich never cuts or wraps: a count, a rate or a time made unreadable by
    an ellipsis tells nothing (rich's default columns give way with the label)."""
    return Column(no_wrap=True)


class _Rows(Progress):
    """Rich's display, whose bar is what narrows first in a terminal too narrow for a row (down
    to :data:`_BAR_MIN` cells), then the label: the count and the times stay whole."""

    def make_tasks_table(self, tasks: Iterable[Task]) -> Table:
        tasks = list(tasks)
        bar = next(c for c in self.columns if isinstance(c, BarColumn))
        bar.bar_width = _BAR_WIDTH
        table = super().make_tasks_table(tasks)
        if not tasks:  # rich makes one as it starts, before it has its console
            return table
        unbounded = self.console.options.update_width(1 << 16)
        excess = Measurement.get(self.console, unbounded, table).maximum - self.console.width
        if excess > 0:
            bar.bar_width = max(_BAR_MIN, _BAR_WIDTH - excess)
            table = super().make_tasks_table(tasks)
        return table


class _Display:
    """A live rich display in the layout both share: label, bar, count, own columns, times."""

    def __init__(self, console: Console, enabled: bool, *middle: TextColumn) -> None:
        self.progress = _Rows(_Label(), BarColumn(), MofNCompleteColumn(table_column=_whole()),
                              *middle, TimeElapsedColumn(table_column=_whole()),
                              TimeRemainingColumn(table_column=_whole()), console=console,
                              disable=not enabled)

    def __enter__(self) -> Self:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)


class BatchProgress(_Display):
    """Two bars (images; tiles of the current image) and a live Mpx/s figure; ``label`` names
    the images counted (a torchrun process's share)."""

    def __init__(self, console: Console, total: int, enabled: bool = True,
                 label: str = "images") -> None:
        super().__init__(console, enabled, TextColumn("{task.fields[rate]}", table_column=_whole()))
        self.images = self.progress.add_task(escape(label), total=total, rate="")
        self.tile_task = self.progress.add_task("tiles", total=1, rate="", visible=False)
        self.out_pixels = 0
        self.busy = 0.0
        self._t0 = 0.0
        self._name = ""

    def start(self, job: Job) -> None:
        """A file's job begins: its tile bar restarts under its name."""
        self._t0 = time.perf_counter()
        self._name = single_line(job.source.name)
        self.progress.update(self.tile_task, description=escape(self._name), completed=0, total=1,
                             visible=True)

    def sized(self, size: tuple[int, int], out_size: tuple[int, int], frames: int) -> None:
        """The batch's :data:`.batch.SizedFn`: in a terminal the tile bar says what it makes
        (``photo.jpg 4000x3000 → 8000x6000, 1000 frames``), the reason beside a long estimate;
        off one (a log, a pipe) only the last frame is printed, its label the name as before."""
        console = self.progress.console
        if not console.is_terminal:
            return
        arrow = "->" if console.options.ascii_only else "→"  # as rich draws its bars
        frames_made = f", {frames} frames" if frames > 1 else ""
        made = f"{self._name} {size[0]}x{size[1]} {arrow} {out_size[0]}x{out_size[1]}{frames_made}"
        self.progress.update(self.tile_task, description=escape(made))

    def tiles(self, done: int, total: int) -> None:
        """Engine progress callback."""
        self.progress.update(self.tile_task, completed=done, total=total)

    def finish(self, outcome: Outcome) -> None:
        """A file's job ended: one more image, and the batch's output Mpx/s so far; the tile bar
        of a file skipped or failed goes (its line says why), not left at 0/1."""
        if outcome.status != "done":
            self.progress.update(self.tile_task, visible=False)
        self.busy += time.perf_counter() - self._t0
        self.out_pixels += _out_pixels(outcome)
        rate = f"{self.out_pixels / 1e6 / self.busy:.2f} Mpx/s" if self.busy > 0 else ""
        self.progress.update(self.images, advance=1, rate=rate)

    @staticmethod
    def summary(console: Console, outcomes: list[Outcome], upscaler: Upscaler,
                model: str | None = None) -> None:
        """A table of every file and one line of totals; ``model``: the one every file got, named
        in the title (None: each file's is in a column)."""
        table = Table()
        per_file_model = any(o.model for o in outcomes)
        for col in ("file", "status", "in", "out", "seconds") + ("model",) * per_file_model:
            table.add_column(col, overflow="fold")
        table.add_column("note", overflow="fold")
        colours = {"done": "green", "skipped": "yellow", "failed": "red"}
        for o in outcomes:
            size = lambda s: f"{s[0]}x{s[1]}" if s else ""  # noqa: E731
            table.add_row(escape(single_line(_shown(o.job.source))),
                          f"[{colours[o.status]}]{o.status}[/]", size(o.in_size),
                          size(o.out_size), f"{o.seconds:.1f}",
                          *[escape(o.model)] * per_file_model,
                          escape(single_line(o.message.removeprefix(f"{o.job.source}: "))))
        with_model = "" if model is None else f" with {model}"
        print_table(console, table,
                    f"drcn upscale{with_model} on {upscaler.device} ({str(upscaler.dtype)[6:]})")
        done = [o for o in outcomes if o.status == "done"]
        mpx = sum(map(_out_pixels, done)) / 1e6
        secs = sum(o.seconds for o in done)
        counts = {s: sum(o.status == s for o in outcomes) for s in colours}
        console.print(f"{counts['done']} done, {counts['skipped']} skipped, "
                      f"{counts['failed']} failed;"
                      f" {mpx:.2f} output Mpx in {secs:.1f} s"
                      + (f" ({mpx / secs:.2f} Mpx/s)" if secs else ""))


def _out_pixels(outcome: Outcome) -> int:
    """The pixels ``outcome``'s result holds: every frame of an animation counts."""
    return outcome.out_size[0] * outcome.out_size[1] * outcome.frames if outcome.out_size else 0


def _shown(path: Path) -> str:
    """``path`` relative to the working folder when it lies inside it, as the user named it."""
    with contextlib.suppress(OSError, ValueError):  # a removed working folder; one elsewhere
        return str(path.relative_to(Path.cwd()))
    return str(path)


class TrainProgress(_Display):
    """One bar over the training steps with loss, validation PSNR and steps/s (rank 0 only)."""

    def __init__(self, console: Console, enabled: bool = True) -> None:
        super().__init__(console, enabled, TextColumn(
            "loss {task.fields[loss]}  val {task.fields[val]} dB  {task.fields[rate]}",
            table_column=_whole()))
        self.task = self.progress.add_task("[bold]train", total=None, loss="-", val="-", rate="")

    def __exit__(self, *exc: object) -> None:
        # a run that fails before its first step, or has none left to take, leaves no empty
        # bar above its closing line
        if not self.progress.tasks[0].completed:
            self.progress.live.transient = True
            self.progress.live.stop()  # not Progress.stop: off a terminal it adds a blank line
            return
        super().__exit__(*exc)

    def update(self, p: TrainStep) -> None:
        """The trainer's progress callback."""
        self.progress.update(self.task, completed=p.step, total=p.total or None,
                             loss=f"{p.loss:.3e}" if p.loss is not None else "-",
                             val=f"{p.val_psnr:.2f}" if p.val_psnr is not None else "-",
                             rate=f"{p.steps_per_s:.1f} steps/s")
