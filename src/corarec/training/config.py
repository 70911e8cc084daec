"""Run configuration: the training loop's settings, presets and how they combine.

Precedence: dataclass defaults (the paper's values) < a preset (``--preset cpu``) < explicit
command-line arguments (the fields by their flat names, :mod:`corarec.utils.options`). Within a
preset, the ``train`` section applies to every method and a method's own ``train`` sub-section
(``cora: {train: {lr: 3.0e-4}}``) overrides it for that method; a nested config is a sub-mapping
(``cora: {generator: {depth: 2}}``).
The resolved configuration is written to ``config.json`` of the run, so a run can be rebuilt from
that file alone. Every field is checked by its type and the rule declared beside it
(:mod:`corarec.utils.settings`), whichever of these sources it comes from.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corarec.errors import CorarecError
from corarec.utils.device import DEVICE_NAMES, DEVICE_PATTERN
from corarec.utils.options import flat_fields, nest
from corarec.utils.presets import load_preset
from corarec.utils.settings import SEED_MAX, Settings, apply_settings, config_from_dict, mapping, setting

__all__ = ["SEED_MAX", "RunConfig", "TrainConfig", "apply_fields", "load_preset", "resolve_config", "run_config_from_dict",
           "to_dict"]


TRAIN_SPLITS = ("train", "valid-half")
"""Values of :attr:`TrainConfig.train_split`."""


@dataclass
class TrainConfig(Settings):
    """Settings of the shared training loop (paper defaults: official CoRA configs)."""

    lr: float = setting(1e-3, above=0, doc="Peak learning rate of AdamW.")
    weight_decay: float = setting(1e-3, at_least=0, doc="AdamW weight decay.")
    betas: tuple[float, float] = setting((0.9, 0.999), at_least=0, below=1, doc="AdamW betas.")
    warmup_steps: int = setting(200, at_least=0, doc="""
        Linear warm-up steps (from ``warmup_start_lr`` to ``lr``); cosine decay to 0 afterwards.""")
    warmup_start_lr: float = setting(1e-5, at_least=0, doc="Learning rate at step 0.")
    batch_size: int = setting(8, at_least=1, doc="""
        Training rows per optimizer step and process, per micro-batch (the paper: 8–16). A step trains
        ``batch_size × processes × gradient_accumulation`` rows (the effective batch; one process without
        a launcher).""")
    gradient_accumulation: int = setting(1, at_least=1, doc="""
        Micro-batches of ``batch_size`` rows whose gradients add up to one optimizer step (1: none): a larger
        effective batch in the memory of one micro-batch. The step's loss is the mean over all its rows.""")
    group_by_length: bool = setting(False, doc="""
        Steps of rows of similar prompt length (beyond the paper; transformers' ``group_by_length``): each window
        of 50 steps of the epoch's random order is sorted by length and its steps shuffled, so a step pads its
        rows to nearly their own length (on MovieLens-100K random steps carry ~1.15× the real tokens, grouped
        ~1.01×; a warm CoRA step ~1.2× faster). Which rows share a step changes, and with it the optimisation: off
        by default and in no preset until several seeds show its quality holds (one seed so far:
        docs/speed-experiments.md).""")
    eval_batch_size: int = setting(16, at_least=1, doc="Rows per forward pass when scoring.")
    epochs: int = setting(1, at_least=1, doc="""
        Passes over the (sub-sampled) training rows (the paper's configs: up to 200, early stopping ends the run).""")
    max_steps: int | None = setting(None, at_least=1, doc="Stop after this many optimizer steps (None: epochs decide).")
    eval_every: int = setting(100, at_least=1, doc="""
        Validate every this many steps (the paper's 'epoch' of 50–100 steps).""")
    checkpoint_every: int | None = setting(None, at_least=1, doc="""
        Also save a checkpoint every this many steps between validations, so that an interrupted run resumes
        there rather than at its last validation (None: checkpoints at validations only).""")
    patience: int = setting(20, at_least=0, doc="Stop after this many validations without a better valid AUC.")
    max_train_samples: int | None = setting(None, at_least=1, doc="""
        Train on at most this many rows (seeded; drawn as ``train_sample`` says); None = all.""")
    train_sample: str = setting("users", choices=("rows", "users"), doc="""
        How ``max_train_samples`` draws: 'users' (whole users, as validation and test are drawn) or 'rows'
        (uniform rows, spanning nearly every user: 4,000 MovieLens-100K train rows = 612 users instead of 46).""")
    train_split: str = setting("train", choices=TRAIN_SPLITS, doc="""
        Which rows the LLM trains on. 'train' (the paper): the train split, the rows the CF model learned from.
        'valid-half' (beyond the paper; for the CF-anchored score): the validation split's users are cut in two
        halves (seeded with ``valid_sample_seed``): the run trains on the rows of one and validates on the other,
        so the LLM learns what the CF model misses on rows it never saw, and on the cold users that the
        validation and test months hold (the train split has none). ``max_train_samples`` and
        ``max_eval_samples`` then draw within each half.""")
    max_eval_samples: int | None = setting(None, at_least=1, doc="""
        Validate on at most this many rows (whole users, seeded); None = all.""")
    valid_sample_seed: int | None = setting(None, at_least=0, at_most=SEED_MAX, doc="""
        Seed of the validation sample (None: the run's ``seed``). ``corarec benchmark`` sets its sample seed
        here, so that runs trained with different seeds validate on the same rows.""")
    train_sample_seed: int | None = setting(None, at_least=0, at_most=SEED_MAX, doc="""
        Seed of the ``max_train_samples`` draw (None: the run's ``seed``). ``corarec benchmark`` sets its sample
        seed here, so that every method and every training seed trains on the same rows (the seeds then vary
        initialisation and order, as on the whole split) and reuses one prefix cache.""")
    grad_clip: float = setting(1.0, at_least=0, doc="Clip the gradient norm to this value (0 = off).")
    log_dir: str | None = setting(None, pattern=r".*\S.*", expected="a directory", doc="""
        Write TensorBoard event files here: loss, learning rate, gradient norm and rows/s every step,
        validation AUC and UAUC (needs the tensorboard package; a resumed run writes on in the same
        directory).""")


@dataclass
class RunConfig(Settings):
    """Everything needed to rebuild a run (written to ``RUN/config.json``)."""

    method: str = setting(doc="cora, tallrec, collm or icl.")
    data: str = setting(doc="Prepared dataset directory.")
    out: str = setting(doc="Run directory.")
    cf: str | None = setting(None, doc="CF run directory (CoRA and CoLLM).")
    llm: str = setting("smollm2-135m", pattern=r".*\S.*", expected="a model name or directory", doc="""
        Hugging Face id, local directory, or the alias 'smollm2-135m' (bundled).""")
    seed: int = setting(0, at_least=0, at_most=SEED_MAX, doc="""
        Seed for sampling, shuffling, initialisation and dropout.""")
    device: str = setting("auto", pattern=DEVICE_PATTERN, expected=DEVICE_NAMES, doc="""
        'auto' (CUDA if available, else CPU), 'cpu', 'cuda', 'cuda:N' or 'mps'.""")
    bf16: bool = setting(True, doc="bf16 autocast where the hardware supports it.")
    init: str | None = setting(None, doc="""
        Run directory whose trained weights initialise this one (CoLLM stage 2 from TALLRec).""")
    train: TrainConfig = setting(default_factory=TrainConfig, doc="Training-loop settings.")
    method_config: dict[str, Any] = setting(default_factory=dict, doc="""
        Settings of the method (fields of its config dataclass).""")
    preset: str | None = setting(None, doc="Preset the settings came from, if any.")


def resolve_config(method: str = "cora", data: str | Path = "", out: str | Path = "", cf: str | Path | None = None,
                   llm: str | None = None, preset: str | None = None, init: str | Path | None = None,
                   seed: int | None = None, device: str | None = None, bf16: bool | None = None,
                   **settings: Any) -> RunConfig:
    """Combine defaults, a preset and explicit settings into a validated :class:`RunConfig` (the
    arguments of :func:`corarec.training.loop.train`; ``settings`` by flat name, None = not given)."""
    from corarec.methods import method_classes

    if not data:
        raise CorarecError("--data is required (a directory written by `corarec prepare`)")
    config_cls, _ = method_classes(method)
    where = f"preset {preset}"
    sections = load_preset(preset) if preset else {}
    run_section = mapping(sections.get("run"), where, "run")
    method_values = mapping(sections.get(method), where, method)
    method_train = method_values.pop("train", None) or {}  # the method's own training overrides
    if not isinstance(method_train, dict):
        raise CorarecError(f"{where} {method}.train: expected a mapping of training settings")
    train_given, method_given = _split_settings(method, config_cls, _given(settings))
    train_cfg = apply_fields(TrainConfig(), sections.get("train") or {}, f"{where} train")
    train_cfg = apply_fields(train_cfg, method_train, f"{where} {method}.train")
    train_cfg = apply_fields(train_cfg, train_given, "training settings")
    if train_cfg.log_dir is not None:  # absolute, as the run's paths: a resume elsewhere logs to the same place
        train_cfg = apply_fields(train_cfg, {"log_dir": _absolute(train_cfg.log_dir)}, "training settings")
    method_values = _merged(method_values, nest(config_cls, method_given, f"{method} settings"))
    method_cfg = apply_fields(config_cls(), method_values, f"{method} settings")  # validates names
    # absolute paths: the run can be resumed, evaluated and served from any working directory
    config = RunConfig(method=method, data=_absolute(data), out=_absolute(out), cf=_absolute(cf) if cf else None,
                       init=_absolute(init) if init else None, train=train_cfg, method_config=to_dict(method_cfg),
                       preset=preset)
    config = apply_fields(config, run_section, f"{where} run")
    return apply_fields(config, _given({"llm": llm, "seed": seed, "device": device, "bf16": bf16}), "run settings")


def _split_settings(method: str, config_cls: type, given: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Explicit settings as (the training loop's, the method's); a name that is neither is an error
    that says which method has it, if any."""
    from corarec.methods import REGISTRY, method_classes

    loop, own = flat_fields(TrainConfig), flat_fields(config_cls)
    unknown = sorted(set(given) - set(loop) - set(own))
    if unknown:
        owners = {name: [m for m in REGISTRY if name in flat_fields(method_classes(m)[0])] for name in unknown}
        described = [f"{name} (a setting of {', '.join(owners[name])})" if owners[name] else name for name in unknown]
        raise CorarecError(f"{method} settings: unknown setting(s) {', '.join(described)}; {method} has "
                           f"{', '.join(own)}, and every method {', '.join(loop)}")
    return ({k: v for k, v in given.items() if k in loop}, {k: v for k, v in given.items() if k in own})


def _merged(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``update`` laid over it, nested mappings merged key by key."""
    merged = dict(base)
    for key, value in update.items():
        both = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _merged(merged[key], value) if both else value
    return merged


def _absolute(path: str | Path) -> str:
    return str(Path(path).resolve())


def _given(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


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
    values["train"] = mapping(values.get("train"), where, "train")  # absent: the defaults
    config = config_from_dict(RunConfig, values, where)
    try:
        method_cls, _ = method_classes(config.method)
    except CorarecError as e:
        raise CorarecError(f"{where}: {e}") from None
    config_from_dict(method_cls, config.method_config, where, "method_config.")
    return config
