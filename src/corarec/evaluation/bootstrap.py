"""Confidence intervals of an AUC difference by a paired bootstrap over users.

The rows of one user are not independent (one person's taste, one history), so resampling rows
as if they were understates the uncertainty. :func:`paired_auc_difference` resamples **users** with
replacement and keeps each drawn user's rows together: a user drawn twice counts each of its rows
twice, a user not drawn is left out. Both methods are scored on the same resampled rows (paired), so
what the two share — the rows' difficulty — cancels out of the difference.

A method trained with several seeds enters as a matrix of scores ``[seeds, rows]``: the statistic is
its AUC averaged over its seeds on the resampled rows, so the interval is that of the seed-averaged
AUC that the benchmark table reports.

Each resample is a vector of user multiplicities; a weighted Mann–Whitney AUC (ties count one half,
as :func:`corarec.evaluation.metrics.auc`) turns the multiplicities into the AUC of the resampled rows without
copying them. The interval is the percentile interval of the resampled differences.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from corarec.errors import CorarecError

RESAMPLES = 1000
"""Bootstrap resamples of the benchmark's intervals."""
SEED = 0
"""Seed of the resampling: the same rows and scores always give the same interval."""
LEVEL = 0.95
"""Two-sided coverage of the interval."""
_CHUNK = 100
"""Resamples scored at once (bounds the memory of the weight matrix to ``_CHUNK × rows``)."""


def user_weights(users: Any, resamples: int, seed: int) -> np.ndarray:
    """``[resamples, rows]`` multiplicities of a bootstrap by user: every resample draws as many users
    as there are, with replacement, and each row gets its user's draw count (a user's rows move together)."""
    codes, uniques = pd.factorize(np.asarray(users))
    n_users = len(uniques)
    if n_users == 0:
        raise CorarecError("bootstrap: no rows to resample")
    counts = np.random.default_rng(seed).multinomial(n_users, np.full(n_users, 1.0 / n_users), size=resamples)
    return counts[:, codes]                                                      # [R, N]


def weighted_auc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUC of ``scores`` [N] for ``labels`` [N] with row multiplicities ``weights`` [R, N] → [R].

    Equal to :func:`corarec.evaluation.metrics.auc` of the rows repeated as the weights say; NaN where a
    resample holds only one class.
    """
    order = np.argsort(scores, kind="stable")
    sorted_scores, positive = scores[order], labels[order].astype(bool)
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])  # first row of each tie group
    w = weights[:, order].astype(np.float64)                                     # [R, N]
    pos = np.add.reduceat(np.where(positive, w, 0.0), starts, axis=1)            # [R, G] positive weight per group
    neg = np.add.reduceat(np.where(positive, 0.0, w), starts, axis=1)            # [R, G]
    below = np.cumsum(neg, axis=1) - neg                                         # negative weight strictly below
    pairs = pos.sum(1) * neg.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pos * (below + 0.5 * neg)).sum(1) / pairs


def paired_auc_difference(users: Any, labels: Any, scores_a: Any, scores_b: Any, resamples: int = RESAMPLES,
                          seed: int = SEED, level: float = LEVEL) -> dict[str, Any]:
    """AUC(a) − AUC(b) on the same rows, with a percentile interval from a paired bootstrap by user.

    ``scores_a`` / ``scores_b``: ``[rows]`` or ``[seeds, rows]`` (AUC averaged over the seeds).
    Returns ``{"difference", "low", "high", "level", "resamples", "users", "rows"}``; ``resamples``
    counts the resamples that held both classes (the others are left out). Passing every row as its
    own user gives the row-level bootstrap.
    """
    y = np.asarray(labels)
    a, b = _score_matrix(scores_a, len(y), "scores_a"), _score_matrix(scores_b, len(y), "scores_b")
    if len(y) != len(np.asarray(users)):
        raise CorarecError(f"bootstrap: {len(np.asarray(users))} users for {len(y)} labels")
    if not np.isin(y, (0, 1)).all():
        raise CorarecError("bootstrap: labels must be 0 or 1")
    if not 0 < level < 1 or resamples < 1:
        raise CorarecError(f"bootstrap: level must lie in (0, 1) and resamples be >= 1, got {level}, {resamples}")
    ones = np.ones((1, len(y)))
    difference = float(_mean_auc(y, a, ones)[0] - _mean_auc(y, b, ones)[0])
    weights = user_weights(users, resamples, seed)
    differences = np.concatenate([_mean_auc(y, a, weights[i:i + _CHUNK]) - _mean_auc(y, b, weights[i:i + _CHUNK])
                                  for i in range(0, resamples, _CHUNK)])
    differences = differences[~np.isnan(differences)]
    if not len(differences) or np.isnan(difference):
        raise CorarecError("bootstrap: the rows must hold both labels")
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(differences, [tail, 100 - tail])
    return {"difference": difference, "low": float(low), "high": float(high), "level": level,
            "resamples": int(len(differences)), "users": int(len(pd.unique(np.asarray(users)))), "rows": int(len(y))}


def _mean_auc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """[R] weighted AUC averaged over the rows of ``scores`` [seeds, N]."""
    return np.mean([weighted_auc(labels, seed_scores, weights) for seed_scores in scores], axis=0)


def _score_matrix(scores: Any, n_rows: int, name: str) -> np.ndarray:
    matrix = np.asarray(scores, dtype=np.float64)
    matrix = matrix[None, :] if matrix.ndim == 1 else matrix
    if matrix.ndim != 2 or matrix.shape[1] != n_rows or matrix.shape[0] == 0:
        raise CorarecError(f"bootstrap: {name} must be [rows] or [seeds, rows] with {n_rows} rows, got {np.shape(scores)}")
    if np.isnan(matrix).any():
        raise CorarecError(f"bootstrap: {name} holds NaN")
    return matrix
