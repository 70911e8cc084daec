"""From scores to the table's numbers: one result per run, one record per method (mean ± std over its
seeds), the paired interval of each method's AUC difference to MF, and the CF models' checks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from corarec.benchmarking.plan import Entry
from corarec.data.schema import Dataset
from corarec.evaluation.evaluate import report
from corarec.evaluation.bootstrap import LEVEL, RESAMPLES, SEED, paired_auc_difference

BASELINE = "mf"
"""The method every interval is a difference to."""


def seed_result(entry: Entry, seed: int, ds: Dataset, rows: pd.DataFrame, scores: np.ndarray,
                valid_auc: float | None, train_seconds: float | None, parameters: int, run: str | None,
                curve: list | None = None, curve_unit: str = "step", valid_auc_whole: float | None = None,
                test_whole: dict | None = None) -> dict:
    """One run's result: its metrics on the test rows ``rows``, its AUC on the validation rows, and
    (CF models, references) its AUCs on the whole valid and test splits."""
    scores = np.asarray(scores, dtype=np.float64)
    return {"name": entry.name, "label": entry.label, "kind": entry.kind, "seed": seed,
            "test": report(rows, scores, ds.train), "valid_auc": valid_auc, "valid_auc_whole": valid_auc_whole,
            "test_auc_whole": test_whole["all"]["auc"] if test_whole else None,
            "test_whole": test_whole,
            "train_seconds": None if train_seconds is None else round(float(train_seconds), 1),
            "trainable_parameters": parameters, "curve": [[int(x), float(y)] for x, y in (curve or [])],
            "curve_unit": curve_unit, "run": run, "scores": scores}


def method_record(entry: Entry, results: list[dict], cf_choice: dict | None = None) -> dict:
    """A method over its seeds: mean ± std (sample std, ddof 1; 0 for one seed) of AUC, UAUC and valid
    AUC, means of the rest; ``scores`` ``[seeds, test rows]`` for the intervals."""
    def values(get) -> list[float | None]:
        return [get(r) for r in results]

    first = results[0]
    return {
        "name": entry.name, "label": entry.label, "kind": entry.kind, "seeds": [r["seed"] for r in results],
        "auc": spread(values(lambda r: r["test"]["all"]["auc"])),
        "uauc": spread(values(lambda r: r["test"]["all"]["uauc"])),
        "gauc": mean(values(lambda r: r["test"]["all"]["gauc"])),
        "warm_auc": mean(values(lambda r: (r["test"].get("warm") or {}).get("auc"))),
        "cold_auc": mean(values(lambda r: (r["test"].get("cold") or {}).get("auc"))),
        "valid_auc": spread(values(lambda r: r["valid_auc"])),
        "valid_auc_whole": mean(values(lambda r: r.get("valid_auc_whole"))),
        "test_auc_whole": mean(values(lambda r: r.get("test_auc_whole"))),
        "train_seconds": mean(values(lambda r: r["train_seconds"])),
        "trainable_parameters": first["trainable_parameters"], "test_rows": first["test"]["all"]["rows"],
        "curve": first["curve"], "curve_unit": first["curve_unit"], "runs": [r["run"] for r in results],
        "llm": first.get("llm"), "cf_settings": cf_choice, "vs_mf": None,
        "per_seed": [{k: v for k, v in r.items() if k != "scores"} for r in results],
        "scores": np.stack([r["scores"] for r in results]),                    # [seeds, test rows]
    }


def add_intervals(records: dict[str, dict], names: list[str], rows: pd.DataFrame) -> dict | None:
    """Set the ``vs_mf`` of the records ``names``: AUC − MF's AUC on the test rows (seed-averaged AUCs),
    with the paired 95% interval of a bootstrap by user. Returns the bootstrap's description (None
    when MF did not run, neither requested nor as a prerequisite)."""
    if BASELINE not in records:
        return None
    users, labels = rows["user_id"].to_numpy(), rows["label"].to_numpy()
    for name in names:
        if name != BASELINE:
            records[name]["vs_mf"] = paired_auc_difference(users, labels, records[name]["scores"],
                                                           records[BASELINE]["scores"])
    return {"baseline": BASELINE, "by": "user", "resamples": RESAMPLES, "seed": SEED, "level": LEVEL,
            "statistic": "AUC averaged over each method's seeds, minus MF's, on the same resampled users"}


def cf_notes(records: dict[str, dict], logistic_valid_auc: float | None) -> list[str]:
    """The chosen CF settings, and a plain warning for each CF model that does not beat the logistic rate
    reference on the validation rows."""
    notes = []
    for record in records.values():
        choice = record.get("cf_settings")
        if record["kind"] != "cf" or not choice:
            continue
        chosen = choice["chosen"]
        how = (f"tuned on validation: the best of {len(choice['candidates'])} candidates over "
               f"{' × '.join(choice['grid'])}, in {choice['tuning_seconds']:.0f} s"
               if choice["tuned"] else "the preset's values, not tuned")
        notes.append(f"{record['label']} settings: lr {chosen['lr']:g}, weight decay {chosen['weight_decay']:g}, "
                     f"dim {chosen['dim']} ({how}).")
        valid = record["valid_auc"]["mean"]
        if logistic_valid_auc is not None and valid is not None and valid <= logistic_valid_auc:
            notes.append(f"WARNING: {record['label']} does not beat the logistic rate reference on validation "
                         f"(valid AUC {valid:.4f} vs {logistic_valid_auc:.4f} on the same rows).")
    return notes


def spread(values: list[float | None]) -> dict[str, Any]:
    """``{"mean", "std", "values"}``; std is the sample std over seeds (0 for one); None when undefined."""
    defined = [v for v in values if v is not None]
    if len(defined) < len(values) or not defined:
        return {"mean": None, "std": None, "values": values}
    std = float(np.std(defined, ddof=1)) if len(defined) > 1 else 0.0
    return {"mean": float(np.mean(defined)), "std": std, "values": values}


def mean(values: list[float | None]) -> float | None:
    """The mean of the values, None if any is undefined (a part without rows)."""
    return None if not values or any(v is None for v in values) else float(np.mean(values))
