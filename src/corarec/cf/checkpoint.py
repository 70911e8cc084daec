"""Build, save and load CF models. A CF run directory holds::

    config.json        the CFConfig fields + data path, dataset name, n_users, n_items; the run-directory
                       format and library versions (:mod:`corarec.training.run_format`)
    model.safetensors  the state dict (including the train-seen buffers and LightGCN's edges)
    metrics.json       valid and test metrics (written by :func:`corarec.cf.train.train_cf`)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from corarec.cf.base import CFModel
from corarec.cf.config import CFConfig
from corarec.cf.lightgcn import LightGCN
from corarec.cf.mf import MF
from corarec.cf.sasrec import SASRec
from corarec.data.schema import Dataset
from corarec.errors import CorarecError
from corarec.utils.io import load_tensors, read_json, recover_dir, save_tensors, write_json
from corarec.training.run_format import check_and_migrate, settings_of, stamp

MODELS: dict[str, type[CFModel]] = {"mf": MF, "lightgcn": LightGCN, "sasrec": SASRec}
RUN_KEYS = ("type", "data", "dataset", "n_users", "n_items")


def build_model(config: CFConfig, n_users: int, n_items: int) -> CFModel:
    """A freshly initialised model of ``config.model`` (call ``fit_train`` before training)."""
    return MODELS[config.model](config, n_users, n_items)


def save_cf(model: CFModel, out: str | Path, config: CFConfig, run_info: dict[str, Any]) -> None:
    """Write ``config.json`` and ``model.safetensors`` into the directory ``out``."""
    out = Path(out)
    write_json(out / "config.json", stamp({"type": "cf", **config.to_dict(), **run_info,
                                           "n_users": model.n_users, "n_items": model.n_items}))
    save_tensors(out / "model.safetensors", dict(model.state_dict()), metadata={"format": "pt", "model": config.model})


def load_cf(run_dir: str | Path, dataset: Dataset | None = None) -> CFModel:
    """Load a CF run directory as a model in eval mode; with ``dataset``, check it matches."""
    run_dir = Path(run_dir)
    recover_dir(run_dir)  # a `train-cf --overwrite` killed mid-swap leaves the previous run in .NAME.old
    raw = read_json(run_dir / "config.json")
    if not isinstance(raw, dict) or raw.get("type") != "cf":
        raise CorarecError(f"{run_dir / 'config.json'}: not a CF run (expected \"type\": \"cf\")")
    raw = settings_of(check_and_migrate(raw, run_dir))
    try:
        n_users, n_items = int(raw["n_users"]), int(raw["n_items"])
    except (KeyError, TypeError, ValueError):
        raise CorarecError(f"{run_dir / 'config.json'}: missing or bad n_users/n_items") from None
    if dataset is not None and (dataset.n_users, dataset.n_items) != (n_users, n_items):
        raise CorarecError(
            f"{run_dir}: CF checkpoint was trained for {n_users} users and {n_items} items, but dataset "
            f"'{dataset.name}' has {dataset.n_users} users and {dataset.n_items} items"
        )
    config = CFConfig.from_dict({k: v for k, v in raw.items() if k not in RUN_KEYS}, where=str(run_dir / "config.json"))
    model = build_model(config, n_users, n_items)
    tensors = load_tensors(run_dir / "model.safetensors")
    try:
        model.load_state(tensors)
    except (RuntimeError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CorarecError(f"{run_dir / 'model.safetensors'}: does not match config.json ({first})") from None
    return model.eval()
