"""Run files: resumable training checkpoints and the exported weights (shipped format)."""

from __future__ import annotations

import errno
import io
import logging
import math
import os
import re
import zipfile
from collections.abc import Callable, Collection, Iterator
from dataclasses import Field, fields, replace
from pathlib import Path

import torch
from safetensors.torch import save as safetensors_bytes

from .. import __version__
from ..errors import BadOptionError, CheckpointError, DRCNError, InputGoneError, one_line, reason
from ..hub import names_a_path
from ..model import DRCN
from ..writing import atomic_write_bytes
from .config import FOLDER_OPTIONS, MAX_STEPS, TrainConfig, default_of, flag_of, rooted
from .runfolder import resume_point

logger = logging.getLogger(__name__)
CHECKPOINT_FORMAT = "drcn-train-checkpoint-1"
_FORMAT = re.compile(rb"drcn-train-checkpoint-([0-9]{1,9})")
_STATE_KEYS = ("config", "step", "total", "best", "history", "elapsed", "model", "optimizer",
               "scheduler", "rng")
# Options a resumed run takes from its command line, not from the checkpoint.
PER_SESSION = ("stop_at", "out", "curves", "device")
# Options a resume takes from its command line when given there: the peak learning rate, lowered
# to go on from a run that diverged (the trainer rescales its schedule and records the change),
# and how often to validate and checkpoint. The run's length is :func:`resumed_total`'s.
RESUME_OVERRIDES = ("lr", "val_every")
# The options that set a run's length: a resume's are :func:`resumed_total`'s to take or refuse.
LENGTH = ("steps", "minutes")
# Inputs a resume reads from where its command line says when the run's own are gone (a moved
# folder, another machine), and what each is to the run; the trainer names training images that
# differ from the run's.
MOVABLE = {"data": "training images", "val_data": "validation images",
           "test_data": "test images", "baseline": "baseline weights",
           "teacher": "teacher weights"}


def save_state(path: Path, obj: dict) -> None:
    """Write a checkpoint atomically (never a half-written ``last.pt``)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def non_finite(state: dict) -> str | None:
    """The part of a training state (weights, optimizer state, moving average) that holds a NaN
    or an infinity, or None: a checkpoint holding one would resume a run of NaN."""
    for key, part in (("model", "the weights"), ("optimizer", "the optimizer state"),
                      ("ema", "the moving average of the weights")):
        if not all(torch.isfinite(t).all() for t in _tensors(state.get(key))
                   if t.is_floating_point()):
            return part
    return None


def _tensors(obj: object) -> Iterator[torch.Tensor]:
    """The tensors in a state dict, its nested dicts, lists and tuples."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict | list | tuple):
        for item in obj.values() if isinstance(obj, dict) else obj:
            yield from _tensors(item)


def load_checkpoint(path: Path, cfg: TrainConfig, given: Collection[str] | None = None) -> dict:
    """A training checkpoint, checked to be ours and of the architecture ``cfg`` asks for (only
    the F and D in ``given``, the options the user gave, when it is known)."""
    if not path.exists():
        raise CheckpointError(f"nothing to resume: {path} does not exist")
    if not path.is_file():  # a FIFO would block the read for ever
        raise CheckpointError(f"{path} is not a regular file, so not a checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as e:
        if e.errno == errno.EINVAL:  # what torch's zip reader says of a cut file
            raise CheckpointError(f"{path} is damaged or not a drcn training checkpoint") from e
        raise CheckpointError(f"cannot read checkpoint {path}: {reason(e)}") from e
    except Exception as e:  # torch.load raises many types for a damaged or foreign file
        _refuse_newer(path, _format_inside(path))  # a newer one may hold types this one lacks
        raise CheckpointError(f"{path} is damaged or not a drcn training checkpoint") from e
    if (changed := _failed_checksum(path)) is not None:  # torch.load checks no CRC
        raise CheckpointError(f"{path} is damaged ({changed} fails its checksum): resume from "
                              "a copy, or start over")
    if isinstance(ckpt, dict) and isinstance(ckpt.get("format"), str):
        found = _FORMAT.fullmatch(ckpt["format"].encode())
        _refuse_newer(path, int(found[1]) if found else None, ckpt.get("drcn_plugin"))
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a drcn training checkpoint")
    config = ckpt.get("config")
    saved = TrainConfig.from_dict(config) if isinstance(config, dict) else None
    missing = [k for k in _STATE_KEYS if k not in ckpt] + \
        (["ema"] if saved is not None and saved.ema and "ema" not in ckpt else [])
    if missing or saved is None:
        raise CheckpointError(f"checkpoint {path} is incomplete (no "
                              f"{', '.join(missing) or 'readable config'})")
    try:
        replace(saved, out=cfg.out, stop_at=0).check()  # the stop step was its session's
    except (DRCNError, TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path} holds options no run can use ({one_line(e)})"
                              ) from e
    step, total, history = ckpt["step"], ckpt["total"], ckpt["history"]
    if not (isinstance(step, int) and isinstance(total, int) and 0 <= step <= MAX_STEPS
            and (total == 0 or step <= total <= MAX_STEPS)  # 0: a time budget not fitted yet
            and isinstance(ckpt["best"], int | float)
            and isinstance(ckpt["elapsed"], int | float) and 0 <= ckpt["elapsed"] < math.inf
            and isinstance(ckpt.get("cwd", ""), str) and isinstance(history, list)
            and all(isinstance(r, dict) and isinstance(r.get("step"), int) for r in history)):
        raise CheckpointError(f"checkpoint {path} is damaged (its step, times, history or start "
                              "folder)")
    if (part := non_finite(ckpt)) is not None:
        raise CheckpointError(f"checkpoint {path} holds NaN or infinite values in {part}: the "
                              "run had diverged; start over with a lower learning rate")
    asked = [(k, getattr(saved, n), getattr(cfg, n)) for k, n in (("F", "features"),
                                                                  ("D", "recursions"))
             if given is None or n in given]  # a resume need not repeat them
    if any(was != now for _, was, now in asked):
        raise CheckpointError(f"checkpoint {path} is for F={saved.features}, D={saved.recursions}; "
                              "this run asks for " + ", ".join(f"{k}={v}" for k, _, v in asked))
    return ckpt


def load_resume_point(out: Path, cfg: TrainConfig, given: Collection[str] | None = None) -> dict:
    """The checkpoint a resume continues from (:func:`resume_point`), loaded as
    :func:`load_checkpoint` does; one read from ``best.pt`` is named in a warning, and one
    whole beside a ``last.pt`` that cannot be resumed is named in the refusal (never taken
    unasked: its state is older)."""
    path = resume_point(out) or out / "last.pt"
    try:
        ckpt = load_checkpoint(path, cfg, given)
    except CheckpointError as e:
        best = out / "best.pt"
        if path == best or not best.is_file():
            raise
        try:
            step = load_checkpoint(best, cfg, given)["step"]
        except CheckpointError:
            raise e from None
        raise CheckpointError(f"{e}; {best} (step {step}) is whole: move {path.name} aside "
                              "and a resume goes on from it") from e
    if path.name != "last.pt":
        logger.warning("%s is missing: resuming from %s (step %d)", out / "last.pt", path,
                       ckpt["step"])
    return ckpt


def _failed_checksum(path: Path) -> str | None:
    """The first entry of a checkpoint (a zip, as ``torch.save`` writes) whose bytes no longer
    match the CRC stored beside them, or None: a flipped bit in a weight would otherwise resume
    a different run without a word."""
    try:
        with zipfile.ZipFile(path) as z:
            return z.testzip()
    except (OSError, ValueError, zipfile.BadZipFile):  # changed since torch.load read it
        return None


def _format_inside(path: Path) -> int | None:
    """The checkpoint format named in the pickle of a file ``torch.save`` wrote (a zip whose
    entries are stored, not compressed), without unpickling it; None when none is found."""
    try:
        with zipfile.ZipFile(path) as z:
            name = next((n for n in z.namelist() if n.endswith("/data.pkl")), None)
            head = z.open(name).read(1 << 16) if name else b""
    except (OSError, ValueError, zipfile.BadZipFile):
        return None
    found = _FORMAT.search(head)
    return int(found[1]) if found else None


def _refuse_newer(path: Path, number: int | None, writer: object = None) -> None:
    """Refuse a checkpoint whose format is newer than this version reads, naming both versions
    (the writer's when it recorded it) and the way out: an upgrade."""
    ours = int(_FORMAT.fullmatch(CHECKPOINT_FORMAT.encode())[1])
    if number is None or number <= ours:
        return
    by = f"drcn-plugin {writer}" if isinstance(writer, str) and 0 < len(writer) <= 40 else \
        "a newer drcn-plugin"
    raise CheckpointError(f"{path} was written by {by} (checkpoint format {number}); this is "
                          f"drcn-plugin {__version__}, which reads format {ours}: upgrade "
                          "drcn-plugin to resume it")


def resumed_config(ckpt: dict, cfg: TrainConfig,
                   given: Collection[str] | None = None) -> tuple[TrainConfig, str]:
    """The checkpoint's recipe with this session's :data:`PER_SESSION` options and the
    :data:`RESUME_OVERRIDES` given here, and the folder its relative paths are found from; warns
    of the other options given here that differ from it (they are ignored).

    A run resumed from another working directory reads what its start read: relative paths are
    taken from the start's folder (while it exists). A :data:`MOVABLE` input of the run that is
    gone, with no new place given, is refused before any is read (:class:`InputGoneError`).
    ``given`` names the options the user gave (the command line knows); None takes those not at
    their default, as a caller building a :class:`TrainConfig` in Python cannot say.
    """
    total = resumed_total(ckpt, cfg, given)
    here = os.getcwd()
    start = ckpt.get("cwd") or here  # a checkpoint that records no folder: from here
    start = start if os.path.isdir(start) else here
    saved = TrainConfig.from_dict(ckpt["config"])
    this, found = rooted(cfg, here), rooted(saved, start)  # paths compared where they lead
    asked = _asker(cfg, given)
    differs = [f for f in fields(TrainConfig) if f.name not in PER_SESSION and asked(f)
               and getattr(this, f.name) != getattr(found, f.name)]
    moved = [f.name for f in differs if f.name in MOVABLE and _gone(f.name, getattr(found, f.name))]
    for name in MOVABLE:  # before any is read: its new place is worth more than "not found"
        if name not in moved and (gone := _gone(name, getattr(found, name))):
            missing = "dataset folder not found" if name in FOLDER_OPTIONS else "model not found"
            raise InputGoneError(f"{missing}: {gone}", MOVABLE[name], name)
    for f in differs:
        if f.name in moved:
            logger.warning("the run's %s %s no longer exists: reading %s instead", flag_of(f),
                           _shown(found, f.name), _shown(this, f.name))
    ignored = [flag_of(f) for f in differs if f.name not in (*RESUME_OVERRIDES, *LENGTH, *moved)]
    if ignored:
        logger.warning("resuming with the checkpoint's options; ignored: %s", ", ".join(ignored))
    if not os.path.samefile(start, here):
        saved = found
    taken = [f.name for f in fields(TrainConfig) if f.name in PER_SESSION
             or (f.name in RESUME_OVERRIDES and asked(f))]
    length = {"steps": total, "minutes": 0.0} if total != ckpt["total"] else {}
    return replace(saved, **{name: getattr(cfg, name) for name in taken},
                   **{name: getattr(this, name) for name in moved}, **length), start


def resumed_total(ckpt: dict, cfg: TrainConfig, given: Collection[str] | None = None) -> int:
    """The total steps a resume trains to (0: a time budget not fitted yet): the run's, or a
    ``--steps`` given here, which makes the run that long (a fixed step count, also for a run
    that had a time budget). A ``--steps`` equal to the run's own option changes nothing; one
    not past the checkpoint's step is refused, and so is another ``--minutes``: a budget is
    fitted from a whole run's start, so the run's new total is the way to a longer one."""
    saved, asked = TrainConfig.from_dict(ckpt["config"]), _asker(cfg, given)
    by_name = {f.name: f for f in fields(TrainConfig)}
    if asked(by_name["minutes"]) and cfg.minutes != saved.minutes:
        raise BadOptionError("a resume takes no time budget: give the run's new total in steps "
                             f"instead (past its step, {ckpt['step']})", option="minutes")
    if not asked(by_name["steps"]) or cfg.steps in (saved.steps, ckpt["total"]):
        return ckpt["total"]
    if cfg.steps <= ckpt["step"]:
        raise BadOptionError(f"the run is at step {ckpt['step']}: a resume trains on to a "
                             "larger total, or to the run's own with none given", option="steps")
    return cfg.steps


def _asker(cfg: TrainConfig, given: Collection[str] | None) -> Callable[[Field], bool]:
    """Whether the user gave an option: named in ``given``, or (None) not at its default."""
    if given is not None:
        return lambda f: f.name in given
    return lambda f: getattr(cfg, f.name) != default_of(f)


def _gone(name: str, value: str | list[str]) -> str:
    """The first path an input option of a run (rooted: folders, or a model spec) names that no
    longer exists, or ''."""
    return next((p for p in (value if isinstance(value, list) else [value])
                 if p and (name in FOLDER_OPTIONS or names_a_path(p)) and not os.path.exists(p)),
                "")


def _shown(cfg: TrainConfig, name: str) -> str:
    """An input option's value for a message: its paths, comma-separated."""
    value = getattr(cfg, name)
    return ", ".join(value) if isinstance(value, list) else value


def resume_draws(gen: torch.Generator, state: torch.Tensor, seed: int) -> None:
    """Continue a checkpoint's batch draws in ``gen``; the state of another kind of device (its
    generator's state has another shape) restarts them from ``seed`` instead, with a warning."""
    ours = gen.get_state()
    if not (isinstance(state, torch.Tensor) and state.dtype == ours.dtype
            and state.shape != ours.shape):
        gen.set_state(state)
        return
    gen.manual_seed(seed)
    logger.warning("the checkpoint holds the random state of another kind of device than %s: "
                   "batches are drawn afresh, so the resumed run differs from an "
                   "uninterrupted one", gen.device.type)


def stop_reached(ckpt: dict | None, cfg: TrainConfig,
                 given: Collection[str] | None = None) -> dict | None:
    """For a resume whose checkpoint is at or past this session's ``stop_at`` but not at its end
    (:func:`resumed_total`'s), the log ``train`` returns instead of training (None otherwise): a
    stop at the checkpoint's step, as the stop that wrote it returned, marked ``nothing_to_do``.
    Nothing needs to be trained or written, so the run's files are left as they are."""
    if ckpt is None or not 0 < cfg.stop_at <= ckpt["step"] < (resumed_total(ckpt, cfg, given)
                                                                or MAX_STEPS):
        return None
    return {"step": ckpt["step"], "total": ckpt["total"], "stopped_at": ckpt["step"],
            "interrupted": False, "nothing_to_do": True}


def export_safetensors(model: DRCN, path: Path) -> None:
    """The weights in the shipped format: float32, contiguous, the model's tensor names."""
    sd = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, safetensors_bytes(sd, metadata={"format": "pt"}))


