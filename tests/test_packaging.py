"""The wheel carries the shipped weights, and the package finds them when installed from it."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from drcn_plugin.hub import SHIPPED

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_weights_and_finds_them(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q",
                    "-w", str(tmp_path)], check=True, timeout=300)
    wheel = next(tmp_path.glob("drcn_plugin-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for m in SHIPPED.values():
        assert f"drcn_plugin/weights/{m.filename}" in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    assert "drcn_plugin/training/trainer.py" in names
    assert "drcn_plugin/integrations/gimp_worker.py" in names
    code = ("from drcn_plugin.hub import load_model, weights_dir; m = load_model('drcn-lite'); "
            "from drcn_plugin.integrations import gimp_install, comfyui_install as c; "
            "print(weights_dir(), m.features, gimp_install.plugin_source(), c.nodes_source())")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(site),
                         "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-1500:]
    where, features, plugin, nodes = out.stdout.split()
    assert Path(where) == site / "drcn_plugin" / "weights" and features == "64"
    # The host integrations find their files inside the wheel, not in a source checkout.
    assert Path(plugin) == site / "drcn_plugin" / "gimp" / "drcn-super-resolution"
    assert Path(nodes) == site / "drcn_plugin" / "comfyui_nodes"
