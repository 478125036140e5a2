#!/usr/bin/env python3
"""GIMP 3 plug-in: Filters > Enhance > DRCN Super-Resolution...

Reads the layer through its GEGL buffer at the image's precision, sends the pixels to the
drcn-plugin worker process (GIMP's Python has no torch) and writes the upscaled pixels into a new
image or into the whole image scaled in place (one undo step). Scripts call
``plug-in-drcn-super-resolution`` with the same arguments as the dialog.
"""

import contextlib
import sys
from pathlib import Path

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("GimpUi", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, GimpUi, GLib, GObject  # noqa: E402

PLUGIN_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(PLUGIN_DIR))
from drcn_worker_client import (  # noqa: E402
    MAX_SIDE,
    Spool,
    Worker,
    WorkerError,
    check_result_size,
    overall_fraction,
    pixel_format,
    scaled_span,
    worker_command,
)

PROC = "plug-in-drcn-super-resolution"
MODELS = (("drcn-lite", "DRCN lite (fast, F=64)"),
          ("drcn-lite-photo", "DRCN lite photo (JPEG and noisy photos)"),
          ("drcn", "DRCN (paper size, F=256, best on GPUs)"))
OUTPUTS = (("new-image", "New image from the layer"), ("scale-image", "Scale this image"))


def _choice(entries):
    choice = Gimp.Choice.new()
    for i, (nick, label) in enumerate(entries):
        choice.add(nick, i, label, "")
    return choice


def _tree(items):
    """Every layer of a layer tree, each group before its children."""
    for item in items:
        yield item
        if item.is_group():
            yield from _tree(item.get_children())


@contextlib.contextmanager
def _unlocked(items):
    """Lift the pixel, position and alpha locks of ``items`` while the block runs, then set
    them again.

    GIMP refuses a plug-in's ``merge_shadow``, ``scale`` and ``set_offsets`` on a locked layer
    (or a layer in a locked group), and ``merge_shadow`` leaves an alpha-locked layer's alpha
    as it was, while Scale Image scales and moves locked layers too; inside the caller's undo
    group, one undo restores the locks with everything else.
    """
    locks = [(item, kind) for item in items for kind in ("content", "position", "alpha")
             if getattr(item, f"get_lock_{kind}")()]
    for item, kind in locks:
        getattr(item, f"set_lock_{kind}")(False)
    try:
        yield
    finally:
        for item, kind in locks:
            getattr(item, f"set_lock_{kind}")(True)


def _format_of(image, drawable):
    """How the drawable's pixels travel. A babl format name means sRGB: an image in another
    colour space travels as float, which holds the colours outside sRGB (Adobe RGB, ProPhoto)
    that 8 or 16 bits would clip on the way there and back, and every level of another tone
    curve (a Gray Gamma 2.2 image's darkest levels fall together on sRGB's 8-bit levels). A layer
    mask travels as float too: GIMP stores masks linear ("Y u8", "Y u16": gimp_babl_mask_format)
    whatever the image's curve, and 8 or 16 perceptual bits would merge their light levels."""
    precision = image.get_precision().value_nick
    profile = image.get_color_profile()
    own = Gimp.ColorProfile.new_d65_gray_srgb_trc() if drawable.is_gray() \
        else Gimp.ColorProfile.new_rgb_srgb()
    if drawable.is_layer_mask() or (profile is not None and not profile.is_equal(own)):
        precision = "float"
    return pixel_format(drawable.is_gray(), drawable.has_alpha(), precision)


def _read(drawable, fmt):
    rect = Gegl.Rectangle.new(0, 0, drawable.get_width(), drawable.get_height())
    return drawable.get_buffer().get(rect, 1.0, fmt.babl, Gegl.AbyssPolicy.CLAMP)


def _write(drawable, fmt, data):
    """Replace the drawable's pixels through its shadow buffer (undoable)."""
    w, h = drawable.get_width(), drawable.get_height()
    shadow = drawable.get_shadow_buffer()
    shadow.set(Gegl.Rectangle.new(0, 0, w, h), fmt.babl, data)
    shadow.flush()
    drawable.merge_shadow(True)
    drawable.update(0, 0, w, h)


def _place(layer, x, y, fmt, data, w, h):
    """Give a scaled layer its upscaled size, offset and pixels."""
    if (layer.get_width(), layer.get_height()) != (w, h):
        layer.scale(w, h, False)
    layer.set_offsets(x, y)
    _write(layer, fmt, data)


def _offsets(layer):
    values = layer.get_offsets()
    return values[-2], values[-1]


class DRCNSuperResolution(Gimp.PlugIn):
    """The plug-in: one image procedure."""

    def do_query_procedures(self):
        """The procedures this plug-in registers: the one."""
        return [PROC]

    def do_set_i18n(self, name):
        """No translations: GIMP looks for no catalogue."""
        return False

    def do_create_procedure(self, name):
        """The procedure, its menu place and its arguments (the dialog shows them in order)."""
        proc = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, self.run, None)
        proc.set_image_types("RGB*, GRAY*")
        # Scale this image works whatever is selected, nothing too; a new image needs one layer
        proc.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.DRAWABLE
                                  | Gimp.ProcedureSensitivityMask.DRAWABLES
                                  | Gimp.ProcedureSensitivityMask.NO_DRAWABLES)
        proc.set_menu_label("DRCN Super-Resolution...")
        proc.add_menu_path("<Image>/Filters/Enhance")
        proc.set_documentation(
            "Upscale with DRCN super-resolution",
            "Upscales the selected layer into a new image, or the whole image in place, with the "
            "deeply-recursive convolutional network of Kim, Lee & Lee (CVPR 2016). The network "
            "runs in the Python environment where drcn-plugin is installed.",
            name)
        proc.set_attribution("drcn-plugin authors", "drcn-plugin authors", "2026")
        rw = GObject.ParamFlags.READWRITE
        proc.add_double_argument("scale", "_Scale", "Upscaling factor; unused when Width or Height "
                                 "is set", 1.0, 16.0, 2.0, rw)
        proc.add_int_argument("width", "_Width", "Exact output width in pixels; 0 = from Scale, "
                              "or from Height keeping the aspect ratio", 0, MAX_SIDE, 0, rw)
        proc.add_int_argument("height", "_Height", "Exact output height in pixels; 0 = from "
                              "Scale, or from Width keeping the aspect ratio", 0, MAX_SIDE, 0, rw)
        proc.add_choice_argument("model", "_Model", "Shipped DRCN model", _choice(MODELS),
                                 "drcn-lite", rw)
        proc.add_string_argument("custom-model", "C_ustom model",
                                 "A .safetensors file, model folder or hf:owner/name; "
                                 "used instead of Model when set", "", rw)
        proc.add_double_argument("denoise", "_Denoise", "For JPEG and noisy photos: 0 = the "
                                 "model as chosen, 1 = DRCN lite photo, between: a blend of "
                                 "DRCN lite with it", 0.0, 1.0, 0.0, rw)
        proc.add_int_argument("tile", "_Tile size", "Tile side in pixels (0 = automatic)",
                              0, 4096, 0, rw)
        proc.add_boolean_argument("self-ensemble", "Self-_ensemble",
                                  "Average 8 flips/rotations (8x slower, slightly sharper)",
                                  False, rw)
        proc.add_choice_argument("output", "_Output", "Where the result goes", _choice(OUTPUTS),
                                 "new-image", rw)
        proc.add_image_return_value("new-image", "Result image",
                                    "The new image, or the input image when scaled in place",
                                    True, rw)
        return proc

    def run(self, procedure, run_mode, image, drawables, config, data):
        """Show the dialog when interactive, then upscale through the worker; a WorkerError is
        the procedure's one-line error."""
        if image.get_base_type() == Gimp.ImageBaseType.INDEXED:  # scripts skip the image types
            return procedure.new_return_values(
                Gimp.PDBStatusType.CALLING_ERROR,
                GLib.Error("DRCN: an indexed image cannot hold the new colours of an upscale; "
                           "convert it with Image > Mode > RGB or Grayscale first"))
        if run_mode == Gimp.RunMode.INTERACTIVE:
            GimpUi.init(PROC)
            dialog = GimpUi.ProcedureDialog(procedure=procedure, config=config,
                                            title="DRCN Super-Resolution")
            dialog.fill(None)
            accepted = dialog.run()
            dialog.destroy()
            if not accepted:
                return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())
        get = config.get_property
        scale = get("scale")
        size = {"out_width": get("width"), "out_height": get("height")}
        # What the worker needs besides the size; a new dialog option adds its entry here.
        options = {"model": (get("custom-model") or "").strip() or get("model"),
                   "denoise": get("denoise"), "tile": get("tile"), "tta": get("self-ensemble")}
        if get("output") == "new-image" and (len(drawables) != 1
                                             or not isinstance(drawables[0], Gimp.Layer)):
            mask = len(drawables) == 1 and isinstance(drawables[0], Gimp.LayerMask)
            return procedure.new_return_values(
                Gimp.PDBStatusType.CALLING_ERROR,
                GLib.Error("DRCN: the layer mask is selected; click the layer's own thumbnail "
                           "in the Layers dialog to upscale the layer into a new image" if mask
                           else "DRCN: select exactly one layer to upscale into a new image"))
        Gimp.progress_init("DRCN: starting the worker")
        try:
            with Worker(worker_command(PLUGIN_DIR)) as worker:
                Gimp.progress_set_text("DRCN super-resolution")
                if get("output") == "new-image":
                    result = self._new_image(worker, image, drawables[0], scale,
                                             {**options, **size})
                else:
                    result = self._scale_image(worker, image, scale, size, options)
        except WorkerError as e:
            return procedure.new_return_values(Gimp.PDBStatusType.EXECUTION_ERROR,
                                               GLib.Error(str(e)))
        finally:
            Gimp.progress_end()
        if run_mode != Gimp.RunMode.NONINTERACTIVE and result != image:  # Repeat Last too
            Gimp.Display.new(result)
        Gimp.displays_flush()
        values = procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())
        values.remove(1)
        values.insert(1, GObject.Value(Gimp.Image, result))
        return values

    @staticmethod
    def _plan(worker, image, drawable, scale, options):
        """How ``drawable``'s pixels travel and its result's (width, height), checked before they
        are read: a result larger than GIMP's images, or an upscale the worker's memory cannot
        take, is refused in one line."""
        fmt = _format_of(image, drawable)
        size = drawable.get_width(), drawable.get_height()
        w, h = worker.output_size(*size, scale, options)
        check_result_size(w, h)
        worker.output_size(*size, scale, options, fmt)
        return fmt, w, h

    @staticmethod
    def _upscale(worker, drawable, fmt, scale, options, index=0, count=1):
        return worker.upscale(
            _read(drawable, fmt), drawable.get_width(), drawable.get_height(), fmt, scale,
            options,
            lambda done, total: Gimp.progress_update(overall_fraction(index, count, done, total)))

    def _new_image(self, worker, image, layer, scale, options):
        """The layer, upscaled, as the only layer of a new image with the same precision; its
        layer mask, upscaled to the same size, stays its mask (else what it hides would show)."""
        mask = layer.get_mask()
        count = 1 if mask is None else 2
        fmt, w, h = self._plan(worker, image, layer, scale, options)
        if mask is not None:  # to the layer's result size, checked before either is read
            mask_options = {**options, "out_width": w, "out_height": h}
            mask_fmt, _, _ = self._plan(worker, image, mask, scale, mask_options)
        data, w, h = self._upscale(worker, layer, fmt, scale, options, 0, count)
        if mask is not None:
            mask_data, _, _ = self._upscale(worker, mask, mask_fmt, scale, mask_options, 1, 2)
        new = Gimp.Image.new_with_precision(w, h, image.get_base_type(), image.get_precision())
        new.undo_disable()
        new.set_resolution(*image.get_resolution()[-2:])  # same pixels per inch as the source
        profile = image.get_color_profile()
        if profile is not None:
            new.set_color_profile(profile)
        out = Gimp.Layer.new(new, layer.get_name(), w, h, layer.type(), 100.0,
                             Gimp.LayerMode.NORMAL)
        new.insert_layer(out, None, 0)
        _write(out, fmt, data)
        if mask is not None:
            out.add_mask(out.create_mask(Gimp.AddMaskType.WHITE))
            _write(out.get_mask(), mask_fmt, mask_data)
            out.set_apply_mask(layer.get_apply_mask())
        new.undo_enable()
        return new

    def _scale_image(self, worker, image, scale, size, options):
        """Scale the whole image in one undo group; every layer's pixels come from DRCN.

        The canvas gets the size asked for (the worker applies the size rule); each layer is
        upscaled by the canvas' factor on each axis, all of it whatever is selected (the
        selection is scaled with the image, as GIMP's Scale Image does). Every size and memory
        check comes before the first layer is read, and every layer is upscaled (kept in a
        temporary file, not in memory) before the image is touched, so a failure changes
        nothing.
        """
        iw, ih = image.get_width(), image.get_height()
        cw, ch = worker.output_size(iw, ih, scale, {**options, **size})
        check_result_size(cw, ch)
        fx, fy = (cw / iw, ch / ih) if size["out_width"] or size["out_height"] else (scale, scale)
        items = list(_tree(image.get_layers()))
        layers = [item for item in items if not item.is_group()]  # groups follow their children
        spans = [(scaled_span(x, layer.get_width(), fx), scaled_span(y, layer.get_height(), fy))
                 for layer, (x, y) in zip(layers, map(_offsets, layers), strict=True)]
        jobs = [(layer, {**options, "out_width": sx[1], "out_height": sy[1]})
                for layer, (sx, sy) in zip(layers, spans, strict=True)]
        formats = [self._plan(worker, image, layer, scale, opts)[0] for layer, opts in jobs]
        with Spool() as spool:
            for i, ((layer, opts), fmt) in enumerate(zip(jobs, formats, strict=True)):
                spool.add(*self._upscale(worker, layer, fmt, scale, opts, i, len(layers)))
            image.undo_group_start()
            try:
                image.scale(cw, ch)
                # merge_shadow writes only inside a selection: set it aside (scaled with the image)
                kept = None if Gimp.Selection.is_empty(image) else Gimp.Selection.save(image)
                Gimp.Selection.none(image)
                try:
                    with _unlocked(items):
                        for i, (layer, (sx, sy), fmt) in enumerate(zip(layers, spans, formats,
                                                                       strict=True)):
                            _place(layer, sx[0], sy[0], fmt, *spool.get(i))
                finally:
                    if kept is not None:
                        image.select_item(Gimp.ChannelOps.REPLACE, kept)
                        image.remove_channel(kept)
            finally:
                image.undo_group_end()
        return image


Gimp.main(DRCNSuperResolution.__gtype__, sys.argv)
