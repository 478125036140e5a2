"""How much host memory an upscale needs, and refusing one before it is allocated when that is
more than the machine (its cgroup, ``ulimit -v``) has; the engine's working budget per device."""

from __future__ import annotations

import torch

from .devices import available_memory as _available_memory  # its own name: tests replace it
from .errors import OutOfMemoryError, memory_size
from .planes import BLOCK_PIXELS
from .sizing import network_size, output_size


def memory_needed(height: int, width: int, channels: int, itemsize: int, size: tuple[int, int],
                  encoded: bool = True) -> int:
    """Peak host memory (bytes) of one ``upscale`` to ``size`` (height, width) and, where
    ``encoded``, the encode after it: float planes in, the network's input and output planes,
    the merged result (with two copies in the encode), one row block's temporaries (bicubic,
    colour conversion, clamping: at most 4C + 6 floats per pixel) and the allocator's own
    overhead (measured on Linux: 3-4 MiB)."""
    oh, ow = output_size(height, width, size=size)
    nh, nw = network_size(height, width, oh, ow)
    network = 8 * nh * nw + (4 * oh * ow if (nh, nw) != (oh, ow) else 0)
    block = 4 * (4 * channels + 6) * min(oh * ow, BLOCK_PIXELS)
    results = 3 if encoded else 1
    return (4 * height * width * (channels + 3) + network
            + results * channels * itemsize * oh * ow + block + (16 << 20))


def check_memory(height: int, width: int, channels: int, itemsize: int, size: tuple[int, int],
                 held: int = 0, what: str = "", encoded: bool = True) -> None:
    """Refuse, before anything is allocated, an upscale that cannot fit in available memory.

    ``held``: bytes the caller keeps beside this upscale (a host's batch of outputs); ``what``
    names the job in the message (default: the result's size); ``encoded``: whether the result
    is encoded after it (the encode's copies counted).
    """
    oh, ow = output_size(height, width, size=size)
    refuse_over(memory_needed(height, width, channels, itemsize, size, encoded) + held,
                what or f"a {ow}x{oh} result")


def refuse_over(need: int, what: str, advice: str = "", device: torch.device | None = None) -> None:
    """:class:`OutOfMemoryError` when ``need`` bytes of host memory (or ``device``'s) for ``what``
    are more than is available (cgroup limits and ``ulimit -v`` counted)."""
    device = device or torch.device("cpu")
    avail = _available_memory(device)
    if need > avail:
        where = "" if device.type == "cpu" else f" on {device}"
        raise OutOfMemoryError(f"{what} needs about {memory_size(need)} of memory{where}; "
                               f"{memory_size(avail)} is available"
                               + (f": {advice}" if advice else ""))


def working_budget(device: torch.device) -> int:
    """Bytes the engine's windows may take on ``device``: half a GPU's free memory, a quarter of
    the host's (at most 1.5 GiB, where windows stay cache-sized) on a CPU."""
    avail = _available_memory(device)
    return avail // 2 if device.type == "cuda" else min(avail // 4, 1536 << 20)
