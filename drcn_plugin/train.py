"""Training DRCN: the paper's objective, resumable checkpoints, DDP, export with a model card.

``train(cfg)`` runs one training described by a :class:`TrainConfig` (``drcn train`` fills it from
the command line). Under ``torchrun`` each process takes its slice of every global batch and
DistributedDataParallel averages the gradients (gloo on CPU, nccl on CUDA); rank 0 validates,
logs and writes checkpoints. A run folder holds ``last.pt`` and ``best.pt`` (full training state),
``log.json``, and at the end ``NAME.safetensors`` (the shipped weight format) and ``NAME.md``.
"""

from __future__ import annotations

import io
import json
import math
import os
import platform
import textwrap
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import save as safetensors_bytes
from torch import nn

from .data import DOWNSCALES, PatchSet, augment, load_images, make_patches
from .degrade import Recipe
from .engine import Upscaler, pick_device
from .errors import DRCNError
from .evaluation import evaluate, list_images
from .hub import load_model
from .imagefile import atomic_write_bytes
from .model import DRCN

CHECKPOINT_FORMAT = "drcn-train-checkpoint-1"
OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("cosine", "step", "constant")


@dataclass
class TrainConfig:
    """Everything that defines a run; stored in every checkpoint and in the model card."""

    data: list[str]
    out: str = "runs/drcn"
    scales: list[int] = field(default_factory=lambda: [2, 3, 4])
    features: int = 64
    recursions: int = 16
    patch: int = 41
    stride: int = 21
    downscales: list[float] = field(default_factory=lambda: list(DOWNSCALES))
    batch: int = 64
    steps: int = 10000
    minutes: float = 0.0  # > 0: fit the number of steps to this training time instead of `steps`
    optimizer: str = "adam"
    lr: float = 5e-4
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    warmup: int = 200
    lr_drops: list[float] = field(default_factory=lambda: [0.5, 0.75])  # step schedule: x0.1 at
    clip: float = 0.5
    alpha: float = 1.0  # weight of the per-depth loss at step 0 ...
    alpha_decay: float = 0.5  # ... decaying linearly to 0 over this fraction of the steps
    init: str = ""  # start from these weights (a model spec), not from scratch
    val_data: str = ""
    val_every: int = 500
    test_data: list[str] = field(default_factory=list)
    baseline: str = ""  # a model spec measured beside the result in the card
    name: str = ""
    device: str = "auto"
    precision: str = "auto"  # bf16 autocast on CUDA, fp32 elsewhere
    seed: int = 0
    stop_at: int = 0  # stop (resumably) after this step, keeping the schedule of the full run
    degrade: str = ""  # a degradation recipe (see degrade.py) applied to the training LR images
    degrade_copies: int = 3  # degraded copies of each (image, shrink, scale) pair
    val_degrade: str = ""  # validate on LR images degraded by this fixed recipe

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Rebuild a config saved with ``asdict`` (unknown keys are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def export_name(self) -> str:
        """File stem of the exported weights, e.g. ``drcn-f64-d16-x234``."""
        return self.name or f"drcn-f{self.features}-d{self.recursions}-x{''.join(map(str, self.scales))}"

    def check(self) -> None:
        """Refuse option values that cannot train, before any data is touched."""
        problems = [
            (not self.scales or any(s < 2 or s > 8 for s in self.scales), "scales must be 2..8"),
            (self.features < 1 or self.recursions < 1, "--features and --recursions must be >= 1"),
            (self.patch < 2 * max(self.scales or [2]), "--patch is too small"),
            (self.batch < 1, "--batch must be >= 1"),
            (self.steps < 1 and self.minutes <= 0, "give --steps or --minutes"),
            (self.optimizer not in OPTIMIZERS, f"--optimizer: use one of {', '.join(OPTIMIZERS)}"),
            (self.schedule not in SCHEDULES, f"--schedule: use one of {', '.join(SCHEDULES)}"),
            (not self.lr > 0, "--lr must be positive"),
            (not 0 <= self.alpha <= 1, "--alpha must be in 0..1"),
            (any(not 0 < f <= 1 for f in self.downscales), "--downscale factors must be in (0, 1]"),
            (self.precision not in ("auto", "fp32", "bf16"), "--precision: auto, fp32 or bf16"),
            (Path(self.out).exists() and not Path(self.out).is_dir(),
             f"the run folder {self.out} is an existing file"),
            (self.degrade_copies < 1, "--degrade-copies must be >= 1"),
        ]
        for bad, message in problems:
            if bad:
                raise DRCNError(message)
        self.recipes()

    def recipes(self) -> tuple[Recipe | None, Recipe | None]:
        """The training and validation degradation recipes (None: clean protocol pairs)."""
        return (Recipe.parse(self.degrade) if self.degrade else None,
                Recipe.parse(self.val_degrade) if self.val_degrade else None)


# -- the model and the objective ------------------------------------------------------------
def init_weights(model: DRCN, generator: torch.Generator) -> None:
    """He init; the recursive conv near the identity, the last reconstruction conv at zero.

    Sixteen applications of a near-identity conv start stable, and a zero last layer makes the
    network output the bicubic input at step 0 (the tips in weights/README.md).
    """
    with torch.no_grad():
        for conv in (model.embed[0], model.embed[2], model.reconstruct[0]):
            fan_in = conv.weight[0].numel()
            conv.weight.normal_(0, math.sqrt(2 / fan_in), generator=generator)
            conv.bias.zero_()
        w = model.recursive.weight
        w.normal_(0, 1e-3, generator=generator)
        w[:, :, 1, 1] += torch.eye(w.shape[0])
        model.recursive.bias.zero_()
        model.reconstruct[2].weight.zero_()
        model.reconstruct[2].bias.zero_()
        model.ensemble.fill_(1.0 / model.recursions)


def drcn_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, alpha: float) -> torch.Tensor:
    """``alpha * mean_d MSE(y_d, y) + (1 - alpha) * MSE(ensemble, y)`` (weight decay: optimiser)."""
    if alpha <= 0:
        return F.mse_loss(model(x).float(), y)
    ens, preds = model(x, all_depths=True)
    per_depth = torch.stack([F.mse_loss(p.float(), y) for p in preds]).mean()
    return alpha * per_depth + (1 - alpha) * F.mse_loss(ens.float(), y)


def alpha_at(cfg: TrainConfig, step: int, total: int) -> float:
    """Recursive-supervision weight: ``cfg.alpha`` decaying linearly to 0 over ``alpha_decay``."""
    span = cfg.alpha_decay * total
    return cfg.alpha * max(0.0, 1.0 - step / span) if span > 0 else 0.0


def lr_factor(cfg: TrainConfig, step: int, total: int) -> float:
    """Learning-rate multiplier: linear warm-up, then cosine to 0, x0.1 drops, or constant."""
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    if cfg.schedule == "cosine":
        t = min(1.0, (step - cfg.warmup) / max(1, total - cfg.warmup))
        return 0.5 * (1 + math.cos(math.pi * t))
    if cfg.schedule == "step":
        return 0.1 ** sum(step >= d * total for d in cfg.lr_drops)
    return 1.0


def make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """SGD with momentum (the paper's recipe) or AdamW; decay on conv weights only."""
    decay = [p for n, p in model.named_parameters() if n.endswith("weight")]
    rest = [p for n, p in model.named_parameters() if not n.endswith("weight")]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": rest, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    return torch.optim.AdamW(groups, lr=cfg.lr)


# -- distributed -----------------------------------------------------------------------------
@dataclass
class Dist:
    """This process's place in a torchrun job (rank 0 of 1 when run alone)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str) -> tuple[Dist, torch.device]:
    """Join the torchrun job named by the environment (nccl on CUDA, gloo on CPU), if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), pick_device(device)
    d = Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    dev = pick_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", d.local_rank)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return d, dev


# -- checkpoints -----------------------------------------------------------------------------
def _save_torch(path: Path, obj: dict) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path, cfg: TrainConfig) -> dict:
    """A training checkpoint, checked to be ours and of the architecture ``cfg`` asks for."""
    if not path.is_file():
        raise DRCNError(f"nothing to resume: {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load raises many types for a bad file
        raise DRCNError(f"cannot read checkpoint {path}: {str(e).splitlines()[0]}") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise DRCNError(f"{path} is not a drcn training checkpoint")
    saved = TrainConfig.from_dict(ckpt["config"])
    if (saved.features, saved.recursions) != (cfg.features, cfg.recursions):
        raise DRCNError(f"checkpoint {path} is for F={saved.features}, D={saved.recursions}; "
                        f"this run asks for F={cfg.features}, D={cfg.recursions}")
    return ckpt


def export_safetensors(model: DRCN, path: Path) -> None:
    """The weights in the shipped format: float32, contiguous, the model's tensor names."""
    sd = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, safetensors_bytes(sd, metadata={"format": "pt"}))


# -- the run ---------------------------------------------------------------------------------
@dataclass
class Progress:
    """What the progress display receives after each step (rank 0 only)."""

    step: int
    total: int
    loss: float | None
    val_psnr: float | None
    steps_per_s: float


def default_val_folder(cfg: TrainConfig) -> str:
    """``--val-data`` if given, else a ``Set5`` folder beside the first training folder, else ''."""
    if cfg.val_data:
        return cfg.val_data
    guess = Path(cfg.data[0]).parent / "Set5" if cfg.data else None
    return str(guess) if guess is not None and guess.is_dir() else ""


def _evaluate(model: DRCN, folder: str, scales: list[int], device: torch.device,
              strict_fp32: bool, degrade: Recipe | None = None) -> dict:
    """``evaluation.evaluate`` on the bare model in fp32 (TF32 off when ``strict_fp32``).

    cuDNN autotuning is off meanwhile: every image size would otherwise be tuned anew.
    """
    flags = torch.backends.cudnn
    saved = (flags.benchmark, flags.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    flags.benchmark = False
    if strict_fp32:
        flags.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        return evaluate(Upscaler(model, device=str(device), precision="fp32"), Path(folder), scales,
                        degrade=degrade)
    finally:
        flags.benchmark, flags.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
        model.train()


def _mean_psnr(results: dict) -> float:
    return sum(r["psnr"] for r in results.values()) / len(results)


class Trainer:
    """One training run; see :func:`train`."""

    def __init__(self, cfg: TrainConfig, resume: bool,
                 on_progress: Callable[[Progress], None] | None) -> None:
        cfg.check()
        self.out = Path(cfg.out)
        self.dist, self.device = setup_distributed(cfg.device)
        ckpt = load_checkpoint(self.out / "last.pt", cfg) if resume else None
        if ckpt is not None:  # the saved recipe wins; only where to stop may change
            stop_at, out = cfg.stop_at, cfg.out
            cfg = TrainConfig.from_dict(ckpt["config"])
            cfg.stop_at, cfg.out = stop_at, out
        self.cfg, self.on_progress = cfg, on_progress
        if cfg.batch % self.dist.world:
            raise DRCNError(f"--batch {cfg.batch} does not split over {self.dist.world} processes")
        self.val_folder = default_val_folder(cfg)
        for folder in ([self.val_folder] if self.val_folder else []) + cfg.test_data:
            list_images(Path(folder))  # fail now, not after training
        use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and self.device.type == "cuda")
        self.autocast_dtype = torch.bfloat16 if use_bf16 else None
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

        self.model = DRCN(cfg.features, cfg.recursions)
        self.gen = torch.Generator(device=self.device)
        self.gen.manual_seed(cfg.seed)
        if cfg.init and ckpt is None:
            start = load_model(cfg.init)
            if (start.features, start.recursions) != (cfg.features, cfg.recursions):
                raise DRCNError(f"--init {cfg.init} is F={start.features}, D={start.recursions}; "
                                f"this run asks for F={cfg.features}, D={cfg.recursions}")
            self.model.load_state_dict(start.state_dict())
        else:
            init_weights(self.model, torch.Generator().manual_seed(cfg.seed))
        self.model.to(self.device)
        if self.device.type == "cuda":
            self.model.to(memory_format=torch.channels_last)
        self.opt = make_optimizer(cfg, self.model)
        self.total = cfg.steps if cfg.minutes <= 0 else 0  # 0: fitted to the time budget
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: lr_factor(self.cfg, s, self.total or 10**12))
        self.step, self.best, self.history, self.elapsed = 0, -math.inf, [], 0.0
        if ckpt is not None:
            self.model.load_state_dict(ckpt["model"])
            self.opt.load_state_dict(ckpt["optimizer"])
            self.sched.load_state_dict(ckpt["scheduler"])
            self.gen.set_state(ckpt["rng"])
            self.step, self.total, self.best = ckpt["step"], ckpt["total"], ckpt["best"]
            self.history, self.elapsed = ckpt["history"], ckpt["elapsed"]
        self.net = self.model
        if self.dist.world > 1:
            self.net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

        t0 = time.perf_counter()
        degrade, self.val_recipe = cfg.recipes()
        images = load_images([Path(p) for p in cfg.data], colour=degrade is not None)
        self.patches: PatchSet = make_patches(images, cfg.scales, cfg.patch, cfg.stride,
                                              cfg.downscales, self.device, degrade,
                                              cfg.degrade_copies, cfg.seed)
        self.data_seconds = time.perf_counter() - t0

    # -- one step ------------------------------------------------------------------------
    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's slice of the global batch: the same draw on every rank, split by rank."""
        b = self.cfg.batch
        idx = torch.randint(len(self.patches), (b,), generator=self.gen, device=self.device)
        flags = torch.randint(2, (b, 3), generator=self.gen, device=self.device)
        part = slice(self.dist.rank * b // self.dist.world, (self.dist.rank + 1) * b // self.dist.world)
        pairs = augment(self.patches.pairs[idx[part]], flags[part]).float().div_(255)
        if self.device.type == "cuda":
            pairs = pairs.contiguous(memory_format=torch.channels_last)
        return pairs[:, :1], pairs[:, 1:]

    def _train_step(self) -> torch.Tensor:
        x, y = self._batch()
        alpha = alpha_at(self.cfg, self.step, self.total or 10**12)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.bfloat16,
                            enabled=self.autocast_dtype is not None):
            loss = drcn_loss(self.net, x, y, alpha)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip)
        self.opt.step()
        self.sched.step()
        self.step += 1
        return loss.detach()

    # -- time budget -----------------------------------------------------------------------
    def _fit_total(self, started: float, rate_from: tuple[int, float]) -> None:
        """Fix the step count so the run ends at ``cfg.minutes``; every rank gets rank 0's."""
        s0, t0 = rate_from
        now = time.perf_counter()
        rate = (self.step - s0) / max(now - t0, 1e-9)
        left = self.cfg.minutes * 60 - (now - started)
        total = torch.tensor([self.step + max(0, int(rate * left * 0.97))], device=self.device)
        if self.dist.world > 1:
            dist.broadcast(total, 0)
        self.total = max(int(total.item()), self.step + 1)

    # -- validation, checkpoints, log --------------------------------------------------------
    def _validate(self) -> float | None:
        if not self.val_folder:
            return None
        res = _evaluate(self.model, self.val_folder, self.cfg.scales, self.device, strict_fp32=False,
                        degrade=self.val_recipe)
        return _mean_psnr(res)

    def _state(self) -> dict:
        return {"format": CHECKPOINT_FORMAT, "config": asdict(self.cfg), "step": self.step,
                "total": self.total, "best": self.best, "history": self.history,
                "elapsed": self.elapsed, "model": self.model.state_dict(),
                "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                "rng": self.gen.get_state()}

    def _log(self, **extra) -> dict:
        done = self.step - self.history[0]["step"] if self.history else 0
        log = {"config": asdict(self.cfg), "device": str(self.device),
               "device_name": _device_name(self.device), "world_size": self.dist.world,
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
        return log

    def _checkpoint(self, val: float | None) -> None:
        is_best = val is not None and val > self.best
        if is_best:
            self.best = val
        state = self._state()
        _save_torch(self.out / "last.pt", state)
        if is_best:
            _save_torch(self.out / "best.pt", state)

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> dict:
        """Train to the end (or ``stop_at``); on rank 0 export, measure and write the card."""
        cfg, main = self.cfg, self.dist.main
        self.model.train()
        started = time.perf_counter() - self.elapsed
        self.history.append({"step": self.step, "event": "start", "seconds": round(self.elapsed, 2)})
        calib: tuple[int, float] | None = None
        loss_sum, loss_n, last_loss, val = torch.zeros((), device=self.device), 0, None, None
        tick, tick_step = time.perf_counter(), self.step
        while True:
            if self.total and (self.step >= self.total or (cfg.stop_at and self.step >= cfg.stop_at)):
                break
            loss_sum += self._train_step()
            loss_n += 1
            if not self.total:  # time budget: time steps 5..30 (same steps on every rank)
                if self.step in (5, 30):
                    _sync(self.device)
                if self.step == 5:
                    calib = (self.step, time.perf_counter())
                elif self.step == 30 and calib is not None:
                    self._fit_total(started, calib)
            at_val = cfg.val_every and self.step % cfg.val_every == 0 and self.step < (self.total or 0)
            if loss_n >= 25 or at_val or self.step == self.total:
                last_loss, loss_sum, loss_n = (loss_sum / loss_n).item(), loss_sum * 0, 0
                now = time.perf_counter()
                self.elapsed = now - started
                rate = (self.step - tick_step) / max(now - tick, 1e-9)
                tick, tick_step = now, self.step
                self.history.append({"step": self.step, "loss": last_loss, "steps_per_s": rate,
                                     "lr": self.sched.get_last_lr()[0],
                                     "alpha": alpha_at(cfg, self.step, self.total or 10**12),
                                     "seconds": round(self.elapsed, 2)})
                if at_val and main:
                    val = self._validate()
                    self.history[-1]["val_psnr"] = val
                    self._checkpoint(val)
                    self._log()
                if main and self.on_progress:
                    self.on_progress(Progress(self.step, self.total, last_loss, val, rate))
        self.elapsed = time.perf_counter() - started
        if not main:
            _barrier(self.dist)
            return {}
        if self.step < self.total:  # stopped early: resumable
            self.history.append({"step": self.step, "event": "stop", "seconds": round(self.elapsed, 2)})
            self._checkpoint(None)
            log = self._log(stopped_at=self.step)
        else:
            log = self._finish()
        _barrier(self.dist)
        return log

    def _finish(self) -> dict:
        """Export the final weights, measure them (strict fp32) and write log and model card."""
        cfg = self.cfg
        weights = self.out / f"{cfg.export_name()}.safetensors"
        export_safetensors(self.model, weights)
        model = load_model(str(weights)).to(self.device)  # measure exactly what was exported
        folders = cfg.test_data or ([self.val_folder] if self.val_folder else [])
        measured = self._measure(model, folders)
        val = self._validate()
        self.history.append({"step": self.step, "event": "end", "val_psnr": val,
                             "seconds": round(self.elapsed, 2)})
        self._checkpoint(val)
        baseline = self._measure(load_model(cfg.baseline).to(self.device), folders) \
            if cfg.baseline else {}
        from .hub import sha256_of

        log = self._log(weights=weights.name, sha256=sha256_of(weights),
                        measured=_summary(measured), baseline=_summary(baseline))
        atomic_write_bytes(self.out / f"{cfg.export_name()}.md", model_card(log).encode())
        return log


    def _measure(self, model: DRCN, folders: list[str]) -> dict:
        """Strict-fp32 scores on each folder, clean and (if validating so) degraded."""
        out = {f: _evaluate(model, f, self.cfg.scales, self.device, True) for f in folders}
        if self.val_recipe is not None:
            out |= {f"{f} [{self.val_recipe}]": _evaluate(model, f, self.cfg.scales, self.device,
                                                          True, self.val_recipe) for f in folders}
        return out


def _summary(results: dict) -> dict:
    """Per dataset and scale: PSNR/SSIM and bicubic's, without the per-image rows."""
    return {Path(ds).name: {s: {k: r[k] for k in ("psnr", "ssim", "bicubic_psnr", "bicubic_ssim")}
                            for s, r in res.items()} for ds, res in results.items()}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _barrier(d: Dist) -> None:
    if d.world > 1:
        dist.barrier()


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def model_card(log: dict) -> str:
    """A markdown model card from a finished run's log: recipe, data, speed, measured table."""
    c = TrainConfig.from_dict(log["config"])
    rows = []
    for ds, res in log["measured"].items():
        for s, r in res.items():
            base = log["baseline"].get(ds, {}).get(s)
            cells = [ds, f"x{s}", f"{r['bicubic_psnr']:.2f} / {r['bicubic_ssim']:.4f}",
                     f"{r['psnr']:.2f} / {r['ssim']:.4f}"]
            if log["baseline"]:
                cells += [f"{base['psnr']:.2f} / {base['ssim']:.4f}",
                          f"{r['psnr'] - base['psnr']:+.2f}"] if base else ["", ""]
            rows.append("| " + " | ".join(cells) + " |")
    head = ["dataset", "scale", "bicubic", "this model"]
    if log["baseline"]:
        head += [c.baseline, "gain (dB)"]
    alpha = (f"alpha = {c.alpha:g} decaying linearly to 0 over the first {c.alpha_decay:.0%} of "
             "the steps, then the ensemble loss alone" if c.alpha > 0 else "the ensemble loss alone")
    degrade = (f"; low-resolution images degraded by `{c.degrade}` ({c.degrade_copies} draws "
               "per pair, whole images)" if c.degrade else "")
    init = f"initialised from `{c.init}`" if c.init else \
        "from scratch (recursive conv near the identity, last reconstruction conv at zero)"
    names = ", ".join(f"`{Path(d).name}`" for d in c.data)
    return "\n".join([
        f"# {c.export_name()}",
        "",
        (f"DRCN (Kim, Lee & Lee, CVPR 2016), F = {c.features} features, D = {c.recursions} "
         f"recursions, {log['parameters']:,} parameters; one model for scales "
         f"{', '.join('x' + str(s) for s in c.scales)}. Input: the bicubic-interpolated Y "
         "channel in 0..1 (BT.601 studio swing); output: the super-resolved Y. File: "
         f"`{log['weights']}` (safetensors, float32), sha256 `{log['sha256']}`."),
        "",
        "## Training recipe",
        (f"- data: {names} ({log['images']} images), protocol pairs (MATLAB bicubic) at every "
         f"scale of each image shrunk by {', '.join(f'{f:g}' for f in c.downscales)}; "
         f"{c.patch}x{c.patch} patches, stride {c.stride}: {log['patches']:,} patches; random "
         f"flips and transposes{degrade}"),
        f"- objective: {alpha}; weight decay {c.weight_decay:g}; gradient-norm clipping {c.clip:g}",
        (f"- optimiser: {c.optimizer}, learning rate {c.lr:g}, {c.schedule} schedule, "
         f"{c.warmup} warm-up steps; batch {c.batch}; {log['step']:,} steps; seed {c.seed}; "
         f"{init}"),
        (f"- hardware: {log['device_name']} x {log['world_size']}, torch {log['torch']}, "
         f"{log['precision']}; {log['train_seconds']:.0f} s of training "
         f"({log['steps_per_s']} steps/s), {log['data_seconds']:.0f} s to make the patches"),
        "",
        "## Measured (evaluation protocol: Y, shave = scale, fp32; PSNR dB / SSIM)",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *rows,
        "",
        "## Reproduce",
        "```",
        command_line(c, log["step"]),
        "```",
        "",
    ])


def command_line(cfg: TrainConfig, steps: int) -> str:
    """The ``drcn train`` command that repeats ``cfg`` for a fixed number of steps."""
    default = TrainConfig(data=[])
    parts = ["drcn train"] + [f"--data {d}" for d in cfg.data]
    parts += [f"-s {s}" for s in cfg.scales]
    parts += [f"-F {cfg.features}", f"-D {cfg.recursions}", f"--steps {steps}"]
    flags = {"features": "-F", "recursions": "-D", "downscales": "--downscale",
             "lr_drops": "--lr-drop"}
    for f in fields(TrainConfig):
        value = getattr(cfg, f.name)
        if f.name in ("data", "scales", "features", "recursions", "steps", "minutes", "out",
                      "stop_at", "device") \
                or value == getattr(default, f.name):
            continue
        flag = flags.get(f.name, "--" + f.name.replace("_", "-"))
        if f.name in ("downscales", "lr_drops", "test_data"):
            parts += [f"{flag} {v:g}" if isinstance(v, float) else f"{flag} {v}" for v in value]
        else:
            parts.append(f"{flag} {value:g}" if isinstance(value, float) else f"{flag} {value}")
    return " \\\n    ".join(textwrap.wrap(" ".join(parts), 90, break_long_words=False,
                                           break_on_hyphens=False))


def train(cfg: TrainConfig, resume: bool = False,
          on_progress: Callable[[Progress], None] | None = None) -> dict:
    """Run (or resume) one training; returns the run's log (empty on ranks other than 0)."""
    trainer = Trainer(cfg, resume, on_progress)
    try:
        return trainer.run()
    finally:
        if trainer.dist.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def train_with_progress(cfg: TrainConfig, resume: bool = False, console=None) -> dict:
    """:func:`train` with a rich progress bar (loss, validation PSNR, steps/s, ETA) on rank 0."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as Bar

    bar = Bar(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
              TextColumn("loss {task.fields[loss]}  val {task.fields[val]} dB  {task.fields[rate]}"),
              TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
              console=console, disable=int(os.environ.get("RANK", "0")) != 0)
    with bar:
        task = bar.add_task("train", total=None, loss="-", val="-", rate="")

        def show(p: Progress) -> None:
            bar.update(task, completed=p.step, total=p.total or None,
                       loss=f"{p.loss:.3e}" if p.loss is not None else "-",
                       val=f"{p.val_psnr:.2f}" if p.val_psnr is not None else "-",
                       rate=f"{p.steps_per_s:.1f} steps/s")

        return train(cfg, resume, show)
