"""The tiled engine: seamless tiles, colour/alpha/grey/16-bit, scales, progress, cancel, OOM, errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import DATA, seeded_drcn
from PIL import Image

from drcn_plugin import Cancelled, DRCNError, Upscaler
from drcn_plugin.devices import pick_device, pick_precision
from drcn_plugin.evaluation import evaluate
from drcn_plugin.imagefile import read_y
from drcn_plugin.imaging import imresize, make_pair, quantize8
from drcn_plugin.metrics import psnr
from drcn_plugin.model import DRCN
from drcn_plugin.sizing import output_size


@pytest.fixture(scope="module")
def lite() -> Upscaler:
    return Upscaler("drcn-lite", device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return np.asarray(Image.open(DATA / "Set5" / "butterfly.png").convert("RGB"))[40:130, 60:170]


def tiny(recursions: int = 4) -> DRCN:
    return seeded_drcn(recursions=recursions)


def test_tiles_are_seamless(lite: Upscaler, photo: np.ndarray) -> None:
    photo = photo[:48, :56]
    whole = lite.upscale(photo, 2.5)
    tiled_engine = Upscaler(lite.model, device="cpu", precision="fp32", tile=32)
    calls: list[tuple[int, int]] = []
    tiled = tiled_engine.upscale(photo, 2.5, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1][1] >= 16, "the 32-px tile must split the image into many tiles"
    assert_same8(whole, tiled)
    ilr = torch.from_numpy(photo[..., 1].astype(np.float32) / 255)
    ilr = imresize(ilr, size=(110, 130))
    diff = (lite.run_y(ilr) - tiled_engine.run_y(ilr)).abs().max()
    assert diff <= 1e-4


def test_halo_is_needed() -> None:
    """Without the halo a tiled result would differ: the property above is not vacuous."""
    model = tiny(recursions=8)
    assert model.receptive_radius == 12
    x = torch.rand(1, 1, 64, 64)
    with torch.inference_mode():
        full = model(x)
        cut = model(x[..., :32])
    assert (full[..., 20:32] - cut[..., 20:32]).abs().max() > 1e-4


def test_batched_tiles_match(photo: np.ndarray) -> None:
    model = tiny()
    a = Upscaler(model, device="cpu", precision="fp32", tile=24, batch=1).upscale(photo, 2)
    b = Upscaler(model, device="cpu", precision="fp32", tile=24, batch=7).upscale(photo, 2)
    assert_same8(a, b)


def assert_same8(a: np.ndarray, b: np.ndarray) -> None:
    """The bar for 8-bit results: at least 99.99% identical, none off by more than 1."""
    assert a.shape == b.shape
    assert np.abs(a.astype(int) - b).max() <= 1 and (a == b).mean() >= 0.9999


def test_float_results_stay_in_the_input_range_and_alpha_in_0_1(lite: Upscaler) -> None:
    # Hard edges make bicubic and the network overshoot; a float result must not leave the
    # input's range (widened to 0..1), and alpha never leaves 0..1.
    rgba = np.full((16, 16, 4), 0.5, np.float32)
    rgba[4:12, 4:12, :3] = 1.0
    rgba[:, :8, 3], rgba[:, 8:, 3] = 0.0, 1.0
    rgba[::2, ::2, 3] = 1.0 - rgba[::2, ::2, 3]
    out = lite.upscale(rgba, 2)
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert out[..., 3].min() == 0.0 and out[..., 3].max() == 1.0  # reached, then held
    hdr = np.random.default_rng(0).random((12, 12, 2)).astype(np.float32) * 3 - 1
    out = lite.upscale(hdr, 2)
    assert hdr[..., 0].min() <= out[..., 0].min() and out[..., 0].max() <= hdr[..., 0].max()
    assert out[..., 1].min() >= 0.0 and out[..., 1].max() <= 1.0


def test_colour_alpha_grey_and_16bit(lite: Upscaler, photo: np.ndarray) -> None:
    rgb = lite.upscale(photo, 2)
    assert rgb.shape == (180, 220, 3) and rgb.dtype == np.uint8
    # The network only sees Y: chroma of the output equals the bicubic chroma.
    solid = np.zeros((40, 40, 3), np.uint8)
    solid[:] = (200, 60, 30)
    out = lite.upscale(solid, 2)
    assert np.abs(out.astype(int) - solid[0, 0]).max() <= 2
    # Alpha is resized on its own, never through the network, never dropped.
    alpha = np.tile(np.linspace(1, 255, photo.shape[1]).astype(np.uint8), (photo.shape[0], 1))
    rgba = lite.upscale(np.dstack([photo, alpha]), 2)
    assert rgba.shape == (180, 220, 4)
    expect = quantize8(imresize(torch.from_numpy(alpha).double(), size=(180, 220)))
    assert np.abs(rgba[..., 3].astype(int) - expect.numpy().astype(int)).max() <= 1
    assert np.array_equal(rgba[..., :3], rgb)
    # Grey stays grey, in the layout it came in.
    grey = photo[..., 1]
    assert lite.upscale(grey, 2).shape == (180, 220)
    assert lite.upscale(grey[..., None], 2).shape == (180, 220, 1)
    assert lite.upscale(np.dstack([grey, alpha]), 2).shape == (180, 220, 2)
    # 16-bit keeps 16-bit precision (values between the 8-bit steps survive).
    g16 = grey.astype(np.uint16) * 257 + 100
    out16 = lite.upscale(g16, 2)
    assert out16.dtype == np.uint16 and np.count_nonzero(out16 % 257) > out16.size // 2
    assert np.abs(out16.astype(float) / 257 - lite.upscale(grey, 2)).mean() < 1.0
    f = lite.upscale(grey.astype(np.float32) / 255, 2)
    # Float input skips the 8-bit rounding of the interpolated input: close, not identical.
    gap = np.abs(f * 255 - lite.upscale(grey, 2))
    assert f.dtype == np.float32 and gap.mean() < 0.5 and gap.max() < 4


@pytest.mark.parametrize(("scale", "size"), [(1.0, (31, 17)), (1.5, (47, 26)),
                                             (2.5, (78, 43)), (3.7, (115, 63))])
def test_any_scale_rounds_halves_up(scale: float, size: tuple[int, int]) -> None:
    up = Upscaler(tiny(), device="cpu", precision="fp32")
    assert up.upscale(np.zeros((31, 17, 3), np.uint8), scale).shape == (*size, 3)
    assert output_size(3, 5, 1.5) == (5, 8)  # 4.5 and 7.5 both up (not to even)
    assert output_size(50, 25, 1.15) == (58, 29)  # 57.5 in decimal, 57.4999... in binary


def test_explicit_size_and_bad_scales() -> None:
    up = Upscaler(tiny(), device="cpu", precision="fp32")
    assert up.upscale(np.zeros((10, 20), np.uint8), size=(25, 41)).shape == (25, 41)
    for bad in (0.5, 0.0, 17.0, float("nan")):
        with pytest.raises(DRCNError, match="scale"):
            output_size(10, 10, bad)
    with pytest.raises(DRCNError, match="smaller"):
        output_size(10, 10, size=(5, 20))


def test_bad_arrays() -> None:
    up = Upscaler(tiny(), device="cpu", precision="fp32")
    cases = [np.zeros((0, 10, 3), np.uint8), np.zeros((4, 4, 5), np.uint8),
             np.zeros((4, 4), np.int32), np.full((4, 4), np.nan, np.float32), [[1, 2]]]
    for bad in cases:
        with pytest.raises(DRCNError):
            up.upscale(bad, 2)
    huge = np.zeros((4, 4), np.float32)
    huge[0, 0] = 3e38  # finite, but the colour conversion and bicubic would overflow to NaN
    with pytest.raises(DRCNError, match="overflow"):
        up.upscale(huge, 2)


def test_a_fully_transparent_image_keeps_its_colour() -> None:
    image = np.zeros((12, 12, 4), np.uint8)
    image[..., :3] = (30, 200, 90)  # nothing visible to take a colour from
    out = Upscaler(tiny(), device="cpu", precision="fp32").upscale(image, 2)
    opaque = Upscaler(tiny(), device="cpu", precision="fp32").upscale(image[..., :3].copy(), 2)
    assert np.array_equal(out[..., :3], opaque) and not out[..., 3].any()


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_grey_colour_stays_exactly_grey_and_opaque_alpha_exactly_opaque(
        lite: Upscaler, photo: np.ndarray, dtype: type) -> None:
    peak = {np.uint8: 255, np.uint16: 65535, np.float32: 1.0}[dtype]
    grey = (photo[..., 1] / 255 * peak).astype(dtype)
    rgba = np.dstack([grey, grey, grey, np.full_like(grey, peak)])
    out = lite.upscale(rgba, 2.5)
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])
    assert (out[..., 3] == peak).all()


@pytest.mark.parametrize("option", [{"batch": -1}, {"batch": 2.5}, {"tile": True},
                                    {"tile": -16}])
def test_bad_tile_or_batch_is_refused(option: dict) -> None:
    with pytest.raises(DRCNError, match=next(iter(option))):
        Upscaler(tiny(), device="cpu", **option)


def test_a_callbacks_own_error_is_not_taken_for_out_of_memory(photo: np.ndarray) -> None:
    def progress(done: int, total: int) -> None:
        calls.append(done)
        raise RuntimeError("CUDA out of memory (the host's own failure)")

    calls: list[int] = []
    up = Upscaler(tiny(), device="cpu", precision="fp32", tile=16)
    with pytest.raises(RuntimeError, match="host's own"):
        up.upscale(photo, 2, progress=progress)
    assert len(calls) == 1  # raised at once, not retried with smaller tiles


def test_devices_and_precisions() -> None:
    if not torch.cuda.is_available():
        with pytest.raises(DRCNError, match="CUDA"):
            pick_device("cuda")
    with pytest.raises(DRCNError):
        pick_device("tpu")
    with pytest.raises(DRCNError):
        pick_precision(torch.device("cpu"), "fp64")
    assert pick_precision(torch.device("cpu"), "fp32") == torch.float32
    with pytest.raises(DRCNError, match="tile"):
        Upscaler(tiny(), device="cpu", tile=4)


def test_cancel_between_tiles_then_next_job_runs(photo: np.ndarray) -> None:
    up = Upscaler(tiny(), device="cpu", precision="fp32", tile=16, batch=1)
    seen: list[int] = []
    with pytest.raises(Cancelled):
        up.upscale(photo, 2, progress=lambda d, t: seen.append(d), cancel=lambda: len(seen) >= 2)
    assert seen == [1, 2], "stopped right after the tile that was running"
    assert up.upscale(photo, 2).shape == (180, 220, 3)


def test_cancel_is_seen_inside_one_long_batch(photo: np.ndarray) -> None:
    up = Upscaler(tiny(recursions=6), device="cpu", precision="fp32", tile=512)  # one window
    asked: list[int] = []
    seen: list[int] = []

    def cancel() -> bool:
        asked.append(1)
        return len(asked) >= 3  # during the second recursion of the only batch

    with pytest.raises(Cancelled):
        up.upscale(photo, 2, progress=lambda d, t: seen.append(d), cancel=cancel)
    assert seen == [] and len(asked) == 3
    assert up.upscale(photo, 2).shape == (180, 220, 3)  # the next job is not cancelled


def test_out_of_memory_backs_off(photo: np.ndarray) -> None:
    model = tiny()
    reference = Upscaler(model, device="cpu", precision="fp32").upscale(photo, 2)

    class Picky(torch.nn.Module):
        """Raises the allocator's OOM for any batch of more than 3000 pixels."""

        def __init__(self) -> None:
            super().__init__()
            self.inner = model
            self.features, self.recursions = model.features, model.recursions
            self.receptive_radius = model.receptive_radius
            self.sizes: list[int] = []

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.sizes.append(x.numel())
            if x.numel() > 3000:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return self.inner(x)

    up = Upscaler(Picky(), device="cpu", precision="fp32", tile=64, batch=4)
    out = up.upscale(photo, 2)
    assert_same8(out, reference)
    assert max(up.model.sizes) > 3000 and up.model.sizes[-1] <= 3000


def test_self_ensemble_is_the_mean_of_eight_views() -> None:
    model = tiny()
    x = torch.rand(24, 30)
    plain = Upscaler(model, device="cpu", precision="fp32")
    tta = Upscaler(model, device="cpu", precision="fp32", tta=True).run_y(x)
    views = []
    for k in range(4):
        for flip in (False, True):
            v = torch.rot90(x, k)
            v = v.flip(-1) if flip else v
            y = plain.run_y(v)
            y = y.flip(-1) if flip else y
            views.append(torch.rot90(y, -k))
    assert torch.allclose(tta, torch.stack(views).mean(0), atol=1e-5)
    assert not torch.allclose(tta, plain.run_y(x), atol=1e-4)


def test_engine_is_the_evaluated_model() -> None:
    """Engine on the LR Y image scores what ``drcn eval`` scores (Set5 x3, within 0.01 dB)."""
    lite = Upscaler("drcn-lite", device="cpu")  # automatic precision: bf16 where the CPU has AMX
    ours = []
    for f in sorted((DATA / "Set5").glob("*.png")):
        hr, lr, _ = make_pair(read_y(f), 3)
        sr = lite.upscale(lr.numpy().astype(np.uint8), 3)
        ours.append(psnr(torch.from_numpy(sr).double(), hr, 3))
    reference = evaluate(lite, DATA / "Set5", [3])[3].psnr
    assert abs(float(np.mean(ours)) - reference) < 0.01
    assert reference > 33.0


@pytest.mark.parametrize("channels", [2, 4])
def test_invisible_colour_never_fringes_the_visible_edge(channels: int) -> None:
    visible = (255, 0, 0, 255) if channels == 4 else (60, 255)
    hidden = [(0, 255, 0, 0), (0, 0, 0, 0), (255, 0, 0, 0)] if channels == 4 else \
        [(200, 0), (0, 0), (60, 0)]
    up = Upscaler(tiny(), device="cpu", precision="fp32")
    outs = []
    for colour in hidden:  # the same picture: only the invisible pixels' colour differs
        image = np.zeros((20, 20, channels), np.uint8)
        image[:, :10], image[:, 10:] = visible, colour
        outs.append(up.upscale(image, 4))
    seen = outs[0][..., -1] > 0
    assert (outs[0][..., -1][:, 36:44] % 255 != 0).any()  # partly transparent edge pixels
    opaque = np.zeros((20, 20, channels), np.uint8)
    opaque[:] = visible
    solid = up.upscale(opaque, 4)  # the visible colour everywhere: no edge in the colour at all
    for out in outs:
        assert np.array_equal(out[seen][:, :-1], solid[seen][:, :-1])


@pytest.mark.parametrize(("cgroup", "files", "room"), [
    ("0::/box\n", {"box/memory.max": "1000", "box/memory.current": "300"}, 700),
    ("0::/box\n", {"box/memory.max": "max", "box/memory.current": "300"}, None),
    ("4:memory:/box\n0::/\n", {"memory/box/memory.limit_in_bytes": "5000",
                               "memory/box/memory.usage_in_bytes": "1000"}, 4000),
    ("4:memory:/box\n", {"memory/box/memory.limit_in_bytes": str(2**63 - 4096),
                         "memory/box/memory.usage_in_bytes": "1000"}, None),
    ("0::/elsewhere\n", {}, None),
    # page cache is reclaimable, so not counted as used
    ("0::/box\n", {"box/memory.max": "1000", "box/memory.current": "900",
                   "box/memory.stat": "anon 100\ninactive_file 600\n"}, 700),
    # a parent's limit binds too (a Slurm job, a systemd slice)
    ("0::/slice/job\n", {"slice/memory.max": "500", "slice/memory.current": "100",
                         "slice/job/memory.max": "max", "slice/job/memory.current": "50"}, 400),
    # a v1 container sees its own cgroup at the mount's root, not at the path it is named by
    ("5:memory:/docker/abc\n", {"memory/memory.limit_in_bytes": "2000",
                                "memory/memory.usage_in_bytes": "500"}, 1500),
    ("garbage\n0::/box\n", {"box/memory.max": "10", "box/memory.current": "4"}, 6),
])
def test_a_containers_memory_limit_is_seen(tmp_path, cgroup: str, files: dict[str, str],
                                           room: int | None) -> None:
    from drcn_plugin.devices import _cgroup_room

    (tmp_path / "cgroup").write_text(cgroup)
    for name, text in files.items():
        (tmp_path / "sys" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "sys" / name).write_text(text)
    assert _cgroup_room(str(tmp_path / "cgroup"), str(tmp_path / "sys")) == room


def test_an_address_space_limit_refuses_the_job_up_front() -> None:
    # ulimit -v: psutil's host figure does not see it; unchecked, torch's allocator fails mid-job.
    code = ("import resource, psutil\n"
            "from drcn_plugin.memory import check_memory\n"
            "vms = psutil.Process().memory_info().vms\n"
            "resource.setrlimit(resource.RLIMIT_AS, (vms + (1 << 30), vms + (1 << 30)))\n"
            "try:\n"
            "    check_memory(4000, 4000, 3, 1, (16000, 16000))\n"
            "except MemoryError as e:\n"
            "    print(e)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "GiB of memory" in run.stdout and "available" in run.stdout, run.stdout + run.stderr


def test_running_out_of_memory_outside_the_network_is_the_librarys_error(monkeypatch) -> None:
    from drcn_plugin import engine
    from drcn_plugin.errors import OutOfMemoryError

    def no_room(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't "
                           "allocate memory: you tried to allocate 1280000000 bytes.")

    monkeypatch.setattr(engine, "merge", no_room)
    with pytest.raises(OutOfMemoryError, match="not enough memory for a 16x16 result on cpu"):
        Upscaler(seeded_drcn(), device="cpu").upscale(np.zeros((8, 8, 3), np.uint8), 2)


def test_the_library_call_refuses_what_cannot_fit_before_the_network(monkeypatch) -> None:
    """Like the front ends, ``upscale`` checks the memory estimate first: unchecked, a too-big
    job runs every tile and fails at the final resize under ``ulimit -v``, or the OS kills it."""
    from drcn_plugin import memory
    from drcn_plugin.errors import OutOfMemoryError

    passes: list[tuple] = []
    real = DRCN.forward
    monkeypatch.setattr(DRCN, "forward", lambda self, x, *a, **k: passes.append(x.shape)
                        or real(self, x, *a, **k))
    up = Upscaler(tiny(), device="cpu", precision="fp32")
    for image in (np.zeros((10, 12, 3), np.uint8), np.zeros((10, 12), np.float64)):
        need = memory.memory_needed(10, 12, 1 if image.ndim == 2 else 3, image.itemsize,
                                    (40, 48), encoded=False)
        monkeypatch.setattr(memory, "_available_memory", lambda device, n=need: n - 1)
        with pytest.raises(OutOfMemoryError, match=r"^a 48x40 result needs about 16\.\d MiB "
                                                   r"of memory; 16\.\d MiB is available$"):
            up.upscale(image, 4)
        assert passes == [], "refused before any window ran"
        assert up.upscale(image, 1.0).shape == image.shape, "nothing to enlarge: no estimate"
        monkeypatch.setattr(memory, "_available_memory", lambda device, n=need: n)
        assert up.upscale(image, 4).shape[:2] == (40, 48) and passes
        passes.clear()


def test_the_library_call_leaves_out_the_encode_it_does_not_make(tmp_path: Path,
                                                                   monkeypatch) -> None:
    """``upscale`` returns the array: the encode's two copies of the result, which a batch
    makes (and counts), are not counted against it. With memory between the two estimates the
    call runs and the batch's job is refused."""
    from drcn_plugin import memory
    from drcn_plugin.batch import Job, run_job

    image = np.random.default_rng(4).integers(0, 256, (30, 40, 3), np.uint8)
    Image.fromarray(image).save(tmp_path / "a.png")
    room = memory.memory_needed(30, 40, 3, 1, (120, 160), encoded=False)
    assert room < memory.memory_needed(30, 40, 3, 1, (120, 160))
    monkeypatch.setattr(memory, "_available_memory", lambda device: room)
    up = Upscaler(tiny(), device="cpu", precision="fp32")
    assert up.upscale(image, 4).shape == (120, 160, 3)
    outcome = run_job(Job(tmp_path / "a.png", tmp_path / "out.png"), up, 4.0)
    assert outcome.status == "failed" and "a 160x120 result needs about" in outcome.message
    assert not (tmp_path / "out.png").exists()


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="Linux peak RSS")
@pytest.mark.parametrize(("dtype", "channels", "side", "scale"), [
    ("uint8", 3, 128, 1.5), ("uint8", 3, 256, 6.0), ("uint16", 4, 128, 2.5)])
def test_the_memory_estimate_bounds_the_real_peak(tiny_model_file: str, dtype: str,
                                                  channels: int, side: int, scale: float) -> None:
    code = f"""
import numpy as np
from drcn_plugin.engine import Upscaler
from drcn_plugin.memory import memory_needed
from drcn_plugin.sizing import output_size
up = Upscaler({tiny_model_file!r}, device="cpu", precision="fp32", tile=32)
image = np.zeros(({side}, {side}, {channels}), np.{dtype})
up.upscale(image, {scale})  # warm: allocator pools, lazy imports
def vm(key):
    return int(next(l for l in open("/proc/self/status") if l.startswith(key)).split()[1]) * 1024
open("/proc/self/clear_refs", "w").write("5")  # the peak is reset to what is resident now
base = vm("VmRSS:")
up.upscale(image, {scale})
print(vm("VmHWM:") - base, memory_needed({side}, {side}, {channels},
                                         np.dtype(np.{dtype}).itemsize, output_size({side}, {side}, {scale}),
                                         encoded=False))
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    peak, estimate = map(int, run.stdout.split())
    assert peak <= estimate, (peak, estimate)
