"""Where runs live and when they are reused.

Layout under ``OUT/runs/``: ``<method>/seed-N/`` for a method trained once per training seed, and
``<method>/`` for one that runs once (the references, zero-shot ICL); ``<cf>/tuning/`` holds a CF
model's tuning (:mod:`corarec.benchmarking.tune`). Each run directory gets ``benchmark.json`` (the spec
it was trained with, the rows it was scored on, its result) and ``test_scores.csv``.

A stored result is reused when the run was trained with the same spec *and* scored on the same
rows; with the same spec and other rows, the run is only scored again. A run trained with other
settings is an error, or (``--retrain-stale``) renamed to ``<dir>.stale-N`` (nothing is deleted).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from corarec.benchmarking.plan import Entry
from corarec.errors import CorarecError
from corarec.utils.io import read_json, write_json, write_table

RESULT = "benchmark.json"
SCORES = "test_scores.csv"


def run_dir(runs: Path, entry: Entry, seed: int) -> Path:
    """The run directory of ``entry`` trained with ``seed``: ``runs/<method>/seed-N`` or ``runs/<method>``."""
    return runs / entry.name / f"seed-{seed}" if entry.per_seed else runs / entry.name


def run_name(path: str | Path | None) -> str | None:
    """A run directory named relative to the runs folder (``mf/seed-0``), so that a moved ``--out`` still matches."""
    if path is None:
        return None
    parts = Path(path).parts
    return "/".join(parts[-2:]) if parts[-1].startswith("seed-") else parts[-1]


def set_aside_old_layout(method_dir: Path, retrain_stale: bool) -> None:
    """A run written before runs were kept per seed (``runs/<method>/`` itself holds one) is stale."""
    if (method_dir / RESULT).is_file() or (method_dir / "config.json").is_file():
        set_aside_stale(method_dir, "one run per method, from before runs were kept per seed in "
                                    "runs/<method>/seed-N", retrain_stale)


def cached_result(run: Path, spec: dict, rows_key: dict, rows: pd.DataFrame, retrain_stale: bool) -> dict | None:
    """The stored result when ``run`` was trained with ``spec`` *and* scored on the rows ``rows_key``
    describes (``rows`` are the test rows, checked against the stored scores)."""
    if not (run / RESULT).is_file():
        return None
    stored = read_json(run / RESULT)
    if stored.get("spec") != spec:
        set_aside_stale(run, difference(stored.get("spec") or {}, spec), retrain_stale)
        return None
    if stored.get("rows") != rows_key or not (run / SCORES).is_file():
        return None  # same training, other rows: score again
    scores = pd.read_csv(run / SCORES)
    if not (np.array_equal(scores["user_id"], rows["user_id"]) and np.array_equal(scores["item_id"], rows["item_id"])):
        return None
    result = stored["result"]
    result["scores"] = scores["score"].to_numpy()
    tqdm.write(f"    reusing {run} (complete)")
    return result


def trained_with(run: Path, spec: dict) -> bool:
    """Whether ``run`` holds a finished CF training with ``spec`` (its result may be for other rows)."""
    if not (run / RESULT).is_file() or not (run / "model.safetensors").is_file():
        return False
    return read_json(run / RESULT).get("spec") == spec


def check_partial_run(run: Path, found: dict, wanted: dict, retrain_stale: bool) -> bool:
    """Whether a partial run may be continued: only if it was started with the ``wanted`` settings
    (``found``: the same keys, read from its ``config.json``); otherwise it is stale."""
    if found != wanted:
        set_aside_stale(run, difference(found, wanted), retrain_stale)
        return False
    return True


def set_aside_stale(run: Path, what: str, retrain_stale: bool) -> None:
    """A run trained with other settings: an error, or (``retrain_stale``) renamed out of the way."""
    if not retrain_stale:
        raise CorarecError(f"{run}: trained with other settings ({what}); pass --retrain-stale to set it "
                           "aside and train again, or choose another --out")
    n = 1
    while run.with_name(f"{run.name}.stale-{n}").exists():
        n += 1
    aside = run.with_name(f"{run.name}.stale-{n}")
    run.rename(aside)
    tqdm.write(f"    {run} was trained with other settings ({what}); moved to {aside.name}, training again")


def save_result(run: Path, result: dict, spec: dict, rows_key: dict, rows: pd.DataFrame) -> None:
    """Write the run's ``test_scores.csv`` (one score per test row) and ``benchmark.json``."""
    run.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame({"user_id": rows["user_id"].to_numpy(), "item_id": rows["item_id"].to_numpy(),
                          "label": rows["label"].to_numpy(), "score": result["scores"]})
    write_table(run / SCORES, frame)
    write_json(run / RESULT, {"spec": spec, "rows": rows_key,
                              "result": {k: v for k, v in result.items() if k != "scores"}})


def difference(found: dict, wanted: dict) -> str:
    """The first three settings that differ, by dotted path: ``settings.cora.depth: 2 there, 8 now``."""
    return "; ".join(f"{path}: {a!r} there, {b!r} now" for path, a, b in _differences(found, wanted)[:3])


def _differences(found: Any, wanted: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    if not (isinstance(found, dict) and isinstance(wanted, dict)):
        return [] if found == wanted else [(path, found, wanted)]
    return [d for k in sorted(set(found) | set(wanted), key=str)
            for d in _differences(found.get(k), wanted.get(k), f"{path}.{k}" if path else str(k))]


def file_digest(path: Path) -> str:
    """The first 16 hex digits of the file's SHA-256 (a retrained prerequisite changes it)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]
