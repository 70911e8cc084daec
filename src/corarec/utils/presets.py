"""Presets: YAML files of settings, bundled (``configs/<name>.yaml``) or the user's own.

A preset is a mapping of sections: ``run``, ``train`` and one per LLM method (read by
:func:`corarec.training.loop.resolve_config`), ``cf`` (read by :func:`corarec.cf.config.make_config`
and the benchmark), ``benchmark``. Each section's keys are the fields of the config dataclass it
sets, a nested config as a sub-mapping (``cora: {generator: {depth: 2}}``).

A preset may start from another with ``extends: <preset>`` (a bundled name or a YAML path, relative
to the extending file): the other preset's sections are read first and this file's values replace
theirs key by key, nested mappings merged (``cpu-full`` is ``cpu`` with the whole train split).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from corarec.errors import CorarecError


def load_preset(name: str, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """Read a preset: a bundled name ('cpu', 'cpu-full', 'demo', 'paper') or a path to a YAML file; ``extends`` resolved."""
    preset = _read_preset(name)
    parent = preset.pop("extends", None)
    if parent is None:
        return preset
    if not isinstance(parent, str) or not parent.strip():
        raise CorarecError(f"preset {name}: 'extends' must name a preset (a bundled name or a .yaml path), got {parent!r}")
    if Path(parent).suffix in (".yaml", ".yml") and not Path(parent).is_absolute() and Path(name).suffix in (".yaml", ".yml"):
        parent = str(Path(name).parent / parent)
    if _identity(parent) in {_identity(seen) for seen in (*_seen, name)}:
        raise CorarecError(f"preset {name}: 'extends' loops back to {parent}")
    return merge_sections(load_preset(parent, (*_seen, name)), preset)


def bundled_presets() -> list[str]:
    """The bundled presets' names, sorted (the ``configs/<name>.yaml`` files shipped with the package)."""
    return sorted(p.name[:-5] for p in (resources.files("corarec") / "configs").iterdir() if p.name.endswith(".yaml"))


def _identity(name: str) -> str:
    """What makes two preset names the same preset: a YAML path's resolved location, else the bundled name."""
    return str(Path(name).resolve()) if Path(name).suffix in (".yaml", ".yml") else name


def merge_sections(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``override``'s values: key by key, nested mappings merged, anything else replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_sections(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_preset(name: str) -> dict[str, Any]:
    """One preset file's mapping, ``extends`` not yet resolved."""
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
            bundled_names = ", ".join(bundled_presets())
            raise CorarecError(f"unknown preset '{name}' (bundled: {bundled_names}; or give a .yaml path)")
        text = bundled.read_text()
    try:
        preset = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise CorarecError(f"preset {name}: malformed YAML ({e})") from None
    if not isinstance(preset, dict):
        raise CorarecError(f"preset {name}: expected a mapping of sections (run, train, <method>)")
    return preset
