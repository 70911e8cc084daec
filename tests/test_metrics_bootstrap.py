"""The paired bootstrap by user: weighted AUC equals the AUC of repeated rows, users move whole, and
an interval by user is wider than one by row when a user's rows move together."""

from __future__ import annotations

import numpy as np
import pytest

from corarec.errors import CorarecError
from corarec.evaluation.metrics import auc
from corarec.evaluation.bootstrap import paired_auc_difference, user_weights, weighted_auc


def test_weighted_auc_is_the_auc_of_the_rows_repeated_as_the_weights_say():
    rng = np.random.default_rng(3)
    n = 300
    users = rng.integers(0, 40, n)
    labels = rng.integers(0, 2, n)
    scores = np.round(rng.normal(size=n) + labels, 1)  # rounded: many ties, which count one half
    weights = user_weights(users, 6, seed=1)
    got = weighted_auc(labels, scores, weights)
    for r in range(6):
        repeated = np.repeat(np.arange(n), weights[r])
        assert got[r] == pytest.approx(auc(labels[repeated], scores[repeated]), abs=1e-12)
    assert weighted_auc(labels, scores, np.ones((1, n)))[0] == pytest.approx(auc(labels, scores), abs=1e-12)


def test_user_weights_keep_every_user_whole_and_draw_as_many_users_as_there_are():
    users = np.array(["a", "a", "b", "c", "c", "c", "d"])
    weights = user_weights(users, 200, seed=0)
    assert weights.shape == (200, 7)
    for user in "abcd":
        rows = weights[:, users == user]
        assert (rows == rows[:, :1]).all()  # the rows of one user share its draw count in every resample
    per_user = weights[:, [0, 2, 3, 6]]  # one row of each user
    assert (per_user.sum(1) == 4).all()
    assert (weights == 0).any() and (weights >= 2).any()  # with replacement: some left out, some twice
    assert np.array_equal(weights, user_weights(users, 200, seed=0))  # fixed seed, same resamples


def test_rows_of_one_user_moving_together_widen_the_interval_by_user_not_by_row():
    """10 users × 40 rows; method a ranks the positives of users 0–4 well, b those of users 5–9: which
    method wins a resample depends on which users it draws. Resampling rows as if independent keeps
    the two halves balanced and gives a far narrower (wrong) interval."""
    rng = np.random.default_rng(0)
    n_users, per_user = 10, 40
    users = np.repeat(np.arange(n_users), per_user)
    labels = np.tile(np.r_[np.ones(per_user // 2), np.zeros(per_user // 2)], n_users).astype(int)
    base = rng.normal(size=len(users))
    favours_a = users < n_users // 2
    a = base + 2.0 * labels * favours_a
    b = base + 2.0 * labels * ~favours_a

    by_user = paired_auc_difference(users, labels, a, b)
    by_row = paired_auc_difference(np.arange(len(users)), labels, a, b)
    assert by_user["difference"] == by_row["difference"] == pytest.approx(auc(labels, a) - auc(labels, b), abs=1e-12)
    assert by_user["users"] == 10 and by_row["users"] == 400 and by_user["resamples"] == 1000
    for interval in (by_user, by_row):
        assert interval["low"] <= interval["difference"] <= interval["high"]
    assert by_user["high"] - by_user["low"] > 2 * (by_row["high"] - by_row["low"])


def test_several_seeds_enter_as_their_mean_auc_and_a_clear_gap_excludes_zero():
    rng = np.random.default_rng(1)
    users = np.repeat(np.arange(60), 20)
    labels = rng.integers(0, 2, len(users))
    good = labels[None, :] * 1.5 + rng.normal(size=(3, len(users)))   # [seeds, rows]
    weak = labels * 0.2 + rng.normal(size=len(users))
    result = paired_auc_difference(users, labels, good, weak, resamples=200)
    expected = np.mean([auc(labels, s) for s in good]) - auc(labels, weak)
    assert result["difference"] == pytest.approx(expected, abs=1e-12)
    assert 0 < result["low"] < result["difference"] < result["high"]


def test_bad_inputs_are_one_clear_error():
    users, labels = np.arange(4), np.array([0, 1, 0, 1])
    with pytest.raises(CorarecError, match="scores_b must be"):
        paired_auc_difference(users, labels, np.zeros(4), np.zeros(3))
    with pytest.raises(CorarecError, match="users for 4 labels"):
        paired_auc_difference(np.arange(3), labels, np.zeros(4), np.zeros(4))
    with pytest.raises(CorarecError, match="both labels"):
        paired_auc_difference(users, np.zeros(4, dtype=int), np.arange(4.0), np.zeros(4))
