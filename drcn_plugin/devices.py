"""Where the work runs: device and precision choice, and this process's place in a torchrun job."""

from __future__ import annotations

import logging
import os
import platform
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Literal, get_args

import psutil
import torch

from .errors import (
    BadOptionError,
    DeviceError,
    DistributedError,
    DRCNError,
    OutOfMemoryError,
    PeerLostError,
    one_line,
)

Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True on CPUs with AVX512-BF16 (every CPU with AMX has it too), on any OS, where bf16 runs
    about 3x (AVX512-BF16 alone) to 5x (AMX) faster than fp32.

    Either torch's own CPUID check (``torch.cpu._is_avx512_bf16_supported``, where this torch
    has it) or, on Linux, the flags listed in /proc/cpuinfo.
    """
    check = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    if callable(check) and check():
        return True
    if sys.platform != "linux":
        return False
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
            flags = next((ln for ln in f if ln.startswith("flags")), "").split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def cpu_bf16_unproven() -> bool:
    """Whether torch can run bf16 on this CPU (oneDNN: AVX512 without its BF16 instructions, or
    Arm's BF16) though :func:`cpu_has_fast_bf16` does not vouch for its speed: there only a
    measurement tells whether it beats fp32."""
    if cpu_has_fast_bf16():
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _one_thread_after_fork() -> None:
    """In a forked child: the parent's OpenMP threads are gone, and torch's next parallel region
    waits for them for ever (libgomp), so the child runs torch on one thread."""
    if torch.get_num_threads() > 1:
        torch.set_num_threads(1)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_one_thread_after_fork)


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


DEVICE_TYPES = ("cpu", "cuda", "mps")  # the torch device types the engine runs on
NO_FLOAT64 = {"mps"}  # device types without float64 (Apple's Metal has none)


def float64_device(device: torch.device | str) -> torch.device:
    """Where float64 maths for work on ``device`` runs (the protocol's exact resizes): the
    device itself, or the CPU for one without float64."""
    device = torch.device(device)
    return torch.device("cpu") if device.type in NO_FLOAT64 else device


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """CUDA, then Apple MPS, then CPU; or the device asked for (a name or a torch.device), if
    it exists."""
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise BadOptionError(f"device {device!r} is not a device name: use auto, cpu, cuda, "
                             "cuda:N or mps", option="device")
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise BadOptionError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps",
                             option="device") from e
    if dev.type == "cuda" and (not torch.cuda.is_available()
                               or (dev.index or 0) >= torch.cuda.device_count()):
        raise DeviceError(f"device {device!r} asked for, but no such CUDA GPU is available")
    if dev.type == "mps" and not _mps_available():
        raise DeviceError("device 'mps' asked for, but Apple MPS is not available")
    if dev.type not in DEVICE_TYPES:
        raise BadOptionError(f"unsupported device {device!r}", option="device")
    return dev


def pick_precision(device: torch.device, precision: Precision = "auto") -> torch.dtype:
    """bf16 on GPUs that have it and on CPUs with AMX/AVX512-BF16, fp16 on MPS, else fp32 (the
    engine measures bf16 against fp32 where :func:`cpu_bf16_unproven`)."""
    if precision not in PRECISIONS:
        raise BadOptionError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}",
                             option="precision")
    if precision != "auto":
        return _DTYPES[precision]
    if device.type == "cuda":  # bf16 in this GPU's hardware: compute capability 8+, every ROCm
        # GPU; torch.cuda.is_bf16_supported() also counts a T4's or RTX 20xx's slow emulation
        native = torch.version.hip is not None or torch.cuda.get_device_capability(device)[0] >= 8
        return torch.bfloat16 if native else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32


@dataclass(frozen=True)
class Dist:
    """This process's place in a torchrun job (rank 0 of 1 when run alone)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this process reports, validates and writes shared files."""
        return self.rank == 0

    def from_main(self, value: object) -> object:
        """Rank 0's ``value`` on every process of the joined job (``value`` itself when alone):
        what only rank 0 can learn, such as whether the run folder is free."""
        if self.world <= 1:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    @contextmanager
    def warn_once(self, logger: str) -> Iterator[None]:
        """Inside, the warnings of ``logger`` and its children show on rank 0 alone: every
        process of a torchrun job reads the same data and options, and would say each again."""
        log = logging.getLogger(logger)
        level = log.level
        if not self.main:
            log.setLevel(logging.ERROR)
        try:
            yield
        finally:
            log.setLevel(level)

    @classmethod
    def from_env(cls) -> Dist:
        """This process's place as torchrun's environment names it; a ``WORLD_SIZE`` over 1
        without a ``RANK`` inside it (a variable left over in a shell, torchrun not used) is a
        :class:`DistributedError`."""
        world = _env_int("WORLD_SIZE", "1")
        if world <= 1:
            return cls()
        rank, local = _env_int("RANK", ""), _env_int("LOCAL_RANK", "0")
        if not 0 <= rank < world or local < 0:
            raise DistributedError(f"RANK {rank} and LOCAL_RANK {local} do not fit WORLD_SIZE "
                                   f"{world}: start the job with torchrun")
        return cls(rank, world, local)


def _env_int(name: str, default: str) -> int:
    """A whole number from the environment (``default`` when unset; "" for none)."""
    value = os.environ.get(name, default)
    try:
        return int(value)
    except ValueError:
        said = f"is {value!r}" if value else "is not set"
        raise DistributedError(f"{name} {said}, where a torchrun job sets a whole number: "
                               "start the job with torchrun, or unset WORLD_SIZE to run alone"
                               ) from None


# How long a gloo process waits in a collective for one that is alive but busy: rank 0
# validating a large set while the others wait for the next step, or the last share of an
# upscale's files, which can end hours after the first. A gloo process notices one that ends at
# once (its connection closes), and torchrun ends the job when one of its processes ends; a day
# bounds the wait on one that hangs.
BUSY_PEER_WAIT = timedelta(days=1)


def join_torchrun(device: str = "auto", backend: str | None = None) -> tuple[Dist, torch.device]:
    """Join the torchrun job named by the environment, if any, and pick this process's device.

    Under torchrun each process takes the GPU of its local rank (CUDA asked for or ``auto``).
    ``backend`` defaults to nccl on CUDA and gloo elsewhere. A gloo job waits
    :data:`BUSY_PEER_WAIT` for a busy process, where torch's 30 minutes took it for one lost;
    nccl keeps torch's 10, as an nccl process notices one that ends only at that timeout.
    """
    d = Dist.from_env()
    if d.world <= 1:
        return d, pick_device(device)
    import torch.distributed as dist

    dev = pick_device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", d.local_rank % torch.cuda.device_count())
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        try:
            backend = backend or ("nccl" if dev.type == "cuda" else "gloo")
            dist.init_process_group(backend, timeout=BUSY_PEER_WAIT if backend == "gloo" else None)
        except (ValueError, RuntimeError) as e:  # the rendezvous' variables missing or wrong
            raise DistributedError(f"cannot join the torchrun job ({one_line(e)}): start it "
                                   "with torchrun") from e
    return d, dev


def is_peer_lost(e: BaseException) -> bool:
    """Whether ``e`` is a collective of a torchrun job failing because another process of it
    died or stopped answering (torch's DistError, or gloo's plain RuntimeError)."""
    import torch.distributed as dist

    lost = getattr(dist, "DistError", ())
    return isinstance(e, lost) or (isinstance(e, RuntimeError) and "gloo/" in str(e))


@contextmanager
def peers_lost(left: str | Callable[[], str]) -> Iterator[None]:
    """Inside, a collective that fails because another process of the torchrun job stopped is
    one :class:`DistributedError` line ending with ``left``: what this process's work left (a
    function of no arguments: asked when it happens)."""
    try:
        yield
    except RuntimeError as e:
        if isinstance(e, DRCNError) or not is_peer_lost(e):
            raise
        why = re.sub(r"^\[[^\]]*\]\s*", "", one_line(e)).split(". ")[0]  # gloo's source line off
        raise PeerLostError(f"another process of this torchrun job stopped or cannot be "
                            f"reached ({why}; its own output says why): "
                            f"{left() if callable(left) else left}") from e


def device_name(device: torch.device) -> str:
    """The hardware, as specific as the platform tells: GPU name or CPU model string."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return f"mps {platform.machine()}"
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                         "")
    except OSError:
        model = ""
    return "cpu " + (model or platform.processor() or platform.machine())


@lru_cache(maxsize=1)
def cpu_signature(cpuinfo: str = "/proc/cpuinfo") -> str:
    """What tells apart CPUs that share a model string (a virtual machine may say only "AMD
    EPYC", an Arm host nothing): the vector ISA torch dispatches to, fast bf16, and on Linux the
    first CPU's family and model (x86) or implementer and part (Arm) numbers."""
    wanted = ("cpu family", "model", "CPU implementer", "CPU part")
    fields: dict[str, str] = {}
    try:
        with open(cpuinfo, encoding="ascii", errors="ignore") as f:
            for line in f:
                if not line.strip() and fields:
                    break  # the first processor's block is enough
                key, _, value = line.partition(":")
                if key.strip() in wanted:
                    fields.setdefault(key.strip().replace(" ", "_"), value.strip())
    except OSError:
        pass
    parts = [torch.backends.cpu.get_cpu_capability(), f"bf16={int(cpu_has_fast_bf16())}"]
    return ",".join(parts + [f"{k}={v}" for k, v in fields.items()])


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU), so timings measure the work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def host_available_memory() -> int:
    """Bytes of RAM this process can still take: the host's available memory (psutil, on every
    platform), lowered by the process's cgroup limit (containers) and its address-space limit
    (``ulimit -v``), which the host figure does not see."""
    avail = psutil.virtual_memory().available
    room = _cgroup_room()
    if room is not None:
        avail = min(avail, room)
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            avail = min(avail, max(0, soft - psutil.Process().memory_info().vms))
    except (ImportError, OSError, ValueError):  # no such limit on this platform
        pass
    return avail


def available_memory(device: torch.device) -> int:
    """Bytes free for a job on ``device``: the GPU's free memory, else the RAM this process can
    take."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free
    return host_available_memory()


@lru_cache(maxsize=1)
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim`` in this process's C library; None elsewhere (macOS, Windows and
    musl have none)."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    import ctypes

    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> bool:
    """Hand the heap pages freed since the last call back to the OS (glibc keeps them, so a
    batch of varied sizes sat 100-150 MB above its live memory); whether it could."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
    return trim is not None


# per cgroup version: limit file, usage file, and the reclaimable page cache's key in memory.stat
_CGROUP_FILES = {2: ("memory.max", "memory.current", "inactive_file"),
                 1: ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")}


def _cgroup_room(proc: str = "/proc/self/cgroup", mount: str = "/sys/fs/cgroup") -> int | None:
    """Memory this process's cgroups still allow: the least limit minus use over its cgroup and
    their parents up to the mount (a container sees its own cgroup as the root there), the
    reclaimable page cache not counted as used. None without a limit."""
    try:
        lines = Path(proc).read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    rooms = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        version = 2 if parts[1] == "" else 1 if "memory" in parts[1].split(",") else 0
        if not version:
            continue
        root = Path(mount if version == 2 else f"{mount}/memory")
        folder = root / parts[2].strip("/")
        while True:
            room = _room_in(folder, _CGROUP_FILES[version])
            if room is not None:
                rooms.append(room)
            if folder == root or root not in folder.parents:
                break
            folder = folder.parent
    return min(rooms) if rooms else None


def _room_in(folder: Path, files: tuple[str, str, str]) -> int | None:
    """Limit minus use of one cgroup folder; None where it has no limit or cannot be read."""
    try:
        limit, usage = (int((folder / f).read_text(encoding="utf-8")) for f in files[:2])
    except (OSError, ValueError):  # "max": no limit; or not visible from here
        return None
    if limit >= 1 << 60:  # v1 writes a huge number for no limit
        return None
    cache = 0
    try:
        for line in (folder / "memory.stat").read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition(" ")
            if key == files[2]:
                cache = int(value)
    except (OSError, ValueError):
        pass
    return max(0, limit - max(0, usage - cache))


def is_out_of_memory(e: BaseException) -> bool:
    """Whether ``e`` is torch running out of device or host memory (several types carry it)."""
    msg = str(e).lower()
    return (isinstance(e, torch.OutOfMemoryError) or "out of memory" in msg
            or "can't allocate" in msg)


@contextmanager
def allocating(h: int, w: int, device: torch.device, what: str = "result") -> Iterator[None]:
    """Around the colour and interpolation steps: running out of memory there, for an ``h x w``
    ``what``, is the library's :class:`OutOfMemoryError`, not the allocator's RuntimeError."""
    try:
        yield
    except (torch.OutOfMemoryError, RuntimeError, MemoryError) as e:
        if isinstance(e, DRCNError) or not (isinstance(e, MemoryError) or is_out_of_memory(e)):
            raise
        raise OutOfMemoryError(f"not enough memory for a {w}x{h} {what} on {device}: ask for "
                               "a smaller size, or free memory") from e
