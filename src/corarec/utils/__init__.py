"""Utilities under every stage: atomic files, typed settings, devices, output directories, bundled assets."""
