"""The options of a training run, declared once: value, help text and command-line flag.

``drcn train`` builds its options from these fields (:mod:`.cli`), checkpoints store them, and
the model card renders its reproducing command from them (:func:`command_line`).
"""

from __future__ import annotations

import math
import os
import shlex
import textwrap
from collections.abc import Collection
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import torch

from ..degrade import Recipe
from ..devices import pick_precision
from ..errors import EMPTY_PATH, BadOptionError
from ..hub import MAX_FEATURES, MAX_RECURSIONS, names_a_path
from ..scales import check_train_scales, exact_text

Optimizer = Literal["adam", "sgd"]
Schedule = Literal["cosine", "step", "constant"]
TrainPrecision = Literal["auto", "fp32", "bf16"]
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)
SCHEDULES: tuple[str, ...] = get_args(Schedule)
TRAIN_PRECISIONS: tuple[str, ...] = get_args(TrainPrecision)
DOWNSCALES = (1.0, 0.9, 0.8, 0.7, 0.6)
MAX_STEPS = 10**12  # more than any run takes; a checkpoint past it is damaged
FOLDER_OPTIONS = ("data", "val_data", "test_data")
MODEL_OPTIONS = ("init", "baseline", "teacher")  # model specs: a path, or a shipped or Hub name
# Far above any useful learning rate or weight decay; from about 1e37 the optimizer's step no
# longer fits a float32 and torch raises instead of training.
MAX_RATE = 1000.0


def option(default: Any, help: str, flag: str = "", short: str = "",
           card: Literal["always", "changed", "never"] = "changed") -> Any:
    """A config field with its command-line form.

    ``flag`` defaults to ``--field-name``; ``card`` says when the model card's reproducing
    command spells it out (always, when it differs from the default, or never).
    """
    meta = {"help": help, "flag": flag, "short": short, "card": card}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def _has_type(value: Any, hint: Any) -> bool:
    """Whether a config value is of its field's type (a float field also takes an int)."""
    if get_origin(hint) is list:
        return isinstance(value, list) and all(_has_type(v, get_args(hint)[0]) for v in value)
    kinds = {bool: bool, int: int, float: int | float}.get(hint, str)  # the Literals are str
    return isinstance(value, kinds) and (hint is bool or not isinstance(value, bool))


def flag_of(f: Field) -> str:
    """The long command-line flag of a config field."""
    return f.metadata["flag"] or "--" + f.name.replace("_", "-")


@dataclass
class TrainConfig:
    """Everything that defines a run; stored in every checkpoint and in the model card."""

    data: list[str] = option([], "training image folder (repeat for several; one given twice "
                             "counts twice, with its own draws; a resume reads its run's, or "
                             "these once its are gone)", card="always")
    out: str = option("runs/drcn", "run folder: checkpoints, log, exported weights",
                      card="never")
    scales: list[int] = option([2, 3, 4], "repeat for multi-scale", flag="--scale", short="-s",
                               card="always")
    features: int = option(64, "feature channels F", short="-F", card="always")
    recursions: int = option(16, "recursions D", short="-D", card="always")
    patch: int = option(41, "patch side (paper: 41)")
    stride: int = option(21, "patch stride (paper: 21)")
    downscales: list[float] = option(list(DOWNSCALES), "image shrink factors (augmentation)",
                                     flag="--downscale")
    batch: int = option(64, "global batch (split over torchrun processes)")
    steps: int = option(10000, "training steps (with --resume: the run's new total)",
                        card="always")
    minutes: float = option(0.0, "> 0: fit the step count to this training time", card="never")
    optimizer: Optimizer = option("adam", "adam (AdamW, decoupled weight decay) or sgd (paper: "
                                          "sgd, lr 0.01, step)")
    lr: float = option(5e-4, "peak learning rate (with --resume: the new peak from the "
                       "checkpoint's step on)")
    momentum: float = option(0.9, "SGD momentum")
    weight_decay: float = option(1e-4, "weight decay (paper: 1e-4)")
    schedule: Schedule = option("cosine", "cosine, step or constant")
    warmup: int = option(200, "linear warm-up steps")
    lr_drops: list[float] = option([0.5, 0.75], "step schedule: x0.1 at these fractions",
                                   flag="--lr-drop")
    clip: float = option(0.5, "gradient-norm clipping (0 = off)")
    ema: float = option(0.0, "decay of an exponential moving average of the weights, validated "
                        "and exported instead of them (0 = off; e.g. 0.999)")
    alpha: float = option(1.0, "initial weight of the per-depth loss")
    alpha_decay: float = option(0.5, "fraction of steps for alpha to reach 0")
    init: str = option("", "start from these weights (model spec)")
    val_data: str = option("", "validation folder (default: Set5 beside --data)")
    val_every: int = option(500, "validate and checkpoint every N steps")
    test_data: list[str] = option([], "folders measured at the end (card table)")
    baseline: str = option("", "model measured beside the result in the card")
    name: str = option("", "exported file stem (default drcn-fF-dD-xS)")
    device: str = option("auto", "auto, cpu, cuda, cuda:N or mps", card="never")
    precision: TrainPrecision = option("auto", "auto (bf16 on GPUs with native bf16), fp32 or bf16")
    seed: int = option(0, "random seed (weights, batches)")
    stop_at: int = option(0, "stop resumably after this step", card="never")
    degrade: str = option("", "degrade the LR images, e.g. "
                          "'blur:0.2-1.2@0.3,noise:1-10@0.5,jpeg:30-95,clean:0.15'")
    degrade_copies: int = option(3, "degraded draws of each pair")
    val_degrade: str = option("", "validate on LR degraded so, e.g. jpeg:75")
    teacher: str = option("", "with --degrade: model whose output on the clean (undegraded) "
                          "patches is blended into their target, e.g. drcn-lite, so that a "
                          "fine-tune is asked to keep what it does on clean images")
    teacher_weight: float = option(1.0, "share of the teacher's output in a clean patch's target")
    curves: bool = option(True, "redraw OUT/curves.png at every validation and at the end "
                          "(needs matplotlib)", card="never")

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Rebuild a config saved with ``asdict`` (unknown keys are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def export_name(self) -> str:
        """File stem of the exported weights, e.g. ``drcn-f64-d16-x234``."""
        scales = "".join(map(str, self.scales))
        return self.name or f"drcn-f{self.features}-d{self.recursions}-x{scales}"

    def check(self, resume: bool = False) -> None:
        """Refuse option values that cannot train, before any data is touched.

        Raises :class:`BadOptionError` whose ``option`` is the field's name. A ``resume`` needs
        no training folder: it reads its checkpoint's.
        """
        hints = get_type_hints(TrainConfig)
        for f in fields(self):
            value = getattr(self, f.name)
            if not _has_type(value, hint := hints[f.name]):
                want = hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")
                raise BadOptionError(f"{f.name} must be {want}, not {type(value).__name__}",
                                     option=f.name)
        check_train_scales(self.scales)
        problems = [
            ("data", not self.data and not resume, "no training folder given"),
            ("data", any(not d for d in self.data), EMPTY_PATH),
            ("test_data", any(not d for d in self.test_data), EMPTY_PATH),
            ("out", not self.out, EMPTY_PATH),
            ("scale", len(set(self.scales)) < len(self.scales),
             f"scales {', '.join(map(str, self.scales))} name one twice: give each once"),
            ("features", not 1 <= self.features <= MAX_FEATURES,
             f"features must be in 1..{MAX_FEATURES}"),
            ("recursions", not 1 <= self.recursions <= MAX_RECURSIONS,
             f"recursions must be in 1..{MAX_RECURSIONS}"),
            ("patch", self.patch < 2 * max(self.scales),
             f"patch {self.patch} is too small for scale {max(self.scales)}"),
            ("stride", self.stride < 1, "stride must be at least 1"),
            ("batch", self.batch < 1, "batch must be >= 1"),
            ("steps", self.steps < 1 and self.minutes <= 0, "give a step count or a time budget"),
            ("steps", self.steps > MAX_STEPS, f"steps must be at most {MAX_STEPS:.0e}"),
            ("optimizer", self.optimizer not in OPTIMIZERS,
             f"optimizer: use one of {', '.join(OPTIMIZERS)}"),
            ("schedule", self.schedule not in SCHEDULES,
             f"schedule: use one of {', '.join(SCHEDULES)}"),
            ("lr", not 0 < self.lr <= MAX_RATE,
             f"learning rate must be a positive number up to {MAX_RATE:g}"),
            ("momentum", not 0 <= self.momentum < 1, "the SGD momentum must be in [0, 1)"),
            ("weight_decay", not 0 <= self.weight_decay <= MAX_RATE,
             f"weight decay must be a number in 0..{MAX_RATE:g}"),
            ("clip", not 0 <= self.clip < math.inf, "clip must be a number >= 0 (0 = off)"),
            ("warmup", self.warmup < 0, "warm-up steps must be >= 0"),
            ("lr_drops", any(not 0 < f < 1 for f in self.lr_drops),
             "learning-rate drops are fractions of the run, in (0, 1)"),
            ("alpha_decay", not 0 <= self.alpha_decay <= 1,
             "alpha decay is a fraction of the run, in 0..1"),
            ("minutes", not 0 <= self.minutes <= 1e6, "minutes must be a number in 0..1e6"),
            ("stop_at", self.stop_at < 0, "stop-at must be >= 0 (0 = run to the end)"),
            ("stop_at", self.stop_at > 0 and self.minutes > 0,
             "a stop step needs a step count; a run with a time budget fits its own"),
            ("val_every", self.val_every < 0, "val-every must be >= 0 (0 = only at the end)"),
            ("seed", not 0 <= self.seed < 2**63, "the seed must be in 0 .. 2^63 - 1"),
            ("name", self.name in (".", "..") or any(c in self.name for c in "/\\")
             or not self.name.isprintable(),
             f"name {self.name!r} is a file stem for the run folder, without folders"),
            ("ema", not 0 <= self.ema < 1, "the EMA decay must be in [0, 1)"),
            ("alpha", not 0 <= self.alpha <= 1, "alpha must be in 0..1"),
            ("downscales", not self.downscales, "give at least one downscale factor"),
            ("downscales", any(not 0.05 <= f <= 1 for f in self.downscales),
             "downscale factors must be in 0.05..1"),
            ("precision", self.precision not in TRAIN_PRECISIONS,
             f"precision: use one of {', '.join(TRAIN_PRECISIONS)}"),
            ("degrade_copies", not 1 <= self.degrade_copies <= 1000,
             "degraded copies must be in 1..1000"),
            ("teacher_weight", not 0 <= self.teacher_weight <= 1,
             "the teacher weight must be in 0..1"),
            ("teacher", bool(self.teacher) and self.teacher_weight == 0,
             "a teacher with weight 0 takes no part: drop the teacher or give it a weight"),
            ("teacher", bool(self.teacher) and not self.degrade,
             "a teacher needs degraded training (without degradations every patch is clean and "
             "the run would only copy the teacher)"),
            ("out", os.path.exists(self.out) and not os.path.isdir(self.out),
             f"the run folder {self.out} is an existing file"),
        ]
        for name, bad, message in problems:
            if bad:
                raise BadOptionError(message, option=name)
        self.recipes()

    def recipes(self) -> tuple[Recipe | None, Recipe | None]:
        """The training and validation degradation recipes (None: clean protocol pairs)."""
        return (Recipe.parse(self.degrade) if self.degrade else None,
                Recipe.parse(self.val_degrade, "val_degrade") if self.val_degrade else None)

    def autocast_dtype(self, device: torch.device) -> torch.dtype | None:
        """bf16 autocast when asked, or for ``auto`` on a GPU with bf16 hardware; None is fp32.

        A T4 or RTX 20xx only emulates bf16 (slowly), so ``auto`` trains in fp32 there.
        """
        native = device.type == "cuda" and pick_precision(device) == torch.bfloat16
        return torch.bfloat16 if self.precision == "bf16" or (self.precision == "auto"
                                                              and native) else None


def check_options(cfg: TrainConfig, resume: bool, given: Collection[str] | None) -> None:
    """:meth:`TrainConfig.check`, and for a new run :func:`check_combination` (a resume takes
    its checkpoint's recipe, so only its values are checked here)."""
    cfg.check(resume)
    if not resume:
        check_combination(cfg, given)


def check_combination(cfg: TrainConfig, given: Collection[str] | None = None) -> None:
    """Refuse options the user gave that the others leave without effect (drops with another
    schedule, ...), or that would weigh double (a downscale factor given twice): silently
    taken, they would train another recipe than the one asked for. ``given``: the options
    given (None: those not at their default)."""
    asked = set(given) if given is not None else \
        {f.name for f in fields(cfg) if getattr(cfg, f.name) != default_of(f)}
    fixed = cfg.minutes <= 0  # a time budget fits the step count itself
    measured = bool(cfg.test_data or default_val_folder(cfg))
    problems = [
        ("lr_drops", cfg.schedule != "step",
         f"learning-rate drops act only with the step schedule, not {cfg.schedule}"),
        ("momentum", cfg.optimizer != "sgd",
         f"the momentum acts only with the sgd optimizer, not {cfg.optimizer}"),
        ("degrade_copies", not cfg.degrade, "degraded copies need a degradation recipe"),
        ("teacher_weight", not cfg.teacher, "a teacher weight needs a teacher"),
        ("alpha_decay", cfg.alpha <= 0, "with alpha 0 there is no per-depth loss to decay"),
        ("steps", not fixed and cfg.steps > 0,
         "a time budget fits its own step count: give one or the other (or steps 0)"),
        ("stop_at", fixed and cfg.stop_at >= cfg.steps,
         f"step {cfg.stop_at} is not before the run's end ({cfg.steps} steps), so the run would "
         "not stop there"),
        ("val_degrade", not measured, "there is no validation or test folder to degrade"),
        ("baseline", not measured, "there is no validation or test folder to measure it on"),
        # a factor given twice cuts its patches twice, weighting it double; refused for new runs
        # only, so that a run an earlier version started so still resumes as it trained
        ("downscales", len(set(cfg.downscales)) < len(cfg.downscales),
         f"downscale factors {', '.join(f'{f:g}' for f in cfg.downscales)} name one twice: give "
         "each once"),
    ]
    for name, bad, message in problems:
        if bad and name in asked:
            raise BadOptionError(message, option=name)


def _words(f: Field, value: Any) -> list[str]:
    flag = f.metadata["short"] or flag_of(f)
    text = lambda v: exact_text(v) if isinstance(v, float) else shlex.quote(str(v))  # noqa: E731
    values = value if isinstance(value, list) else [value]
    return [f"{flag} {text(v)}" for v in values]


def command_line(cfg: TrainConfig, steps: int, stop_at: int = 0) -> str:
    """The ``drcn train`` command that repeats ``cfg`` for a fixed number of steps (stopping
    resumably after ``stop_at``, when given)."""
    cfg, default = replace(cfg, steps=steps), TrainConfig()
    always = [f for f in fields(TrainConfig) if f.metadata["card"] == "always"]
    changed = [f for f in fields(TrainConfig) if f.metadata["card"] == "changed"
               and getattr(cfg, f.name) != getattr(default, f.name)]
    parts = ["drcn train"] + [w for f in always + changed for w in _words(f, getattr(cfg, f.name))]
    parts += [f"--stop-at {stop_at}"] if stop_at else []
    return " \\\n    ".join(textwrap.wrap(" ".join(parts), 90, break_long_words=False,
                                           break_on_hyphens=False))


def default_of(f: Field) -> Any:
    """A field's default value (a fresh list for list fields)."""
    return f.default_factory() if f.default is MISSING else f.default


def default_val_folder(cfg: TrainConfig) -> str:
    """``--val-data`` if given, else a ``Set5`` folder beside the first training folder, else ''."""
    if cfg.val_data:
        return cfg.val_data
    guess = Path(cfg.data[0]).parent / "Set5" if cfg.data else None
    return str(guess) if guess is not None and os.path.isdir(guess) else ""


def rooted(cfg: TrainConfig, folder: str) -> TrainConfig:
    """``cfg`` with its folders and model files as absolute real paths, relative ones taken from
    ``folder``: what a run started there reads, wherever it is resumed from."""
    def root(path: str) -> str:
        return os.path.realpath(os.path.join(folder, path)) if path else path

    changes: dict[str, Any] = {}
    for name in FOLDER_OPTIONS:
        value = getattr(cfg, name)
        changes[name] = [root(p) for p in value] if isinstance(value, list) else root(value)
    for name in MODEL_OPTIONS:
        if names_a_path(spec := getattr(cfg, name)):
            changes[name] = root(os.path.expanduser(spec))
    return replace(cfg, **changes)
