"""The DRCN network (Kim, Lee & Lee, CVPR 2016) as a plain ``nn.Module``.

Tensor names follow the reference checkpoints in ``weights/`` so they load unchanged:
``embed.0``/``embed.2`` (embedding net), ``recursive`` (the shared conv applied D times),
``reconstruct.0``/``reconstruct.2`` (shared reconstruction net) and ``ensemble`` (one weight per
depth). The Hugging Face mixin gives ``save_pretrained``/``from_pretrained``/``push_to_hub`` with a
``config.json`` holding ``features`` and ``recursions``.
"""

from __future__ import annotations

import contextlib
import numbers
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, overload

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from .devices import pick_device
from .errors import EMPTY_PATH, BadImageError, BadOptionError, Cancelled, ModelLoadError
from .scales import as_float
from .writing import clean_stale_folders, temporary_folder

_SAVING = ".saving-"  # the hidden folder a save writes in, inside its target
_CANCEL = threading.local()  # ``check``: the cancel of the job this thread runs, if any


def _check_cancel(module: nn.Module, args: object) -> None:
    check = getattr(_CANCEL, "check", None)
    if check is not None and check():
        raise Cancelled("cancelled")


def watch_cancel(model: nn.Module) -> None:
    """Make ``model`` check, before each recursion, the cancel of the job the calling thread
    runs (:func:`cancel_checked`): one hook for good, which copies of the model keep, as it
    names no job (a job's own hook, copied by another thread, outlived the job)."""
    recursive = getattr(model, "recursive", None)
    if isinstance(recursive, nn.Module) \
            and _check_cancel not in recursive._forward_pre_hooks.values():
        recursive.register_forward_pre_hook(_check_cancel)


@contextlib.contextmanager
def cancel_checked(cancel: Callable[[], bool] | None) -> Iterator[None]:
    """While inside, this thread's passes of a watched model check ``cancel`` before each
    recursion (not only between batches of windows, which take seconds on a slow CPU)."""
    before = getattr(_CANCEL, "check", None)
    _CANCEL.check = cancel
    try:
        yield
    finally:
        _CANCEL.check = before


def _conv(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1)


class DRCN(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="drcn-plugin",
    tags=["super-resolution", "drcn", "image-to-image"],
    license="mit",
):
    """Deeply-Recursive Convolutional Network on one channel (the luminance of the ILR image).

    ``forward(x)`` takes the bicubic-interpolated image in 0..1, shape ``[N, 1, H, W]``, and returns
    the ensemble prediction; ``forward(x, all_depths=True)`` returns ``(ensemble, [y_1 .. y_D])``.
    """

    def __init__(self, features: int = 256, recursions: int = 16) -> None:
        super().__init__()
        for name, value in (("features", features), ("recursions", recursions)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise BadOptionError(f"{name} must be a positive whole number, got {value!r}",
                                     option=name)
        self.features = features = int(features)
        self.recursions = recursions = int(recursions)
        self.embed = nn.Sequential(_conv(1, features), nn.ReLU(inplace=True),
                                   _conv(features, features), nn.ReLU(inplace=True))
        self.recursive = _conv(features, features)
        self.reconstruct = nn.Sequential(_conv(features, features), nn.ReLU(inplace=True),
                                         _conv(features, 1))
        self.ensemble = nn.Parameter(torch.full((recursions,), 1.0 / recursions))

    def save_pretrained(self, save_directory: str | Path, **kwargs: Any) -> str | None:
        """The mixin's save, whole or not at all for each file: the files are written in a hidden
        folder inside ``save_directory`` and renamed into place (weights, then config), so a save
        that fails while writing (a full disk, an interrupt) leaves the previous files as they
        were; only a crash between the two renames can pair new weights with the old config.
        Hidden folders that killed saves left there are removed (never a running save's)."""
        if isinstance(save_directory, str) and not save_directory:  # Path("") would be "."
            raise BadOptionError(EMPTY_PATH, option="save_directory")
        target = Path(save_directory)
        target.mkdir(parents=True, exist_ok=True)
        clean_stale_folders(target, _SAVING)
        if kwargs.get("push_to_hub") and kwargs.get("repo_id") is None:
            kwargs["repo_id"] = target.name
        with temporary_folder(target, _SAVING) as tmp:
            result = super().save_pretrained(tmp, **kwargs)
            files = [f for f in tmp.iterdir() if not f.name.startswith(".")]  # not the lock
            for file in sorted(files, key=lambda f: f.name == "config.json"):
                if file.name == "README.md" and (target / file.name).exists():
                    continue  # as the mixin does, a model card already there is kept
                os.replace(file, target / file.name)
        return result

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, *,
                        revision: str | None = None, map_location: str | torch.device = "cpu",
                        strict: bool = True, **download: Any) -> DRCN:
        """A model folder or Hub repo id (the mixin's convention) loaded with
        :func:`.hub.load_model`'s checks, as a :class:`ModelLoadError` when it fails: shapes read
        before anything is allocated, config.json against the weights, finite float weights.
        Loading is always strict (``strict`` is taken for the mixin's signature); ``download``
        goes to ``huggingface_hub.snapshot_download`` (``cache_dir``, ``token``, ...);
        ``map_location`` is checked as the engine's device is, before anything is read."""
        from .hub import load_pretrained

        device = pick_device(map_location)
        return load_pretrained(pretrained_model_name_or_path, revision, **download).to(device)

    @property
    def receptive_radius(self) -> int:
        """Pixels of context each output pixel sees on every side (20 for D = 16)."""
        return self.recursions + 4

    @overload
    def forward(self, x: torch.Tensor, all_depths: Literal[False] = False) -> torch.Tensor: ...

    @overload
    def forward(self, x: torch.Tensor,
                all_depths: Literal[True]) -> tuple[torch.Tensor, list[torch.Tensor]]: ...

    def forward(self, x: torch.Tensor,
                all_depths: bool = False) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """The ensemble prediction; with ``all_depths`` also every depth's own prediction."""
        if not x.is_floating_point():  # the depth weights cast to it would be 0: zeros out
            raise BadImageError(f"DRCN takes a float image in 0..1, got {x.dtype}")
        # The convolutions, and on the fast path the ensemble sum of their features, run in the
        # weights' dtype (bf16/fp16 for fast inference); the skip connection is added in x's
        # dtype, so only the small residual carries the reduced precision.
        h = self.embed(x.to(self.embed[0].weight.dtype))
        w = self.ensemble.to(x.dtype)
        if all_depths:
            preds = []
            for _ in range(self.recursions):
                h = self.recursive(h).relu_()
                preds.append(self.reconstruct(h).to(x.dtype) + x)
            out = sum(wd * yd for wd, yd in zip(w, preds, strict=True))
            return out, preds
        # Inference: sum_d w_d (f(H_d) + x). The last reconstruction conv is linear, so it is
        # applied once to sum_d w_d relu(conv(H_d)) instead of D times (same result, faster).
        first, last = self.reconstruct[0], self.reconstruct[2]
        acc = None
        for d in range(self.recursions):
            h = self.recursive(h).relu_()
            r = first(h).relu_() * w[d]
            acc = r if acc is None else acc.add_(r)
        wsum = w.sum()
        out = F.conv2d(acc, last.weight, padding=1).to(x.dtype)
        return out.add_(x * wsum + last.bias.to(x.dtype) * wsum)

    def flops_per_pixel(self) -> int:
        """Multiply-adds x 2 per output pixel: embedding, D recursions, D reconstructions."""
        f, d = self.features, self.recursions
        macs = 9 * (f + f * f + d * f * f + d * (f * f + f))
        return 2 * macs


def blend_weight(t: object, what: str = "blend weight") -> float:
    """``t`` as a float in 0..1 (``what`` names it in the error), else :class:`BadOptionError`
    for the ``denoise`` option: NaN, and anything that is not a real number, too."""
    if isinstance(t, bool) or not isinstance(t, numbers.Real):
        raise BadOptionError(f"{what} {t!r} is not a number", option="denoise")
    value = as_float(t)
    if not 0 <= value <= 1:
        raise BadOptionError(f"{what} {value:g} is outside 0..1", option="denoise")
    return value


def interpolate(a: DRCN, b: DRCN, t: float) -> DRCN:
    """A new DRCN whose weights are ``(1 - t) * a + t * b`` (``t`` = 0 gives ``a``'s exactly).

    Meaningful for two models fine-tuned from one another (a clean and a photo model), as
    Real-ESRGAN's denoise strength does; both must have the same F and D.
    """
    if (a.features, a.recursions) != (b.features, b.recursions):
        raise ModelLoadError(f"cannot blend F={a.features}, D={a.recursions} with "
                             f"F={b.features}, D={b.recursions}")
    t = blend_weight(t)
    out = DRCN(a.features, a.recursions)
    sb = b.state_dict()
    with torch.no_grad():
        blended = {k: v.float() if t == 0 else sb[k].float() if t == 1 else
                   torch.lerp(v.float(), sb[k].float(), t) for k, v in a.state_dict().items()}
    out.load_state_dict(blended)
    return out.eval()
