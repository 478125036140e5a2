"""Edges of the Python API and the host front ends found by a hostile pass: each is one typed
error or works as the same value given as a plain Python number would."""

from __future__ import annotations

import sys
from unittest import mock

import numpy as np
import pytest
import torch
from helpers import seeded_drcn
from test_gimp_worker import PLUGIN, PLUGIN_DIR, _load

from drcn_plugin import ModelLoadError, Upscaler
from drcn_plugin.sizing import TargetSize


@pytest.mark.parametrize("scale", [np.uint8(3), np.int8(3), np.float16(3), np.float32(3)])
def test_a_numpy_scalar_scale_gives_the_size_of_its_value(tiny_model_file: str, scale) -> None:
    """A numpy scalar counts as its value: in uint8 arithmetic 100 * 3 wraps around to 44, and
    a float16 product overflows in the rounding."""
    out = Upscaler(tiny_model_file, device="cpu").upscale(np.zeros((100, 90), np.uint8), scale)
    assert out.shape == (300, 270)


def test_numpy_integers_are_whole_numbers_of_pixels(tiny_model_file: str) -> None:
    up = Upscaler(tiny_model_file, device="cpu", tile=np.int64(16), batch=np.int32(2))
    assert (up.tile, up.batch) == (16, 2) and type(up.tile) is int
    target = TargetSize.of(2.0, width=np.int64(30))
    assert target.width == 30 and type(target.width) is int
    assert target.resolve(10, 15) == (20, 30)


def test_a_loaded_module_with_nan_weights_is_refused_not_a_black_image() -> None:
    """A diverged model held in memory is refused as the same weights in a file are: NaN weights
    would give an all-black uint8 image and an all-NaN float one."""
    model = seeded_drcn()
    with torch.no_grad():
        model.ensemble[1] = float("nan")
    with pytest.raises(ModelLoadError, match=r"NaN or infinite weights \(ensemble\)"):
        Upscaler(model, device="cpu")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_module_that_is_not_drcn_is_one_typed_error(precision: str) -> None:
    """Any other module is one typed error, not an AttributeError from inside the engine."""
    with pytest.raises(ModelLoadError, match="a Linear module is not a DRCN model") as err:
        Upscaler(torch.nn.Linear(2, 2), device="cpu", precision=precision)
    assert "\n" not in str(err.value)


def _plugin_with_stub_gimp() -> tuple[object, mock.MagicMock]:
    """The GIMP plug-in file imported over a stubbed ``gi``; returns it and its ``Gimp``."""
    gi = mock.MagicMock()
    gi.repository.Gimp.PlugIn = type("PlugIn", (), {"__gtype__": "gtype"})
    with mock.patch.dict(sys.modules, {"gi": gi, "gi.repository": gi.repository}), \
            mock.patch.object(sys, "path", list(sys.path)):
        plugin = _load("drcn_plugin_gimp_selection", PLUGIN_DIR / f"{PLUGIN}.py")
    return plugin, gi.repository.Gimp


@pytest.mark.parametrize("selected", ["user selection", None])
def test_scale_image_writes_every_pixel_whatever_is_selected(selected: str | None) -> None:
    """GIMP merges a shadow buffer only inside the selection: with one active, Scale this image
    left GIMP's own interpolation outside it (and whole layers outside it untouched)."""
    plugin, gimp = _plugin_with_stub_gimp()
    selection = {"mask": selected}
    merged_under: list[object] = []
    gimp.Selection.is_empty.side_effect = lambda image: selection["mask"] is None
    gimp.Selection.save.side_effect = lambda image: f"saved {selection['mask']}"
    gimp.Selection.none.side_effect = lambda image: selection.update(mask=None)
    image = mock.MagicMock()
    image.get_width.return_value, image.get_height.return_value = 10, 8
    image.get_precision.return_value.value_nick = "u8-non-linear"  # a Gimp.Precision nick
    image.select_item.side_effect = lambda op, item: selection.update(mask=item)
    layers = [mock.MagicMock(), mock.MagicMock()]
    for layer in layers:
        layer.is_group.return_value = False
        layer.get_width.return_value, layer.get_height.return_value = 10, 8
        layer.get_offsets.return_value = (True, 0, 0)
        layer.merge_shadow.side_effect = lambda undo: merged_under.append(selection["mask"])
    image.get_layers.return_value = layers

    class Worker:
        def output_size(self, w, h, scale, options, fmt=None):
            return options.get("out_width") or 2 * w, options.get("out_height") or 2 * h

        def upscale(self, pixels, w, h, fmt, scale, options, progress=None):
            return b"", options["out_width"], options["out_height"]

    plugin.DRCNSuperResolution()._scale_image(Worker(), image, 2.0,
                                              {"out_width": 0, "out_height": 0}, {})
    assert merged_under == [None, None]  # every layer written with nothing selected
    if selected is None:  # nothing to set aside
        assert selection["mask"] is None and not gimp.Selection.save.called
    else:  # the (scaled) selection is back, and its copy gone
        assert selection["mask"] == "saved user selection"
        image.remove_channel.assert_called_once_with("saved user selection")
