"""DRCN super-resolution nodes for ComfyUI; they need drcn-plugin installed in ComfyUI's Python."""

try:
    import drcn_plugin  # noqa: F401
except ImportError as e:
    raise ImportError("drcn-plugin is not installed in ComfyUI's Python: run `drcn comfyui install "
                      "--comfyui-dir PATH`, or `pip install -r requirements.txt` in this "
                      "folder") from e

from . import drcn_nodes, upscale_model

NODE_CLASS_MAPPINGS = {**drcn_nodes.NODE_CLASS_MAPPINGS, **upscale_model.NODE_CLASS_MAPPINGS}
NODE_DISPLAY_NAME_MAPPINGS = {**drcn_nodes.NODE_DISPLAY_NAME_MAPPINGS,
                              **upscale_model.NODE_DISPLAY_NAME_MAPPINGS}
WEB_DIRECTORY = "./web"  # web/docs/<node>.md: the help page ComfyUI shows for each node

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
