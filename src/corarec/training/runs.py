"""Run directories: build a method from its config, load a trained run.

A run directory holds::

    config.json          RunConfig: method, data, CF run, LLM id, all settings, seed; the run-directory
                         format and library versions (:mod:`corarec.training.run_format`)
    model.safetensors    the best trained weights (generator + P for CoRA; nothing of the LLM)
    metrics.json         validation curve, best valid AUC (the training's; ``evaluate`` never writes it)
    checkpoint/          the last training state (weights, optimizer, RNG, position) for --resume
    eval/<split>.json    the latest ``corarec evaluate`` of each split
    validate-<key>.partial.safetensors, eval/<split>-<key>.partial.safetensors,
    eval/benchmark-test-<key>.partial.safetensors
                         the scores of a scoring pass not yet complete (:mod:`corarec.evaluation.journal`)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from corarec.training.config import RunConfig, apply_fields, run_config_from_dict, to_dict
from corarec.methods.batches import PromptBatcher
from corarec.data.schema import Dataset, read_dataset
from corarec.utils.device import resolve_device
from corarec.errors import CorarecError
from corarec.utils.io import load_tensors, read_json, write_json
from corarec.methods import Method, method_classes, uses_cf
from corarec.training.run_format import check_and_migrate, settings_of, stamp
from corarec.utils.settings import check_option

if TYPE_CHECKING:
    from corarec.llm.model import LLM

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
METRICS = "metrics.json"


@dataclass
class LoadedRun:
    """A method ready to score rows, with the dataset and prompt batcher it reads."""

    config: RunConfig
    method: Method
    dataset: Dataset
    batcher: PromptBatcher
    llm: "LLM"
    device: torch.device
    root: Path | None = None


def build_run(config: RunConfig, dataset: Dataset | None = None) -> LoadedRun:
    """Build the (untrained) method that ``config`` describes."""
    from corarec.llm.model import load_llm

    dataset = dataset or read_dataset(config.data)
    device = resolve_device(config.device)
    config_cls, method_cls = method_classes(config.method)
    method_cfg = apply_fields(config_cls(), config.method_config, f"{config.method} settings")
    # the one place that decides whether a CF run is loaded: the method's class, or its settings (an anchor)
    reads_cf = uses_cf(config.method, method_cfg)
    if reads_cf and not config.cf:
        why = "" if uses_cf(config.method) else " with --anchor cf"
        raise CorarecError(f"method '{config.method}'{why} needs a CF run: pass --cf RUN (from `corarec train-cf`)")
    llm = load_llm(config.llm, device=str(device), autocast=config.bf16)
    torch.manual_seed(config.seed)
    cf = None
    if reads_cf:
        from corarec.cf import load_cf

        cf = load_cf(config.cf, dataset)
    method = method_cls(method_cfg, llm, cf)
    method.to(device)
    batcher = prompt_batcher(dataset, llm, method)
    return LoadedRun(config=config, method=method, dataset=dataset, batcher=batcher, llm=llm, device=device)


def prompt_batcher(dataset: Dataset, llm: "LLM", method: Method) -> PromptBatcher:
    """The batcher of ``method``'s prompts; the CF history it builds is as long as the method's CF
    model reads (its ``max_len``), so the LLM path gives the CF model what it was trained on."""
    if method.cf is None:
        return PromptBatcher(dataset, llm.tokenizer, template=method.template)
    return PromptBatcher(dataset, llm.tokenizer, template=method.template, cf_history_len=method.cf.max_len)


def is_finished(run: str | Path) -> bool:
    """Whether ``run`` holds a completed training (its metrics say so)."""
    path = Path(run) / METRICS
    return path.is_file() and bool(read_json(path).get("finished"))


def read_run_config(run: str | Path) -> RunConfig:
    """Read ``RUN/config.json`` with a clear error when it is not a run directory."""
    root = Path(run)
    if not (root / CONFIG).is_file():
        raise CorarecError(f"{root}: not a run directory (no {CONFIG}); train one with `corarec train`")
    return run_config_from_dict(settings_of(check_and_migrate(read_json(root / CONFIG), root)), where=str(root / CONFIG))


def write_run_config(run: str | Path, config: RunConfig) -> None:
    """Write ``RUN/config.json``: ``config`` stamped with the run-directory format and library versions."""
    write_json(Path(run) / CONFIG, stamp(to_dict(config)))


def load_run(run: str | Path, data: str | Path | None = None, device: str | None = None) -> LoadedRun:
    """Load a trained run: its method with the best weights, its dataset and batcher.

    ``data`` overrides the dataset directory recorded in the run (e.g. after moving it).
    """
    root = Path(run)
    config = read_run_config(root)
    if data is not None:
        config.data = str(data)
    if device is not None:
        config.device = check_option(RunConfig, "device", device, "--device")  # checked before any loading
    loaded = build_run(config)
    weights = root / WEIGHTS
    if loaded.method.trains:
        if not weights.is_file():
            raise CorarecError(f"{weights}: no trained weights yet (training did not reach a validation)")
        state = load_tensors(weights)
        loaded.method.load_trainable_state_dict({k: v.to(loaded.device) for k, v in state.items()}, source=str(weights))
    loaded.method.eval()
    loaded.root = root
    return loaded
