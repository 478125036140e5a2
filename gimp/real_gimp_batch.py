"""Part of check_real_gimp.sh that runs inside GIMP (python-fu-eval batch interpreter).

The batch command defines ``WORK`` (the check's folder) and ``JOBS`` (a jobs file in it) and
exec()s this file. Each job loads images, calls the DRCN procedure the way a script would, then
exports PNGs and dumps raw layer pixels for real_gimp_compare.py; results go to ``<JOBS>.out``.
"""

import json
import os
import time

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, Gio  # noqa: E402

PROC = "plug-in-drcn-super-resolution"
LOCKS = ("content", "position", "alpha")


def _load(path):
    return Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(path))


def _dump(layer, path, babl=None):
    """Raw pixels of a layer in ``babl``, by default its own precision class; returns its
    geometry."""
    precision = layer.get_image().get_precision().value_nick.split("-")[0]
    kind = precision if precision in ("u8", "u16") else "float"
    babl = babl or ("Y'" if layer.is_gray() else "R'G'B'") + ("A" if layer.has_alpha() else "") \
        + " " + kind
    w, h = layer.get_width(), layer.get_height()
    data = layer.get_buffer().get(Gegl.Rectangle.new(0, 0, w, h), 1.0, babl, Gegl.AbyssPolicy.CLAMP)
    with open(path, "wb") as f:
        f.write(data)
    _, x, y = layer.get_offsets()
    mask = layer.get_mask()
    return {"raw": path, "format": babl, "width": w, "height": h, "offsets": [x, y],
            "mask": None if mask is None else [mask.get_width(), mask.get_height()],
            "locks": [kind for kind in LOCKS if getattr(layer, f"get_lock_{kind}")()]}


def _pixel_layers(items):
    for item in items:
        if item.is_group():
            yield from _pixel_layers(item.get_children())
        else:
            yield item


def _prepare(image, job):
    """What a GIMP user's image may hold besides pixels: a layer mask and locks on the top
    layer, a text layer above it (then the selected layer), a floating selection, a selection,
    a palette."""
    layer = image.get_layers()[0]
    if job.get("mask"):
        layer.add_mask(layer.create_mask(getattr(Gimp.AddMaskType, job["mask"])))
    for kind in job.get("lock", []):
        getattr(layer, f"set_lock_{kind}")(True)
    if "text" in job:
        text = Gimp.TextLayer.new(image, job["text"], Gimp.context_get_font(), 12.0,
                                  Gimp.Unit.pixel())
        image.insert_layer(text, None, 0)
        text.set_offsets(3, 2)
    if job.get("paste"):  # a pasted, not yet anchored copy of the top layer (selected)
        Gimp.edit_copy([layer])
        Gimp.edit_paste(layer, False)
    if "select" in job:
        image.select_rectangle(Gimp.ChannelOps.REPLACE, *job["select"])
    if job.get("indexed"):
        image.convert_indexed(Gimp.ConvertDitherType.NONE, Gimp.ConvertPaletteType.GENERATE,
                              255, False, False, "")


def _call(image, job):
    """Run the procedure on ``image`` (its top layer selected) with the job's arguments."""
    proc = Gimp.get_pdb().lookup_procedure(PROC)
    cfg = proc.create_config()
    cfg.set_property("run-mode", Gimp.RunMode.INTERACTIVE if job.get("interactive")
                     else Gimp.RunMode.NONINTERACTIVE)
    cfg.set_property("image", image)
    cfg.set_core_object_array("drawables", image.get_selected_drawables() if job.get("paste")
                              else image.get_layers()[:1])
    for key, value in job["args"].items():
        cfg.set_property(key, value)
    return proc.run(cfg)


def _state(image):
    """What the filter should leave as GIMP's own Scale Image does: the selection's bounds and
    the layers that are still text layers."""
    return {"selection": None if Gimp.Selection.is_empty(image)
            else list(Gimp.Selection.bounds(image)[-4:]),
            "text_layers": [layer.get_name() for layer in _pixel_layers(image.get_layers())
                            if layer.is_text_layer()]}


def _geometry(image):
    """_state with the image's size and every layer's name, size and offsets."""
    layers = [[layer.get_name(), layer.get_width(), layer.get_height(), *layer.get_offsets()[-2:]]
              for layer in _pixel_layers(image.get_layers())]
    return {"size": [image.get_width(), image.get_height()], "layers": layers, **_state(image)}


def _undo(image, before):
    """The image before the run, after it, and after one Ctrl+Z in its window: the host presses
    it when ``undo-ran`` appears and says so with ``undo-done``."""
    after = _geometry(image)
    Gimp.displays_flush()
    open(f"{WORK}/undo-ran", "w").close()  # noqa: F821
    for _ in range(600):
        if os.path.exists(f"{WORK}/undo-done"):  # noqa: F821
            break
        time.sleep(0.1)
    time.sleep(1)  # the key reaches GIMP after xdotool returns
    return {"before": before, "after": after, "undone": _geometry(image)}


def _native(image, scale):
    """_state of a copy of ``image`` after GIMP's own Scale Image by ``scale``."""
    copy = image.duplicate()
    copy.scale(*(int(n * scale + 0.5) for n in (image.get_width(), image.get_height())))
    state = _state(copy)
    copy.delete()
    return state


def _colour(image):
    """The image's precision and assigned colour profile (None: GIMP's built-in one)."""
    profile = image.get_color_profile()
    return {"precision": image.get_precision().value_nick,
            "profile": None if profile is None else profile.get_description()}


def _build(job):
    """The job's image: its input, converted to the job's precision and assigned its colour
    profile when asked, with its extra layers."""
    image = _load(job["input"])
    if "precision" in job:
        image.convert_precision(getattr(Gimp.Precision, job["precision"]))
    if "profile" in job:  # assigned, as Image > Color Management > Assign: the numbers stay
        image.set_color_profile(getattr(Gimp.ColorProfile, f"new_{job['profile']}")())
    for extra in job.get("extra_layers", []):
        src = _load(extra["input"])
        parent = Gimp.GroupLayer.new(image, "group") if extra.get("group") else None
        if parent is not None:
            image.insert_layer(parent, None, 0)
        layer = Gimp.Layer.new_from_drawable(src.get_layers()[0], image)
        image.insert_layer(layer, parent, 0)
        layer.set_offsets(*extra["offsets"])
        src.delete()
    _prepare(image, job)
    return image


def _run_job(job):
    image = _build(job)
    out = {"name": job["name"]}
    if job.get("native"):
        out["native"] = _native(image, job["args"]["scale"])
    display = Gimp.Display.new(image) if job.get("interactive") or job.get("undo") else None
    before = _geometry(image) if job.get("undo") else None
    if "read" in job:  # the pixels as the plug-in reads them, and what the result must keep
        out["input"] = _dump(image.get_layers()[0], f"{WORK}/{job['name']}-in.raw",  # noqa: F821
                             job["read"])
        out["colour_before"] = _colour(image)
        profile_before = image.get_color_profile()
    results = []
    try:
        for _ in range(job.get("repeat", 1)):  # a script running the filter again
            values = _call(image, job)
            status = values.index(0)
            out["status"] = status.value_nick
            if status != Gimp.PDBStatusType.SUCCESS:
                out["error"] = values.index(1) if values.length() > 1 else None
                return out
            results.append(values.index(1))
        result = results[-1]
        if job.get("undo"):
            out["undo"] = _undo(image, before)
        out.update(width=result.get_width(), height=result.get_height(), layers=[],
                   **_state(result))
        for i, layer in enumerate(reversed(list(_pixel_layers(result.get_layers())))):
            out["layers"].append(_dump(layer, f"{WORK}/{job['name']}-layer{i}.raw",  # noqa: F821
                                       job.get("read")))
        if "read" in job:
            profile = result.get_color_profile()
            out["colour_after"] = _colour(result)
            out["same_profile"] = (profile is None and profile_before is None) or (
                None not in (profile, profile_before) and profile.is_equal(profile_before))
        if job.get("export"):
            Gimp.file_save(Gimp.RunMode.NONINTERACTIVE, result,
                           Gio.File.new_for_path(job["export"]), None)
            out["export"] = job["export"]
        return out
    finally:
        if display is not None:
            display.delete()
        # the dialog's new image has the display the plug-in gave it: left to the GUI's end
        made = [] if job.get("interactive") else [r for r in results if r != image]
        for item in made + [image]:
            item.delete()


with open(f"{WORK}/{JOBS}") as f:  # noqa: F821
    jobs = json.load(f)
done = []
for job in jobs:  # the results so far after each job: the dialog job's run does not end
    done.append(_run_job(job))
    with open(f"{WORK}/{JOBS}.out", "w") as f:  # noqa: F821
        json.dump(done, f, indent=1)
