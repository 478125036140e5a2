"""The GIMP plug-in at the edges of size: layers as wide as GIMP allows, results wider than GIMP
allows, upscales larger than memory, and Scale this image's results on their way to the image
(the plug-in over a stubbed ``gi``, with the real worker where its rules are what is checked)."""

from __future__ import annotations

import numpy as np
import pytest
from test_gimp_conventions import FakeImage, FakeLayer, FakeWorker
from test_gimp_conventions import plugin as plugin  # noqa: PLC0414 (the fixture, shared)
from test_gimp_worker import ENV, WORKER, client

from drcn_plugin.errors import DRCNError
from drcn_plugin.integrations.gimp_worker import parse_header


class PixelLayer(FakeLayer):
    """A FakeLayer with pixels: reads are counted (and refused past ``limit`` bytes, which the
    test process cannot hold), and what is written into it is kept."""

    def __init__(self, *args, limit: int = 1 << 24, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.reads, self.limit, self.pixels = 0, limit, None

    def get_buffer(self) -> PixelLayer:
        return self

    get_shadow_buffer = get_buffer

    def get(self, rect, scale, babl, abyss) -> bytes:
        """Gegl.Buffer.get of the whole layer in an 8-bit RGB format."""
        self.reads += 1
        size = self.w * self.h * 3
        assert size <= self.limit, f"the plug-in read {size} bytes of pixels"
        return np.arange(size, dtype=np.uint8).tobytes()

    def set(self, rect, babl, data) -> None:
        self.pixels = bytes(data)

    def flush(self) -> None:
        pass


@pytest.fixture
def worker():
    with client.Worker(WORKER, env=ENV) as w:
        yield w


def test_a_layer_wider_than_131072_px_is_upscaled(plugin, worker, tiny_model_file) -> None:
    """The worker takes any side GIMP holds (up to 524288 px), with no smaller cap of its own
    (a refusal as 'bad header: 140000x1, 3 channels, ...' would read as a bug): memory alone
    decides, before the layer is read."""
    layer = PixelLayer([], 140000, 1)
    image = FakeImage().setup([], 140000, 1, [layer])
    plugin.DRCNSuperResolution()._new_image(worker, image, layer, 1.0,
                                            {"model": tiny_model_file})
    (out, _, _), _ = plugin.Gimp.Image.new_with_precision.return_value.insert_layer.call_args
    assert (out.w, out.h) == (140000, 1) and out.written
    assert layer.reads == 1


def test_a_layer_too_big_for_memory_is_refused_before_it_is_read(plugin, worker) -> None:
    """A dry run asks the worker whether it can hold the layer before the plug-in reads it out
    of GIMP (hundreds of GB here)."""
    layer = PixelLayer([], 300000, 300000)
    image = FakeImage().setup([], 300000, 300000, [layer])
    with pytest.raises(client.WorkerError) as e:
        plugin.DRCNSuperResolution()._new_image(worker, image, layer, 1.5, {})
    message = str(e.value)
    assert message.startswith("DRCN: a 450000x450000 result needs about ")
    assert "GiB of memory" in message and "bad header" not in message and "\n" not in message
    assert layer.reads == 0


@pytest.mark.parametrize("output", ["new-image", "scale-image"])
def test_a_result_wider_than_gimp_allows_is_refused_before_any_work(plugin, worker,
                                                                    output) -> None:
    """A 1 px thin layer 40000 px wide at x16 gives 640000 px, past GIMP's largest image side
    (GIMP_MAX_IMAGE_SIZE, 524288): refused in one line before the upscale, where GIMP would
    refuse the new image (or Scale Image) with a traceback after it."""
    layer = PixelLayer([], 40000, 1)
    image = FakeImage().setup([], 40000, 1, [layer])
    up = plugin.DRCNSuperResolution()
    with pytest.raises(client.WorkerError) as e:
        if output == "new-image":
            up._new_image(worker, image, layer, 16.0, {})
        else:
            up._scale_image(worker, image, 16.0, {"out_width": 0, "out_height": 0}, {})
    assert str(e.value) == ("DRCN: the result would be 640000x16 px, and GIMP's images are at "
                            "most 524288 px a side: choose a smaller Scale or size")
    assert layer.reads == 0 and not image.scale.called and not image.undo_group_start.called
    assert not plugin.Gimp.Image.new_with_precision.called


class _Result(bytes):
    """An upscaled block that counts how many of its kind are alive."""

    alive = 0

    def __new__(cls, data: bytes) -> _Result:
        cls.alive += 1
        return super().__new__(cls, data)

    def __del__(self) -> None:
        type(self).alive -= 1


class SpoolingWorker(FakeWorker):
    """A worker whose results are distinct per layer, noting how many earlier results are still
    held when the next layer is upscaled; it fails on layer ``fail_at``."""

    def __init__(self, fail_at: int = -1) -> None:
        super().__init__([])
        self.held, self.sent, self.fail_at = [], [], fail_at

    def upscale(self, pixels, w, h, fmt, scale, options, progress=None):
        self.held.append(_Result.alive)
        if len(self.sent) == self.fail_at:
            raise client.WorkerError("DRCN: boom")
        ow, oh = options["out_width"], options["out_height"]
        data = bytes([len(self.sent) + 1]) * (ow * oh * 3)
        self.sent.append(data)
        return _Result(data), ow, oh


def _layers() -> list[PixelLayer]:
    return [PixelLayer([], 6, 4), PixelLayer([], 3, 2, 1, 1), PixelLayer([], 2, 2, 4, 2)]


def test_scale_this_image_holds_one_layer_result_at_a_time(plugin) -> None:
    """Each layer's upscaled pixels wait in a temporary file until the last is done, so the
    plug-in's memory holds one layer result, not the sum of every scaled layer; each layer
    still gets its own."""
    layers = _layers()
    image = FakeImage().setup([], 6, 4, layers)
    worker = SpoolingWorker()
    plugin.DRCNSuperResolution()._scale_image(worker, image, 2.0,
                                              {"out_width": 0, "out_height": 0}, {})
    assert worker.held == [0, 0, 0]
    assert [layer.pixels for layer in layers] == worker.sent


def test_scale_this_image_changes_nothing_when_a_later_layer_fails(plugin) -> None:
    layers = _layers()
    image = FakeImage().setup([], 6, 4, layers)
    with pytest.raises(client.WorkerError, match="boom"):
        plugin.DRCNSuperResolution()._scale_image(SpoolingWorker(fail_at=2), image, 2.0,
                                                  {"out_width": 0, "out_height": 0}, {})
    assert not image.scale.called and not image.undo_group_start.called
    assert all(layer.pixels is None for layer in layers)


def test_a_side_past_gimps_largest_is_named_in_the_users_terms() -> None:
    """A side past what the worker takes read 'bad header: ...', like a bug in the plug-in."""
    with pytest.raises(DRCNError) as e:
        parse_header(b'{"width": 600000, "height": 2, "channels": 3, "dtype": "u8", "scale": 2}\n')
    assert str(e.value) == ("a 600000x2 px image is outside the 1 to 524288 px a side that the "
                            "DRCN worker takes")



def test_a_temporary_folder_that_cannot_be_written_is_one_line(
        plugin, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """Scale this image keeps its results in a temporary file: a missing or full temporary folder
    is one line before the image is touched, not an OSError traceback."""
    monkeypatch.setattr(client.tempfile, "tempdir", str(tmp_path / "gone"))
    layers = _layers()
    image = FakeImage().setup([], 6, 4, layers)
    with pytest.raises(client.WorkerError, match=r"^DRCN: cannot keep the upscaled layers in "
                       r".*gone until the last is done \(No such file or directory\)$"):
        plugin.DRCNSuperResolution()._scale_image(SpoolingWorker(), image, 2.0,
                                                  {"out_width": 0, "out_height": 0}, {})
    assert not image.scale.called and all(layer.pixels is None for layer in layers)
