"""ComfyUI nodes in the host's ecosystem: DRCN as an UPSCALE_MODEL (spandrel descriptor), exact
output sizes and per-step frame batches on DRCN Upscale, and the node pack's registry files."""

from __future__ import annotations

import sys
import threading
import types
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from test_comfyui_nodes import (
    FRAMES,
    NODES,
    NODES_DIR,
    PKG,
    FakeComfy,
    FakeModelPatcher,
    InterruptProcessingException,
)

import drcn_plugin
from drcn_plugin.engine import Upscaler
from drcn_plugin.model import DRCN

UPSCALE = PKG.NODE_CLASS_MAPPINGS["DRCNUpscale"]()
TO_MODEL = PKG.NODE_CLASS_MAPPINGS["DRCNToUpscaleModel"]()
MODELS = sys.modules[f"{PKG.__name__}.upscale_model"]


@pytest.fixture(scope="module")
def tiny() -> DRCN:
    torch.manual_seed(0)
    return DRCN(features=8, recursions=3).eval()


def _frames(b: int, h: int, w: int, c: int = 3, seed: int = 3) -> torch.Tensor:
    """8-bit frames as ComfyUI holds them (u8 / 255), like a video loader's batch."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, h, w, c), generator=g).float() / 255.0


# -- DRCN Upscale: exact sizes and per_batch -------------------------------------------------------

@pytest.mark.parametrize("width, height, size", [
    (0, 0, (25, 35)), (50, 0, (35, 50)), (0, 30, (30, 43)), (40, 33, (33, 40))])  # 24.5 up
def test_exact_sizes(tiny: DRCN, width: int, height: int, size: tuple[int, int]) -> None:
    image = _frames(1, 14, 20)
    out, mask = UPSCALE.upscale(image, tiny, 1.75, 0, False, width=width, height=height)
    assert out.shape == (1, *size, 3) and mask.shape == (1, *size)
    want = Upscaler(tiny, device="cpu").upscale(
        (image[0] * 255).round().to(torch.uint8).numpy(), size=size)
    assert np.array_equal((out[0] * 255).round().to(torch.uint8).numpy(), want)


@pytest.mark.parametrize("width, height, words", [
    (10, 0, "target size 10x7 is smaller than the input 20x14"),
    (0, 400, "more than 16x the input"),
])
def test_exact_size_refusals_are_one_line(tiny: DRCN, width: int, height: int, words: str) -> None:
    with pytest.raises(NODES.DRCNNodeError) as info:
        UPSCALE.upscale(_frames(1, 14, 20), tiny, 2.0, 0, False, width=width, height=height)
    assert str(info.value).startswith("DRCN: ") and words in str(info.value)


@pytest.mark.parametrize("per_batch", [1, 2, 0])
def test_per_batch_gives_the_same_frames(tiny: DRCN, per_batch: int) -> None:
    frames = _frames(5, 12, 16)
    mask = torch.rand(5, 12, 16, generator=torch.Generator().manual_seed(4))
    whole, whole_mask = UPSCALE.upscale(frames, tiny, 2.0, 0, False, mask=mask, per_batch=5)
    out, out_mask = UPSCALE.upscale(frames, tiny, 2.0, 0, False, mask=mask, per_batch=per_batch)
    assert out.shape == (5, 24, 32, 3) and torch.equal(out, whole)
    assert torch.equal(out_mask, whole_mask) and out_mask.std() > 0.1


def test_per_batch_progress_and_cancel(tiny: DRCN, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeComfy(interrupt_after=3).install(monkeypatch)
    with pytest.raises(InterruptProcessingException):
        UPSCALE.upscale(_frames(6, 20, 20), tiny, 2.0, 16, False, per_batch=2)
    assert len(fake.updates) == 3 and fake.calls[-1] == ("empty",)


def test_cancel_stops_a_batch_at_scale_1_between_frames(
        tiny: DRCN, monkeypatch: pytest.MonkeyPatch) -> None:
    """At scale 1 there are no tiles to check Cancel between: it is checked before each frame."""
    fake = FakeComfy(interrupt_after=2).install(monkeypatch)
    with pytest.raises(InterruptProcessingException):
        UPSCALE.upscale(_frames(6, 8, 8), tiny, 1.0, 0, False, per_batch=1)
    assert len(fake.updates) == 2 and fake.calls[-1] == ("empty",)


@pytest.mark.parametrize("per_batch", [-1, 1.5, None, True, -2.0, float("inf")])
def test_a_per_batch_that_is_no_count_of_frames_is_refused(tiny: DRCN, per_batch: object) -> None:
    """An API workflow's 1.5, null or True is one line, not a TypeError nor 1 frame a step."""
    with pytest.raises(NODES.DRCNNodeError) as info:
        UPSCALE.upscale(_frames(1, 8, 8), tiny, 2.0, 0, False, per_batch=per_batch)
    assert str(info.value) == (f"DRCN: per_batch {per_batch!r} must be 0 (all frames) or a whole "
                               "number of frames")


@pytest.mark.parametrize("per_batch", [1, 16, 0])
def test_batch_that_cannot_be_held_is_refused_before_any_frame(
        tiny: DRCN, monkeypatch: pytest.MonkeyPatch, per_batch: int) -> None:
    """One frame fits, the whole output batch does not: one line naming the batch, and no frame
    is upscaled."""
    from drcn_plugin import engine, memory

    one = memory.memory_needed(40, 40, 3, 1, size=(80, 80), encoded=False) + 80 * 80 * 3 * 4
    monkeypatch.setattr(memory, "_available_memory", lambda device: one + 80 * 80 * 3 * 4 * 5)
    ran, real = [], engine.Upscaler.upscale
    monkeypatch.setattr(engine.Upscaler, "upscale",
                        lambda self, *a, **k: ran.append(1) or real(self, *a, **k))
    UPSCALE.upscale(_frames(1, 40, 40), tiny, 2.0, 0, False, per_batch=per_batch)  # one fits
    assert ran == [1]
    ran.clear()
    with pytest.raises(NODES.DRCNNodeError) as info:
        UPSCALE.upscale(_frames(30, 40, 40), tiny, 2.0, 0, False, per_batch=per_batch)
    assert "a batch of 30 frames of 80x80 needs about" in str(info.value), str(info.value)
    assert ran == [], "refused before the first frame"


def test_memory_estimate_counts_the_widest_frame(tiny: DRCN,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch is checked at 1 byte a value (8-bit frames, the least) before its first frame, and
    at 4 before the first frame off the 8-bit grid, counting what is still to be allocated."""
    seen: list[tuple] = []
    monkeypatch.setattr(NODES, "check_memory", lambda *a, **k: seen.append((a[3], k["held"])))
    real = Upscaler.upscale
    monkeypatch.setattr(Upscaler, "upscale",
                        lambda self, *a, **k: seen.append(("frame",)) or real(self, *a, **k))
    mixed = _frames(3, 8, 8)
    mixed[1:] += 0.3 / 255  # off the 8-bit grid: the float path
    UPSCALE.upscale(mixed, tiny, 2.0, 0, False, per_batch=3)
    (grid_size, grid_held), frame, (mixed_size, mixed_held), *rest = seen
    assert (grid_size, mixed_size, frame, rest) == (1, 4, ("frame",), [("frame",)] * 2)
    assert mixed_held == 16 * 16 * 3 * 4  # the outputs exist: one 3-plane result still to come
    seen.clear()
    UPSCALE.upscale(_frames(3, 8, 8), tiny, 2.0, 0, False, per_batch=3)
    assert seen == [(1, grid_held)] + [("frame",)] * 3


def test_each_frame_is_converted_once_as_it_is_upscaled(
        tiny: DRCN, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each frame is converted once, as it is upscaled, with no pass over every frame first:
    on 1000 1080p frames such a pass takes 80 s with no progress and Cancel unheard."""
    reads: list[int] = []
    real = FRAMES.to_engine
    monkeypatch.setattr(FRAMES, "to_engine", lambda *a, **k: reads.append(1) or real(*a, **k))
    UPSCALE.upscale(_frames(5, 8, 8), tiny, 2.0, 0, False, per_batch=2)
    assert len(reads) == 5
    reads.clear()
    FakeComfy(interrupt_after=1).install(monkeypatch)  # Cancel pressed during the first frame
    with pytest.raises(InterruptProcessingException):
        UPSCALE.upscale(_frames(5, 8, 8), tiny, 2.0, 0, False, per_batch=2)
    assert len(reads) == 2  # the second frame's first check stops the batch


@pytest.mark.parametrize("scale", [2.0, 1.0])
def test_an_unused_mask_output_is_a_tensor_of_its_own(tiny: DRCN, scale: float) -> None:
    """With no mask to carry, the MASK output is still real zeros, one plane per frame: a node
    downstream writing into one frame in place changes that frame only."""
    side = int(8 * scale)
    for mask in (None, torch.zeros(1, 64, 64)):  # none, and Load Image's "no alpha" mask
        _, out = UPSCALE.upscale(_frames(3, 8, 8), tiny, scale, 0, False, mask=mask)
        assert out.shape == (3, side, side) and out.is_contiguous() and not out.any()
        out[0] += 1.0
        assert out[1:].sum() == 0 and out[0].sum() == side * side


# -- DRCN to Upscale Model ------------------------------------------------------------------------

def test_module_is_the_engine_on_one_tile(tiny: DRCN) -> None:
    """8-bit tiles take the engine's 8-bit path (ILR rounding); float tiles the float path."""
    module = MODELS.DRCNUpscaleModule(tiny, 3)
    grid = _frames(2, 10, 13).permute(0, 3, 1, 2)
    smooth = torch.rand(1, 3, 10, 13, generator=torch.Generator().manual_seed(5))
    engine = Upscaler(tiny, device="cpu")
    for batch in (grid, smooth):
        out = module(batch)
        assert out.shape == (batch.shape[0], 3, 30, 39) and out.dtype == batch.dtype
        for x, y in zip(batch, out, strict=True):
            source = x.permute(1, 2, 0)
            if batch is grid:
                want = engine.upscale((source * 255).round().to(torch.uint8).numpy(), 3.0)
                assert np.array_equal((y.permute(1, 2, 0) * 255).round().byte().numpy(), want)
            else:
                want = engine.upscale(source.numpy(), 3.0)
                assert torch.equal(y.permute(1, 2, 0), torch.from_numpy(want))
    half = module(grid.half())
    assert half.dtype == torch.float16


@pytest.mark.parametrize("scale", [1, 3])
def test_module_takes_tiles_as_image_upscale_with_model_cuts_them(tiny: DRCN, scale: int) -> None:
    """ComfyUI's node moves the channels first (a view) and narrows it to tiles down to 1 px; each
    result must be exactly ``scale`` times its tile, and the image stays as it was."""
    image = _frames(2, 20, 17)
    kept = image.clone()
    channels_first = image.movedim(-1, -3)
    module = MODELS.DRCNUpscaleModule(tiny, scale)
    for y, h, x, w in [(0, 20, 0, 17), (4, 16, 3, 14), (19, 1, 16, 1)]:
        tile = channels_first[1:2].narrow(2, y, h).narrow(3, x, w)
        assert module(tile).shape == (1, 3, h * scale, w * scale)
    assert torch.equal(image, kept)


def test_module_rebuilds_its_engine_after_a_move(tiny: DRCN) -> None:
    module = MODELS.DRCNUpscaleModule(DRCN(features=8, recursions=3), 2)
    module(torch.rand(1, 3, 6, 6))
    assert module._engine is not None
    module.to("cpu")
    assert module._engine is None


def test_module_refuses_other_layouts(tiny: DRCN) -> None:
    with pytest.raises(NODES.DRCNNodeError, match=r"expected an RGB batch \[N, 3, H, W\]"):
        MODELS.DRCNUpscaleModule(tiny, 2)(torch.rand(6, 6, 3))
    with pytest.raises(NODES.DRCNNodeError, match=r"takes RGB batches \[N, 3, H, W\], not 6 "):
        MODELS.DRCNUpscaleModule(tiny, 2)(torch.rand(1, 6, 6, 3))
    with pytest.raises(NODES.DRCNNodeError, match="the batch is empty"):
        MODELS.DRCNUpscaleModule(tiny, 2)(torch.zeros(0, 3, 6, 6))
    with pytest.raises(NODES.DRCNNodeError, match="the image is a 'meta' tensor"):
        MODELS.DRCNUpscaleModule(tiny, 2)(torch.empty(1, 3, 6, 6, device="meta"))


def test_without_spandrel_one_clear_line(tiny: DRCN, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "spandrel", None)  # import spandrel raises ImportError
    MODELS.architecture.cache_clear()
    with pytest.raises(NODES.DRCNNodeError) as info:
        TO_MODEL.convert(tiny, 2)
    text = str(info.value)
    assert "needs the spandrel package" in text and "\n" not in text
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_scale_out_of_range(tiny: DRCN) -> None:
    with pytest.raises(NODES.DRCNNodeError, match="scale 17 is out of range: use 2 to 16"):
        TO_MODEL.convert(tiny, 17)


def test_spandrel_descriptor(tiny: DRCN) -> None:
    spandrel = pytest.importorskip("spandrel")
    MODELS.architecture.cache_clear()
    (descriptor,) = TO_MODEL.convert(tiny, 2)
    assert isinstance(descriptor, spandrel.ImageModelDescriptor)
    assert (descriptor.scale, descriptor.input_channels, descriptor.output_channels) == (2, 3, 3)
    assert descriptor.purpose == "SR" and descriptor.architecture.id == "DRCN"
    assert descriptor.model.drcn is not tiny  # its own copy: ComfyUI may move it freely
    x = _frames(1, 9, 11).permute(0, 3, 1, 2)
    assert torch.equal(descriptor(x), MODELS.DRCNUpscaleModule(tiny, 2)(x))
    assert descriptor.architecture.detect(tiny.state_dict())
    assert not descriptor.architecture.detect({"conv.weight": torch.zeros(1)})
    with pytest.raises(spandrel.UnsupportedDtypeError):
        descriptor.to(torch.float16)


def _fake_spandrel() -> types.ModuleType:
    """spandrel 0.4.2's descriptor interface (libs/spandrel/spandrel/__helpers/model_descriptor.py:
    Architecture.__init__ keyword-only id/detect/name, 44-53; ModelBase loads the state dict, 217,
    ``to`` moves it, 331; ImageModelDescriptor.__call__: inference mode, eval, clamp_, 446-478)."""
    spandrel = types.ModuleType("spandrel")

    class Architecture:
        def __init__(self, *, id: str, detect: object, name: str | None = None) -> None:  # noqa: A002
            self.id, self.name, self.detect = id, name or id, detect

    class ImageModelDescriptor:
        def __init__(self, model: torch.nn.Module, state_dict: dict, architecture: object,
                     purpose: str, tags: list[str], supports_half: bool,
                     supports_bfloat16: bool, scale: int, input_channels: int,
                     output_channels: int, **_: object) -> None:
            self.model, self.architecture, self.purpose, self.scale, self.tags = (
                model, architecture, purpose, scale, tags)
            self.input_channels, self.output_channels = input_channels, output_channels
            model.load_state_dict(state_dict)

        def to(self, device: torch.device) -> ImageModelDescriptor:
            self.model.to(device=device)
            return self

        @torch.inference_mode()
        def __call__(self, image: torch.Tensor) -> torch.Tensor:
            return self.model.eval()(image).clamp_(0, 1)

    spandrel.Architecture, spandrel.ImageModelDescriptor = Architecture, ImageModelDescriptor
    return spandrel


@pytest.mark.parametrize("core", [False, True])
def test_upscale_model_runs_in_comfyuis_own_upscale_node(
        tiny: DRCN, monkeypatch: pytest.MonkeyPatch, core: bool) -> None:
    """ComfyUI's Upscale Image (using Model) (Comfy-Org/ComfyUI comfy_extras/
    nodes_upscale_model.py at 30a7443, ImageUpscaleWithModel.execute) takes its device from
    ``upscale_model.patcher.load_device`` and loads ``[upscale_model.patcher]`` with
    ``load_models_gpu``; its Load Upscale Model builds that patcher as
    ``comfy.model_patcher.CoreModelPatcher(out.model, load_device=get_torch_device(),
    offload_device=unet_offload_device())`` (ModelPatcher before CoreModelPatcher existed)."""
    monkeypatch.setitem(sys.modules, "spandrel", _fake_spandrel())
    MODELS.architecture.cache_clear()
    fake = FakeComfy().install(monkeypatch)
    if core:
        fake.patcher.CoreModelPatcher = type("CoreModelPatcher", (FakeModelPatcher,), {})
    (descriptor,) = TO_MODEL.convert(tiny, 2)
    patcher = descriptor.patcher
    assert type(patcher).__name__ == ("CoreModelPatcher" if core else "FakeModelPatcher")
    assert patcher.model is descriptor.model
    assert (patcher.load_device, patcher.offload_device) == (torch.device("cpu"),) * 2
    # the host node's steps, tiling aside (one tile: the image is smaller than 512)
    image = _frames(1, 9, 11)
    device = descriptor.patcher.load_device
    fake.mm.load_models_gpu([descriptor.patcher], memory_required=1, force_full_load=True)
    descriptor.to(device)
    out = descriptor(image.movedim(-1, -3).to(device).float()).movedim(-3, -1)
    assert ("load", [patcher], True) in fake.calls
    want = Upscaler(tiny, device="cpu").upscale(
        (image[0] * 255).round().to(torch.uint8).numpy(), 2.0)
    assert np.array_equal((out[0] * 255).round().to(torch.uint8).numpy(), want)
    MODELS.architecture.cache_clear()


@pytest.fixture
def fake_spandrel(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """spandrel's interface in place of the package, with no architecture cached either side."""
    monkeypatch.setitem(sys.modules, "spandrel", _fake_spandrel())
    MODELS.architecture.cache_clear()
    yield
    MODELS.architecture.cache_clear()


def test_scale_1_is_refused_as_it_leaves_the_image_as_it_is(tiny: DRCN, fake_spandrel: None) -> None:
    """At x1 the engine gives the input back: a model labelled 'Restoration' that restores nothing
    would hand a user cleaning a JPEG with drcn-lite-photo the image untouched, silently."""
    with pytest.raises(NODES.DRCNNodeError) as info:
        TO_MODEL.convert(tiny, 1)
    assert str(info.value) == "DRCN: scale 1 is out of range: use 2 to 16"
    assert TO_MODEL.INPUT_TYPES()["required"]["scale"][1]["min"] == 2


def test_a_whole_number_float_scale_is_the_whole_number(tiny: DRCN, fake_spandrel: None) -> None:
    """An API workflow's 2.0 is the upscale model's whole scale 2, so each tile's target is in
    whole pixels (a float scale gives (16.0, 16.0), on which every tile fails)."""
    (descriptor,) = TO_MODEL.convert(tiny, 2.0)
    assert type(descriptor.scale) is int and descriptor.scale == 2 and "x2" in descriptor.tags
    x = _frames(1, 8, 8).permute(0, 3, 1, 2)
    assert torch.equal(descriptor(x), MODELS.DRCNUpscaleModule(tiny, 2)(x).clamp(0, 1))
    with pytest.raises(NODES.DRCNNodeError, match="^DRCN: an upscale model's scale is a whole "
                                                  "number, not 2.5$"):
        TO_MODEL.convert(tiny, 2.5)


class _Built(Exception):  # noqa: N818 (a signal, not an error)
    """Raised by a stand-in Upscaler once it has recorded how the node built it."""


@pytest.mark.parametrize(("fp16", "bf16", "want"), [
    (False, False, "fp32"), (True, False, "auto"), (False, True, "auto"), (True, True, "auto")])
def test_half_precision_follows_comfyuis_choice_on_the_gpu(
        tiny: DRCN, monkeypatch: pytest.MonkeyPatch, fp16: bool, bf16: bool, want: str) -> None:
    """ComfyUI's should_use_fp16 / should_use_bf16 (comfy/model_management.py 1227, 1297) say no
    to both under --force-fp32 and on GTX 16xx cards, whose fp16 is broken: both nodes then run
    the engine in fp32 instead of the half precision it would pick on a GPU."""
    fake = FakeComfy().install(monkeypatch)
    fake.half.update(fp16=fp16, bf16=bf16)
    fake.mm.get_torch_device = lambda: torch.device("cuda", 0)
    seen = []

    def built(model: DRCN, **options: object) -> None:
        seen.append((options["device"], options["precision"]))
        raise _Built

    for module in (NODES, MODELS):
        monkeypatch.setattr(module, "Upscaler", built)
    with pytest.raises(_Built):
        UPSCALE.upscale(_frames(1, 8, 8), tiny, 2.0, 0, False)
    monkeypatch.setattr(MODELS, "engine_device", lambda device: "cuda:0")
    with pytest.raises(_Built):
        MODELS.DRCNUpscaleModule(tiny, 2)(_frames(1, 8, 8).movedim(-1, -3))
    assert seen == [("cuda:0", want)] * 2
    assert NODES.engine_precision(fake.mm, "cpu") == "auto"  # the engine measures bf16 there
    assert NODES.engine_precision(None, "auto") == "auto"  # outside ComfyUI


# -- the node pack's registry files ---------------------------------------------------------------

def test_registry_metadata_has_no_placeholders() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    meta = tomllib.loads((NODES_DIR / "pyproject.toml").read_text())
    comfy, project = meta["tool"]["comfy"], meta["project"]
    assert comfy["DisplayName"] == "DRCN Super-Resolution"
    assert comfy["PublisherId"] and comfy["Icon"].startswith("https://")
    assert project["urls"]["Repository"].startswith("https://github.com/")
    assert comfy["includes"] == [] and comfy["requires-comfyui"].startswith(">=")
    assert project["version"] == drcn_plugin.__version__
    classifiers = project["classifiers"]
    assert any(c.startswith("Operating System") for c in classifiers)
    assert any(c.startswith("Environment :: GPU") for c in classifiers)
    ignored = (NODES_DIR / ".comfyignore").read_text().split()
    assert "tests/" in ignored


def test_every_node_has_a_doc_page() -> None:
    for name in PKG.NODE_CLASS_MAPPINGS:
        page = NODES_DIR / PKG.WEB_DIRECTORY / "docs" / f"{name}.md"
        assert page.is_file(), page
        assert PKG.NODE_DISPLAY_NAME_MAPPINGS[name] in page.read_text()


def test_a_device_the_engine_does_not_run_on_falls_back_to_the_cpu(
        tiny: DRCN, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    frames = _frames(2, 9, 11)
    reference, _ = PKG.NODE_CLASS_MAPPINGS["DRCNUpscale"]().upscale(frames, tiny, 2.0, 0, False)
    fake = FakeComfy().install(monkeypatch)
    fake.mm.get_torch_device = lambda: torch.device("xpu")  # Intel Arc; DirectML, NPU alike
    monkeypatch.setattr(NODES, "_FALLBACKS_SAID", set())
    for _ in range(2):
        out, _ = PKG.NODE_CLASS_MAPPINGS["DRCNUpscale"]().upscale(frames, tiny, 2.0, 0, False)
        assert torch.equal(out, reference)
    assert not [c for c in fake.calls if c[0] == "free"]  # ComfyUI's device is not used
    assert capsys.readouterr().err.count("ComfyUI runs on xpu") == 1
    assert [NODES.engine_device(d) for d in ("privateuseone:0", "hpu", "cuda:1", "cpu")] == \
        ["cpu", "cpu", "cuda:1", "cpu"]


def test_module_moved_by_another_thread_mid_batch_finishes_the_batch(
        tiny: DRCN, monkeypatch: pytest.MonkeyPatch) -> None:
    """ComfyUI's model management moves (``.to``) a model from its own thread while a batch of
    tiles runs: the batch finishes on the engine it started with, as a batch run alone would."""
    module = MODELS.DRCNUpscaleModule(tiny, 2)
    tiles = torch.rand(2, 3, 8, 9, generator=torch.Generator().manual_seed(4))
    alone = MODELS.DRCNUpscaleModule(tiny, 2)(tiles)
    first_tile, moved = threading.Event(), threading.Event()
    real = Upscaler.upscale

    def upscale(self: Upscaler, *args: object, **kwargs: object) -> np.ndarray:
        if not first_tile.is_set():
            first_tile.set()
            assert moved.wait(10)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Upscaler, "upscale", upscale)
    out: list[torch.Tensor] = []
    worker = threading.Thread(target=lambda: out.append(module(tiles)))
    worker.start()
    assert first_tile.wait(10)
    module.to("cpu")  # drops the engine while the first tile is in it
    moved.set()
    worker.join(10)
    assert len(out) == 1 and torch.equal(out[0], alone)
