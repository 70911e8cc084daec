"""Presets: YAML files of settings, bundled (``configs/<name>.yaml``) or the user's own.

A preset is a mapping of sections: ``run``, ``train`` and one per LLM method (read by
:func:`corarec.training.loop.resolve_config`), ``cf`` (read by :func:`corarec.cf.config.make_config`
and the benchmark), ``benchmark``. Each section's keys are the fields of the config dataclass it
sets, a nested config as a sub-mapping (``cora: {generator: {depth: 2}}``).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from corarec.errors import CorarecError


def load_preset(name: str) -> dict[str, Any]:
    """Read a preset: a bundled name ('cpu', 'paper') or a path to a YAML file."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise CorarecError(f"{path}: preset file not found")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise CorarecError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    else:
        bundled = resources.files("corarec") / "configs" / f"{name}.yaml"
        if not bundled.is_file():
            names = sorted(p.name[:-5] for p in (resources.files("corarec") / "configs").iterdir() if p.name.endswith(".yaml"))
            raise CorarecError(f"unknown preset '{name}' (bundled: {', '.join(names)}; or give a .yaml path)")
        text = bundled.read_text()
    try:
        preset = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise CorarecError(f"preset {name}: malformed YAML ({e})") from None
    if not isinstance(preset, dict):
        raise CorarecError(f"preset {name}: expected a mapping of sections (run, train, <method>)")
    return preset
