"""Seeded subsets of a split's rows: for training (rows) and for evaluation (whole users)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def subsample_rows(rows: pd.DataFrame, max_rows: int | None, seed: int) -> pd.DataFrame:
    """Deterministically keep ``max_rows`` rows drawn uniformly (seeded), in their original order.

    For training: a row sample spans (nearly) every user, where a whole-user sample of the same size
    covers a few dozen (4,000 MovieLens-100K train rows = 46 of 647 users), too few for a model that
    reads user embeddings to generalise to new ones.
    """
    if max_rows is None or len(rows) <= max_rows:
        return rows
    keep = np.sort(np.random.default_rng(seed).choice(len(rows), size=max_rows, replace=False))
    return rows.iloc[keep]


def subsample_users(rows: pd.DataFrame, max_rows: int | None, seed: int) -> pd.DataFrame:
    """Deterministically keep whole users (in a seeded random order) until ``max_rows`` is reached.

    Keeping whole users keeps UAUC meaningful. The result never exceeds ``max_rows`` unless a
    single user has more rows than that (then that user alone is kept).
    """
    if max_rows is None or len(rows) <= max_rows:
        return rows
    users = rows["user_id"].unique()
    order = np.random.default_rng(seed).permutation(len(users))
    counts = rows.groupby("user_id").size()
    chosen, total = [], 0
    for index in order:
        user = users[index]
        n = int(counts[user])
        if total + n > max_rows and chosen:
            continue
        chosen.append(user)
        total += n
        if total >= max_rows:
            break
    return rows[rows["user_id"].isin(set(chosen))]


def split_users(rows: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``rows`` cut into two halves of whole users (a seeded permutation of the distinct users; the
    first half gets ``⌊users / 2⌋``), each in the rows' original order: ``(half A, half B)``."""
    users = np.sort(rows["user_id"].unique())
    half_a = set(np.random.default_rng(seed).permutation(users)[: len(users) // 2].tolist())
    in_a = rows["user_id"].isin(half_a).to_numpy()
    return rows[in_a], rows[~in_a]
