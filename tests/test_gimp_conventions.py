"""The GIMP plug-in against GIMP 3's own rules, with fakes that mirror its API: run modes,
menu sensitivity, indexed images, resolution and locked layers (no GIMP needed)."""

from __future__ import annotations

import enum
import sys
from unittest import mock

import pytest
from test_gimp_worker import PLUGIN, PLUGIN_DIR, _load


class RunMode(enum.IntEnum):
    """libgimpbase/gimpbaseenums.h: GimpRunMode."""

    INTERACTIVE = 0
    NONINTERACTIVE = 1
    WITH_LAST_VALS = 2


class ImageBaseType(enum.IntEnum):
    """libgimpbase/gimpbaseenums.h: GimpImageBaseType."""

    RGB = 0
    GRAY = 1
    INDEXED = 2


class SensitivityMask(enum.IntFlag):
    """libgimpbase/gimpbaseenums.h: GimpProcedureSensitivityMask."""

    DRAWABLE = 1 << 0
    DRAWABLES = 1 << 2
    NO_DRAWABLES = 1 << 3
    NO_IMAGE = 1 << 4


class FakeLayer:
    """A Gimp.Layer whose PDB calls refuse locked items as GIMP 3 does: ``merge_shadow`` needs
    unlocked pixels (pdb/groups/drawable.pdb, drawable_merge_shadow), ``set_offsets`` an
    unlocked position and ``scale`` both (pdb/groups/layer.pdb); a group's locks hold for its
    children (app/core/gimpitem.c, gimp_item_is_content_locked). Refused calls return False.
    ``merge_shadow`` keeps the alpha of an alpha-locked layer or group's child
    (app/core/gimplayer.c, gimp_layer_get_active_mask)."""

    def __init__(self, log: list, w: int, h: int, x: int = 0, y: int = 0, parent=None,
                 children: list | None = None, lock_content: bool = False,
                 lock_position: bool = False, lock_alpha: bool = False) -> None:
        self.log, self.w, self.h, self.x, self.y = log, w, h, x, y
        self.parent, self.children = parent, children
        self.lock_content, self.lock_position, self.written = lock_content, lock_position, False
        self.lock_alpha, self.alpha_written = lock_alpha, False
        self.mask, self.apply_mask = None, True
        for child in children or []:
            child.parent = self

    @staticmethod
    def new(image, name, w, h, image_type, opacity, mode) -> FakeLayer:
        """Gimp.Layer.new(image, name, width, height, type, opacity, mode)."""
        return FakeLayer([], w, h)

    def _locked(self, kind: str) -> bool:
        return getattr(self, f"lock_{kind}") or (self.parent is not None
                                                 and self.parent._locked(kind))

    def is_group(self) -> bool:
        return self.children is not None

    def get_name(self) -> str:
        return "layer"

    def get_children(self) -> list:
        return self.children

    def get_width(self) -> int:
        return self.w

    def get_height(self) -> int:
        return self.h

    def get_offsets(self) -> tuple[bool, int, int]:
        return True, self.x, self.y

    def get_lock_content(self) -> bool:
        return self.lock_content

    def get_lock_position(self) -> bool:
        return self.lock_position

    def set_lock_content(self, value: bool) -> None:
        self.log.append(("lock_content", value))
        self.lock_content = value

    def set_lock_position(self, value: bool) -> None:
        self.log.append(("lock_position", value))
        self.lock_position = value

    def get_lock_alpha(self) -> bool:
        return self.lock_alpha

    def set_lock_alpha(self, value: bool) -> None:
        self.log.append(("lock_alpha", value))
        self.lock_alpha = value

    def scale(self, w: int, h: int, local_origin: bool) -> bool:
        if self._locked("content") or self._locked("position"):
            return False
        self.w, self.h = w, h
        return True

    def set_offsets(self, x: int, y: int) -> bool:
        if self._locked("position"):
            return False
        self.x, self.y = x, y
        return True

    def merge_shadow(self, undo: bool) -> bool:
        if self._locked("content"):
            return False
        self.written, self.alpha_written = True, not self._locked("alpha")
        return True

    def get_mask(self) -> FakeLayer | None:
        return self.mask

    def create_mask(self, mask_type: object) -> FakeLayer:
        """A mask of the layer's size (a Gimp.LayerMask is a drawable like a layer)."""
        return FakeLayer([], self.w, self.h)

    def add_mask(self, mask: FakeLayer) -> bool:
        self.mask = mask
        return True

    def get_apply_mask(self) -> bool:
        return self.apply_mask

    def set_apply_mask(self, value: bool) -> None:
        self.apply_mask = value

    def get_buffer(self) -> mock.MagicMock:
        return mock.MagicMock()

    get_shadow_buffer = get_buffer

    def update(self, *rect: int) -> None:
        pass

    def is_gray(self) -> bool:
        return False

    def is_layer_mask(self) -> bool:
        return False

    def has_alpha(self) -> bool:
        return False

    def type(self) -> int:
        return 0


class FakeImage(mock.MagicMock):
    """A Gimp.Image: ``scale`` scales every layer, locked or not, as Scale Image does
    (pdb/groups/image_transform.pdb, image_scale checks no locks)."""

    def setup(self, log: list, w: int, h: int, layers: list) -> FakeImage:
        self.log, self.size, self.layers = log, (w, h), layers
        self.get_width.return_value, self.get_height.return_value = w, h
        self.get_layers.return_value = layers
        self.get_base_type.return_value = ImageBaseType.RGB
        self.get_precision.return_value.value_nick = "u8-non-linear"
        self.get_resolution.return_value = (True, 300.0, 240.0)
        self.undo_group_start.side_effect = lambda: log.append("undo start")
        self.undo_group_end.side_effect = lambda: log.append("undo end")
        self.scale.side_effect = self._scale
        return self

    def _scale(self, w: int, h: int) -> None:
        fx, fy = w / self.size[0], h / self.size[1]

        def leaves(items):
            for item in items:
                yield from leaves(item.children) if item.is_group() else [item]

        for layer in leaves(self.layers):
            layer.w, layer.h = round(layer.w * fx), round(layer.h * fy)
            layer.x, layer.y = round(layer.x * fx), round(layer.y * fy)


class FakeWorker:
    """The worker client: twice the size, or the size asked for."""

    def __init__(self, command: list) -> None:
        self.command = command

    def __enter__(self) -> FakeWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def output_size(self, w: int, h: int, scale: float, options: dict,
                    fmt=None) -> tuple[int, int]:
        return options.get("out_width") or 2 * w, options.get("out_height") or 2 * h

    def upscale(self, pixels, w, h, fmt, scale, options, progress=None):
        return b"", *self.output_size(w, h, scale, options)


@pytest.fixture
def plugin():
    """The plug-in file over a stubbed ``gi`` whose Gimp enums and Layer mirror GIMP 3's."""
    gi = mock.MagicMock()
    gimp = gi.repository.Gimp
    gimp.PlugIn = type("PlugIn", (), {"__gtype__": "gtype"})
    gimp.RunMode, gimp.ImageBaseType = RunMode, ImageBaseType
    gimp.ProcedureSensitivityMask, gimp.Layer = SensitivityMask, FakeLayer
    gimp.LayerMask = type("LayerMask", (), {})
    gimp.Selection.is_empty.return_value = True
    with mock.patch.dict(sys.modules, {"gi": gi, "gi.repository": gi.repository}), \
            mock.patch.object(sys, "path", list(sys.path)):
        module = _load("drcn_plugin_gimp_conventions", PLUGIN_DIR / f"{PLUGIN}.py")
    module.Worker, module.worker_command = FakeWorker, lambda plugin_dir: ["worker"]
    return module


def _config(output: str) -> mock.MagicMock:
    values = {"scale": 2.0, "width": 0, "height": 0, "model": "drcn-lite", "custom-model": "",
              "denoise": 0.0, "tile": 0, "self-ensemble": False, "output": output}
    config = mock.MagicMock()
    config.get_property.side_effect = values.__getitem__
    return config


@pytest.mark.parametrize("run_mode,shown", [(RunMode.WITH_LAST_VALS, True),
                                            (RunMode.NONINTERACTIVE, False)])
def test_a_new_image_from_repeat_last_gets_a_display(plugin, run_mode, shown) -> None:
    """Filters > Repeat Last runs the procedure WITH_LAST_VALS (app/actions/filters-actions.c,
    filters_repeat_actions): its new image gets a display, as GIMP's own plug-ins show a new
    image in every run mode but NONINTERACTIVE (plug-ins/common/compose.c)."""
    log: list = []
    layer = FakeLayer(log, 6, 4)
    image = FakeImage().setup(log, 6, 4, [layer])
    procedure = mock.MagicMock()
    plugin.DRCNSuperResolution().run(procedure, run_mode, image, [layer], _config("new-image"),
                                     None)
    assert procedure.new_return_values.call_args.args[0] == plugin.Gimp.PDBStatusType.SUCCESS
    new = plugin.Gimp.Image.new_with_precision.return_value
    displayed = [c.args[0] for c in plugin.Gimp.Display.new.call_args_list]
    assert displayed == ([new] if shown else [])


def test_a_new_image_keeps_the_source_resolution(plugin) -> None:
    """Gimp.Image.new gives GIMP's default resolution: a 300 ppi scan came out at 72 ppi,
    unlike Scale this image, where image.scale keeps the resolution."""
    layer = FakeLayer([], 6, 4)
    image = FakeImage().setup([], 6, 4, [layer])
    plugin.DRCNSuperResolution()._new_image(FakeWorker([]), image, layer, 2.0, {})
    new = plugin.Gimp.Image.new_with_precision.return_value
    new.set_resolution.assert_called_once_with(300.0, 240.0)


def test_an_indexed_image_is_refused_in_one_line(plugin) -> None:
    """Image types gate only the menu (app/plug-in/gimppluginprocedure.c, get_sensitive): a
    script that passes an indexed image is refused in one line, before an upscale whose new
    image would have no palette."""
    layer = FakeLayer([], 6, 4)
    image = FakeImage().setup([], 6, 4, [layer])
    image.get_base_type.return_value = ImageBaseType.INDEXED
    procedure = mock.MagicMock()
    started = mock.Mock()
    plugin.worker_command = started
    plugin.DRCNSuperResolution().run(procedure, RunMode.NONINTERACTIVE, image, [layer],
                                     _config("scale-image"), None)
    assert procedure.new_return_values.call_args.args[0] == \
        plugin.Gimp.PDBStatusType.CALLING_ERROR
    message = plugin.GLib.Error.call_args.args[0]
    assert "indexed" in message and "Image > Mode > RGB" in message and "\n" not in message
    assert not started.called and not image.scale.called


def test_scale_this_image_is_offered_with_several_layers_selected(plugin) -> None:
    """With only DRAWABLE in the sensitivity mask GIMP greys the menu entry out when two
    layers are selected (app/plug-in/gimppluginprocedure.c), though Scale this image upscales
    every layer whatever is selected."""
    proc = plugin.DRCNSuperResolution().do_create_procedure("plug-in-drcn-super-resolution")
    mask = proc.set_sensitivity_mask.call_args.args[0]
    assert mask & SensitivityMask.DRAWABLE and mask & SensitivityMask.DRAWABLES
    log: list = []
    layers = [FakeLayer(log, 6, 4), FakeLayer(log, 3, 2, 1, 1)]
    image = FakeImage().setup(log, 6, 4, layers)
    procedure = mock.MagicMock()
    plugin.DRCNSuperResolution().run(procedure, RunMode.NONINTERACTIVE, image, layers,
                                     _config("scale-image"), None)
    assert procedure.new_return_values.call_args.args[0] == plugin.Gimp.PDBStatusType.SUCCESS
    assert all(layer.written for layer in layers)


def test_scale_this_image_upscales_locked_layers_and_keeps_their_locks(plugin) -> None:
    """GIMP refuses a plug-in's writes to a layer with locked pixels or position (or inside a
    locked group), which Scale Image scales anyway: such a layer is unlocked for the write and
    locked again, so it too gets DRCN's pixels, size and offset, not GIMP's interpolation."""
    log: list = []
    pixels = FakeLayer(log, 5, 3, 1, 1, lock_content=True)
    moved = FakeLayer(log, 3, 3, 3, 1, lock_position=True)
    inner = FakeLayer(log, 3, 1, 1, 2)
    group = FakeLayer(log, 3, 1, 1, 2, children=[inner], lock_content=True,
                      lock_position=True)
    image = FakeImage().setup(log, 7, 5, [pixels, moved, group])
    plugin.DRCNSuperResolution()._scale_image(FakeWorker([]), image, 2.5,
                                              {"out_width": 0, "out_height": 0}, {})
    spans = plugin.scaled_span
    for layer, (x, y, w, h) in ((pixels, (1, 1, 5, 3)), (moved, (3, 1, 3, 3)),
                                (inner, (1, 2, 3, 1))):
        assert layer.written
        assert ((layer.x, layer.w), (layer.y, layer.h)) == (spans(x, w, 2.5), spans(y, h, 2.5))
    assert (pixels.lock_content, moved.lock_position) == (True, True)
    assert (group.lock_content, group.lock_position, inner.lock_content) == (True, True, False)
    changes = [entry for entry in log if entry not in ("undo start", "undo end")]
    assert log[0] == "undo start" and log[-1] == "undo end" and len(changes) == 8


def test_scale_this_image_gives_alpha_locked_layers_drcn_alpha_too(plugin) -> None:
    """merge_shadow keeps an alpha-locked layer's alpha (and a group's lock holds for its
    children): Scale this image lifts the lock, so the alpha too is DRCN's, not Scale Image's
    interpolation beside DRCN-upscaled colour."""
    log: list = []
    alone = FakeLayer(log, 4, 4, lock_alpha=True)
    inner = FakeLayer(log, 2, 2)
    group = FakeLayer(log, 2, 2, children=[inner], lock_alpha=True)
    image = FakeImage().setup(log, 4, 4, [alone, group])
    plugin.DRCNSuperResolution()._scale_image(FakeWorker([]), image, 2.0,
                                              {"out_width": 0, "out_height": 0}, {})
    assert alone.alpha_written and inner.alpha_written
    assert (alone.lock_alpha, group.lock_alpha, inner.lock_alpha) == (True, True, False)
    assert log[0] == "undo start" and log[-1] == "undo end"


class RecordingWorker(FakeWorker):
    """FakeWorker noting the pixel format and the options each layer travels with."""

    def upscale(self, pixels, w, h, fmt, scale, options, progress=None):
        self.formats = [*getattr(self, "formats", []), fmt]
        self.sizes = [*getattr(self, "sizes", []), options]
        return super().upscale(pixels, w, h, fmt, scale, options, progress)


@pytest.mark.parametrize("srgb,gray,babl", [(False, False, "R'G'B' float"),
                                            (True, False, "R'G'B' u8"),
                                            (False, True, "Y' float"),
                                            (True, True, "Y' u8")])
def test_a_wide_gamut_image_travels_as_float(plugin, srgb, gray, babl) -> None:
    """A babl format name is sRGB, so an image in another colour space travels as float: as
    8-bit sRGB an Adobe RGB photo would come back clipped to sRGB's gamut (saturated greens
    and cyans dulled). A grey image with a profile other than GIMP's own grey (``srgb`` here:
    equal to it) travels so too: as 8-bit sRGB-curve grey, a Gray Gamma 2.2 layer's levels
    1-5, 7, 8, 10 and 15 would come back as neighbours (its darkest shadows merged)."""
    layer = FakeLayer([], 6, 4)
    layer.is_gray = lambda: gray
    image = FakeImage().setup([], 6, 4, [layer])
    image.get_color_profile.return_value.is_equal.return_value = srgb
    worker = RecordingWorker([])
    plugin.DRCNSuperResolution()._new_image(worker, image, layer, 2.0, {})
    assert [fmt.babl for fmt in worker.formats] == [babl]


def test_with_no_layer_selected_scale_this_image_runs_and_a_new_image_says_why_not(plugin):
    """Scale this image needs no selected layer, so the menu entry stays usable with none
    (NO_DRAWABLES in the sensitivity mask); a new image then asks for one in one line."""
    proc = plugin.DRCNSuperResolution().do_create_procedure("plug-in-drcn-super-resolution")
    assert proc.set_sensitivity_mask.call_args.args[0] & SensitivityMask.NO_DRAWABLES
    layer = FakeLayer([], 6, 4)
    image = FakeImage().setup([], 6, 4, [layer])
    for output, status in (("scale-image", "SUCCESS"), ("new-image", "CALLING_ERROR")):
        procedure = mock.MagicMock()
        plugin.DRCNSuperResolution().run(procedure, RunMode.NONINTERACTIVE, image, [],
                                         _config(output), None)
        assert procedure.new_return_values.call_args.args[0] == \
            getattr(plugin.Gimp.PDBStatusType, status)
    assert layer.written and "select exactly one layer" in plugin.GLib.Error.call_args.args[0]


def test_a_selected_layer_mask_is_named_in_the_message(plugin) -> None:
    """With the mask of the one highlighted layer being edited, GIMP passes the mask: the line
    names the mask, where 'select exactly one layer' would puzzle a user who sees one."""
    image = FakeImage().setup([], 6, 4, [FakeLayer([], 6, 4)])
    procedure = mock.MagicMock()
    plugin.DRCNSuperResolution().run(procedure, RunMode.NONINTERACTIVE, image,
                                     [plugin.Gimp.LayerMask()], _config("new-image"), None)
    assert procedure.new_return_values.call_args.args[0] == \
        plugin.Gimp.PDBStatusType.CALLING_ERROR
    message = plugin.GLib.Error.call_args.args[0]
    assert "layer mask is selected" in message and "\n" not in message


@pytest.mark.parametrize("applied", [True, False])
def test_a_new_image_keeps_the_layers_mask(plugin, applied) -> None:
    """A new image from a layer with a layer mask keeps the mask, else what it hides would show:
    the mask goes through DRCN to the layer's new size and is the new layer's mask, applied or
    not as on the original layer."""
    layer, mask = FakeLayer([], 6, 4), FakeLayer([], 6, 4)
    mask.is_gray = mask.is_layer_mask = lambda: True
    layer.mask, layer.apply_mask = mask, applied
    image = FakeImage().setup([], 6, 4, [layer])
    worker = RecordingWorker([])
    new = plugin.DRCNSuperResolution()._new_image(worker, image, layer, 2.5, {"tile": 0})
    (out, _, _), _ = new.insert_layer.call_args
    assert [fmt.channels for fmt in worker.formats] == [3, 1]  # the layer, then its mask
    # GIMP stores a mask linear in every image (gimp_babl_mask_format): as float, none of its
    # levels merge on the way to the network's perceptual values and back
    assert [fmt.dtype for fmt in worker.formats] == ["u8", "f32"]
    assert (worker.sizes[1]["out_width"], worker.sizes[1]["out_height"]) == (out.w, out.h)
    assert out.mask is not None and out.mask.written and (out.mask.w, out.mask.h) == (12, 8)
    assert out.apply_mask is applied
