"""Ranking metrics of the CoLLM / CoRA papers: AUC, UAUC, GAUC and a warm/cold report.

- **AUC**: the probability that a random positive row scores above a random negative row of the
  same split, ties counting one half (Mann–Whitney U with average ranks).
- **UAUC**: the unweighted mean of per-user AUC over the users whose rows hold both classes; the
  other users are skipped (the CoLLM/CoRA definition).
- **GAUC**: the same per-user AUCs, weighted by each counted user's number of rows.

Undefined values (a single class, no rows, no user with both classes) are ``float('nan')`` from
the functions and ``None`` in :func:`metric_report`, whose result is plain JSON.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from corarec.errors import CorarecError


def auc(labels: Any, scores: Any) -> float:
    """Area under the ROC curve of ``scores`` for 0/1 ``labels``; NaN if only one class is present."""
    y, s = _as_arrays(labels, scores)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = pd.Series(s).rank(method="average").to_numpy()  # ties share their mean rank
    u = ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def per_user_auc(users: Any, labels: Any, scores: Any) -> pd.DataFrame:
    """One row per user: ``user``, ``rows``, ``positives``, ``auc`` (NaN where the user has one class)."""
    y, s = _as_arrays(labels, scores)
    u = np.asarray(users)
    if u.shape != y.shape:
        raise CorarecError(f"metrics: users has {u.size} entries but labels has {y.size}")
    frame = pd.DataFrame({"user": u, "label": y, "score": s})
    # Average rank of each score within its own user's rows (ties → mean rank).
    frame["rank"] = frame.groupby("user", sort=True)["score"].rank(method="average")
    frame["pos_rank"] = np.where(frame["label"] == 1, frame["rank"], 0.0)
    grouped = frame.groupby("user", sort=True).agg(
        rows=("label", "size"), positives=("label", "sum"), pos_rank=("pos_rank", "sum")
    )
    n_pos = grouped["positives"].to_numpy(dtype=np.float64)
    n_neg = grouped["rows"].to_numpy(dtype=np.float64) - n_pos
    with np.errstate(divide="ignore", invalid="ignore"):
        values = (grouped["pos_rank"].to_numpy() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    values[(n_pos == 0) | (n_neg == 0)] = np.nan
    return pd.DataFrame(
        {
            "user": grouped.index.to_numpy(),
            "rows": grouped["rows"].to_numpy(dtype=np.int64),
            "positives": grouped["positives"].to_numpy(dtype=np.int64),
            "auc": values,
        }
    )


def uauc(users: Any, labels: Any, scores: Any) -> float:
    """Unweighted mean of per-user AUC over users holding both classes; NaN if there are none."""
    per_user = per_user_auc(users, labels, scores)
    counted = per_user["auc"].dropna()
    return float(counted.mean()) if len(counted) else float("nan")


def gauc(users: Any, labels: Any, scores: Any) -> float:
    """Per-user AUC averaged with each user's row count as weight (users holding both classes only)."""
    per_user = per_user_auc(users, labels, scores).dropna(subset=["auc"])
    if not len(per_user):
        return float("nan")
    return float(np.average(per_user["auc"], weights=per_user["rows"]))


def warm_mask(rows: pd.DataFrame, train: pd.DataFrame) -> np.ndarray:
    """Boolean array over ``rows``: True where both the user and the item occur in ``train``."""
    user_ok = rows["user_id"].isin(pd.unique(train["user_id"])).to_numpy()
    item_ok = rows["item_id"].isin(pd.unique(train["item_id"])).to_numpy()
    return user_ok & item_ok


def metric_report(
    users: Any,
    labels: Any,
    scores: Any,
    warm_mask: Any = None,
    items: Any = None,
) -> dict[str, dict[str, Any]]:
    """AUC, UAUC and GAUC for all rows, warm rows and cold rows, as plain JSON.

    Returns ``{"all": part, "warm": part, "cold": part}`` (only ``"all"`` when ``warm_mask`` is
    None). Each part is ``{"auc", "uauc", "gauc", "rows", "users", "uauc_users"}`` plus ``"items"``
    when ``items`` is given: ``rows``/``users``/``items`` count the part's rows and distinct ids,
    ``uauc_users`` the users that hold both classes (those UAUC and GAUC average over). A metric
    that is undefined — no rows, a single class, no user with both classes — is ``None``; a part
    with no rows is therefore ``{"auc": None, "uauc": None, "gauc": None, "rows": 0, "users": 0, ...}``.
    """
    y, s = _as_arrays(labels, scores)
    u = np.asarray(users)
    if u.shape != y.shape:
        raise CorarecError(f"metrics: users has {u.size} entries but labels has {y.size}")
    it = None if items is None else np.asarray(items)
    if it is not None and it.shape != y.shape:
        raise CorarecError(f"metrics: items has {it.size} entries but labels has {y.size}")

    parts: dict[str, np.ndarray] = {"all": np.ones(len(y), dtype=bool)}
    if warm_mask is not None:
        warm = np.asarray(warm_mask, dtype=bool)
        if warm.shape != y.shape:
            raise CorarecError(f"metrics: warm_mask has {warm.size} entries but labels has {y.size}")
        parts["warm"] = warm
        parts["cold"] = ~warm

    report: dict[str, dict[str, Any]] = {}
    for name, mask in parts.items():
        per_user = per_user_auc(u[mask], y[mask], s[mask])
        counted = per_user.dropna(subset=["auc"])
        part: dict[str, Any] = {
            "auc": _json_float(auc(y[mask], s[mask])),
            "uauc": _json_float(counted["auc"].mean() if len(counted) else float("nan")),
            "gauc": _json_float(np.average(counted["auc"], weights=counted["rows"]) if len(counted) else float("nan")),
            "rows": int(mask.sum()),
            "users": int(len(per_user)),
            "uauc_users": int(len(counted)),
        }
        if it is not None:
            part["items"] = int(len(pd.unique(it[mask])))
        report[name] = part
    return report


def _as_arrays(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or s.ndim != 1 or y.shape != s.shape:
        raise CorarecError(f"metrics: labels ({y.shape}) and scores ({s.shape}) must be 1-D and of equal length")
    if y.size and not np.isin(y, (0, 1)).all():
        raise CorarecError("metrics: labels must be 0 or 1")
    if np.isnan(s).any():
        raise CorarecError(f"metrics: {int(np.isnan(s).sum())} score(s) are NaN")
    return y.astype(np.int64), s


def _json_float(value: float) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value
