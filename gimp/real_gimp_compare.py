"""Host half of check_real_gimp.sh: make the test images and jobs, then check GIMP's results.

``make ROOT WORK``: small crops of Set5 (8-bit RGB, RGBA, 16-bit grey) and the jobs files in
``ROOT/WORK`` (ROOT is the chroot, WORK the folder as GIMP sees it).
``check ROOT WORK``: compare what GIMP wrote with ``drcn upscale`` (exported PNGs) or the engine
(raw float and multi-layer dumps): sizes, offsets and max difference (must be <= 1 LSB). Linear
and Adobe RGB images are compared with the engine on the pixels as the plug-in reads them (sRGB
encoded float), in the image's own encoding, and must keep their precision and profile.
``undo ROOT WORK``: one Ctrl+Z after Scale this image gave the image back as it was.
``dialog ROOT WORK``: OK in the dialog ran the filter with its default values.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from drcn_plugin.engine import Upscaler
from drcn_plugin.imagefile import read_image

sys.path.insert(0, str(Path(__file__).resolve().parent / "drcn-super-resolution"))
from drcn_worker_client import scaled_span  # noqa: E402 (the plug-in's folder, put on the path)

SET5 = Path("/work/shared/data/Set5")
RAW = {"u8": np.uint8, "u16": np.uint16, "float": np.float32}


def make(root: Path, work: str) -> None:
    """Write the inputs and the jobs files."""
    host = root / work.lstrip("/")
    host.mkdir(parents=True, exist_ok=True)
    rgb = Image.open(SET5 / "butterfly.png").convert("RGB").crop((100, 100, 164, 148))
    rgb.save(host / "rgb.png")
    bird = np.asarray(Image.open(SET5 / "bird.png").convert("RGB").crop((120, 90, 168, 130)))
    ramp = np.linspace(64, 255, bird.shape[1])[None, :] - 40 * np.hypot(
        *np.mgrid[-1:1:bird.shape[0] * 1j, -1:1:bird.shape[1] * 1j]) ** 2
    alpha = np.clip(ramp, 64, 255).astype(np.uint8)
    Image.fromarray(np.dstack([bird, alpha]), "RGBA").save(host / "rgba.png")
    head = np.asarray(Image.open(SET5 / "head.png").convert("L").crop((100, 100, 156, 144)))
    fine = np.random.default_rng(0).integers(0, 257, head.shape)
    grey16 = np.clip(head.astype(np.int64) * 257 + fine - 128, 0, 65535).astype(np.uint16)
    Image.fromarray(grey16).save(host / "grey16.png")
    Image.new("RGB", (1, 1), (200, 30, 60)).save(host / "one.png")
    Image.fromarray(np.dstack([head[:40, :48], alpha[:40, :48]]), "LA").save(host / "greya.png")
    png = {"rgb": f"{work}/rgb.png", "rgba": f"{work}/rgba.png", "grey16": f"{work}/grey16.png"}
    jobs = [
        {"name": "rgb8", "input": png["rgb"], "args": {"scale": 2.0},
         "export": f"{work}/out-rgb8.png", "cli": ["-s", "2"]},
        {"name": "rgba8", "input": png["rgba"], "args": {"scale": 3.0, "tile": 32},
         "export": f"{work}/out-rgba8.png", "cli": ["-s", "3", "--tile", "32"]},
        {"name": "grey16", "input": png["grey16"], "args": {"scale": 2.0},
         "export": f"{work}/out-grey16.png", "cli": ["-s", "2"]},
        {"name": "float-tta", "input": png["rgb"], "precision": "FLOAT_NON_LINEAR",
         "args": {"scale": 2.5, "self-ensemble": True}, "engine": {"scale": 2.5, "tta": True}},
        {"name": "scale-image", "input": png["rgb"],
         "extra_layers": [{"input": png["rgba"], "offsets": [5, 7], "group": True}],
         "args": {"scale": 2.0, "output": "scale-image"}, "engine": {"scale": 2.0}},
        {"name": "exact-width", "input": png["rgb"], "args": {"width": 150},
         "export": f"{work}/out-exact-width.png", "cli": ["--width", "150"]},
        {"name": "scale-image-wxh", "input": png["rgb"],
         "extra_layers": [{"input": png["rgba"], "offsets": [5, 7], "group": True}],
         "args": {"width": 150, "height": 100, "output": "scale-image"},
         "engine": {"canvas": [150, 100]}},
        {"name": "bad-model", "input": png["rgb"], "args": {"custom-model": "no-such-model"},
         "expect_error": "unknown model 'no-such-model'"},
    ]
    # linear light and another colour space: read as the plug-in reads them, kept as they were
    rgb_read, rgba_read = "R'G'B' float", "R'G'B'A float"
    jobs += [
        {"name": "linear-float-new", "input": png["rgb"], "precision": "FLOAT_LINEAR",
         "args": {"scale": 2.0}, "read": rgb_read, "storage": ["linear", 0]},
        {"name": "linear-float-scale", "input": png["rgba"], "precision": "FLOAT_LINEAR",
         "args": {"scale": 2.0, "output": "scale-image"}, "read": rgba_read,
         "storage": ["linear", 0]},
        {"name": "linear16-new", "input": png["rgb"], "precision": "U16_LINEAR",
         "args": {"scale": 2.0}, "read": rgb_read, "storage": ["linear", 65535]},
        {"name": "linear16-scale", "input": png["rgb"], "precision": "U16_LINEAR",
         "args": {"scale": 3.0, "output": "scale-image"}, "read": rgb_read,
         "storage": ["linear", 65535]},
        {"name": "adobe8-new", "input": png["rgb"], "profile": "rgb_adobe", "args": {"scale": 2.0},
         "read": rgb_read, "storage": ["adobe", 255]},
        {"name": "adobe8-scale", "input": png["rgba"], "profile": "rgb_adobe",
         "args": {"scale": 2.0, "output": "scale-image"}, "read": rgba_read,
         "storage": ["adobe", 255]},
        {"name": "linear-profile8-new", "input": png["rgb"], "profile": "rgb_srgb_linear",
         "args": {"scale": 2.0}, "read": rgb_read, "storage": ["linear", 255]},
    ]
    hostile = [  # what a GIMP user's image holds besides one plain layer, and scripts' habits
        {"name": "selection-new", "input": png["rgb"], "select": [10, 10, 20, 20],
         "args": {"scale": 2.0}, "export": f"{work}/out-selection-new.png", "cli": ["-s", "2"]},
        {"name": "selection-scale", "input": png["rgb"], "select": [10, 10, 20, 20],
         "args": {"scale": 2.0, "output": "scale-image"}, "engine": {"scale": 2.0},
         "native": True},
        {"name": "indexed", "input": png["rgb"], "indexed": True, "args": {"scale": 2.0},
         "expect_error": "indexed image"},
        {"name": "mask-new", "input": png["rgba"], "mask": "ALPHA", "args": {"scale": 2.0},
         "engine": {"scale": 2.0}},
        {"name": "mask-scale", "input": png["rgba"], "mask": "ALPHA",
         "args": {"scale": 2.0, "output": "scale-image"}, "engine": {"scale": 2.0}},
        {"name": "text-new", "input": png["rgb"], "text": "DRCN", "args": {"scale": 2.0},
         "expect_size": None},
        {"name": "text-scale", "input": png["rgb"], "text": "DRCN", "native": True,
         "args": {"scale": 2.0, "output": "scale-image"}, "expect_size": [128, 96]},
        {"name": "past-16x", "input": png["rgb"], "args": {"width": 524287},
         "expect_error": "more than 16x"},
        {"name": "too-big-for-memory", "input": f"{work}/huge.png", "args": {"scale": 16.0},
         "expect_error": "GiB of memory"},
        {"name": "paste-new", "input": png["rgb"], "paste": True, "args": {"scale": 2.0},
         "export": f"{work}/out-paste-new.png", "cli": ["-s", "2"]},
        {"name": "paste-scale", "input": png["rgb"], "paste": True,
         "args": {"scale": 2.0, "output": "scale-image"}, "engine": {"scale": 2.0}},
        {"name": "group-new", "input": png["rgb"], "args": {"scale": 2.0}, "expect_size": [96, 80],
         "extra_layers": [{"input": png["rgba"], "offsets": [5, 7], "group": True}]},
        {"name": "one-pixel", "input": f"{work}/one.png", "args": {"scale": 3.0},
         "export": f"{work}/out-one-pixel.png", "cli": ["-s", "3"]},
        {"name": "grey-alpha", "input": f"{work}/greya.png", "args": {"scale": 2.0},
         "export": f"{work}/out-grey-alpha.png", "cli": ["-s", "2"]},
        {"name": "locked-scale", "input": png["rgba"], "lock": ["content", "position", "alpha"],
         "args": {"scale": 2.0, "output": "scale-image"}, "engine": {"scale": 2.0}},
        {"name": "off-canvas", "input": png["rgb"], "args": {"scale": 2.5, "output": "scale-image"},
         "extra_layers": [{"input": png["rgba"], "offsets": [-10, -6]}], "engine": {"scale": 2.5}},
        {"name": "twice-new", "input": png["rgb"], "repeat": 2, "args": {"scale": 2.0},
         "export": f"{work}/out-twice-new.png", "cli": ["-s", "2"]},
        {"name": "twice-scale", "input": png["rgb"], "repeat": 2,
         "args": {"scale": 2.0, "output": "scale-image"}, "engine": {"scale": 2.0, "repeat": 2}},
    ]
    broken = {"name": "no-drcn-in-python", "input": png["rgb"], "args": {"scale": 2.0},
              "expect_error": "No module named 'drcn_plugin'"}
    missing = {"name": "missing-python", "input": png["rgb"], "args": {"scale": 2.0},
               "expect_error": "does not exist"}
    Image.open(SET5 / "butterfly.png").convert("RGB").save(host / "big.png")
    Image.new("RGB", (8000, 6000), (90, 120, 150)).save(host / "huge.png")  # 16x: ~150 GiB
    slow = {"name": "cancel", "input": f"{work}/big.png",
            "args": {"scale": 4.0, "tile": 16, "model": "drcn"}}
    gui_undo = {"name": "undo", "input": png["rgb"], "undo": True, "select": [10, 10, 20, 20],
                "text": "DRCN", "args": {"scale": 2.0, "output": "scale-image"},
                "extra_layers": [{"input": png["rgba"], "offsets": [5, 7], "group": True}]}
    dialog = {"name": "dialog", "input": png["rgb"], "args": {}, "interactive": True,
              "export": f"{work}/out-dialog.png", "cli": ["-s", "2"]}  # the defaults
    for name, content in (("jobs.json", jobs), ("jobs-hostile.json", hostile),
                          ("jobs-broken.json", [broken]), ("jobs-missing.json", [missing]),
                          ("jobs-cancel.json", [slow]), ("jobs-dialog.json", [gui_undo, dialog])):
        (host / name).write_text(json.dumps(content, indent=1))


def _sources(job: dict) -> list[tuple[str, list[int]]]:
    """(input, offsets) of each pixel layer of a job's image, bottom first (as dumped)."""
    layers = [(job["input"], [0, 0])] * (2 if job.get("paste") else 1)  # pasted on top
    return layers + [(e["input"], e["offsets"]) for e in job.get("extra_layers", [])]


def _layers_in(job: dict, host) -> list[np.ndarray]:
    paths = [path for path, _ in _sources(job)]
    arrays = [read_image(host(p))[0] for p in paths]
    return [a.astype(np.float32) / 255 for a in arrays] if "precision" in job else arrays


def _raw(layer: dict, host) -> np.ndarray:
    """A dumped layer's pixels as H x W x C."""
    got = np.fromfile(host(layer["raw"]), RAW[layer["format"].split()[-1]])
    return got.reshape(layer["height"], layer["width"], -1)


def _srgb_to_linear(v: np.ndarray) -> np.ndarray:
    """sRGB's curve as babl has it: its straight part goes on below 0 (colours outside sRGB)."""
    return np.where(v <= 0.04045, v / 12.92, ((np.maximum(v, 0.04045) + 0.055) / 1.055) ** 2.4)


# linear sRGB -> linear Adobe RGB (1998) through XYZ D50, as babl converts with ICC colorants:
# inv(Adobe RGB's RGB->XYZ) @ babl's sRGB RGB->XYZ
_SRGB_XYZ = np.array([[0.436065674, 0.385147095, 0.143066406],
                      [0.222488403, 0.716873169, 0.060607910],
                      [0.013916016, 0.097076416, 0.714096069]])
_ADOBE_XYZ = np.array([[0.6097559, 0.2052401, 0.1492240], [0.3111242, 0.6256560, 0.0632197],
                       [0.0194811, 0.0608902, 0.7448387]])
_SRGB_TO_ADOBE = np.linalg.solve(_ADOBE_XYZ, _SRGB_XYZ)


def _stored(pixels: np.ndarray, curve: str, levels: int) -> np.ndarray:
    """sRGB-encoded pixels (as the plug-in reads them) in an image's own encoding: linear light,
    or Adobe RGB's primaries and 563/256 gamma, clipped to 0..1 when stored as integers (as
    GIMP clips the engine's overshoot there); alpha as it is."""
    lin = _srgb_to_linear(pixels[..., :3].astype(np.float64))
    if curve == "adobe":
        lin = lin @ _SRGB_TO_ADOBE.T
        lin = np.sign(lin) * np.abs(lin) ** (256 / 563)
    out = np.concatenate([lin, pixels[..., 3:]], axis=-1)
    return np.clip(out, 0, 1) if levels else out


def _model_error(src: np.ndarray, curve: str, levels: int) -> float:
    """How far this colour model misses GIMP's own conversion, in steps of the stored values:
    the input's stored values are whole levels (0 for float storage)."""
    if not levels:
        return 0.0
    stored = _stored(src, curve, levels)[..., :3] * levels
    return float(np.abs(stored - np.round(stored)).max())


def _check_colour(job: dict, result: dict, host) -> list[str]:
    """A linear or non-sRGB job: the result equals the engine on the pixels as the plug-in read
    them, in the image's own encoding (within 1 step of its storage, 1/255 for float, plus the
    colour model's own error), and the result keeps the image's precision and profile; prints
    one line."""
    name, (curve, levels) = job["name"], job["storage"]
    src = _raw(result["input"], host)
    got = _raw(result["layers"][0], host)
    scale = job["args"]["scale"]
    size = tuple(scaled_span(0, n, scale)[1] for n in src.shape[:2])
    ref = Upscaler().upscale(src, size=size)
    problems = []
    if got.shape != ref.shape:
        problems.append(f"{name}: GIMP {got.shape}, engine {ref.shape}")
        ref = got
    read_diff = float(np.abs(got.astype(np.float64) - ref).max()) * 255
    unit = levels or 255
    diff = float(np.abs(_stored(got, curve, levels) - _stored(ref, curve, levels)).max()) * unit
    model = _model_error(src, curve, levels)
    before, after = result["colour_before"], result["colour_after"]
    if diff > 1 + model:
        problems.append(f"{name}: max diff {diff:.3g} steps of the stored values")
    if before != after or not result["same_profile"]:
        problems.append(f"{name}: {before} became {after}")
    print(f"{name:18s} {got.shape[1]}x{got.shape[0]}x{got.shape[2]} {after['precision']}, "
          f"profile {after['profile']!r} (before: {before['precision']}, "
          f"{before['profile']!r}); max diff vs engine {diff:.3g} "
          f"{'8-bit LSB' if not levels else f'1/{levels}'} {curve} (model error {model:.2g}), "
          f"{read_diff:.3g} 8-bit LSB as read{'  PASS' if not problems else '  FAIL'}")
    return problems


def _factors(job: dict, canvas: np.ndarray) -> tuple[float, float]:
    """(horizontal, vertical) factor of a job: its scale, or its canvas size over the input's."""
    if "canvas" in job["engine"]:
        width, height = job["engine"]["canvas"]
        return width / canvas.shape[1], height / canvas.shape[0]
    return job["engine"]["scale"], job["engine"]["scale"]


def _native_problems(job: dict, result: dict) -> list[str]:
    """Where the result's selection or text layers differ from GIMP's own Scale Image's."""
    if not job.get("native"):
        return []
    problems = [f"{job['name']}: {key} {result[key]}, GIMP's Scale Image gives {value}"
                for key, value in result["native"].items() if result[key] != value]
    if "select" in job and result["selection"] is None:
        problems.append(f"{job['name']}: the selection was lost")
    return problems


def _check_job(job: dict, result: dict, host, drcn: Path) -> list[str]:
    """Problems found with one job's result (empty when it passed); prints one line."""
    name = job["name"]
    if "expect_error" in job:
        error = result.get("error") or ""
        ok = result["status"] != "success" and job["expect_error"] in error
        print(f"{name:18s} GIMP error message: {error!r}  {'PASS' if ok else 'FAIL'}")
        return [] if ok else [f"{name}: expected an error with {job['expect_error']!r}"]
    if result["status"] != "success":
        print(f"{name:18s} FAILED in GIMP: {result.get('error')}  FAIL")
        return [f"{name}: {result.get('error')}"]
    if "read" in job:
        return _check_colour(job, result, host)
    native = _native_problems(job, result)
    if "expect_size" in job:  # no reference for a text layer's pixels: its size and fate
        size = [result["width"], result["height"]]
        ok = job["expect_size"] in (None, size) and not native
        print(f"{name:18s} image {size[0]}x{size[1]}, text layers after: "
              f"{result['text_layers']}  {'PASS' if ok else 'FAIL'}")
        return native + ([] if job["expect_size"] in (None, size) else
                         [f"{name}: image {size}, expected {job['expect_size']}"])
    problems, lines = [], []
    offsets_in = [offsets for _, offsets in _sources(job)]
    if "export" in job:
        ref_dir = host(job["export"]).parent / f"ref-{name}"
        subprocess.run([str(drcn), "upscale", str(host(job["input"])), "-o", str(ref_dir),
                        "--overwrite", *job["cli"]], check=True, capture_output=True)
        got, ref = (np.atleast_3d(read_image(p)[0])
                    for p in (host(job["export"]), ref_dir / Path(job["input"]).name))
        pairs = [(got, ref, "drcn upscale", None)]
    else:
        upscaler = Upscaler(tta=job["engine"].get("tta", False))
        pairs = []
        layers = _layers_in(job, host)
        factors = _factors(job, layers[0])
        if len(result["layers"]) != len(layers):
            problems.append(f"{name}: {len(result['layers'])} layers, expected {len(layers)}")
        for arr, layer, (x, y) in zip(layers, result["layers"], offsets_in, strict=False):
            got, ref = _raw(layer, host), arr
            for _ in range(job["engine"].get("repeat", 1)):  # the filter run again on its result
                (y, h), (x, w) = (scaled_span(y, ref.shape[0], factors[1]),
                                  scaled_span(x, ref.shape[1], factors[0]))
                ref = upscaler.upscale(ref, size=(h, w))
            pairs.append((got, np.atleast_3d(ref), "engine", layer["offsets"]))
    factors = _factors(job, _layers_in(job, host)[0]) if "engine" in job else (1, 1)
    for (got, ref, against, offsets), origin in zip(pairs, offsets_in, strict=False):
        unit = 1 / 255 if got.dtype == np.float32 else 1
        diff = float(np.abs(got.astype(np.float64) - ref.astype(np.float64)).max()) / unit
        expected_offsets = [scaled_span(v, 1, f)[0] for v, f in zip(origin, factors, strict=True)]
        ok = got.shape == ref.shape and diff <= 1 and offsets in (None, expected_offsets)
        where = "" if offsets is None else f" at {offsets} (expected {expected_offsets})"
        lines.append(f"{ref.shape[1]}x{ref.shape[0]}x{ref.shape[2]} {got.dtype}{where}: "
                     f"GIMP {got.shape[1]}x{got.shape[0]}, max diff {diff:g} LSB vs {against}"
                     f"{'' if got.dtype != np.float32 else ' (8-bit LSB)'}")
        if not ok:
            problems.append(f"{name}: {lines[-1]}")
    if job.get("mask"):  # the layer keeps a mask of its own new size
        layer = result["layers"][0]
        lines.append(f"mask {layer['mask']}")
        if layer["mask"] != [layer["width"], layer["height"]]:
            problems.append(f"{name}: mask {layer['mask']}, layer {layer['width']}x"
                            f"{layer['height']}")
    if "lock" in job:  # the locks lifted for the writes are set again
        locks = result["layers"][-1]["locks"]
        lines.append(f"locks {locks}")
        if locks != job["lock"]:
            problems.append(f"{name}: locks {locks}, expected {job['lock']}")
    if "select" in job:
        lines.append(f"selection {result['selection']}")
    problems += native
    print(f"{name:18s} image {result['width']}x{result['height']}; " + "; ".join(lines)
          + ("  PASS" if not problems else "  FAIL"))
    return problems


DRCN = Path(sys.executable).parent / "drcn"


def check(root: Path, work: str) -> int:
    """Compare every jobs file's results; returns the number of failed jobs."""
    def host(path) -> Path:
        return root / str(path).lstrip("/")

    problems = []
    for name in ("jobs.json", "jobs-hostile.json", "jobs-broken.json", "jobs-missing.json"):
        jobs = json.loads(host(f"{work}/{name}").read_text())
        out = host(f"{work}/{name}.out")
        if not out.is_file():
            print(f"{name}: GIMP wrote no results  FAIL")
            problems.append(name)
            continue
        for job, result in zip(jobs, json.loads(out.read_text()), strict=True):
            problems += _check_job(job, result, host, DRCN)
    print(f"{len(problems)} problem(s)" + "".join(f"\n  {p}" for p in problems))
    return len(problems)


def dialog(root: Path, work: str) -> int:
    """Check the run the dialog's OK started (its default values) against ``drcn upscale``;
    1 when it failed or made no result."""
    folder = root / work.lstrip("/")
    out = folder / "jobs-dialog.json.out"
    results = json.loads(out.read_text()) if out.is_file() else []
    if len(results) < 2:
        print("dialog: OK made no result  FAIL")
        return 1
    job = json.loads((folder / "jobs-dialog.json").read_text())[1]
    return 1 if _check_job(job, results[1], lambda path: root / str(path).lstrip("/"), DRCN) \
        else 0


def undo(root: Path, work: str) -> int:
    """Check that one Ctrl+Z after Scale this image gives back the image as it was (size,
    layers' sizes and offsets, selection, text layers); 1 when it does not."""
    out = root / work.lstrip("/") / "jobs-dialog.json.out"
    result = json.loads(out.read_text())[0] if out.is_file() else {}
    states = result.get("undo")
    if states is None:
        print(f"undo: no result ({result.get('error', 'GIMP wrote none')})  FAIL")
        return 1
    ok = states["undone"] == states["before"] != states["after"]
    print(f"undo: image {states['before']['size']} -> {states['after']['size']} -> "
          f"{states['undone']['size']} after one Ctrl+Z; layers, selection and text layers "
          f"{'as before' if ok else 'differ: ' + json.dumps(states)}  {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    command, root_arg, work_arg = sys.argv[1:4]
    if command == "make":
        make(Path(root_arg), work_arg)
    else:
        commands = {"check": check, "dialog": dialog, "undo": undo}
        sys.exit(1 if commands[command](Path(root_arg), work_arg) else 0)
