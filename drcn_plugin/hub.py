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

import difflib
import errno
import functools
import hashlib
import json
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load, load_file

from .errors import EMPTY_PATH, ModelLoadError, one_line, reason
from .model import DRCN, blend_weight, interpolate
from .resources import PACKAGE, bundled
from .weightfiles import checkpoint_kind, unreadable


@dataclass(frozen=True)
class ShippedModel:
    """A named pretrained configuration shipped inside the package."""

    name: str
    filename: str
    sha256: str
    features: int
    recursions: int


SHIPPED: dict[str, ShippedModel] = {
    m.name: m
    for m in (
        ShippedModel("drcn-lite", "drcn-f64-d16-x234.safetensors",
                     "3050f3a6e48347d58b496dff3c7db6756774e2572ca70a2ef32feaf8a572f9c7", 64, 16),
        ShippedModel("drcn-lite-photo", "drcn-photo-f64-d16-x234.safetensors",
                     "12eacf5a707201acdeb32506b76d9b8c34e9e08b42229e39717afba15fb88dc0", 64, 16),
        ShippedModel("drcn", "drcn-f256-d16-x234.safetensors",
                     "4fc2be06d51f22123cd8c8d78383c342b4363e61ac80f23ef7b8e8a8a6ef621f", 256, 16),
    )
}
DEFAULT_MODEL = "drcn-lite"
MAX_FEATURES, MAX_RECURSIONS = 4096, 1024  # the largest a file may declare (and training make)
# clean model -> its fine-tune on real photos (the two ends of a denoise blend)
PHOTO_VARIANTS = {"drcn-lite": "drcn-lite-photo"}
# (lowest JPEG quality, denoise strength): the first row whose quality the file reaches applies.
# Fitted on the measured strength curve (benchmarks/photo_quality.py prints the fit): each
# measured quality's best strength, switching halfway between neighbouring qualities, except
# that 0.5 starts at 91, not 92: flat step-8 tables, read as 91, are best at 0.5 (by 0.06 dB,
# benchmarks/foreign_jpeg.py), while IJG's quality 91 loses 0.025 dB at 0.5 (best at 1).
DENOISE_BY_QUALITY: tuple[tuple[int, float], ...] = ((97, 0.0), (91, 0.5), (0, 1.0))
# (lowest mean VP8 quantiser index, denoise strength) for lossy WebP, the same way: on Set5/Set14
# crops the indices of libwebp's qualities 95, 90, 85 and 80 fall in 3.5-4.5, 7.5-9, 12.5-15 and
# 17-20.5, whose best strengths are 0, 0.5, 0.5 and 1 (0.5 and 1 tie at 80).
DENOISE_BY_VP8_QUANTIZER: tuple[tuple[float, float], ...] = ((16, 1.0), (6, 0.5), (0, 0.0))
# (lowest AV1 base_q_idx, denoise strength) for AVIF (benchmarks/codec_strength.py, Set5/Set14 x3):
# libavif's qualities 95, 90, 80, 70 and 50 give base_q_idx 16, 32, 60, 92 and 148, whose best
# strengths are 0, 0, 0.5, 0.5 and 1; the bounds sit between the measured indices.
DENOISE_BY_AV1_Q_INDEX: tuple[tuple[int, float], ...] = ((120, 1.0), (46, 0.5), (0, 0.0))
# (lowest HEVC slice QP, denoise strength) for HEIF (benchmarks/codec_strength.py --codec heif,
# Set5/Set14 x3): pillow-heif's x265 qualities 30, 50, 70, 80, 90 and 95 give QP 32, 22, 12, 7, 2
# and 0 on every image, whose best strengths are 1, 0.5, 0, 0, 0 and 0; the bounds sit halfway
# between the measured QPs (-48 is the floor of a 16-bit image's QP).
DENOISE_BY_HEVC_QP: tuple[tuple[int, float], ...] = ((27, 1.0), (17, 0.5), (-48, 0.0))
# Denoise strength of lossy files whose quality is not read from them, by Pillow's format name
# (others: a quality-80 JPEG's). A HEIF whose QP is not read gets drcn-lite: HEVC, with its
# in-loop deblocking, leaves less to remove than JPEG: on Set5/Set14 x3
# (benchmarks/codec_strength.py --codec heif) drcn-lite is best at x265 qualities 70-95 and
# within 0.07 dB of the best at 50, and phones save HEIC high.
DENOISE_BY_FORMAT: dict[str, float] = {"HEIF": 0.0}


def weights_dir() -> Path:
    """Where the shipped weights live: inside the installed wheel, else the repo's ``weights/``."""
    return bundled("weights") or PACKAGE.parent / "weights"


def sha256_of(path: Path) -> str:
    """The file's SHA-256 as hex, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _mode(path: Path) -> int | None:
    """``path``'s stat mode, None when nothing is there (a name too long or holding a NUL too);
    a failure that hides what is there (a permission, a symbolic link loop) is a
    :class:`ModelLoadError` saying so, never "not found"."""
    try:
        return os.stat(path).st_mode
    except ValueError:
        return None
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG):
            return None
        raise ModelLoadError(f"cannot read {path}: {reason(e)}") from e


def _is_file(path: Path) -> bool:
    """Whether ``path`` is a regular file (see :func:`_mode` for what cannot be told)."""
    return stat.S_ISREG(_mode(path) or 0)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file. Opened here first: safetensors reports any
    failure to open (a permission) as "No such file or directory", and opens only UTF-8 names,
    so a name in another encoding is read by Python."""
    with open(path, "rb"):
        pass
    try:
        str(path).encode()
    except UnicodeEncodeError:
        return load(path.read_bytes())
    return load_file(path)


def looks_like_drcn(state_dict: Mapping[str, object]) -> bool:
    """Whether a state dict names DRCN's tensors (its shapes are checked on loading)."""
    return all(k in state_dict for k in ("embed.0.weight", "recursive.weight",
                                         "reconstruct.2.weight", "ensemble"))


def _check_shapes(shapes: dict[str, tuple[int, ...]], origin: str) -> tuple[int, int]:
    """(F, D) of a DRCN whose tensors have exactly these shapes, checked before anything of that
    size is allocated: a small file declaring a huge F would otherwise ask for F*F weights."""
    embed, ensemble = shapes.get("embed.0.weight"), shapes.get("ensemble")
    if embed is None or ensemble is None or len(embed) != 4 or len(ensemble) != 1:
        prefix = next((k.removesuffix("embed.0.weight") for k in sorted(shapes)
                       if k.endswith(".embed.0.weight")), None) if embed is None else None
        if prefix is not None:  # a wrapper's state dict (DDP's module., Lightning's model.)
            raise ModelLoadError(f"{origin} does not hold DRCN weights as DRCN names them: its "
                                 f"tensors are named {prefix}embed.0.weight, ...; save the DRCN's "
                                 f"own state_dict, without the {prefix!r} prefix")
        raise ModelLoadError(f"{origin} does not hold DRCN weights (no 4-d embed.0.weight and "
                             "1-d ensemble tensors)")
    features, recursions = embed[0], ensemble[0]
    if not features or not recursions:
        raise ModelLoadError(f"{origin} declares F={features}, D={recursions}: a DRCN has at "
                             "least one feature channel and one recursion")
    if features > MAX_FEATURES or recursions > MAX_RECURSIONS:  # bounds time as well as memory
        raise ModelLoadError(f"{origin} declares F={features}, D={recursions}: more than DRCN "
                             f"takes here (F <= {MAX_FEATURES}, D <= {MAX_RECURSIONS})")
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in DRCN(features, recursions).state_dict().items()}
    wrong = sorted(k for k in expected.keys() | shapes.keys() if expected.get(k) != shapes.get(k))
    if wrong:
        raise ModelLoadError(f"{origin} does not hold DRCN weights (F={features}, "
                             f"D={recursions} does not fit: {', '.join(wrong[:3])})")
    return features, recursions


def _check_float(dtypes: Mapping[str, str], origin: str) -> None:
    """Refuse integer, bool and complex tensors: loading would cast them into the float weights
    without a word, and the model would give garbage."""
    bad = {k: v for k, v in dtypes.items() if not v.upper().startswith(("F", "BF", "TORCH.F",
                                                                       "TORCH.BF"))}
    if bad:
        name, dtype = next(iter(sorted(bad.items())))
        raise ModelLoadError(f"{origin} does not hold DRCN weights ({name} is "
                             f"{dtype.removeprefix('torch.')}, not floating point)")


def from_state_dict(sd: dict[str, torch.Tensor], origin: str) -> DRCN:
    """A DRCN in eval mode from a state dict, F and D read from the tensor shapes; ``origin``
    names the source in the error."""
    shapes = {k: tuple(v.shape) for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if len(shapes) != len(sd):
        raise ModelLoadError(f"{origin} does not hold DRCN weights (not all tensors)")
    features, recursions = _check_shapes(shapes, origin)
    _check_float({k: str(v.dtype) for k, v in sd.items()}, origin)
    try:
        model = DRCN(features=features, recursions=recursions)
        model.load_state_dict(sd)
    except (KeyError, RuntimeError, ValueError) as e:
        raise ModelLoadError(f"{origin} does not hold DRCN weights ({one_line(e)})") from e
    return checked(model.eval(), origin)


def checked(model: DRCN, origin: str) -> DRCN:
    """Refuse weights with NaN or infinite values: they would give blank images, not an error."""
    if any(p.is_meta for p in model.state_dict().values()):
        raise ModelLoadError(f"{origin} has no weight values (meta tensors): load its weights")
    bad = [name for name, p in model.state_dict().items()
           if p.is_floating_point() and not torch.isfinite(p).all()]
    if bad:
        raise ModelLoadError(f"{origin} has NaN or infinite weights ({', '.join(bad[:3])})")
    return model


def load_weights_file(path: Path, sha256: str | None = None) -> DRCN:
    """Load a ``.safetensors`` DRCN checkpoint, checking its sha256 when one is given."""
    if not _is_file(path):
        raise ModelLoadError(f"weights file not found: {path}")
    try:
        if sha256 is not None and sha256_of(path) != sha256:
            raise ModelLoadError(f"weights file {path} is corrupted (sha256 mismatch); "
                                 "reinstall drcn-plugin")
        sd = _read_safetensors(path)
    except (SafetensorError, OSError, ValueError) as e:
        if kind := checkpoint_kind(path):
            raise ModelLoadError(f"{path} is {kind}, not .safetensors weights: a training run "
                                 "exports its weights as NAME.safetensors beside its "
                                 "checkpoints") from e
        why = unreadable(path) if isinstance(e, SafetensorError) else reason(e)
        raise ModelLoadError(f"cannot read weights file {path}: {why}") from e
    return from_state_dict(sd, str(path))


def _weights_inside(folder: Path) -> str:
    """``; it holds NAME.safetensors, ...`` for the weights files in a folder that is no model
    folder (a training run's, which exports NAME.safetensors), else ``""``."""
    try:
        names = sorted(p.name for p in folder.iterdir()
                       if p.suffix.lower() == ".safetensors" and os.path.isfile(p))
    except OSError:
        return ""
    return f"; it holds {', '.join(names[:3])}: name the weights file itself" if names else ""


def _load_folder(path: Path, origin: str = "") -> DRCN:
    """A ``save_pretrained`` folder (config.json + model.safetensors); ``origin`` names it in
    errors (default: the path)."""
    local, origin = not origin, origin or f"model folder {path}"
    if not _is_file(path / "config.json") or not _is_file(path / "model.safetensors"):
        raise ModelLoadError(f"{origin} is not a DRCN model folder (needs config.json and "
                             f"model.safetensors){_weights_inside(path) if local else ''}")
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        if not isinstance(config, dict):
            raise ValueError("config.json is not a JSON object")
        model = from_state_dict(_read_safetensors(path / "model.safetensors"), origin)
        declared, actual = (config.get("features"), config.get("recursions")), \
            (model.features, model.recursions)
        if any(type(v) is not int for v in declared) or declared != actual:
            raise ValueError(f"config.json declares F={declared[0]!r}, D={declared[1]!r}; the "
                             f"weights are F={actual[0]}, D={actual[1]}")
    except SafetensorError as e:
        raise ModelLoadError(f"cannot load {origin}: model.safetensors: "
                             f"{unreadable(path / 'model.safetensors')}") from e
    except (OSError, ValueError, RuntimeError, TypeError, IndexError, RecursionError) as e:
        raise ModelLoadError(f"cannot load {origin}: {one_line(e)}") from e
    return model


def _hub_loader(spec: str) -> Callable[[], DRCN]:
    """The download and load of the Hub spec ``hf:owner/name[@revision]``, its form checked."""
    repo, at, revision = spec[3:].partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")) or (at and not revision):
        raise ModelLoadError(f"bad Hub spec {spec!r}: use hf:owner/name or hf:owner/name@revision")
    return lambda: _load_folder(_hub_folder(repo, revision or None, spec), origin=spec)


def _hub_folder(repo: str, revision: str | None, origin: str, **download: object) -> Path:
    """The local folder holding a Hub model's config.json and model.safetensors, downloaded or
    found in the cache (``download``: more of ``snapshot_download``'s options); any failure is a
    :class:`ModelLoadError` naming ``origin``."""
    from huggingface_hub import errors as hf_errors
    from huggingface_hub import snapshot_download

    try:
        # Downloaded (or found in the cache) first and then loaded as a folder: the mixin would
        # take a local folder of the same name instead of the Hub model.
        return Path(snapshot_download(repo, revision=revision, **download,
                                      allow_patterns=["config.json", "model.safetensors"]))
    except (hf_errors.LocalEntryNotFoundError, hf_errors.OfflineModeIsEnabled) as e:
        raise ModelLoadError(f"{origin}: not in the local Hugging Face cache and the Hub cannot "
                             "be reached (offline?)") from e
    except (hf_errors.RepositoryNotFoundError, hf_errors.RevisionNotFoundError,
            hf_errors.EntryNotFoundError) as e:
        raise ModelLoadError(f"{origin}: no such DRCN model on the Hugging Face Hub") from e
    except (hf_errors.HfHubHTTPError, OSError, ValueError, RuntimeError, TypeError) as e:
        raise ModelLoadError(f"{origin}: cannot load from the Hugging Face Hub: "
                             f"{one_line(e)}") from e


def load_pretrained(model_id: str | os.PathLike, revision: str | None = None,
                    **download: object) -> DRCN:
    """What ``DRCN.from_pretrained`` loads: a local model folder, else a Hub repo id (``owner/
    name``), with :func:`load_model`'s checks (the mixin's own loader builds the model that
    config.json declares before reading the weights, and takes NaN weights)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    spec = _spec_text(model_id)
    if not spec:  # Path("") is the current folder
        raise ModelLoadError(f"{EMPTY_PATH} names no model folder or Hub repo")
    if (mode := _mode(Path(spec))) is not None and stat.S_ISDIR(mode):
        return _load_folder(Path(spec))
    try:
        validate_repo_id(spec)
    except HFValidationError as e:
        raise ModelLoadError(f"not found: {spec} (no such model folder, nor a Hub repo id "
                             "owner/name)") from e
    return _load_folder(_hub_folder(spec, revision, spec, **download), origin=spec)


def _spec_text(spec: object) -> str:
    """A model spec as text (a path's too), else :class:`ModelLoadError`."""
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str):
        raise ModelLoadError(f"a model is named by a string or a path, not {type(spec).__name__}")
    return spec


def load_model(spec: str | os.PathLike = DEFAULT_MODEL) -> DRCN:
    """Resolve a model spec (see module docstring) to a DRCN in eval mode, on the CPU."""
    return model_loader(spec)()


def model_loader(spec: str | os.PathLike = DEFAULT_MODEL) -> Callable[[], DRCN]:
    """What loads ``spec``, found without reading or downloading weights: an unknown name or a
    missing path is refused here, so a command can refuse it before its other checks."""
    spec = _spec_text(spec)
    if spec in SHIPPED:
        m = SHIPPED[spec]
        return functools.partial(load_weights_file, weights_dir() / m.filename, sha256=m.sha256)
    if spec.startswith("hf:"):
        return _hub_loader(spec)
    if not spec.strip():
        raise ModelLoadError(f"no model named: use one of {', '.join(SHIPPED)}, a .safetensors "
                             "file, a model folder, or hf:owner/name")
    path = local_path(spec)
    mode = _mode(path)  # a name too long for a file is "not found"
    if mode is not None and stat.S_ISDIR(mode):
        return functools.partial(_load_folder, path)
    if mode is not None and stat.S_ISREG(mode):
        return functools.partial(load_weights_file, path)
    if mode is not None:
        raise ModelLoadError(f"{path} is neither a weights file nor a model folder")
    if path.suffix.lower() == ".safetensors" or any(sep and sep in spec
                                                    for sep in (os.sep, os.altsep)):
        raise ModelLoadError(f"not found: {path} (no such weights file or model folder; a Hub "
                             "model is written hf:owner/name)")
    close = difflib.get_close_matches(spec.lower(), SHIPPED, n=1)
    meant = f" (did you mean {close[0]}?)" if close else ""
    names = ", ".join(SHIPPED)
    raise ModelLoadError(f"unknown model {spec!r}{meant}: use one of {names}, a .safetensors "
                         "file, a model folder, or hf:owner/name")


def local_path(spec: str) -> Path | None:
    """The file or folder a model spec names on this machine, ``~`` expanded as a shell does
    (``~nosuchuser`` stays as written); None for a shipped name or a Hub spec."""
    return None if spec in SHIPPED or spec.startswith("hf:") else Path(os.path.expanduser(spec))


def names_a_path(spec: str) -> bool:
    """Whether :func:`load_model` takes a spec as a local file or folder (not a shipped name, not
    the Hub, not blank): such a spec is relative to the working directory it was given in."""
    return bool(spec.strip()) and spec not in SHIPPED and not spec.startswith("hf:")


def load_denoised(strength: float, spec: str | os.PathLike = DEFAULT_MODEL) -> DRCN:
    """A clean shipped model moved toward its photo variant: 0 is ``spec`` as named (any model),
    1 the photo model.

    Between the two the weights are interpolated (the photo model was fine-tuned from the clean
    one, so the blend is meaningful). ``spec`` names the clean end; the photo model is strength 1.
    """
    strength = blend_weight(strength, "denoise strength")
    spec = _spec_text(spec)
    if strength == 0:
        return load_model(spec)
    if spec in PHOTO_VARIANTS.values():
        clean = next(c for c, p in PHOTO_VARIANTS.items() if p == spec)
        raise ModelLoadError(f"{spec} is the photo end of the denoise blend already; name "
                             f"{clean} with a denoise strength (1 = {spec})")
    if spec not in PHOTO_VARIANTS:
        pairs = ", ".join(PHOTO_VARIANTS)
        raise ModelLoadError(f"model {spec!r} has no photo variant to blend with; a denoise "
                             f"strength works with {pairs}")
    if strength == 1:
        return load_model(PHOTO_VARIANTS[spec])
    return interpolate(load_model(spec), load_model(PHOTO_VARIANTS[spec]), strength)


@dataclass(frozen=True)
class SourceChoice:
    """The model a file gets when the user names none: a shipped model and a denoise strength."""

    spec: str
    denoise: float

    @property
    def label(self) -> str:
        """How the choice is shown to the user, e.g. ``drcn-lite`` or ``drcn-lite denoise 0.5``."""
        if self.denoise == 0:
            return self.spec
        if self.denoise == 1:
            return PHOTO_VARIANTS[self.spec]
        return f"{self.spec} denoise {self.denoise:g}"


def choose_for_source(lossy: bool, jpeg_quality: int | None, webp_quantizer: float | None = None,
                      av1_q_index: int | None = None, fmt: str | None = None,
                      hevc_qp: int | None = None) -> SourceChoice:
    """The default model for one source file: denoise strength from its compression.

    Lossless sources get the clean model. JPEGs get a strength that grows as their estimated
    quality falls (:data:`DENOISE_BY_QUALITY`), lossy WebPs, AVIFs and HEIFs as their quantiser
    coarsens (:data:`DENOISE_BY_VP8_QUANTIZER`, :data:`DENOISE_BY_AV1_Q_INDEX`,
    :data:`DENOISE_BY_HEVC_QP`); lossy files of unknown quality get their format's strength
    (:data:`DENOISE_BY_FORMAT`, Pillow's ``fmt``), else that of a typical web JPEG (quality 80).
    """
    if not lossy:
        return SourceChoice(DEFAULT_MODEL, 0.0)
    for index, table in ((webp_quantizer, DENOISE_BY_VP8_QUANTIZER),
                         (av1_q_index, DENOISE_BY_AV1_Q_INDEX), (hevc_qp, DENOISE_BY_HEVC_QP)):
        if index is not None:
            return SourceChoice(DEFAULT_MODEL, _strength(table, index))
    if jpeg_quality is None and fmt in DENOISE_BY_FORMAT:
        return SourceChoice(DEFAULT_MODEL, DENOISE_BY_FORMAT[fmt])
    quality = 80 if jpeg_quality is None else jpeg_quality
    return SourceChoice(DEFAULT_MODEL, _strength(DENOISE_BY_QUALITY, quality))


def _strength(table: tuple[tuple[float, float], ...], index: float) -> float:
    """The strength of the first of ``table``'s (bound, strength) rows that ``index`` reaches;
    below the lowest bound (a value no reader should give), the last row's."""
    return next((t for q, t in table if index >= q), table[-1][1])
