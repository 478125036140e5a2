"""The one tiled inference engine every front end calls.

``Upscaler.upscale(image, scale)`` takes an ``H x W [x C]`` numpy array (grey, grey+alpha, RGB or
RGBA; uint8, uint16 or float in 0..1) and returns the upscaled array in the same layout and dtype.
It owns the colour split (Y through the network, CbCr and alpha by bicubic), the interpolation to
any scale >= 1, tiling with a halo of the receptive-field radius (so tiles are seamless), device
and precision choice, out-of-memory back-off, progress and cancel, and optional self-ensemble.
Window sizes come from a measured plan (see :mod:`.tuning`) unless a tile size is given.
"""

from __future__ import annotations

import copy
import functools
import math
import os
import sys
import threading
from collections.abc import Callable

import numpy as np
import torch

from . import tuning
from .devices import (
    Precision,
    allocating,
    cpu_bf16_unproven,
    device_name,
    is_out_of_memory,
    pick_device,
    pick_precision,
    release_freed_memory,
)
from .errors import (
    BadImageError,
    BadOptionError,
    Cancelled,
    ModelLoadError,
    OutOfMemoryError,
    bool_answers,
    require_callable,
    require_flag,
)
from .hub import DEFAULT_MODEL, checked, load_denoised, load_model
from .imaging import rgb_to_ycbcr
from .memory import check_memory, working_budget
from .model import DRCN, cancel_checked, watch_cancel
from .planes import (
    PEAKS,
    checked_alpha,
    checked_image,
    fill_transparent,
    float_planes,
    interpolated_y,
    kept_range,
    merge,
    resized_alpha,
)
from .sizing import network_size, output_size, whole_number

ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], bool]
NotifyFn = Callable[[str], None]

_CPU_MAP_BYTES = 4 << 20  # feature-map size that stays cache-friendly on CPUs
_NEEDS = ("features", "recursions", "receptive_radius")  # what a loaded module must have
_HALF_PARTS = ("embed", "recursive", "reconstruct")  # cast for half precision; not the ensemble


class _PlanTooBigError(Exception):
    """The network ran out of memory on one batch of windows (not a callback's exception)."""


_TTA = [(t, f) for t in (False, True) for f in ((), (-1,), (-2,), (-2, -1))]
_TIMINGS: dict[str, list[tuning.Timing]] = {}  # measured or loaded this process, by plan key


class Upscaler:
    """A DRCN model bound to a device and precision, with the tiled inference around it.

    ``denoise`` (0..1) blends a named clean model toward its photo variant (see
    :func:`.hub.load_denoised`); None uses the model as named.
    """

    def __init__(self, model: DRCN | str | os.PathLike = DEFAULT_MODEL,
                 device: str | torch.device = "auto", precision: Precision = "auto",
                 tile: int = 0, batch: int = 0, tta: bool = False,
                 notify: NotifyFn | None = None, denoise: float | None = None) -> None:
        loaded = isinstance(model, torch.nn.Module)  # else a spec for the hub (which checks it)
        if denoise is not None and loaded and denoise != 0:
            raise BadOptionError("a denoise strength blends two shipped models: name the clean "
                                 "one, not a loaded module", option="denoise")
        self.device = pick_device(device)
        self.dtype = pick_precision(self.device, precision)
        self._auto_precision = precision == "auto"
        if self.device.type == "cpu" and self.dtype == torch.float16:
            raise BadOptionError("fp16 is not supported on the CPU: use fp32 or bf16",
                                 option="precision")
        for name, value in (("tile", tile), ("batch", batch)):
            if whole_number(value) is None:
                raise BadOptionError(f"{name} must be 0 (automatic) or a whole number of "
                                     f"{'pixels' if name == 'tile' else 'windows'}, got {value!r}",
                                     option=name)
        require_callable(notify=notify)
        require_flag(tta=tta)
        if tile and tile < tuning.MIN_TILE:
            raise BadOptionError(f"tile size {tile} is too small: use 0 (automatic) or at least "
                                 f"{tuning.MIN_TILE}", option="tile")
        # A private fp32 copy, cast to the precision: the caller's module keeps its device, dtype,
        # memory format and mode, and one in another dtype runs in the precision asked for.
        if loaded:
            needs = _NEEDS + (_HALF_PARTS if self.dtype != torch.float32 else ())
            missing = [name for name in needs if not hasattr(model, name)]
            if missing:
                raise ModelLoadError(f"a {type(model).__name__} module is not a DRCN model (it "
                                     f"has no {', '.join(missing)}): pass a DRCN or a model spec")
            self.model = checked(copy.deepcopy(model).float(),
                                 f"the {type(model).__name__} module")
        else:
            self.model = load_model(model) if denoise is None else load_denoised(denoise, model)
        self.model.eval()
        watch_cancel(self.model)  # its copies here (other precisions) keep the hook
        self.tile, self.batch, self.tta = whole_number(tile), whole_number(batch), bool(tta)
        self.notify = notify or functools.partial(print, "drcn:", file=sys.stderr, flush=True)
        self._settling = threading.Lock()  # held by the thread that measures the precision
        self._precision_open = precision == "auto" and self.device.type == "cpu" \
            and cpu_bf16_unproven() and tuning.tuning_enabled()
        if self._precision_open:
            self._settle_precision(measure=False)
        self.model = self._placed(self.model)

    def _placed(self, model: DRCN) -> DRCN:
        """``model`` (fp32) on the device in ``self.dtype``: the convolutions cast once (autocast
        would recast every call), the ensemble weights kept fp32, NHWC where it pays."""
        if self.dtype != torch.float32:
            for part in _HALF_PARTS:
                getattr(model, part).to(self.dtype)
        model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def _settle_precision(self, measure: bool, cancel: CancelFn | None = None) -> None:
        """Where bf16 is unproven on this CPU: bf16 if its measured plans beat fp32's by 15% (its
        numbers are coarser), else fp32. Without ``measure`` only cached plans decide, else the
        choice stays open (fp32 meanwhile) until the first plane that starts a tile measurement,
        where a cancel stops it; it costs one measurement more, once per machine and model. Each
        precision is timed on a copy of the engine: threads sharing it run on in fp32."""
        fp32, placed, per_pixel = self.model, {}, {}
        for dtype in (torch.float32, torch.bfloat16):
            trial = copy.copy(self)
            trial.dtype = dtype
            with torch.inference_mode(False):
                trial.model = placed[dtype] = trial._placed(
                    copy.deepcopy(fp32) if dtype != torch.float32 else fp32)
            with cancel_checked(cancel):
                timings = trial.timings(measure)
            if timings is None:
                return
            per_pixel[dtype] = min((t.per_pixel for t in timings), default=math.inf)
        self._precision_open = False
        if per_pixel[torch.bfloat16] * 1.15 < per_pixel[torch.float32]:
            self.model, self.dtype = placed[torch.bfloat16], torch.bfloat16

    # -- the tiled network on one Y plane ---------------------------------------------------
    def working_bytes_per_pixel(self) -> int:
        """Working memory of one forward pass per pixel: the live F-channel maps and the ensemble
        accumulator, all in the compute dtype (measured on CPU: about 16 F bytes in fp32 and 10 F
        in bf16), budgeted with 25% headroom."""
        return self.model.features * (20 if self.dtype == torch.float32 else 12) + 64

    def _auto_plan(self, h: int, w: int) -> tuning.Plan:
        """The given tile, else the measured plan cheapest for this plane, else the rule."""
        budget = working_budget(self.device)
        if not self.tile and tuning.tuning_enabled():
            plan = self._tuned_plan(h, w, budget)
            if plan is not None:
                return plan
        halo = self.model.receptive_radius
        bpp = self.working_bytes_per_pixel()
        cache_sized = self.device.type == "cpu" and self.dtype != torch.float32
        if self.tile:
            tile = self.tile
        else:
            side = int(math.sqrt(max(budget // bpp, 1))) - 2 * halo
            tile = max(tuning.MIN_TILE, min(side, 4096))
            cache_side = int(math.sqrt(_CPU_MAP_BYTES / (2 * self.model.features))) - 2 * halo
            cache_sized = cache_sized and cache_side >= 5 * halo
            if cache_sized:
                # Measured on 2 AMX cores (drcn-lite, bf16): windows whose feature map is about
                # 4 MiB run 1.3-6x faster than memory-sized ones (cache reuse, and no page
                # faults on fresh large allocations), despite the larger halo share. Wide
                # models (F=256) would get a core under 5 halos: there big tiles win.
                tile = min(tile, cache_side)
        win = (min(h, tile + 2 * halo), min(w, tile + 2 * halo))
        batch = self.batch or (1 if cache_sized else
                               max(1, min(16, budget // (bpp * win[0] * win[1]))))
        return tuning.Plan.balanced(h, w, tile, batch)

    def _tuned_plan(self, h: int, w: int, budget: int) -> tuning.Plan | None:
        """Among the measured plans that fit in memory, the one predicted fastest on h x w."""
        halo, bpp = self.model.receptive_radius, self.working_bytes_per_pixel()
        timings = [t for t in self.timings(measure=h * w >= tuning.MEASURE_MIN_PIXELS) or []
                   if t.batch * (t.tile + 2 * halo) ** 2 * bpp <= budget]
        if not timings:
            return None
        best = min(timings, key=lambda t: tuning.predicted_seconds(t, h, w, halo))
        return tuning.Plan.balanced(h, w, best.tile, self.batch or best.batch)

    def timings(self, measure: bool = True) -> list[tuning.Timing] | None:
        """This machine's window timings from memory or the cache, else measured now (unsettled
        ones taken up again); unmeasured without ``measure`` or while another thread measures."""
        key = tuning.plan_key(self.device, self.model.features, self.model.recursions, self.dtype)
        with tuning.measuring_alone(key) as alone:  # one thread measures it, the others go on
            if key not in _TIMINGS:
                found = tuning.load_plans(key)
                if not (measure and alone) and (found is None or not found.settled):
                    return found.timings if found else None  # unsettled: read again till taken up
                if found is None or not found.settled:
                    found = self._measure(found)
                    problem = tuning.store_plans(key, found) if found else None
                    if problem:
                        self.notify(f"{problem}: it is measured again next time (point "
                                    f"{tuning.CACHE_ENV} at a writable folder)")
                _TIMINGS[key] = found.timings if found else []  # none fits: rule, and no retry
        return _TIMINGS[key]

    @torch.inference_mode()
    def _measure(self, before: tuning.Plans | None) -> tuning.Plans | None:
        """Time the candidate windows, or take ``before`` up again from its best tile; None
        (then tiles are sized by rule) if nothing fits."""
        halo = self.model.receptive_radius
        candidates = tuning.candidates(halo, self.working_bytes_per_pixel(),
                                       working_budget(self.device), gpu=self.device.type != "cpu")
        if before is not None:
            candidates = before.candidates(candidates)
            if not candidates:  # nothing left that fits: as measured as it can be
                return tuning.Plans.measured(tuning.Measurement([]), before)
        elif not candidates:
            return None
        again = "" if before is None else " again: other work shared the CPU last time" \
            if before.busy else " again, from its best tile up: the last try ran out of time"
        self.notify(f"measuring {str(self.dtype).removeprefix('torch.')} tile sizes for "
                    f"{device_name(self.device)}{again} "
                    f"(cached in {tuning.cache_path().parent})")
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        m = tuning.measure(lambda x: self.model(x.contiguous(memory_format=fmt)),
                           self.device, halo, candidates)
        return tuning.Plans.measured(m, before) if m.timings or before else None

    @property
    def channels_last(self) -> bool:
        """NHWC pays off on GPUs and for half precision on CPUs (oneDNN's fast path)."""
        return self.device.type != "cpu" or self.dtype != torch.float32

    @tuning.network_pass()
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        if not self.tta:
            return self.model(x.contiguous(memory_format=fmt))
        acc = torch.zeros_like(x)
        for transpose, flip in _TTA:
            t = x.transpose(-2, -1) if transpose else x
            t = t.flip(flip) if flip else t
            y = self.model(t.contiguous(memory_format=fmt))
            y = y.flip(flip) if flip else y
            acc += y.transpose(-2, -1) if transpose else y
        return acc / len(_TTA)

    def _run_plan(self, ilr: torch.Tensor, out: torch.Tensor, plan: tuning.Plan,
                  progress: ProgressFn | None, cancel: CancelFn | None) -> bool:
        """Whether the plan ran with finite results (never NaN or blank pixels in a result)."""
        h, w = ilr.shape
        halo = self.model.receptive_radius
        tiles = [(r, c) for r in tuning.windows(h, plan.tile_h, halo)
                 for c in tuning.windows(w, plan.tile_w, halo)]
        total = len(tiles)
        wh, ww = min(h, plan.tile_h + 2 * halo), min(w, plan.tile_w + 2 * halo)
        for start in range(0, total, plan.batch):
            if cancel is not None and cancel():
                raise Cancelled("cancelled")
            group = tiles[start: start + plan.batch]
            x = torch.stack([ilr[r[0]: r[0] + wh, c[0]: c[0] + ww] for r, c in group])
            try:
                y = self._forward(x[:, None].to(self.device, non_blocking=True))[:, 0].cpu()
            except (torch.OutOfMemoryError, RuntimeError) as e:
                if not is_out_of_memory(e):
                    raise
                raise _PlanTooBigError from e
            if not torch.isfinite(y).all():  # half precision overflowing on huge inputs
                return False
            for (r, c), yt in zip(group, y, strict=True):
                out[r[1]: r[2], c[1]: c[2]] = yt[r[1] - r[0]: r[2] - r[0], c[1] - c[0]: c[2] - c[0]]
            if progress is not None:
                progress(min(start + plan.batch, total), total)
        return True

    @torch.inference_mode()
    def run_y(self, ilr: torch.Tensor, progress: ProgressFn | None = None,
              cancel: CancelFn | None = None) -> torch.Tensor:
        """The network over an interpolated Y plane ``[H, W]`` (0..1), tiled; returns ``[H, W]``
        (on out-of-memory the batch, then the tile, is halved and the plane is run again)."""
        with allocating(*ilr.shape, self.device):
            ilr = ilr.float().cpu()
            out = torch.empty_like(ilr)
        if self._precision_open and not self.tile and ilr.numel() >= tuning.MEASURE_MIN_PIXELS \
                and self._settling.acquire(blocking=False):  # one thread measures, others go on
            try:
                if self._precision_open:
                    self._settle_precision(measure=True, cancel=cancel)
            finally:
                self._settling.release()
        while True:
            bound = copy.copy(self)  # the whole plane on one model and precision, whatever
            if bound._run_bound(ilr, out, progress, cancel):  # another thread switches meanwhile
                release_freed_memory()  # the windows' maps: glibc would keep them between images
                return out
            self._leave_half_precision(bound.dtype)  # or an error

    def _run_bound(self, ilr: torch.Tensor, out: torch.Tensor, progress: ProgressFn | None,
                   cancel: CancelFn | None) -> bool:
        """The network over the plane into ``out``, the batch, then the tile halved on
        out-of-memory; False when it gave NaN or infinite values."""
        with cancel_checked(cancel):  # measuring a plan checks it too
            plan = self._auto_plan(*ilr.shape)
            while True:
                try:
                    return self._run_plan(ilr, out, plan, progress, cancel)
                except _PlanTooBigError as e:
                    if self.device.type == "cuda":
                        torch.cuda.empty_cache()
                    plan = plan.halved()
                    if plan is None:
                        raise OutOfMemoryError(f"out of memory on {self.device} even with the "
                                               "smallest tile") from e.__cause__

    def _leave_half_precision(self, ran: torch.dtype) -> None:
        """After NaN or infinite results in ``ran``: a precision the engine chose goes to fp32 for
        good (a new model, as other threads may still run the old), else :class:`BadImageError`."""
        name = str(ran).removeprefix("torch.")
        if ran == torch.float32 or not self._auto_precision:
            raise BadImageError(f"the model gave NaN or infinite values for this image in {name}"
                                + (": use precision fp32" * (ran != torch.float32)))
        if self.dtype == ran:  # not yet switched by another thread
            self.notify(f"{name} overflowed on this image: running in fp32 from here")
            with torch.inference_mode(False):
                fp32 = copy.deepcopy(self.model).float().to(memory_format=torch.contiguous_format)
            self.dtype = torch.float32
            self.model = self._placed(fp32)

    # -- whole images ---------------------------------------------------------------------
    def upscale(self, image: np.ndarray, scale: float | None = None,
                size: tuple[int, int] | None = None, progress: ProgressFn | None = None,
                cancel: CancelFn | None = None, fill_hidden: bool = True) -> np.ndarray:
        """Upscale an ``H x W [x C]`` array by ``scale`` (or to ``size`` = (h, w)); same dtype out.

        Colour conversion and bicubic run on the engine's device (see :mod:`.planes`). With
        ``fill_hidden`` fully transparent pixels first take their visible neighbours' colour
        (:func:`.planes.fill_transparent`); pass False when the colour under alpha 0 is content,
        as under a host's mask carried along as alpha.
        """
        return self._enlarged(image, None, scale, size, progress, cancel, fill_hidden)[0]

    def upscale_with_alpha(self, image: np.ndarray, alpha: np.ndarray, scale: float | None = None,
                           size: tuple[int, int] | None = None,
                           progress: ProgressFn | None = None, cancel: CancelFn | None = None,
                           fill_hidden: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`upscale` of a grey or RGB ``image`` with an ``H x W`` alpha kept apart, for an
        alpha finer than the image's levels (a host's soft mask beside 8-bit colours: in one
        array it would take the colours to float). Returns the image in its own dtype and the
        alpha as float32 in 0..1."""
        return self._enlarged(image, alpha, scale, size, progress, cancel, fill_hidden)

    def _enlarged(self, image: np.ndarray, alpha: np.ndarray | None, scale: float | None,
                  size: tuple[int, int] | None, progress: ProgressFn | None,
                  cancel: CancelFn | None,
                  fill_hidden: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """The upscaled image, and the alpha kept apart (``alpha``'s, float32) or None."""
        require_callable(progress=progress, cancel=cancel)
        require_flag(fill_hidden=fill_hidden)
        cancel = bool_answers(cancel)  # as every check of it below, the model's own included
        h, w = (*getattr(image, "shape", ()), 0, 0)[:2]
        with allocating(h, w, self.device, "input"):  # a byte-swapped copy, the NaN check
            pixels = checked_image(image)
            apart = None if alpha is None else checked_alpha(alpha, pixels)
        h, w, channels = pixels.shape
        kind = pixels.dtype
        oh, ow = output_size(h, w, scale, size)
        if (oh, ow) == (h, w):  # nothing to enlarge: the input as it is (float alpha in 0..1)
            if cancel is not None and cancel():  # no tiles to check it between: a batch still stops
                raise Cancelled("cancelled")
            with allocating(h, w, torch.device("cpu")):  # the copies are made in host memory
                out = np.array(np.asarray(image), dtype=kind)
                if kind.kind == "f" and channels in (2, 4):
                    np.clip(out[..., -1], 0.0, 1.0, out=out[..., -1])
                if apart is not None:
                    apart = float_planes(apart)[0].clamp_(0, 1).numpy()
            if progress is not None:
                progress(1, 1)
            return out, apart
        # As the front ends do: refused now, not after the network pass or by the OOM killer;
        # an alpha apart adds a float plane in and one out.
        check_memory(h, w, channels, kind.itemsize, size=(oh, ow), encoded=False,
                     held=0 if apart is None else 4 * (h * w + oh * ow))
        work = network_size(h, w, oh, ow)
        colour = channels in (3, 4)
        float_range = kept_range(image) if kind.kind == "f" else (0.0, 1.0)
        with allocating(h, w, self.device, "input"):  # its float copy
            planes = float_planes(pixels)
            if apart is not None:
                planes = torch.cat([planes, float_planes(apart)])
        with allocating(oh, ow, self.device):
            src = planes.to(self.device)
            if fill_hidden:
                fill_transparent(src)
            del planes, pixels, apart  # pixels: a copy where the input's byte order was foreign
            if colour:
                src = torch.cat([rgb_to_ycbcr(src[:3]), src[3:]])
            ilr = interpolated_y(src[0], work, PEAKS.get(np.dtype(kind)))
        y_out = self.run_y(ilr, progress, cancel)  # backs off on its own out-of-memory
        del ilr
        with allocating(oh, ow, self.device):
            if work != (oh, ow):  # the network's result to the size, on the engine's device
                y_out = interpolated_y(y_out.to(self.device), (oh, ow), None)
            kept = src.shape[0] - (alpha is not None)  # the planes merged into the image
            out = merge(y_out, src[1:kept], colour, kind, float_range)
            if alpha is not None:
                alpha = resized_alpha(src[kept:], (oh, ow))
        return out[:, :, 0] if image.ndim == 2 else out, alpha
