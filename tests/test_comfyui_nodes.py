"""ComfyUI nodes, called directly: shapes, values, batch, alpha/mask, ComfyUI's progress, memory and
interrupt hooks (through fake ``comfy`` and ``folder_paths`` modules with ComfyUI's interface),
errors and the example workflows."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import seeded_drcn
from safetensors.torch import save_file

from drcn_plugin.engine import Upscaler
from drcn_plugin.hub import SHIPPED
from drcn_plugin.model import DRCN
from drcn_plugin.scales import MAX_SCALE, MIN_SCALE

ROOT = Path(__file__).resolve().parent.parent
NODES_DIR = ROOT / "comfyui_nodes"


def _load_package(name: str = "comfyui_drcn_under_test") -> types.ModuleType:
    """Import the node folder the way ComfyUI does: its __init__.py under an arbitrary name."""
    spec = importlib.util.spec_from_file_location(name, NODES_DIR / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


PKG = _load_package()
NODES = sys.modules[f"{PKG.__name__}.drcn_nodes"]
FRAMES = sys.modules[f"{PKG.__name__}.frames"]  # ComfyUI's frames to the engine and back
LOADER = PKG.NODE_CLASS_MAPPINGS["DRCNModelLoader"]()
UPSCALE = PKG.NODE_CLASS_MAPPINGS["DRCNUpscale"]()


@pytest.fixture(scope="module")
def tiny() -> DRCN:
    return seeded_drcn()


class InterruptProcessingException(Exception):  # noqa: N818 (ComfyUI's name)
    """Stands in for comfy.model_management.InterruptProcessingException."""


class FakeModelPatcher:
    """comfy.model_patcher.ModelPatcher's constructor (ComfyUI 0.3.64 comfy/model_patcher.py
    218-229: a model without a ``device`` gets the offload device as one) and what
    ``load_models_gpu`` does with it on a full load (``load``: ``self.model.to(device_to)``)."""

    def __init__(self, model: torch.nn.Module, load_device: torch.device,
                 offload_device: torch.device, size: int = 0,
                 weight_inplace_update: bool = False) -> None:
        self.model, self.load_device, self.offload_device = model, load_device, offload_device
        if getattr(model, "device", None) is None:
            model.device = offload_device


class FakeComfy:
    """The parts of comfy.model_management, comfy.utils and comfy.model_patcher that the nodes
    use; records calls."""

    def __init__(self, interrupt_after: int | None = None) -> None:
        self.calls: list[tuple] = []
        self.updates: list[tuple[int, int]] = []
        self.interrupt_after = interrupt_after
        self.flag = False
        mm = types.ModuleType("comfy.model_management")
        mm.InterruptProcessingException = InterruptProcessingException
        mm.get_torch_device = lambda: torch.device("cpu")
        mm.module_size = lambda m: sum(p.numel() * p.element_size() for p in m.parameters())
        mm.free_memory = lambda required, device: self.calls.append(("free", required, device))
        mm.soft_empty_cache = lambda force=False: self.calls.append(("empty",))
        mm.unload_all_models = lambda: self.calls.append(("unload",))
        mm.throw_exception_if_processing_interrupted = self._throw
        mm.unet_offload_device = lambda: torch.device("cpu")
        # model_management.py 1227/1297: False on the CPU and under --force-fp32
        self.half = {"fp16": False, "bf16": False}
        mm.should_use_fp16 = lambda device=None, *_, **__: self.half["fp16"]
        mm.should_use_bf16 = lambda device=None, *_, **__: self.half["bf16"]
        mm.load_models_gpu = self._load_models_gpu
        patcher = types.ModuleType("comfy.model_patcher")
        patcher.ModelPatcher = FakeModelPatcher
        utils = types.ModuleType("comfy.utils")
        fake = self

        class ProgressBar:
            def __init__(self, total: int) -> None:
                fake.calls.append(("bar", total))

            def update_absolute(self, value: int, total: int | None = None) -> None:
                fake.updates.append((value, total))
                if fake.interrupt_after is not None and len(fake.updates) == fake.interrupt_after:
                    fake.flag = True  # the user presses Cancel while this tile group ran

        utils.ProgressBar = ProgressBar
        self.comfy = types.ModuleType("comfy")
        self.comfy.model_management, self.comfy.utils = mm, utils
        self.comfy.model_patcher = patcher
        self.mm, self.utils, self.patcher = mm, utils, patcher

    def _load_models_gpu(self, models: list, memory_required: int = 0,
                         force_patch_weights: bool = False,
                         minimum_memory_required: int | None = None,
                         force_full_load: bool = False) -> None:
        self.calls.append(("load", models, force_full_load))
        for patcher in models:
            patcher.model.to(patcher.load_device)

    def _throw(self) -> None:
        self.calls.append(("check",))
        if self.flag:
            self.flag = False
            raise InterruptProcessingException()

    def install(self, monkeypatch: pytest.MonkeyPatch) -> FakeComfy:
        monkeypatch.setitem(sys.modules, "comfy", self.comfy)
        monkeypatch.setitem(sys.modules, "comfy.model_management", self.mm)
        monkeypatch.setitem(sys.modules, "comfy.utils", self.utils)
        monkeypatch.setitem(sys.modules, "comfy.model_patcher", self.patcher)
        return self


@pytest.fixture
def fake_folder_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """ComfyUI's folder_paths interface over tmp_path/models (ComfyUI 0.3.64 folder_paths.py:
    add_model_folder_path 214-230, filter_files_extensions 277-278: an empty set lists every
    file)."""
    fp = types.ModuleType("folder_paths")
    fp.models_dir = str(tmp_path / "models")
    fp.folder_names_and_paths = {}

    def add_model_folder_path(name: str, path: str, is_default: bool = False) -> None:
        if name not in fp.folder_names_and_paths:
            fp.folder_names_and_paths[name] = ([path], set())
        elif path not in (paths := fp.folder_names_and_paths[name][0]):
            paths.insert(0, path) if is_default else paths.append(path)

    def get_filename_list(name: str) -> list[str]:
        dirs, exts = fp.folder_names_and_paths[name]
        return sorted(f for d in dirs if os.path.isdir(d) for f in os.listdir(d)
                      if not exts or os.path.splitext(f)[1].lower() in exts)

    def get_full_path(name: str, filename: str) -> str | None:
        for d in fp.folder_names_and_paths[name][0]:
            if os.path.isfile(os.path.join(d, filename)):
                return os.path.join(d, filename)
        return None

    fp.get_filename_list, fp.get_full_path = get_filename_list, get_full_path
    fp.add_model_folder_path = add_model_folder_path
    monkeypatch.setitem(sys.modules, "folder_paths", fp)
    return fp


def _image(b: int, h: int, w: int, c: int = 3, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, h, w, c, generator=g)


def test_batch_non_integer_scale_matches_the_engine(tiny: DRCN) -> None:
    image = _image(2, 13, 17)
    out, mask = UPSCALE.upscale(image, tiny, 1.7, 0, False)
    assert out.shape == (2, 22, 29, 3) and out.dtype == torch.float32
    assert mask.shape == (2, 22, 29) and not mask.any()
    assert out.min() >= 0.0 and out.max() <= 1.0
    engine = Upscaler(tiny, device="cpu")
    for i in range(2):
        want = np.clip(engine.upscale(image[i].numpy(), 1.7), 0, 1)
        assert np.array_equal(out[i].numpy(), want)
    assert not torch.equal(out[0], out[1])


def test_8_bit_images_take_the_engines_8_bit_path(tiny: DRCN) -> None:
    """Load Image gives u8 / 255: the node must match the engine (and drcn upscale) on the u8."""
    pixels = (_image(2, 11, 14, 4) * 255).round().to(torch.uint8)
    image = pixels.float() / 255.0  # exactly what ComfyUI's Load Image computes
    mask = 1.0 - image[..., 3]  # and its mask, from the alpha
    out, out_mask = UPSCALE.upscale(image[..., :3], tiny, 2.3, 0, False, mask=mask)
    engine = Upscaler(tiny, device="cpu")
    for i in range(2):
        want = engine.upscale(pixels[i].numpy(), 2.3)
        assert np.array_equal(np.clip(255.0 * out[i].numpy(), 0, 255).astype(np.uint8),
                              want[..., :3])  # Save Image's conversion gives the same bytes
        assert torch.equal(out_mask[i], 1.0 - torch.from_numpy(want[..., 3]).float() / 255.0)


def test_shipped_model_through_the_loader() -> None:
    (model,) = LOADER.load("drcn-lite")
    assert isinstance(model, DRCN) and model.features == 64
    image = torch.full((1, 12, 10, 3), 0.5)
    out, _ = UPSCALE.upscale(image, model, 2.0, 0, False)
    assert out.shape == (1, 24, 20, 3)
    assert torch.allclose(out, torch.full_like(out, 0.5), atol=0.02)  # flat stays flat


def test_self_ensemble_toggle_reaches_the_engine(tiny: DRCN) -> None:
    image = _image(1, 9, 11)
    out, _ = UPSCALE.upscale(image, tiny, 2.0, 0, True)
    want = np.clip(Upscaler(tiny, device="cpu", tta=True).upscale(image[0].numpy(), 2.0), 0, 1)
    assert np.array_equal(out[0].numpy(), want)
    plain, _ = UPSCALE.upscale(image, tiny, 2.0, 0, False)
    assert not torch.equal(out, plain)


def test_alpha_channel_is_kept(tiny: DRCN) -> None:
    image = _image(1, 10, 12, 4)
    image[..., 3] = 0.25
    out, mask = UPSCALE.upscale(image, tiny, 3.0, 0, False)
    assert out.shape == (1, 30, 36, 4)
    assert torch.allclose(out[..., 3], torch.tensor(0.25), atol=1e-5)
    assert torch.allclose(mask, torch.tensor(0.75), atol=1e-5)


def test_mask_rides_along_with_an_rgb_image(tiny: DRCN) -> None:
    image = _image(2, 16, 16)
    mask = torch.zeros(1, 16, 16)
    mask[:, :, 8:] = 1.0
    out, out_mask = UPSCALE.upscale(image, tiny, 2.0, 0, False, mask=mask)
    assert out.shape == (2, 32, 32, 3) and out_mask.shape == (2, 32, 32)
    assert out_mask[:, :, :12].max() < 0.01 and out_mask[:, :, 20:].min() > 0.99
    plain, _ = UPSCALE.upscale(image, tiny, 2.0, 0, False)
    assert torch.allclose(out, plain, atol=1e-6)  # the mask does not change the colours
    empty, zeros = UPSCALE.upscale(image, tiny, 2.0, 0, False, mask=torch.zeros(1, 64, 64))
    assert torch.equal(empty, plain) and zeros.shape == (2, 32, 32) and not zeros.any()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_half_precision_image_keeps_its_masks_precision(tiny: DRCN, dtype: torch.dtype) -> None:
    """The mask is read in float32 whatever the image's dtype: cast to bfloat16 with the image, a
    mask would come back up to 0.003 off at scale 1."""
    mask = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(2))
    _, out = UPSCALE.upscale(_image(2, 8, 8).to(dtype), tiny, 1.0, 0, False, mask=mask)
    assert (out - mask).abs().max() < 1e-6


def test_progress_and_memory_hooks_through_comfy(tiny: DRCN,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeComfy().install(monkeypatch)
    out, _ = UPSCALE.upscale(_image(2, 40, 40), tiny, 2.0, 16, False)
    assert out.shape == (2, 80, 80, 3)
    assert fake.calls[0][0] == "free" and fake.calls[0][1] > 0
    assert ("bar", 2) in fake.calls and fake.calls[-1] == ("empty",)
    values = [v for v, _ in fake.updates]
    totals = {t for _, t in fake.updates}
    assert len(totals) == 1 and values == sorted(values) and values[-1] == totals.pop()
    assert len(values) >= 4  # several tile groups per image, two images
    assert fake.calls.count(("check",)) >= len(values)  # cancel checked between tile groups


def test_interrupt_stops_between_tiles_and_the_next_job_runs(
        tiny: DRCN, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeComfy(interrupt_after=2).install(monkeypatch)
    with pytest.raises(InterruptProcessingException):
        UPSCALE.upscale(_image(1, 64, 64), tiny, 2.0, 16, False)
    assert len(fake.updates) == 2 and fake.updates[-1][0] < fake.updates[-1][1]
    assert fake.calls[-1] == ("empty",)  # cleaned up after the interrupt
    again = FakeComfy().install(monkeypatch)
    out, _ = UPSCALE.upscale(_image(1, 64, 64), tiny, 2.0, 16, False)
    assert out.shape == (1, 128, 128, 3) and again.updates[-1][0] == again.updates[-1][1]


@pytest.mark.parametrize(("image", "scale", "tile", "message"), [
    (torch.rand(1, 8, 8, 3), 17.0, 0, "DRCN: scale 17 is out of range: use 1 to 16"),
    (torch.rand(1, 8, 8, 3), 0.5, 0, "DRCN: scale 0.5 is out of range: use 1 to 16"),
    (torch.rand(1, 0, 8, 3), 2.0, 0, "DRCN: the image is empty (8x0 pixels, batch of 1)"),
    (torch.rand(0, 8, 8, 3), 2.0, 0, "DRCN: the image is empty (8x8 pixels, batch of 0)"),
    (torch.rand(8, 8, 3), 2.0, 0, "DRCN: expected an IMAGE batch"),
    (torch.rand(1, 8, 8, 3), 2.0, 8, "DRCN: tile size 8 is too small"),
    (torch.empty(1, 8, 8, 3, device="meta"), 2.0, 0, "DRCN: the image is a 'meta' tensor"),
    (torch.full((1, 8, 8, 3), 200, dtype=torch.uint8), 2.0, 0,
     "DRCN: the image holds uint8 values: an IMAGE holds floats in 0..1"),
])
def test_bad_input_is_one_clear_line(tiny: DRCN, image: torch.Tensor, scale: float, tile: int,
                                     message: str) -> None:
    with pytest.raises(NODES.DRCNNodeError) as info:
        UPSCALE.upscale(image, tiny, scale, tile, False)
    text = str(info.value)
    assert text.startswith(message) and "\n" not in text
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_mask_mismatch_is_reported(tiny: DRCN) -> None:
    with pytest.raises(NODES.DRCNNodeError, match="the mask is 5x5 but the image is 8x8"):
        UPSCALE.upscale(torch.rand(1, 8, 8, 3), tiny, 2.0, 0, False, mask=torch.ones(1, 5, 5))
    for channels in (2, 4):  # grey + alpha too
        with pytest.raises(NODES.DRCNNodeError, match="not both"):
            UPSCALE.upscale(torch.rand(1, 8, 8, channels), tiny, 2.0, 0, False,
                            mask=torch.ones(1, 8, 8))
    with pytest.raises(NODES.DRCNNodeError, match=r"the mask has shape \(8,\)"):
        UPSCALE.upscale(torch.rand(1, 8, 8, 3), tiny, 2.0, 0, False, mask=torch.ones(8))
    with pytest.raises(NODES.DRCNNodeError, match="the mask has NaN"):
        UPSCALE.upscale(torch.rand(1, 8, 8, 3), tiny, 2.0, 0, False,
                        mask=torch.full((1, 8, 8), float("nan")))
    with pytest.raises(NODES.DRCNNodeError, match="the mask is a 'meta' tensor"):
        UPSCALE.upscale(torch.rand(1, 8, 8, 3), tiny, 2.0, 0, False,
                        mask=torch.empty(1, 8, 8, device="meta"))


@pytest.mark.parametrize("value", [2 * 200 / 255, 256 / 255, -1 / 255])
def test_values_off_0_1_on_the_8_bit_grid_never_wrap_around(tiny: DRCN, value: float) -> None:
    flat = torch.full((1, 16, 16, 3), value)
    out, _ = UPSCALE.upscale(flat, tiny, 2.0, 0, False)
    off_grid, _ = UPSCALE.upscale(flat + 1e-3, tiny, 2.0, 0, False)  # takes the float path
    assert (out - off_grid).abs().max() < 0.01  # 400/255 came back as 144/255 before


def test_grey_alpha_image_gives_its_alpha_as_the_mask(tiny: DRCN) -> None:
    image = torch.rand(1, 8, 8, 2)
    image[..., 1] = 0.25
    _, mask = UPSCALE.upscale(image, tiny, 2.0, 0, False)
    assert torch.allclose(mask, torch.full((1, 16, 16), 0.75), atol=1e-3)  # MASK = 1 - alpha


def test_loader_lists_and_loads_models_drcn(tiny: DRCN, tmp_path: Path,
                                            fake_folder_paths: types.ModuleType) -> None:
    folder = tmp_path / "models" / "drcn"
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in tiny.state_dict().items()},
              str(folder / "mine.safetensors"))
    (folder / "notes.txt").write_text("not a model")
    choices = LOADER.INPUT_TYPES()["required"]["model_name"][0]
    assert choices == [*SHIPPED, "mine.safetensors"]
    (model,) = LOADER.load("mine.safetensors")
    assert (model.features, model.recursions) == (8, 3)
    (by_path,) = LOADER.load("drcn-lite", str(folder / "mine.safetensors"))
    assert by_path.features == 8  # hub_or_path overrides model_name
    (folder / "mine.safetensors").unlink()
    with pytest.raises(NODES.DRCNNodeError, match="'mine.safetensors' not found in models/drcn"):
        LOADER.load("mine.safetensors")


@pytest.mark.parametrize("dedups", [True, False])
def test_loader_keeps_models_drcn_beside_extra_model_paths(
        tiny: DRCN, tmp_path: Path, fake_folder_paths: types.ModuleType, dedups: bool) -> None:
    """ComfyUI registers extra_model_paths.yaml's folders before it loads custom nodes
    (utils/extra_config.py:34 calls add_model_folder_path(name, path, is_default)): a ``drcn:``
    entry there must not hide models/drcn, nor list files that are not weights. Older ComfyUI's
    add_model_folder_path appends a folder it holds again: every model list would add one."""
    if not dedups:
        fake_folder_paths.add_model_folder_path = lambda name, path, is_default=False: \
            fake_folder_paths.folder_names_and_paths.setdefault(name, ([], set()))[0].append(path)
    weights = {k: v.contiguous() for k, v in tiny.state_dict().items()}
    extra, own = tmp_path / "shared_models", tmp_path / "models" / "drcn"
    for folder, name in ((extra, "shared.safetensors"), (own, "mine.safetensors")):
        folder.mkdir(parents=True)
        save_file(weights, str(folder / name))
        (folder / "notes.txt").write_text("not a model")
    fake_folder_paths.add_model_folder_path("drcn", str(extra))
    choices = LOADER.INPUT_TYPES()["required"]["model_name"][0]
    assert choices == [*SHIPPED, "mine.safetensors", "shared.safetensors"]
    for name in ("mine.safetensors", "shared.safetensors"):
        assert LOADER.load(name)[0].features == 8
    LOADER.INPUT_TYPES()  # registering again adds nothing
    assert fake_folder_paths.folder_names_and_paths["drcn"] == ([str(extra), str(own)],
                                                                {".safetensors"})


@pytest.mark.parametrize(("spec", "message"), [
    ("/no/such/weights.safetensors", "DRCN: not found: /no/such/weights.safetensors"),
    ("hf:not-a-spec", "DRCN: bad Hub spec 'hf:not-a-spec'"),
    ("whatever", "DRCN: unknown model 'whatever'"),
    (" ", "DRCN: no model named"),
])
def test_loader_errors_are_one_line(spec: str, message: str) -> None:
    with pytest.raises(NODES.DRCNNodeError) as info:
        LOADER.load("drcn-lite", spec) if spec.strip() else LOADER.load(spec)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


@pytest.mark.parametrize("denoise", [-0.5, float("nan"), 1.5])
def test_loader_refuses_a_denoise_outside_0_1(denoise: float) -> None:
    with pytest.raises(NODES.DRCNNodeError, match="outside 0..1"):
        LOADER.load("drcn-lite", "", denoise)


def test_node_metadata() -> None:
    assert PKG.NODE_DISPLAY_NAME_MAPPINGS == {"DRCNModelLoader": "DRCN Model Loader",
                                              "DRCNUpscale": "DRCN Upscale",
                                              "DRCNToUpscaleModel": "DRCN to Upscale Model"}
    for cls in PKG.NODE_CLASS_MAPPINGS.values():
        assert cls.CATEGORY == "image/upscaling/DRCN" and callable(getattr(cls, cls.FUNCTION))
    scale = UPSCALE.INPUT_TYPES()["required"]["scale"][1]
    assert (scale["min"], scale["max"]) == (MIN_SCALE, MAX_SCALE)
    assert scale["round"] is False  # else the frontend rounds a typed 3.3333 to the 0.05 step
    assert LOADER.RETURN_TYPES == ("DRCN_MODEL",)
    assert UPSCALE.INPUT_TYPES()["required"]["drcn_model"] == ("DRCN_MODEL",)


_CORE_WIDGETS = {"LoadImage": ["image", "upload"], "SaveImage": ["filename_prefix"],
                 "ImageUpscaleWithModel": []}
WORKFLOWS = sorted(p.name for p in (NODES_DIR / "example_workflows").glob("*.json"))


def _widget_names(node_type: str) -> list[str]:
    if node_type in _CORE_WIDGETS:
        return _CORE_WIDGETS[node_type]
    spec = PKG.NODE_CLASS_MAPPINGS[node_type].INPUT_TYPES()
    inputs = {**spec["required"], **spec.get("optional", {})}
    return [n for n, s in inputs.items() if isinstance(s[0], list)
            or s[0] in ("INT", "FLOAT", "STRING", "BOOLEAN")]


def test_every_example_workflow_has_its_api_twin() -> None:
    assert WORKFLOWS == ["drcn_upscale.json", "drcn_upscale_model.json"]
    assert sorted(p.name for p in (NODES_DIR / "api_workflows").glob("*.json")) == WORKFLOWS


@pytest.mark.parametrize("name", WORKFLOWS)
def test_example_workflows_agree_and_use_only_core_nodes_and_ours(name: str) -> None:
    ui = json.loads((NODES_DIR / "example_workflows" / name).read_text())
    api = json.loads((NODES_DIR / "api_workflows" / name).read_text())
    allowed = set(_CORE_WIDGETS) | set(PKG.NODE_CLASS_MAPPINGS)
    assert {n["class_type"] for n in api.values()} <= allowed
    links = {link[0]: link for link in ui["links"]}
    assert len(ui["nodes"]) == len(api)
    for node in ui["nodes"]:
        want = api[str(node["id"])]
        assert node["type"] == want["class_type"]
        got = {n: v for n, v in zip(_widget_names(node["type"]), node["widgets_values"],
                                    strict=True)
               if n != "upload"}
        for inp in node["inputs"]:
            if inp["link"] is not None:
                _, src, slot, dst, _, kind = links[inp["link"]]
                assert dst == node["id"] and kind == inp["type"]
                got[inp["name"]] = [str(src), slot]
        assert got == want["inputs"]
        if node["type"] in PKG.NODE_CLASS_MAPPINGS:
            spec = PKG.NODE_CLASS_MAPPINGS[node["type"]].INPUT_TYPES()
            assert set(got) >= set(spec["required"])
