"""The training recipe: weight initialisation, the paper's objective and the optimiser (the
schedules: :mod:`.schedule`)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..model import DRCN
from .config import TrainConfig


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


@torch.no_grad()
def distilled_target(teacher: nn.Module, x: torch.Tensor, y: torch.Tensor, clean: torch.Tensor,
                     weight: float) -> torch.Tensor:
    """``y`` with each clean patch's target moved ``weight`` of the way to the teacher's output.

    A model fine-tuned on degraded images drifts on clean ones; a teacher that is good on clean
    images (the model it started from) gives those patches a target it can keep.
    """
    if weight <= 0:
        return y
    y = y.clone()
    y[clean] = torch.lerp(y[clean], teacher(x[clean]).to(y.dtype), weight)
    return y


def make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """SGD with momentum (the paper's recipe) or AdamW; decay on conv weights only."""
    decay = [p for n, p in model.named_parameters() if n.endswith("weight")]
    rest = [p for n, p in model.named_parameters() if not n.endswith("weight")]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": rest, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    return torch.optim.AdamW(groups, lr=cfg.lr)
