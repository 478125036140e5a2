"""DRCN super-resolution nodes for ComfyUI; they need drcn-plugin installed in ComfyUI's Python."""

try:
    import drcn_plugin  # noqa: F401
except ImportError as e:
    raise ImportError("drcn-plugin is not installed in ComfyUI's Python: run `drcn comfyui install "
                      "--comfyui-dir PATH`, or `pip install -r requirements.txt` in this "
                      "folder") from e

from .drcn_nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
