"""Run configuration: the training loop's settings, presets and how they combine.

Precedence: dataclass defaults (the paper's values) < a preset (``--preset cpu``) < explicit
command-line arguments. Within a preset, the ``train`` section applies to every method and a
method's own ``train`` sub-section (``cora: {train: {lr: 3.0e-4}}``) overrides it for that method.
The resolved configuration is written to ``config.json`` of the run, so a run can be rebuilt from
that file alone.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from corarec.errors import CorarecError


@dataclass
class TrainConfig:
    """Settings of the shared training loop (paper defaults: official CoRA configs)."""

    lr: float = 1e-3
    """Peak learning rate of AdamW."""
    weight_decay: float = 1e-3
    """AdamW weight decay."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    warmup_steps: int = 200
    """Linear warm-up steps (from ``warmup_start_lr`` to ``lr``); cosine decay to 0 afterwards."""
    warmup_start_lr: float = 1e-5
    """Learning rate at step 0."""
    batch_size: int = 8
    """Training rows per optimizer step."""
    eval_batch_size: int = 16
    """Rows per forward pass when scoring."""
    epochs: int = 1
    """Passes over the (sub-sampled) training rows."""
    max_steps: int | None = None
    """Stop after this many optimizer steps (None: epochs decide)."""
    eval_every: int = 100
    """Validate every this many steps (the paper's 'epoch' of 50–100 steps)."""
    patience: int = 20
    """Stop after this many validations without a better valid AUC."""
    max_train_samples: int | None = None
    """Train on at most this many rows (seeded; drawn as ``train_sample`` says); None = all."""
    train_sample: str = "users"
    """How ``max_train_samples`` draws: 'users' (whole users, as validation and test are drawn) or 'rows'
    (uniform rows, spanning nearly every user: 4,000 MovieLens-100K train rows = 612 users instead of 46)."""
    max_eval_samples: int | None = None
    """Validate on at most this many rows (whole users, seeded); None = all."""
    grad_clip: float = 1.0
    """Clip the gradient norm to this value (0 = off)."""

    def __post_init__(self) -> None:
        if self.train_sample not in ("rows", "users"):
            raise CorarecError(f"train_sample must be 'rows' or 'users', got '{self.train_sample}'")


@dataclass
class RunConfig:
    """Everything needed to rebuild a run (written to ``RUN/config.json``)."""

    method: str
    """cora, tallrec, collm or icl."""
    data: str
    """Prepared dataset directory."""
    out: str
    """Run directory."""
    cf: str | None = None
    """CF run directory (CoRA and CoLLM)."""
    llm: str = "smollm2-135m"
    """Hugging Face id, local directory, or the alias 'smollm2-135m' (bundled)."""
    seed: int = 0
    """Seed for sampling, shuffling, initialisation and dropout."""
    device: str = "auto"
    """'auto' (CUDA if available, else CPU), 'cpu' or 'cuda'."""
    bf16: bool = True
    """bf16 autocast where the hardware supports it."""
    init: str | None = None
    """Run directory whose trained weights initialise this one (CoLLM stage 2 from TALLRec)."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Training-loop settings."""
    method_config: dict[str, Any] = field(default_factory=dict)
    """Settings of the method (fields of its config dataclass)."""
    preset: str | None = None
    """Preset the settings came from, if any."""


def load_preset(name: str) -> dict[str, Any]:
    """Read a preset: a bundled name ('cpu', 'paper') or a path to a YAML file."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise CorarecError(f"{path}: preset file not found")
        text = path.read_text()
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
    """Return a copy of dataclass ``obj`` with ``values`` set; unknown names are a clear error."""
    names = {f.name for f in dataclasses.fields(obj)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise CorarecError(f"{where}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    values = {k: (tuple(v) if isinstance(getattr(obj, k), tuple) else v) for k, v in values.items()}
    return dataclasses.replace(obj, **values)


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass as a JSON-ready dict."""
    return dataclasses.asdict(obj)


def run_config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Rebuild a :class:`RunConfig` from ``config.json``."""
    data = dict(data)
    train = apply_fields(TrainConfig(), data.pop("train", {}), "config.json train")
    known = {f.name for f in dataclasses.fields(RunConfig)}
    data = {k: v for k, v in data.items() if k in known}
    return RunConfig(train=train, **data)
