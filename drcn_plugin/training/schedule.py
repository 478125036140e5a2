"""A run's length and its schedules: the learning rate and alpha against the step, re-fitted
when a resume changes the length, and the length a time budget fits."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist

from ..devices import Dist
from .config import MAX_STEPS, TrainConfig

# The (step, total before) of each change of a run's length on resume, in order.
Extensions = Sequence[tuple[int, int]]


def alpha_at(cfg: TrainConfig, step: int, total: int, extended: Extensions = ()) -> float:
    """Recursive-supervision weight: ``cfg.alpha`` decaying linearly to 0 over ``alpha_decay`` of
    the run (of its new total from each extension on, :func:`_progress`)."""
    if cfg.alpha_decay <= 0:
        return 0.0
    return cfg.alpha * (1.0 - _progress(step, 0, lambda t: cfg.alpha_decay * t,
                                        _spans(total, extended), restart=False))


def lr_factor(cfg: TrainConfig, step: int, total: int, extended: Extensions = ()) -> float:
    """Learning-rate multiplier: linear warm-up, then cosine to 0, x0.1 drops, or constant.

    A run extended (or shortened) on resume keeps the rate it has at the resumed step and goes
    on to what is still ahead at its place in the new total: the cosine continues from the phase
    it reached, that remaining phase spread over the remaining steps, so it reaches 0 at the new
    total without a jump (the longer run's own curve would raise the rate at once); a cosine that
    had ended (rate 0, a finished run) has no rate to go on from, so it starts again from the
    peak (a warm restart) rather than train on at 0; drops already taken stay taken and those to
    come fall at their fraction of the new total; warm-up, a step count, is unchanged.
    """
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    spans = _spans(total, extended)
    if cfg.schedule == "cosine":
        t = _progress(step, cfg.warmup, lambda t: t, spans, restart=True)
        return 0.5 * (1 + math.cos(math.pi * t))
    if cfg.schedule == "step":
        return 0.1 ** _drops_taken(cfg.lr_drops, step, spans)
    return 1.0


def extensions(history: list[dict]) -> list[tuple[int, int]]:
    """The (step, total before) of each change of a run's length its history records."""
    changes = [(r["step"], r["was"]) for r in history if r.get("event") == "steps"]
    if not all(isinstance(was, int) and was >= 0 for _, was in changes):
        raise ValueError("a change of the run's length in its history is damaged")
    return changes


def _spans(total: int, extended: Extensions) -> list[tuple[int, int]]:
    """A run's lengths as (first step, total) pieces: the first from step 0, then one from each
    extension; a total of 0 (a time budget not fitted yet) counts as endless."""
    starts = [0] + [step for step, _ in extended]
    totals = [was for _, was in extended] + [total]
    return [(s, t or MAX_STEPS) for s, t in zip(starts, totals, strict=True)]


def _progress(step: int, start: int, end: Callable[[int], float],
              spans: list[tuple[int, int]], restart: bool) -> float:
    """How far (0..1) a ramp from step ``start`` to step ``end(total)`` is at ``step``: linear
    over the first piece; from each later piece's first step on, linear from the progress it
    had there (no jump; 0 again for an ended ramp that should ``restart``) to 1 at the end its
    total puts it at."""
    *before, (first, total) = spans
    if before and step < first:
        return _progress(step, start, end, before, restart)
    at = max(first, start) if before else start
    done = _progress(at, start, end, before, restart) if before else 0.0
    done = 0.0 if restart and done >= 1 else done
    return min(1.0, max(0.0, done + (1 - done) * (step - at) / max(1, end(total) - at)))


def _drops_taken(drops: list[float], step: int, spans: list[tuple[int, int]]) -> int:
    """The learning-rate drops taken by ``step``: those at or before it as a fraction of its
    piece's total, and those taken by the piece's first step."""
    *before, (first, total) = spans
    if before and step < first:
        return _drops_taken(drops, step, before)
    here = sum(step >= d * total for d in drops)
    return max(here, _drops_taken(drops, first, before)) if before else here


def set_peak_lr(sched: torch.optim.lr_scheduler.LambdaLR, lr: float) -> None:
    """Make ``lr`` a schedule's peak rate from its current step on: each step's rate becomes
    ``lr`` times the schedule's factor there (warm-up, cosine or drops keep their shape), as in
    a run started with it."""
    sched.base_lrs = [lr] * len(sched.base_lrs)
    rates = [lr * factor(sched.last_epoch) for factor in sched.lr_lambdas]
    for group, rate in zip(sched.optimizer.param_groups, rates, strict=True):
        group["initial_lr"], group["lr"] = lr, rate
    sched.load_state_dict(sched.state_dict() | {"_last_lr": rates})  # what get_last_lr() says


def fitted_total(cfg: TrainConfig, step: int, started: float, rate_from: tuple[int, float],
                 device: torch.device, job: Dist) -> int:
    """The step count that ends the run at ``cfg.minutes`` from ``started``, at the speed since
    ``rate_from`` (step, time); every rank gets rank 0's."""
    s0, t0 = rate_from
    now = time.perf_counter()
    rate = (step - s0) / max(now - t0, 1e-9)
    left = cfg.minutes * 60 - (now - started)
    total = torch.tensor([step + max(0, int(rate * left * 0.97))], device=device)
    if job.world > 1:
        dist.broadcast(total, 0)
    return min(max(int(total.item()), step + 1), MAX_STEPS)
