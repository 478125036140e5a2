"""Part of check_real_gimp.sh that runs inside GIMP (python-fu-eval batch interpreter).

The batch command defines ``WORK`` (the check's folder) and ``JOBS`` (a jobs file in it) and
exec()s this file. Each job loads images, calls the DRCN procedure the way a script would, then
exports PNGs and dumps raw layer pixels for real_gimp_compare.py; results go to ``<JOBS>.out``.
"""

import json

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, Gio  # noqa: E402

PROC = "plug-in-drcn-super-resolution"


def _load(path):
    return Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(path))


def _dump(layer, path):
    """Raw pixels of a layer in its own precision class; returns its geometry."""
    precision = layer.get_image().get_precision().value_nick.split("-")[0]
    kind = precision if precision in ("u8", "u16") else "float"
    babl = ("Y'" if layer.is_gray() else "R'G'B'") + ("A" if layer.has_alpha() else "") + " " + kind
    w, h = layer.get_width(), layer.get_height()
    data = layer.get_buffer().get(Gegl.Rectangle.new(0, 0, w, h), 1.0, babl, Gegl.AbyssPolicy.CLAMP)
    with open(path, "wb") as f:
        f.write(data)
    _, x, y = layer.get_offsets()
    return {"raw": path, "format": babl, "width": w, "height": h, "offsets": [x, y]}


def _pixel_layers(items):
    for item in items:
        if item.is_group():
            yield from _pixel_layers(item.get_children())
        else:
            yield item


def _run_job(job):
    image = _load(job["input"])
    if job.get("float"):
        image.convert_precision(Gimp.Precision.FLOAT_NON_LINEAR)
    for extra in job.get("extra_layers", []):
        src = _load(extra["input"])
        parent = Gimp.GroupLayer.new(image, "group") if extra.get("group") else None
        if parent is not None:
            image.insert_layer(parent, None, 0)
        layer = Gimp.Layer.new_from_drawable(src.get_layers()[0], image)
        image.insert_layer(layer, parent, 0)
        layer.set_offsets(*extra["offsets"])
        src.delete()
    proc = Gimp.get_pdb().lookup_procedure(PROC)
    cfg = proc.create_config()
    if job.get("interactive"):
        Gimp.Display.new(image)
    cfg.set_property("run-mode", Gimp.RunMode.INTERACTIVE if job.get("interactive")
                     else Gimp.RunMode.NONINTERACTIVE)
    cfg.set_property("image", image)
    cfg.set_core_object_array("drawables", image.get_layers()[:1])
    for key, value in job["args"].items():
        cfg.set_property(key, value)
    values = proc.run(cfg)
    status = values.index(0)
    out = {"name": job["name"], "status": status.value_nick}
    if status != Gimp.PDBStatusType.SUCCESS:
        out["error"] = values.index(1) if values.length() > 1 else None
        return out
    result = values.index(1)
    out.update(width=result.get_width(), height=result.get_height(), layers=[])
    for i, layer in enumerate(reversed(list(_pixel_layers(result.get_layers())))):
        out["layers"].append(_dump(layer, f"{WORK}/{job['name']}-layer{i}.raw"))  # noqa: F821
    if job.get("export"):
        Gimp.file_save(Gimp.RunMode.NONINTERACTIVE, result, Gio.File.new_for_path(job["export"]),
                       None)
        out["export"] = job["export"]
    if result != image:
        result.delete()
    image.delete()
    return out


with open(f"{WORK}/{JOBS}") as f:  # noqa: F821
    jobs = json.load(f)
with open(f"{WORK}/{JOBS}.out", "w") as f:  # noqa: F821
    json.dump([_run_job(job) for job in jobs], f, indent=1)
