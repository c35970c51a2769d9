"""Package marker: lets the installed bitnet_aot find these files with importlib.resources."""
