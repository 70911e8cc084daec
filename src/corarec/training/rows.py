"""The rows a training reads: what it trains on, what it validates on, and the two fixed halves of the
validation users that every learning curve is also scored on (choose on half A, confirm on half B)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from corarec.data.sampling import split_users, subsample_rows, subsample_users
from corarec.data.schema import Dataset
from corarec.errors import CorarecError
from corarec.evaluation.metrics import auc as roc_auc
from corarec.training.config import RunConfig


def sample_seeds(config: RunConfig) -> tuple[int, int]:
    """Seeds of a run's training-row and validation-row draws: its sample seeds where set, else its ``seed``."""
    tc = config.train
    return (config.seed if tc.train_sample_seed is None else tc.train_sample_seed,
            config.seed if tc.valid_sample_seed is None else tc.valid_sample_seed)


def training_rows(dataset: Dataset, config: RunConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows a run trains on and validates on, drawn as ``config.train`` says (seeded). With
    ``train_split = 'valid-half'`` both come from the validation split, from disjoint halves of its users."""
    tc = config.train
    sample = subsample_rows if tc.train_sample == "rows" else subsample_users
    train_seed, valid_seed = sample_seeds(config)
    train_split, valid_split = dataset.train, dataset.valid
    if tc.train_split == "valid-half":
        train_split, valid_split = split_users(dataset.valid, valid_seed)
        if train_split.empty or valid_split.empty:
            raise CorarecError(f"train_split 'valid-half': the validation split of {config.data} has "
                               f"{dataset.valid['user_id'].nunique()} user(s); two halves need at least 2")
    train_rows = sample(train_split, tc.max_train_samples, train_seed).reset_index(drop=True)
    return train_rows, subsample_users(valid_split, tc.max_eval_samples, valid_seed)


HALVES_SEED = 0
"""Seed of the two fixed halves of the validation users in ``valid_curve`` (the same for every run)."""


def halves_auc(valid_rows: pd.DataFrame, scores: np.ndarray) -> list[float | None]:
    """``[AUC of half A, AUC of half B]``: two disjoint halves of the validation users (:func:`split_users` with
    :data:`HALVES_SEED`): a setting chosen on half A's curve is confirmed on half B's."""
    in_a = valid_rows["user_id"].isin(split_users(valid_rows, HALVES_SEED)[0]["user_id"]).to_numpy()
    labels, scores = valid_rows["label"].to_numpy(), np.asarray(scores)
    halves = [roc_auc(labels[part], scores[part]) for part in (in_a, ~in_a)]
    return [None if math.isnan(value) else value for value in halves]  # None: a half with one class only
