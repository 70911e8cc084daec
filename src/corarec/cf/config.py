"""Configuration of a CF model and its training: :class:`CFConfig`, the per-model defaults and grids.

A CF model's settings resolve as: :class:`CFConfig`'s defaults (the paper's: 256-wide embeddings)
< the per-model defaults bundled in ``configs/cf/defaults.yaml`` (chosen on the ML-100K *valid*
split to train in about a minute on two CPU cores; SASRec 32 wide) < a preset's ``cf`` section
< explicit settings (``corarec train-cf --lr ...``). The YAML file and a preset's ``cf`` section have
one shape: settings for every model, then one sub-section per model, and ``tune``: the lists of
values that ``--grid`` (and ``corarec benchmark``) search over lr × weight decay × dim.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any

import yaml

from corarec.errors import CorarecError
from corarec.utils.presets import load_preset
from corarec.utils.settings import SEED_MAX, Settings, SettingError, config_from_dict, mapping, setting

CF_MODELS = ("mf", "lightgcn", "sasrec")
DEFAULTS = "configs/cf/defaults.yaml"
"""The per-model defaults and grids, inside the corarec package."""


@dataclass
class CFConfig(Settings):
    """Everything needed to rebuild and retrain a CF model (saved in the run's ``config.json``);
    every field is checked by its type and the rule beside it (:mod:`corarec.utils.settings`)."""

    model: str = setting("mf", choices=CF_MODELS, doc="Which model: ``mf``, ``lightgcn`` or ``sasrec``.")
    dim: int = setting(256, at_least=1, doc="Embedding size of users and items (paper: 256).")
    lr: float = setting(1e-3, above=0, doc="Adam learning rate.")
    weight_decay: float = setting(0.0, at_least=0, doc="Adam weight decay (L2 on all parameters, applied every step).")
    epochs: int = setting(30, at_least=1, doc="Maximum number of passes over the train rows.")
    batch_size: int = setting(1024, at_least=1, doc="Train rows per Adam step.")
    patience: int = setting(3, at_least=0, doc="""
        Stop after this many epochs without a better valid AUC; the best epoch's weights are kept.""")
    seed: int = setting(0, at_least=0, at_most=SEED_MAX, doc="Seed of parameter initialisation, shuffling and dropout.")
    bias: bool = setting(True, doc="""
        MF/LightGCN: add user, item and global biases to the dot product (off = the paper's plain form).""")
    num_layers: int = setting(2, at_least=0, doc="LightGCN: propagation layers; SASRec: self-attention blocks.")
    heads: int = setting(1, at_least=1, doc="SASRec: attention heads (must divide ``dim``).")
    dropout: float = setting(0.2, at_least=0, below=1, doc="""
        SASRec: dropout on embeddings, attention and feed-forward outputs.""")
    max_len: int = setting(25, at_least=1, doc="""
        Most recent history items read by SASRec and by the fold-in of new users.""")
    fold_in: str = setting("learned", choices=("learned", "mean"), doc="""
        MF/LightGCN: how a user unseen in train is embedded from its history: ``learned`` or ``mean``
        (see :mod:`corarec.cf.fold_in`).""")
    log_dir: str | None = setting(None, pattern=r".*\S.*", expected="a directory", doc="""
        Write TensorBoard event files here: loss and gradient norm every step, learning rate, rows/s,
        validation AUC and UAUC every epoch (needs the tensorboard package; with ``--grid`` one
        sub-directory per candidate).""")

    def __post_init__(self) -> None:
        super().__post_init__()  # every field's type and range
        if self.dim % self.heads:
            raise SettingError(f"dim {self.dim} is not divisible by heads {self.heads}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "config") -> "CFConfig":
        """Rebuild from a mapping (``config.json``); unknown keys and bad values name ``where``."""
        return config_from_dict(cls, data, where)


SECTION_SETTINGS = tuple(f.name for f in dataclasses.fields(CFConfig) if f.name not in ("model", "seed"))
"""What a ``cf`` section may set: every :class:`CFConfig` field but the model (the sub-section's
name) and the seed (``--seed``, the benchmark's ``--seeds``)."""
GRID_KEYS = ("lr", "weight_decay", "dim")
"""The settings a grid may search."""


def make_config(model: str, preset: str | None = None, where: str = "CF settings", **settings: Any) -> CFConfig:
    """The :class:`CFConfig` of ``model``: its defaults < the bundled per-model defaults < ``preset``'s
    ``cf`` section < ``settings`` (fields by name; None values are ignored). ``where`` names the
    settings in errors."""
    if model not in CF_MODELS:
        raise CorarecError(f"unknown CF model '{model}'; choose one of {', '.join(CF_MODELS)}")
    values = section_settings(model_defaults(), model, DEFAULTS)
    if preset:
        values.update(section_settings(load_preset(preset).get("cf"), model, f"preset {preset} cf"))
    given = {k: v for k, v in settings.items() if v is not None}
    _check_names(given, where, extra=("seed",))
    return config_from_dict(CFConfig, {"model": model, **values, **given}, where)


def section_settings(section: Any, model: str, where: str) -> dict[str, Any]:
    """The settings a ``cf`` section gives ``model``: its shared keys, then the model's own sub-section
    (``tune``, the grid, left out); a name that is no setting is an error naming ``where``."""
    section = mapping(section, where, "cf")
    own = mapping(section.get(model), where, f"cf.{model}")
    shared = {k: v for k, v in section.items() if k not in CF_MODELS}
    values = {k: v for k, v in {**shared, **own}.items() if k != "tune"}
    _check_names(values, where)
    return values


def grid_space(model: str, sections: dict | None = None, where: str = "preset") -> dict[str, list]:
    """The grid ``model`` is searched over: the bundled ``tune`` lists (shared, then the model's own),
    each key replaced by those of the preset ``sections``' ``cf: {tune: ...}`` and ``cf: {<model>: {tune: ...}}``."""
    space: dict[str, list] = {}
    for section, name in ((model_defaults(), DEFAULTS), ((sections or {}).get("cf"), where)):
        section = mapping(section, name, "cf")
        own = mapping(section.get(model), name, f"cf.{model}")
        for place, value in (("cf.tune", section.get("tune") or {}), (f"cf.{model}.tune", own.get("tune") or {})):
            if not isinstance(value, dict) or set(value) - set(GRID_KEYS):
                raise CorarecError(f"{name} {place}: expected a mapping of {', '.join(GRID_KEYS)} to lists of values, "
                                   f"got {value!r}")
            space.update({key: list(values) for key, values in value.items()})
    return space


def grid_candidates(base: CFConfig, space: dict[str, list]) -> list[CFConfig]:
    """``base`` with every combination of the values in ``space`` (keys of :data:`GRID_KEYS`; a key
    left out keeps ``base``'s value), in a fixed order: lr, then weight decay, then dim."""
    unknown = sorted(set(space) - set(GRID_KEYS))
    if unknown:
        raise CorarecError(f"CF grid: unknown setting(s) {', '.join(unknown)}; a grid searches {', '.join(GRID_KEYS)}")
    keys = [key for key in GRID_KEYS if key in space]
    for key in keys:
        if not isinstance(space[key], (list, tuple)) or not space[key]:
            raise CorarecError(f"CF grid: {key} must be a non-empty list of values, got {space[key]!r}")
    return [CFConfig(**{**base.to_dict(), **dict(zip(keys, values))})
            for values in itertools.product(*(space[key] for key in keys))]


@functools.lru_cache(maxsize=1)
def _bundled_defaults() -> str:
    return (resources.files("corarec") / DEFAULTS).read_text(encoding="utf-8")


def model_defaults() -> dict[str, Any]:
    """The bundled per-model defaults and grids (``configs/cf/defaults.yaml``), a fresh copy."""
    return yaml.safe_load(_bundled_defaults()) or {}


def _check_names(values: dict[str, Any], where: str, extra: tuple[str, ...] = ()) -> None:
    allowed = (*SECTION_SETTINGS, *extra)
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise CorarecError(f"{where}: unknown setting(s) {', '.join(map(str, unknown))}; known: {', '.join(allowed)}")
