"""What a file that safetensors cannot read is, in a user's words: a torch checkpoint (pickle),
an empty file, something else altogether, or weights damaged or cut short."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from .errors import reason


def checkpoint_kind(path: Path) -> str | None:
    """What torch checkpoint ``path`` is (torch.save's zip archive, or its legacy pickle), None
    when it is none: a run's last.pt or best.pt, say, or a .pth from elsewhere."""
    if zipfile.is_zipfile(path):
        return "a zip archive (as torch.save writes)"
    return "a Python pickle (as torch.save's legacy format is)" if _is_pickle(path) else None


def _is_pickle(path: Path) -> bool:
    """Whether a file starts as a pickle of protocol 2 or later does (PROTO opcode, version)."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError:
        return False
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def unreadable(path: Path) -> str:
    """Why safetensors could not read ``path``, in a user's words: empty, a torch checkpoint,
    not .safetensors at all (its 8-byte length is followed by a JSON header), or damaged or cut
    short."""
    try:
        with open(path, "rb") as f:
            head, size = f.read(9), os.fstat(f.fileno()).st_size
    except OSError as e:
        return reason(e)
    if not head:
        return "the file is empty"
    if kind := checkpoint_kind(path):
        return f"it is {kind}, not .safetensors weights"
    if len(head) < 9 or head[8:9] != b"{":
        return "not .safetensors weights (no safetensors header)"
    return f"the file is damaged or cut short ({size:,} bytes; a partial download or copy?)"
