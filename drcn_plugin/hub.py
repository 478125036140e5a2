"""Model loading: shipped names, local files or folders, and Hugging Face Hub repos.

A *model spec* is resolved in this order:

* a shipped name (``drcn``, ``drcn-lite``): weights inside the package, checked against their
  sha256, never any network;
* a local path: a ``.safetensors`` file (F and D read from the tensor shapes) or a folder saved
  with ``DRCN.save_pretrained`` (``config.json`` + ``model.safetensors``);
* ``hf:owner/name[@revision]``: downloaded and cached by huggingface_hub (honours ``HF_HOME``,
  ``HF_HUB_OFFLINE`` and friends).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .errors import DRCNError, ModelLoadError
from .model import DRCN


@dataclass(frozen=True)
class ShippedModel:
    """A named pretrained configuration shipped inside the package."""

    name: str
    filename: str
    sha256: str
    features: int
    recursions: int
    summary: str


SHIPPED: dict[str, ShippedModel] = {
    m.name: m
    for m in (
        ShippedModel("drcn-lite", "drcn-f64-d16-x234.safetensors",
                     "3050f3a6e48347d58b496dff3c7db6756774e2572ca70a2ef32feaf8a572f9c7", 64, 16,
                     "F=64, 112k parameters, 2.4 MFLOP/pixel: fast on CPUs (default)"),
        ShippedModel("drcn", "drcn-f256-d16-x234.safetensors",
                     "4fc2be06d51f22123cd8c8d78383c342b4363e61ac80f23ef7b8e8a8a6ef621f", 256, 16,
                     "F=256 (the paper's size), 1.78M parameters, 39 MFLOP/pixel: best on GPUs"),
    )
}
DEFAULT_MODEL = "drcn-lite"


def weights_dir() -> Path:
    """Where the shipped weights live: inside the installed wheel, else the repo's ``weights/``."""
    here = Path(__file__).resolve().parent
    packaged = here / "weights"
    return packaged if packaged.is_dir() else here.parent / "weights"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _from_state_dict(sd: dict[str, torch.Tensor], origin: str) -> DRCN:
    embed, ensemble = sd.get("embed.0.weight"), sd.get("ensemble")
    if embed is None or ensemble is None or embed.dim() != 4 or ensemble.dim() != 1:
        raise ModelLoadError(f"{origin} does not hold DRCN weights (no 4-d embed.0.weight and "
                             "1-d ensemble tensors)")
    try:
        model = DRCN(features=embed.shape[0], recursions=ensemble.shape[0])
        model.load_state_dict(sd)
    except (KeyError, RuntimeError, ValueError) as e:
        raise ModelLoadError(f"{origin} does not hold DRCN weights "
                             f"({str(e).splitlines()[0]})") from e
    return checked(model.eval(), origin)


def checked(model: DRCN, origin: str) -> DRCN:
    """Refuse weights with NaN or infinite values: they would give blank images, not an error."""
    bad = [name for name, p in model.state_dict().items()
           if p.is_floating_point() and not torch.isfinite(p).all()]
    if bad:
        raise ModelLoadError(f"{origin} has NaN or infinite weights ({', '.join(bad[:3])})")
    return model


def load_weights_file(path: Path, sha256: str | None = None) -> DRCN:
    """Load a ``.safetensors`` DRCN checkpoint, checking its sha256 when one is given."""
    if not path.is_file():
        raise DRCNError(f"weights file not found: {path}")
    if sha256 is not None and sha256_of(path) != sha256:
        raise DRCNError(f"weights file {path} is corrupted (sha256 mismatch); reinstall drcn-plugin")
    try:
        sd = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelLoadError(f"cannot read weights file {path}: {e}") from e
    return _from_state_dict(sd, str(path))


def _load_folder(path: Path) -> DRCN:
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise DRCNError(f"{path} is not a DRCN model folder (needs config.json and model.safetensors)")
    try:
        model = DRCN.from_pretrained(path, strict=True).eval()  # strict: no silent random init
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError, IndexError) as e:
        raise ModelLoadError(f"cannot load model folder {path}: {str(e).splitlines()[0]}") from e
    return checked(model, str(path))


def _load_hub(spec: str) -> DRCN:
    from huggingface_hub import errors as hf_errors

    repo, _, revision = spec[3:].partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise DRCNError(f"bad Hub spec {spec!r}: use hf:owner/name or hf:owner/name@revision")
    try:
        return checked(DRCN.from_pretrained(repo, revision=revision or None, strict=True).eval(),
                       spec)
    except (hf_errors.LocalEntryNotFoundError, hf_errors.OfflineModeIsEnabled) as e:
        raise DRCNError(f"{spec}: not in the local Hugging Face cache and the Hub cannot be reached"
                        " (offline?)") from e
    except (hf_errors.RepositoryNotFoundError, hf_errors.RevisionNotFoundError,
            hf_errors.EntryNotFoundError) as e:
        raise DRCNError(f"{spec}: no such DRCN model on the Hugging Face Hub") from e
    except (hf_errors.HfHubHTTPError, OSError, ValueError, RuntimeError, TypeError) as e:
        raise DRCNError(f"{spec}: cannot load from the Hugging Face Hub: "
                        f"{str(e).splitlines()[0]}") from e


def load_model(spec: str = DEFAULT_MODEL) -> DRCN:
    """Resolve a model spec (see module docstring) to a DRCN in eval mode, on the CPU."""
    if spec in SHIPPED:
        m = SHIPPED[spec]
        return load_weights_file(weights_dir() / m.filename, sha256=m.sha256)
    if spec.startswith("hf:"):
        return _load_hub(spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        return _load_folder(path)
    if path.is_file():
        return load_weights_file(path)
    names = ", ".join(SHIPPED)
    raise DRCNError(f"unknown model {spec!r}: use one of {names}, a .safetensors file, a model "
                    "folder, or hf:owner/name")
