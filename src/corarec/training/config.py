"""Run configuration: the training loop's settings, presets and how they combine.

Precedence: dataclass defaults (the paper's values) < a preset (``--preset cpu``) < explicit
command-line arguments. Within a preset, the ``train`` section applies to every method and a
method's own ``train`` sub-section (``cora: {train: {lr: 3.0e-4}}``) overrides it for that method.
The resolved configuration is written to ``config.json`` of the run, so a run can be rebuilt from
that file alone. Every field is checked by its type and the rule declared beside it
(:mod:`corarec.utils.settings`), whichever of these sources it comes from.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from corarec.utils.device import DEVICE_NAMES, DEVICE_PATTERN
from corarec.errors import CorarecError
from corarec.utils.settings import Settings, apply_settings, config_from_dict, mapping, setting

SEED_MAX = 2**32 - 1
"""Largest seed NumPy's global generator accepts (seeds are 0..SEED_MAX)."""


@dataclass
class TrainConfig(Settings):
    """Settings of the shared training loop (paper defaults: official CoRA configs)."""

    lr: float = setting(1e-3, above=0)
    """Peak learning rate of AdamW."""
    weight_decay: float = setting(1e-3, at_least=0)
    """AdamW weight decay."""
    betas: tuple[float, float] = setting((0.9, 0.999), at_least=0, below=1)
    """AdamW betas."""
    warmup_steps: int = setting(200, at_least=0)
    """Linear warm-up steps (from ``warmup_start_lr`` to ``lr``); cosine decay to 0 afterwards."""
    warmup_start_lr: float = setting(1e-5, at_least=0)
    """Learning rate at step 0."""
    batch_size: int = setting(8, at_least=1)
    """Training rows per optimizer step."""
    eval_batch_size: int = setting(16, at_least=1)
    """Rows per forward pass when scoring."""
    epochs: int = setting(1, at_least=1)
    """Passes over the (sub-sampled) training rows."""
    max_steps: int | None = setting(None, at_least=1)
    """Stop after this many optimizer steps (None: epochs decide)."""
    eval_every: int = setting(100, at_least=1)
    """Validate every this many steps (the paper's 'epoch' of 50–100 steps)."""
    patience: int = setting(20, at_least=0)
    """Stop after this many validations without a better valid AUC."""
    max_train_samples: int | None = setting(None, at_least=1)
    """Train on at most this many rows (seeded; drawn as ``train_sample`` says); None = all."""
    train_sample: str = setting("users", choices=("rows", "users"))
    """How ``max_train_samples`` draws: 'users' (whole users, as validation and test are drawn) or 'rows'
    (uniform rows, spanning nearly every user: 4,000 MovieLens-100K train rows = 612 users instead of 46)."""
    max_eval_samples: int | None = setting(None, at_least=1)
    """Validate on at most this many rows (whole users, seeded); None = all."""
    valid_sample_seed: int | None = setting(None, at_least=0, at_most=SEED_MAX)
    """Seed of the validation sample (None: the run's ``seed``). ``corarec benchmark`` sets its sample
    seed here, so that runs trained with different seeds validate on the same rows."""
    grad_clip: float = setting(1.0, at_least=0)
    """Clip the gradient norm to this value (0 = off)."""


@dataclass
class RunConfig(Settings):
    """Everything needed to rebuild a run (written to ``RUN/config.json``)."""

    method: str
    """cora, tallrec, collm or icl."""
    data: str
    """Prepared dataset directory."""
    out: str
    """Run directory."""
    cf: str | None = None
    """CF run directory (CoRA and CoLLM)."""
    llm: str = setting("smollm2-135m", pattern=r".*\S.*", expected="a model name or directory")
    """Hugging Face id, local directory, or the alias 'smollm2-135m' (bundled)."""
    seed: int = setting(0, at_least=0, at_most=SEED_MAX)
    """Seed for sampling, shuffling, initialisation and dropout."""
    device: str = setting("auto", pattern=DEVICE_PATTERN, expected=DEVICE_NAMES)
    """'auto' (CUDA if available, else CPU), 'cpu', 'cuda', 'cuda:N' or 'mps'."""
    bf16: bool = True
    """bf16 autocast where the hardware supports it."""
    init: str | None = None
    """Run directory whose trained weights initialise this one (CoLLM stage 2 from TALLRec)."""
    train: TrainConfig = setting(default_factory=TrainConfig)
    """Training-loop settings."""
    method_config: dict[str, Any] = setting(default_factory=dict)
    """Settings of the method (fields of its config dataclass)."""
    preset: str | None = None
    """Preset the settings came from, if any."""


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


def apply_fields(obj: Any, values: dict[str, Any], where: str) -> Any:
    """Return a copy of config ``obj`` with ``values`` set, validated; unknown names, wrong types and
    out-of-range values are one-line errors naming ``where``."""
    return apply_settings(obj, values, where)


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass as a JSON-ready dict."""
    return dataclasses.asdict(obj)


def run_config_from_dict(data: Any, where: str = "config.json") -> RunConfig:
    """Rebuild a :class:`RunConfig` from ``config.json`` (``where`` names the file), checking every
    setting, the method's included: unknown or missing keys and bad values are one-line errors."""
    from corarec.methods import method_classes

    values = mapping(data, where, "config")
    train = config_from_dict(TrainConfig, values.pop("train", None), where, "train.")
    config = config_from_dict(RunConfig, {**values, "train": train}, where)
    try:
        method_cls, _ = method_classes(config.method)
    except CorarecError as e:
        raise CorarecError(f"{where}: {e}") from None
    config_from_dict(method_cls, config.method_config, where, "method_config.")
    return config
