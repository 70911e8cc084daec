"""Two simple references for CTR, computed from the train split only.

- ``item-rate``: the item's smoothed positive rate in train,
  ``(positives_i + a * p) / (rows_i + a)`` with ``p`` the train positive rate and ``a`` pseudo-rows
  (items unseen in train score ``p``);
- ``logistic-rate`` (logistic on rates): a logistic regression (scikit-learn) on the log-odds of the smoothed user
  and item positive rates, fitted on the valid split (users unseen in train have rate ``p``).

Both return one score per row of a split, so any benchmark can compute metrics on them;
:data:`REFERENCES` names them as ``corarec benchmark --methods`` does.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from corarec.data.schema import Dataset
from corarec.errors import CorarecError

SMOOTHING = 5.0
"""Pseudo-rows ``a`` at the train positive rate added to every user's and item's counts."""


def smoothed_rate(train: pd.DataFrame, key: str, frame: pd.DataFrame, smoothing: float = SMOOTHING) -> np.ndarray:
    """Smoothed train positive rate of ``frame[key]`` (``user_id`` or ``item_id``) per row."""
    prior = float(train["label"].mean())
    stats = train.groupby(key)["label"].agg(["sum", "count"])
    rate = (stats["sum"] + smoothing * prior) / (stats["count"] + smoothing)
    return frame[key].map(rate).fillna(prior).to_numpy(dtype=np.float64)


def item_rate_scores(ds: Dataset, split: str, smoothing: float = SMOOTHING) -> np.ndarray:
    """Item-rate reference: one score per row of ``split``."""
    return smoothed_rate(ds.train, "item_id", ds.splits[split], smoothing)


def rate_log_odds(train: pd.DataFrame, key: str, frame: pd.DataFrame, smoothing: float = SMOOTHING) -> np.ndarray:
    """Log-odds of :func:`smoothed_rate` per row (the rate clipped to [1e-4, 1 − 1e-4])."""
    rate = smoothed_rate(train, key, frame, smoothing).clip(1e-4, 1 - 1e-4)
    return np.log(rate / (1 - rate))


def rate_features(ds: Dataset, split: str, smoothing: float = SMOOTHING) -> np.ndarray:
    """[N, 2] log-odds of the smoothed user and item train rates of the rows of ``split``."""
    frame = ds.splits[split]
    return np.stack([rate_log_odds(ds.train, k, frame, smoothing) for k in ("user_id", "item_id")], 1)


def logistic_rates_scores(ds: Dataset, split: str, smoothing: float = SMOOTHING) -> np.ndarray:
    """Logistic-on-rates reference (fitted on valid): one score (log-odds) per row of ``split``."""
    labels = ds.valid["label"].to_numpy()
    if labels.min() == labels.max():
        raise CorarecError(f"{ds.root or ds.name}: the valid split holds only label {int(labels[0])}; cannot fit the logistic reference")
    from sklearn.linear_model import LogisticRegression  # imported here: it takes seconds, only this needs it

    model = LogisticRegression()
    model.fit(rate_features(ds, "valid", smoothing), labels)
    return model.decision_function(rate_features(ds, split, smoothing))


REFERENCES = {"item-rate": item_rate_scores, "logistic-rate": logistic_rates_scores}
"""Name (as ``--methods`` spells it) → ``f(ds, split) -> scores``."""
