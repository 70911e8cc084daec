"""Train a CF model on a prepared dataset: Adam, BCE, early stopping on valid AUC, best epoch kept.

``train_cf`` is the library side of ``corarec train-cf``; it writes a run directory
(``config.json``, ``model.safetensors``, ``metrics.json``) and returns the metrics. Only a CF run
directory is ever replaced, and only with ``overwrite``. Each epoch of the log in ``metrics.json``
records the mean and largest gradient norm of its steps; with ``log_dir`` the training is also
written as TensorBoard scalars (:mod:`corarec.utils.tracking`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from corarec.cf.base import CFBatch, CFModel, history_tensor
from corarec.cf.checkpoint import build_model, save_cf
from corarec.cf.config import CFConfig, grid_candidates, grid_space, make_config
from corarec.data.schema import Dataset, read_dataset
from corarec.utils.device import resolve_device
from corarec.errors import CorarecError
from corarec.utils.io import atomic_dir, read_json, write_json
from corarec.evaluation.metrics import auc, metric_report, uauc, warm_mask
from corarec.utils.outdir import check_replaceable
from corarec.utils.presets import load_preset
from corarec.utils.seeding import seed_everything
from corarec.utils.tracking import ScalarLog, check_finite_gradient, check_log_dir, gradient_norm, gradient_summary


def rows_tensors(frame: pd.DataFrame, max_len: int) -> dict[str, torch.Tensor]:
    """Tensors of a split: users [N], items [N], labels [N], history [N, max_len], and group [N]:
    rows with the same history share a group id (shuffling keeps them in one batch, so a model that
    encodes each distinct history once — SASRec — does less work)."""
    history = history_tensor(frame["history"].tolist(), max_len)  # [N, max_len]
    _, group = torch.unique(history, dim=0, return_inverse=True)  # [N]
    return {
        "users": torch.tensor(frame["user_id"].to_numpy(), dtype=torch.long),
        "items": torch.tensor(frame["item_id"].to_numpy(), dtype=torch.long),
        "labels": torch.tensor(frame["label"].to_numpy(), dtype=torch.float32),
        "history": history,
        "group": group,
    }


def batches(rows: dict[str, torch.Tensor], batch_size: int, generator: torch.Generator | None = None) -> Iterator[tuple[CFBatch, torch.Tensor]]:
    """(CFBatch, labels) in order, or shuffled when a ``generator`` is given: the history groups
    are put in random order, and rows follow their group."""
    n = len(rows["labels"])
    if generator is None:
        order = torch.arange(n)
    else:
        group = rows["group"]
        rank = torch.randperm(int(group.max()) + 1 if n else 0, generator=generator)[group]  # [N]
        order = torch.sort(rank, stable=True).indices
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        yield CFBatch(rows["users"][idx], rows["items"][idx], rows["history"][idx]), rows["labels"][idx]


@torch.no_grad()
def cf_logits(model: CFModel, rows: dict[str, torch.Tensor] | pd.DataFrame, batch_size: int = 4096) -> np.ndarray:
    """The CF model's CTR logits [N] for every row of a split (a DataFrame or :func:`rows_tensors`)."""
    if isinstance(rows, pd.DataFrame):
        rows = rows_tensors(rows, model.max_len)
    was_training = model.training
    model.eval()
    device = model_device(model)
    out = [model(batch.to(device)).float().cpu() for batch, _ in batches(rows, batch_size)]
    model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)


def evaluate_cf(model: CFModel, ds: Dataset, split: str) -> dict[str, Any]:
    """:func:`corarec.evaluation.metrics.metric_report` (all / warm / cold) of the CF ``model`` on a split."""
    frame = ds.splits[split]
    scores = cf_logits(model, frame)
    return metric_report(frame["user_id"], frame["label"], scores, warm_mask(frame, ds.train), items=frame["item_id"])


def fit_cf(
    config: CFConfig, ds: Dataset, train: dict, valid: dict, progress: bool = True, device: str | torch.device = "cpu"
) -> tuple[CFModel, dict[str, Any]]:
    """Train one CF model with one ``config`` on the :func:`rows_tensors` ``train``, stopping early on ``valid``;
    returns it holding the best-valid-AUC weights, and the training log (with ``config.log_dir``, also
    TensorBoard scalars: loss and gradient norm every step; learning rate, rows/s, valid AUC and UAUC every epoch)."""
    seed_everything(config.seed)
    model = build_model(config, ds.n_users, ds.n_items)
    model.fit_train(train["users"], train["items"], train["labels"])
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    valid_labels = valid["labels"].numpy()
    if valid_labels.min() == valid_labels.max():
        raise CorarecError(f"{ds.root or ds.name}: the valid split holds only label {int(valid_labels[0])}; AUC (early stopping) is undefined")
    best_auc, best_epoch, best_state, log, step = -1.0, 0, None, [], 0
    bar = tqdm(range(1, config.epochs + 1), desc=f"{config.model} lr={config.lr:g} wd={config.weight_decay:g} dim={config.dim}", disable=not progress, leave=False)
    with ScalarLog(config.log_dir) as scalars:
        for epoch in bar:
            model.train()
            total, count, norms, started = 0.0, 0, [], time.perf_counter()
            for batch, labels in batches(train, config.batch_size, generator):
                loss = model.loss(batch.to(device), labels.to(device))
                optimizer.zero_grad()
                loss.backward()
                norms.append(gradient_norm(model.parameters()))
                check_finite_gradient(norms[-1], step + 1)
                optimizer.step()
                step, value = step + 1, loss.item()
                total, count = total + value * len(labels), count + len(labels)
                scalars.scalars(step, {"train/loss": value, "train/grad_norm": norms[-1]})
            seconds = time.perf_counter() - started
            logits = cf_logits(model, valid)
            valid_auc = auc(valid_labels, logits)
            log.append({"epoch": epoch, "train_loss": total / count, "valid_auc": valid_auc, **gradient_summary(norms)})
            if scalars.enabled:
                valid_uauc = uauc(valid["users"].numpy(), valid_labels, logits)
                scalars.scalars(step, {"train/lr": config.lr, "train/rows_per_second": count / max(seconds, 1e-9),
                                       "valid/auc": valid_auc, "valid/uauc": None if math.isnan(valid_uauc) else valid_uauc})
                scalars.flush()
            bar.set_postfix(loss=f"{total / count:.4f}", valid_auc=f"{valid_auc:.4f}")
            if valid_auc > best_auc:
                best_auc, best_epoch = valid_auc, epoch
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            elif epoch - best_epoch >= config.patience:
                break
    model.load_state_dict(best_state)
    return model.to("cpu").eval(), {"best_epoch": best_epoch, "best_valid_auc": best_auc, "epochs": log}


def train_cf(
    data: str | Path,
    model: str,
    out: str | Path,
    preset: str | None = None,
    grid: bool | dict[str, list] = False,
    device: str = "auto",
    progress: bool = True,
    overwrite: bool = False,
    **settings: Any,
) -> dict[str, Any]:
    """Train a CF model (``mf``, ``lightgcn``, ``sasrec``) on a prepared dataset and write a run dir.
    The arguments are the options of ``corarec train-cf``.

    ``settings`` are :class:`~corarec.cf.config.CFConfig` fields by name (``dim=64``, ``num_layers=3``);
    None values, and settings not given, take the model's defaults (``configs/cf/defaults.yaml``), or
    ``preset``'s ``cf`` section where it sets them (:func:`~corarec.cf.config.make_config`). With
    ``grid`` every lr × weight-decay × dim combination of the model's grid
    (:func:`~corarec.cf.config.grid_space`; or of the mapping ``grid``, e.g. ``{"dim": [64, 256]}``)
    is trained, other settings as given, and the best on valid AUC is kept. ``device``: ``auto``
    (CUDA when available), ``cpu`` or ``cuda``; the saved model is on the CPU. Returns the metrics
    written to ``out/metrics.json``. An existing CF run in ``out`` is replaced only with
    ``overwrite``; any other non-empty directory never (a CoRA run, a Hugging Face model, a prepared
    dataset, the user's files).
    """
    from corarec.utils.distributed import one_process_only

    one_process_only("corarec train-cf")
    out = Path(out)
    check_replaceable(out, "CF run directory", is_cf_run, RUN_FILES, overwrite)
    ds = read_dataset(data)
    device = resolve_device(device)
    base = make_config(model, preset, **settings)
    if base.log_dir is not None:
        check_log_dir(base.log_dir)
        base = dataclasses.replace(base, log_dir=str(Path(base.log_dir).resolve()))
    if grid is True:
        grid = grid_space(model, load_preset(preset) if preset else None, f"preset {preset}")
    train, valid = rows_tensors(ds.train, base.max_len), rows_tensors(ds.valid, base.max_len)
    candidates = [base]
    if grid:
        candidates = [with_log_subdir(c) for c in grid_candidates(base, grid)]

    start = time.perf_counter()
    best_model, best_log, best_config, grid_log = None, None, None, []
    for config in candidates:
        fitted, log = fit_cf(config, ds, train, valid, progress, device)
        grid_log.append({"lr": config.lr, "weight_decay": config.weight_decay, "dim": config.dim,
                         "best_epoch": log["best_epoch"], "valid_auc": log["best_valid_auc"]})
        if best_log is None or log["best_valid_auc"] > best_log["best_valid_auc"]:
            best_model, best_log, best_config = fitted, log, config
    seconds = time.perf_counter() - start

    metrics: dict[str, Any] = {
        "model": model,
        "dataset": ds.name,
        "valid": evaluate_cf(best_model, ds, "valid"),
        "test": evaluate_cf(best_model, ds, "test"),
        "best_epoch": best_log["best_epoch"],
        "train_seconds": round(seconds, 2),
        "epochs": best_log["epochs"],
    }
    if grid:
        metrics["grid"] = grid_log
    run_info = {"data": str(Path(data).resolve()), "dataset": ds.name}
    with atomic_dir(out) as tmp:
        save_cf(best_model, tmp, best_config, run_info)
        write_json(tmp / "metrics.json", metrics)
    return metrics


def with_log_subdir(config: CFConfig) -> CFConfig:
    """A grid candidate logging to its own sub-directory of ``log_dir`` (``lr=0.001_wd=0_dim=64``), so that
    TensorBoard shows each candidate as a run; unchanged without a ``log_dir``."""
    if config.log_dir is None:
        return config
    name = f"lr={config.lr:g}_wd={config.weight_decay:g}_dim={config.dim}"
    return dataclasses.replace(config, log_dir=str(Path(config.log_dir) / name))


RUN_FILES = ("config.json", "model.safetensors", "metrics.json")
"""Every file :func:`train_cf` writes: a directory holding anything else is never replaced."""


def is_cf_run(path: str | Path) -> bool:
    """Whether ``path`` holds a CF run: a ``config.json`` that says ``"type": "cf"``."""
    try:
        config = read_json(Path(path) / "config.json")
    except (CorarecError, ValueError, OSError):  # missing, malformed or not text: not a CF run
        return False
    return isinstance(config, dict) and config.get("type") == "cf"


def model_device(model: CFModel) -> torch.device:
    """The device the model's buffers live on."""
    return model.user_seen.device
