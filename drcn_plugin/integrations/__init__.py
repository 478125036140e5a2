"""Host applications: the GIMP plug-in's worker and installer, the ComfyUI nodes' installer."""
