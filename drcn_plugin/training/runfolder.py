"""The run folder a training owns (checked, locked and, with ``overwrite``, cleared) and the
stop a signal asks of the run.

A new run never replaces a held one unasked, never writes its weights over a file it reads
(``--init``, ``--baseline``, ``--teacher``), and learns that the folder cannot take its files
before the first step rather than at the end. While a run trains it holds an advisory lock on
``OUT/.lock``, so a second training in the same folder is refused instead of mixing the two.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..devices import Dist, peers_lost
from ..errors import (
    BadOptionError,
    DiskFullError,
    OutputExistsError,
    TrainingError,
    WriteError,
    reason,
)
from ..names import name_max
from ..stops import arm_stops, interrupt, record_stop, stop_signals
from ..targets import output_problem
from ..writing import clean_stale_parts, probe_folder, same_file, try_lock
from .config import TrainConfig, default_val_folder

_ALONE = Dist()  # a process that is not part of a torchrun job
_STATE = ("last.pt", "best.pt", "log.json", "curves.png")


def run_files(cfg: TrainConfig) -> tuple[str, ...]:
    """Names of everything a run writes into its folder."""
    stem = cfg.export_name()
    return (*_STATE, f"{stem}.safetensors", f"{stem}.md")


def check_run_folder(cfg: TrainConfig, resume: bool, overwrite: bool) -> None:
    """Refuse, before any work, a start that would replace a held run or an input, or whose
    files cannot be named or written."""
    out = Path(cfg.out)
    if resume and overwrite:
        raise BadOptionError("resuming continues a run and overwriting starts over: ask for one",
                             option="overwrite")
    names = run_files(cfg)
    limit = name_max(out)
    if max(len(os.fsencode(n)) for n in names) > limit:
        raise BadOptionError(f"the run's file names would be longer than the {limit} bytes "
                             f"that {out}'s file system takes", option="name")
    held = [n for n in names if (out / n).exists()]
    if not resume and not overwrite and held:
        raise OutputExistsError(f"{out} holds a training run ({held[0]})", path=out)
    for name in () if overwrite else names:  # --overwrite removes them first
        if problem := output_problem(out / name):  # a folder, a link to nothing
            raise BadOptionError(problem, option="out")
    read = [s for s in (cfg.init, cfg.baseline, cfg.teacher) if s]
    for name in names:
        if any(same_file(out / name, r) for r in read):
            raise BadOptionError(f"the run would write {out / name}, which it reads: choose "
                                 "another run folder or name", option="out")
    data = [d for d in (*cfg.data, default_val_folder(cfg), *cfg.test_data) if d]
    if any(same_file(out, d) for d in data):
        raise BadOptionError(f"{out} holds the run's images: its files would become data",
                             option="out")
    probe_folder(out)


@contextmanager
def hold_run_folder(out: Path, job: Dist = _ALONE) -> Iterator[None]:
    """While inside, the run folder exists and (on the ``job``'s rank 0, which writes the run's
    files) ``OUT/.lock`` is held: a folder another training holds, or whose lock cannot be
    opened, is refused with rank 0's line on every rank of a joined torchrun job. A start
    refused inside leaves no folder it made, its parents included. Where the platform has no
    such locks, nothing is held."""
    missing = [p for p in out.parents if not p.exists()]  # nearest first, as they go again
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.mkdir()
        made = True  # by this process: mkdir is the one test two starting runs cannot both pass
    except FileExistsError:
        made = False
    except OSError as e:
        raise WriteError(f"cannot create the run folder {out}: {reason(e)}"
                         ) from e
    handle, locked, refusal = None, None, None
    if job.main:
        try:
            handle = open(out / ".lock", "ab")  # noqa: SIM115 - held until the run ends
        except OSError as e:
            refusal = WriteError(f"cannot open the run folder's lock {out / '.lock'}: "
                                 f"{reason(e)}")
        else:
            locked = try_lock(handle.fileno())
            if locked is False:
                refusal = TrainingError(f"another training is running in {out}")
    refusal = job.from_main(refusal)  # every rank stops with rank 0's line, none waits for it
    with handle if handle is not None else contextlib.nullcontext():
        try:
            if refusal is not None:
                raise refusal
            if handle is not None:
                clean_stale_parts(out)
            yield
        except BaseException:
            if made:  # refused before its first file: the folder it made goes again
                if handle is not None:
                    if not locked:  # no lock to keep till it goes; Windows removes no open file
                        handle.close()
                    with contextlib.suppress(OSError):  # one another start holds open is kept
                        (out / ".lock").unlink(missing_ok=True)
                for folder in (out, *missing):
                    with contextlib.suppress(OSError):  # one another process fills is kept
                        folder.rmdir()
            raise


def resume_point(out: Path) -> Path | None:
    """The checkpoint ``--resume`` continues from: ``last.pt``, else ``best.pt`` (a disk that
    fills at a run's first validation leaves only it, holding the state ``last.pt`` was to hold),
    else None."""
    return next((p for p in (out / "last.pt", out / "best.pt") if p.exists()), None)


def what_is_left(out: Path) -> str:
    """What a run that stops early (a process of its torchrun job lost) leaves in ``out``: a
    checkpoint to resume from, or nothing yet."""
    if resume_point(out) is not None:
        return "the run stops; --resume continues from its last checkpoint"
    return "the run stops before its first checkpoint: start it again (nothing to resume)"


@contextmanager
def left_behind(out: Path) -> Iterator[None]:
    """A run ended early by a lost torchrun process or a full disk says what it leaves in
    ``out`` (:func:`what_is_left`): a checkpoint to resume from once there is room, or nothing."""
    with peers_lost(lambda: what_is_left(out)):
        try:
            yield
        except DiskFullError as e:
            raise DiskFullError(f"{e}; {what_is_left(out)}") from e


def clear_old_run(cfg: TrainConfig) -> None:
    """Remove the old run's files that bear the new run's names (checkpoints, log, curves,
    weights and card), so none of them is mistaken for the new run's. Called once every check
    has passed: a refused start keeps the old run."""
    out = Path(cfg.out)
    for name in run_files(cfg):
        try:
            (out / name).unlink(missing_ok=True)
        except OSError as e:
            raise WriteError(f"cannot remove the old run's {out / name}: "
                             f"{reason(e)}") from e


class StopRequest:
    """While active, Ctrl-C, SIGTERM and SIGHUP ask the run to stop at the next step boundary
    (where its checkpoint resumes exactly) instead of interrupting it mid-step; a second signal
    interrupts at once. Only in the main thread of a single-process run (torchrun's ranks must
    stop together, so they keep the default behaviour)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled, self.asked, self._saved = enabled, False, {}

    def __enter__(self) -> StopRequest:
        if self.enabled and threading.current_thread() is threading.main_thread():
            arm_stops()  # a run's stops are its own, not counted on from an earlier run's
            for sig in stop_signals():
                self._saved[sig] = signal.signal(sig, self._ask)
        return self

    def _ask(self, signum: int, frame: object) -> None:
        if self.asked:
            interrupt(signum)  # the stop taken: a third signal cuts into nothing
            return
        self.asked = True
        record_stop(signum)
        signal.signal(signum, interrupt)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)
