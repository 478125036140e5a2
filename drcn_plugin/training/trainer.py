"""The training loop: one run from a :class:`TrainConfig` to exported weights and a model card.

Under ``torchrun`` each process takes its slice of every global batch and DistributedDataParallel
averages the gradients (gloo on CPU, nccl on CUDA); rank 0 validates, logs and writes checkpoints.
A run folder holds ``last.pt`` and ``best.pt`` (full training state), ``log.json``, ``curves.png``
(redrawn at every validation), and at the end ``NAME.safetensors`` and ``NAME.md``.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import os
import time
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .. import __version__
from ..charts import training_curves
from ..devices import device_name, is_out_of_memory, join_torchrun, synchronize
from ..errors import (
    BadOptionError,
    CheckpointError,
    DistributedError,
    DivergedError,
    ModelLoadError,
    OutOfMemoryError,
    one_line,
)
from ..evaluation import check_decodes, dataset_files
from ..hub import load_model
from ..model import DRCN
from ..writing import atomic_write_bytes
from .card import model_card
from .checkpoint import (
    CHECKPOINT_FORMAT,
    export_safetensors,
    load_resume_point,
    non_finite,
    resume_draws,
    resumed_config,
    save_state,
    stop_reached,
)
from .config import MAX_STEPS, TrainConfig, check_options, default_val_folder
from .data import PatchSet, augment
from .measurement import measured_export, validation
from .memory import fitting_patches
from .recipe import distilled_target, drcn_loss, init_weights, make_optimizer
from .runfolder import StopRequest, check_run_folder, clear_old_run, hold_run_folder, left_behind
from .schedule import alpha_at, extensions, fitted_total, lr_factor, set_peak_lr

logger = logging.getLogger(__name__)


# -- the run ---------------------------------------------------------------------------------
@dataclass
class Progress:
    """What the progress display receives after each step (rank 0 only)."""

    step: int
    total: int
    loss: float | None
    val_psnr: float | None
    steps_per_s: float


class Trainer:
    """One training run; see :func:`train`."""

    def __init__(self, cfg: TrainConfig, ckpt: dict | None,
                 on_progress: Callable[[Progress], None] | None, overwrite: bool = False,
                 given: Collection[str] | None = None) -> None:
        self.out, self.cwd = Path(cfg.out), os.getcwd()  # kept: where relative paths start
        if ckpt is not None:  # the saved recipe wins; where to stop and curves may change
            cfg, self.cwd = resumed_config(ckpt, cfg, given)
        self.cfg, self.on_progress = cfg, on_progress
        # What the run needs at its end is checked before it starts, on every rank alike, so a
        # mistake is one line on each.
        self.val_folder = default_val_folder(cfg)
        left_out: list[str] = []  # said once here, not at every validation
        for folder in ([self.val_folder] if self.val_folder else []) + cfg.test_data:
            check_decodes(dataset_files(Path(folder), cfg.scales), bool(cfg.val_degrade), left_out)
        for line in left_out:
            logger.warning(line)
        self.baseline = load_model(cfg.baseline) if cfg.baseline else None
        self.dist, self.device = join_torchrun(cfg.device)
        if cfg.batch % self.dist.world and ckpt is not None:  # its batch is the run's
            raise DistributedError(f"the run's batch {cfg.batch} does not split over "
                                   f"{self.dist.world} processes: resume it with a number of "
                                   f"processes that divides {cfg.batch}")
        if cfg.batch % self.dist.world:
            raise BadOptionError(f"batch {cfg.batch} does not split over {self.dist.world} "
                                 "processes", option="batch")
        self.autocast_dtype = cfg.autocast_dtype(self.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

        self.model = DRCN(cfg.features, cfg.recursions)
        self.gen = torch.Generator(device=self.device)
        self.gen.manual_seed(cfg.seed)
        if cfg.init and ckpt is None:
            start = load_model(cfg.init)
            if (start.features, start.recursions) != (cfg.features, cfg.recursions):
                raise ModelLoadError(f"initial weights {cfg.init} are F={start.features}, "
                                     f"D={start.recursions}; this run asks for F={cfg.features}, "
                                     f"D={cfg.recursions}")
            self.model.load_state_dict(start.state_dict())
        else:
            init_weights(self.model, torch.Generator().manual_seed(cfg.seed))
        self._place(self.model)
        self.teacher = self._load_teacher(cfg) if cfg.teacher and cfg.teacher_weight else None
        self.opt = make_optimizer(cfg, self.model)
        self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema)) \
            if cfg.ema else None
        self.total = cfg.steps if cfg.minutes <= 0 else 0  # 0: fitted to the time budget
        self.extended: list[tuple[int, int]] = []  # changes of the run's length (lr_factor)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: lr_factor(self.cfg, s, self.total, self.extended))
        self.step, self.best, self.history, self.elapsed = 0, -math.inf, [], 0.0
        self.curves_ok = True  # until a chart fails once
        if ckpt is not None:
            try:
                self.model.load_state_dict(ckpt["model"])
                self.opt.load_state_dict(ckpt["optimizer"])
                self.sched.load_state_dict(ckpt["scheduler"])
                resume_draws(self.gen, ckpt["rng"], cfg.seed + ckpt["step"])
                if self.ema is not None:
                    self.ema.load_state_dict(ckpt["ema"])
                self.history, self.extended = ckpt["history"], extensions(ckpt["history"])
            except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as e:
                raise CheckpointError(f"the checkpoint in {self.out} does not fit this run "
                                      f"({one_line(e)})") from e
            self.step, self.total, self.best = ckpt["step"], ckpt["total"], ckpt["best"]
            self.elapsed = ckpt["elapsed"]
            self._take_steps()
            self._take_lr(TrainConfig.from_dict(ckpt["config"]).lr)
        self.saved = ckpt["step"] if ckpt is not None else None  # the kept checkpoint's step
        self.net = self.model
        if self.dist.world > 1:
            self.net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

        t0 = time.perf_counter()
        self.val_recipe = cfg.recipes()[1]
        self.patches: PatchSet = fitting_patches(cfg, self.device, self.dist.world,
                                                 self.autocast_dtype is not None,
                                                 resumed=ckpt is not None)
        self.data_seconds = time.perf_counter() - t0
        self.data_id = self._data()  # once: the patches do not change during the run
        if ckpt is not None and ckpt.get("data", self.data_id) != self.data_id:
            logger.warning("the training data changed since this run started (%s, was %s): the "
                           "resumed run differs from an uninterrupted one", self.data_id,
                           ckpt["data"])
        if overwrite and self.dist.main:
            clear_old_run(cfg)

    def _take_steps(self) -> None:
        """A resume given another ``--steps`` (:func:`resumed_total`) trains on to that total,
        its schedule and alpha re-fitted from the resumed step (:func:`lr_factor`), a change the
        history (log, curves, card) records."""
        if self.cfg.minutes > 0 or self.cfg.steps == self.total:
            return
        self.extended.append((self.step, self.total))
        self._event("steps", total=self.cfg.steps, was=self.total)
        was, self.total = self.sched.get_last_lr()[0], self.cfg.steps
        set_peak_lr(self.sched, self.sched.base_lrs[0])  # the re-fitted schedule's rate here
        logger.warning("training on to step %d (the run's total was %s); the %s schedule's rate "
                       "at step %d is %.3g%s", self.total, self.extended[-1][1] or "its time "
                       "budget's", self.cfg.schedule, self.step, self.sched.get_last_lr()[0],
                       " (it had ended at 0: a warm restart from the peak)" if was == 0 else "")

    def _take_lr(self, was: float) -> None:
        """A resume given another ``--lr`` trains on with it as the schedule's peak rate from the
        resumed step, a change the history (log, curves, card) records; a run with no steps
        left keeps its rate."""
        if self.cfg.lr == was:
            return
        if self.step >= (self.total or MAX_STEPS):
            logger.warning("the new learning rate is ignored: the run has no steps left to train")
            self.cfg = replace(self.cfg, lr=was)
            return
        set_peak_lr(self.sched, self.cfg.lr)
        self._event("lr", peak_lr=self.cfg.lr, was=was)
        logger.warning("peak learning rate %g from step %d on (was %g); the %s schedule's rate "
                       "there is %.3g", self.cfg.lr, self.step, was, self.cfg.schedule,
                       self.sched.get_last_lr()[0])

    def _place(self, model: nn.Module) -> nn.Module:
        """Move a model to the training device (channels_last on CUDA, as batches are)."""
        model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.device.type == "cuda" else model

    def _load_teacher(self, cfg: TrainConfig) -> nn.Module:
        try:
            teacher = load_model(cfg.teacher)
        except ModelLoadError as e:
            raise ModelLoadError(f"teacher {cfg.teacher}: {one_line(e)}") from e
        return self._place(teacher).requires_grad_(False)

    # -- one step ------------------------------------------------------------------------
    def _batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """This rank's slice of the global batch (ILR, HR, clean flags): the same draw on every
        rank, split by rank."""
        b = self.cfg.batch
        idx = torch.randint(len(self.patches), (b,), generator=self.gen, device=self.device)
        flags = torch.randint(2, (b, 3), generator=self.gen, device=self.device)
        rank, world = self.dist.rank, self.dist.world
        part = slice(rank * b // world, (rank + 1) * b // world)
        pairs = augment(self.patches.pairs[idx[part]], flags[part]).float().div_(255)
        if self.device.type == "cuda":
            pairs = pairs.contiguous(memory_format=torch.channels_last)
        return pairs[:, :1], pairs[:, 1:], self.patches.clean[idx[part]]

    def _train_step(self) -> torch.Tensor:
        x, y, clean = self._batch()
        alpha = alpha_at(self.cfg, self.step, self.total, self.extended)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.bfloat16,
                            enabled=self.autocast_dtype is not None):
            if self.teacher is not None:  # at the student's precision: a student equal to
                # its teacher then gets exactly zero loss on clean patches
                y = distilled_target(self.teacher, x, y, clean, self.cfg.teacher_weight)
            loss = drcn_loss(self.net, x, y, alpha)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip)
        self.opt.step()
        self.sched.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        self.step += 1
        return loss.detach()

    @property
    def result(self) -> DRCN:
        """The weights that are validated and exported: the moving average when kept."""
        return self.model if self.ema is None else self.ema.module

    # -- validation, checkpoints, log --------------------------------------------------------
    def _validate(self) -> dict:
        """The validation's keys of a history row (:func:`validation`)."""
        return validation(self.result, self.val_folder, self.cfg.scales, self.device,
                          self.val_recipe)

    def _data(self) -> str:
        """The patches' counts and the sum of their pixels: changed data shows on resuming."""
        return (f"{self.patches.images} images, {len(self.patches)} patches, pixel sum "
                f"{self.patches.pixel_sum()}")

    def _state(self) -> dict:
        return {"format": CHECKPOINT_FORMAT, "drcn_plugin": __version__,
                "config": asdict(self.cfg), "step": self.step,
                "data": self.data_id, "cwd": self.cwd,
                "total": self.total, "best": self.best, "history": self.history,
                "elapsed": self.elapsed, "model": self.model.state_dict(),
                "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                "rng": self.gen.get_state()} | \
            ({"ema": self.ema.state_dict()} if self.ema is not None else {})

    def _log(self, **extra) -> dict:
        done = self.step - self.history[0]["step"] if self.history else 0
        log = {"config": asdict(self.cfg), "device": str(self.device),
               "device_name": f"{device_name(self.device)}, {torch.get_num_threads()} threads",
               "world_size": self.dist.world,
               "torch": torch.__version__, "patches": len(self.patches),
               "precision": "bf16 autocast" if self.autocast_dtype else "fp32",
               "parameters": sum(p.numel() for p in self.model.parameters()),
               "patch_per_scale": self.patches.per_scale, "images": self.patches.images,
               "data_seconds": round(self.data_seconds, 2), "step": self.step, "total": self.total,
               "train_seconds": round(self.elapsed, 2),
               "steps_per_s": round(done / self.elapsed, 3) if self.elapsed and done else None,
               "best_val_psnr": self.best if self.best > -math.inf else None,
               "history": self.history, **extra}
        atomic_write_bytes(self.out / "log.json", json.dumps(log, indent=2).encode())
        self._draw_curves(log)
        return log

    def _draw_curves(self, log: dict) -> None:
        """Redraw ``curves.png`` from the log. A chart never stops a training: on the first
        failure (matplotlib missing, say) one warning is logged and no more charts are tried."""
        if not (self.cfg.curves and self.curves_ok):
            return
        try:
            training_curves(log, self.out / "curves.png")
        except Exception as e:  # noqa: BLE001 - any chart failure must leave the run going
            self.curves_ok = False
            logger.warning("curves.png not drawn (%s); training goes on without it", one_line(e))

    def _check_finite(self, loss: float | None = None) -> None:
        """End a run whose loss or state (weights, optimizer, moving average) is no longer
        finite, before a checkpoint or the export takes it: the checkpoint written before stays
        the one to go back to. The same on every rank: the loss is the job's, and each rank
        holds the same state."""
        if loss is not None and not math.isfinite(loss):
            what = f"the loss became {loss}"
        elif (part := non_finite(self._state())) is not None:
            what = f"{part} became NaN or infinite"
        else:
            return
        lower = self.cfg.lr / 10  # a tenth, as the step schedule's drops
        then = (f"the checkpoint of step {self.saved} is kept in {self.out}: resume it with a "
                "lower learning rate") if self.saved is not None else \
            "no checkpoint was written: start over with a lower learning rate"
        raise DivergedError(f"training diverged: {what} by step {self.step}; {then}, such as "
                            f"{lower:g}", rate=lower, resumable=self.saved is not None)

    def _checkpoint(self, val: float | None) -> None:
        """Save ``last.pt`` (and ``best.pt`` at a new best ``val``), never from a diverged
        state."""
        self._check_finite()
        is_best = val is not None and val > self.best
        if is_best:
            self.best = val
        state = self._state()
        if is_best:  # first: a failure between the two leaves no last.pt counting a best that
            save_state(self.out / "best.pt", state)  # best.pt does not hold
        save_state(self.out / "last.pt", state)

    def _event(self, name: str, **detail: float) -> None:
        self.history.append({"step": self.step, "event": name, **detail,
                             "seconds": round(self.elapsed, 2)})

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> dict:
        """Train to the end (or ``stop_at``, or a signal's stop); on rank 0 export, measure and
        write the card, or at a stop the checkpoint to resume from."""
        self.model.train()
        started = time.perf_counter() - self.elapsed
        self._event("start")
        stop = StopRequest(self.dist.world == 1)
        with stop:
            self._loop(stop, started)
        self.elapsed = time.perf_counter() - started
        if not self.dist.main:  # ends at once: waiting in a collective for rank 0's end (a
            return {}  # long measurement) could time out, and nothing needs it after the steps
        if stop.asked or self.step < (self.total or MAX_STEPS):  # stopped early: resumable
            self._event("stop")
            self._checkpoint(None)
            return self._log(stopped_at=self.step, interrupted=stop.asked)
        return self._finish()

    def _loop(self, stop: StopRequest, started: float) -> None:
        """Steps until the end, ``stop_at`` or a stop request; validates and checkpoints."""
        cfg, main = self.cfg, self.dist.main
        calib: tuple[int, float] | None = None
        loss_sum, loss_n, last_loss, val = torch.zeros((), device=self.device), 0, None, None
        tick, tick_step = time.perf_counter(), self.step
        first = self.step  # a resumed session fits a time budget from its own steps
        while not stop.asked:  # a time budget not yet fitted (total 0) ends only at stop_at
            if self.step >= min(self.total or MAX_STEPS, cfg.stop_at or MAX_STEPS):
                break
            loss_sum += self._train_step()
            loss_n += 1
            if not self.total:  # time budget: time this session's steps 5..30 (on every rank)
                if self.step - first in (5, 30):
                    synchronize(self.device)
                if self.step - first == 5:
                    calib = (self.step, time.perf_counter())
                elif self.step - first == 30 and calib is not None:
                    self.total = fitted_total(cfg, self.step, started, calib, self.device,
                                              self.dist)
            at_val = (cfg.val_every and self.step % cfg.val_every == 0
                      and self.step < (self.total or 0))
            if loss_n >= 25 or at_val or self.step in (self.total, cfg.stop_at):
                if self.dist.world > 1:  # the mean of every rank's share: the batch's loss, and
                    dist.all_reduce(loss_sum)  # the same on every rank, so all stop if it diverges
                    loss_sum /= self.dist.world
                last_loss, loss_sum, loss_n = (loss_sum / loss_n).item(), loss_sum * 0, 0
                self._check_finite(last_loss)
                now = time.perf_counter()
                self.elapsed = now - started
                rate = (self.step - tick_step) / max(now - tick, 1e-9)
                tick, tick_step = now, self.step
                self.history.append({"step": self.step, "loss": last_loss, "steps_per_s": rate,
                                     "lr": self.sched.get_last_lr()[0],
                                     "alpha": alpha_at(cfg, self.step, self.total, self.extended),
                                     "seconds": round(self.elapsed, 2)})
                if at_val and main:
                    self.history[-1].update(self._validate())
                    val = self.history[-1]["val_psnr"]
                    self._checkpoint(val)
                    self._log()
                if at_val:  # on every rank: a divergence names the checkpoint it keeps
                    self.saved = self.step
                if main and self.on_progress:
                    self.on_progress(Progress(self.step, self.total, last_loss, val, rate))

    def _finish(self) -> dict:
        """Export the final weights, measure them (strict fp32) and write log and model card."""
        cfg = self.cfg
        end = next((r for r in self.history if r.get("event") == "end"
                    and r["step"] == self.step), None)  # there already: a resumed export
        if end is None:
            self._checkpoint(None)  # before the end's slow validation: a signal there loses none
            end = {"step": self.step, "event": "end", **self._validate(),
                   "seconds": round(self.elapsed, 2)}
            self.history.append(end)
        self._checkpoint(end["val_psnr"])  # first: a failed export loses no steps
        weights = self.out / f"{cfg.export_name()}.safetensors"
        export_safetensors(self.result, weights)  # _checkpoint found it finite
        log = self._log(**measured_export(
            weights, cfg.test_data or ([self.val_folder] if self.val_folder else []), cfg.scales,
            self.device, self.val_recipe, self.baseline))
        card = model_card(log).encode(errors="surrogateescape")  # folders named as their bytes
        atomic_write_bytes(self.out / f"{cfg.export_name()}.md", card)
        return log


def train(cfg: TrainConfig, resume: bool = False,
          on_progress: Callable[[Progress], None] | None = None, overwrite: bool = False,
          given: Collection[str] | None = None) -> dict:
    """Run (or resume, or start over with ``overwrite``) one training; returns the run's log
    (empty on ranks other than 0; a resume already at its stop step: :func:`stop_reached`'s).
    ``given``: the option names the user gave, which a resume names when the checkpoint
    overrides them (None: those not at their default)."""
    try:
        check_options(cfg, resume, given)
        check_run_folder(cfg, resume, overwrite)
        job, _ = join_torchrun(cfg.device)  # the ranks meet before rank 0 takes the folder
        with left_behind(Path(cfg.out)), hold_run_folder(Path(cfg.out), job), \
                job.warn_once(__package__):  # a process lost as the ranks meet there: one line
            ckpt = load_resume_point(Path(cfg.out), cfg, given) if resume else None
            return stop_reached(ckpt, cfg, given) or Trainer(cfg, ckpt, on_progress, overwrite,
                                                             given).run()
    except (torch.OutOfMemoryError, RuntimeError) as e:
        if not is_out_of_memory(e):
            raise
        raise OutOfMemoryError("training ran out of memory: start over with a smaller batch, "
                               "patch or feature count, or with less data (a larger stride)") from e
    finally:
        if dist.is_initialized():
            gc.collect()  # the trainer (a reference cycle) and its DDP wrapper go before the group
            dist.destroy_process_group()
