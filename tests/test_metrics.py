"""Metrics against hand-computed values and against scikit-learn."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from corarec.errors import CorarecError
from corarec.evaluation.metrics import auc, gauc, metric_report, per_user_auc, uauc, warm_mask


def test_auc_hand_computed():
    # positives 0.8, 0.4; negatives 0.5, 0.1: pairs (0.8>0.5), (0.8>0.1), (0.4<0.5), (0.4>0.1) → 3/4
    assert auc([1, 0, 1, 0], [0.8, 0.5, 0.4, 0.1]) == pytest.approx(0.75)
    assert auc([1, 1, 0, 0], [0.9, 0.8, 0.2, 0.1]) == 1.0
    assert auc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0


def test_auc_ties_count_half():
    # one positive and one negative with the same score: 0.5
    assert auc([1, 0], [0.3, 0.3]) == 0.5
    # pos {0.5, 0.2}, neg {0.5, 0.1}: (0.5 vs 0.5) = 0.5, (0.5 > 0.1) = 1, (0.2 < 0.5) = 0, (0.2 > 0.1) = 1 → 2.5/4
    assert auc([1, 1, 0, 0], [0.5, 0.2, 0.5, 0.1]) == pytest.approx(0.625)
    # constant scores: exactly 0.5 whatever the labels
    assert auc([1, 0, 0, 1, 0], [1.0] * 5) == 0.5


def test_auc_one_class_is_nan():
    assert math.isnan(auc([1, 1, 1], [0.1, 0.2, 0.3]))
    assert math.isnan(auc([], []))


def test_auc_matches_sklearn_with_many_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    s = rng.integers(0, 7, 500).astype(float)  # heavy ties
    assert auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_uauc_and_gauc_hand_computed():
    users = ["a", "a", "a", "a", "b", "b", "b", "c", "c"]
    labels = [1, 0, 1, 0, 1, 0, 0, 1, 1]
    scores = [0.8, 0.5, 0.4, 0.1, 0.9, 0.1, 0.95, 0.3, 0.2]
    # a: 0.75 over 4 rows; b: pos 0.9 vs negs 0.1, 0.95 → 1/2 over 3 rows; c: one class, skipped.
    assert uauc(users, labels, scores) == pytest.approx((0.75 + 0.5) / 2)
    assert gauc(users, labels, scores) == pytest.approx((0.75 * 4 + 0.5 * 3) / 7)
    table = per_user_auc(users, labels, scores).set_index("user")
    assert table.loc["c", "rows"] == 2 and math.isnan(table.loc["c", "auc"])


def test_uauc_nan_when_no_user_has_both_classes():
    assert math.isnan(uauc([0, 0, 1], [1, 1, 0], [0.1, 0.2, 0.3]))
    assert math.isnan(gauc([0, 0, 1], [1, 1, 0], [0.1, 0.2, 0.3]))


def test_uauc_matches_loop_over_sklearn():
    rng = np.random.default_rng(1)
    users = rng.integers(0, 30, 2000)
    y = rng.integers(0, 2, 2000)
    s = np.round(rng.normal(size=2000) + 0.5 * y, 1)
    expected, weights = [], []
    for user in np.unique(users):
        m = users == user
        if len(np.unique(y[m])) == 2:
            expected.append(roc_auc_score(y[m], s[m]))
            weights.append(m.sum())
    assert uauc(users, y, s) == pytest.approx(np.mean(expected), abs=1e-12)
    assert gauc(users, y, s) == pytest.approx(np.average(expected, weights=weights), abs=1e-12)


def test_warm_mask():
    train = pd.DataFrame({"user_id": [0, 1], "item_id": [10, 11]})
    rows = pd.DataFrame({"user_id": [0, 1, 2, 0], "item_id": [11, 12, 10, 10]})
    assert warm_mask(rows, train).tolist() == [True, False, False, True]


def test_metric_report_warm_cold():
    users = [0, 0, 0, 0, 1, 1, 2, 2]
    items = [5, 6, 7, 8, 5, 9, 5, 6]
    labels = [1, 0, 1, 0, 1, 0, 1, 0]
    scores = [0.8, 0.5, 0.4, 0.1, 0.2, 0.7, 0.6, 0.6]
    warm = [True, True, True, True, False, False, True, False]
    report = metric_report(users, labels, scores, warm, items=items)
    assert set(report) == {"all", "warm", "cold"}
    assert report["all"]["rows"] == 8 and report["all"]["users"] == 3 and report["all"]["items"] == 5
    assert report["all"]["auc"] == pytest.approx(roc_auc_score(labels, scores))
    # per user (all): 0 → 0.75, 1 → 0.0, 2 → tie 0.5
    assert report["all"]["uauc"] == pytest.approx((0.75 + 0.0 + 0.5) / 3)
    assert report["all"]["gauc"] == pytest.approx((0.75 * 4 + 0.0 * 2 + 0.5 * 2) / 8)
    # warm: user 0's four rows and user 2's positive → users 0 and 2, only user 0 has both classes
    assert report["warm"]["rows"] == 5 and report["warm"]["users"] == 2 and report["warm"]["uauc_users"] == 1
    assert report["warm"]["uauc"] == pytest.approx(0.75)
    # cold: user 1's two rows (AUC 0) and user 2's negative
    assert report["cold"]["rows"] == 3 and report["cold"]["users"] == 2
    assert report["cold"]["uauc"] == pytest.approx(0.0)
    json.dumps(report, allow_nan=False)


def test_metric_report_no_cold_rows_is_json_safe():
    report = metric_report([0, 0, 1, 1], [1, 0, 1, 1], [0.9, 0.1, 0.5, 0.4], np.ones(4, dtype=bool))
    assert report["cold"] == {"auc": None, "uauc": None, "gauc": None, "rows": 0, "users": 0, "uauc_users": 0}
    assert report["warm"]["rows"] == 4 and report["warm"]["uauc_users"] == 1
    assert report["warm"]["auc"] == pytest.approx(roc_auc_score([1, 0, 1, 1], [0.9, 0.1, 0.5, 0.4]))
    json.dumps(report, allow_nan=False)  # raises on NaN


def test_metric_report_without_warm_mask():
    assert set(metric_report([0, 0], [1, 0], [0.2, 0.1])) == {"all"}


def test_bad_inputs():
    with pytest.raises(CorarecError, match="equal length"):
        auc([1, 0], [0.5])
    with pytest.raises(CorarecError, match="0 or 1"):
        auc([2, 0], [0.5, 0.1])
    with pytest.raises(CorarecError, match="NaN"):
        auc([1, 0], [float("nan"), 0.1])
    with pytest.raises(CorarecError, match="warm_mask"):
        metric_report([0, 0], [1, 0], [0.2, 0.1], [True])
