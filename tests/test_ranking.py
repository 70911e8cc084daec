"""Top-k evaluation (`corarec evaluate --ranking`): the metrics against hand-computed lists, the
protocol's users and histories (nothing of the test period leaks in), and the CLI on a tiny run."""

from __future__ import annotations

import itertools
import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from corarec.cli import app
from corarec.data.schema import read_dataset
from corarec.errors import CorarecError
from corarec.evaluation.ranking import (evaluate_ranking, format_ranking, list_metrics, parse_k, ranking_users)
from tiny import COLD_USER, CutOff, tiny_dataset

runner = CliRunner()
D2, D3, D4, D5 = (1 / math.log2(n) for n in (3, 4, 5, 6))  # DCG discounts of positions 2..5
EXACT = 1e-12  # a handful of float64 operations on values <= 1


def test_metrics_of_a_hand_computed_list_with_a_target_outside_it():
    # list order (by score): miss, TARGET, miss, TARGET; a third target is not in the list
    metrics = list_metrics([0.9, 0.8, 0.7, 0.6], [False, True, False, True], n_targets=3, ks=[1, 2, 10])
    expected = {"recall@1": 0.0, "ndcg@1": 0.0, "hr@1": 0.0,
                "recall@2": 1 / 3, "ndcg@2": D2 / (1 + D2), "hr@2": 1.0,
                # k larger than the list: the list ends after 4 items; the ideal list holds all 3 targets
                "recall@10": 2 / 3, "ndcg@10": (D2 + D4) / (1 + D2 + D3), "hr@10": 1.0, "mrr": 1 / 2}
    assert metrics.keys() == expected.keys()
    for name, value in expected.items():
        assert abs(metrics[name] - value) <= EXACT, name


def test_scores_are_ranked_highest_first_whatever_the_input_order():
    shuffled = list_metrics([0.6, 0.9, 0.7, 0.8], [True, False, False, True], n_targets=3, ks=[2])
    assert abs(shuffled["ndcg@2"] - D2 / (1 + D2)) <= EXACT and shuffled["mrr"] == 0.5


def test_tied_scores_count_as_the_expected_value_over_their_orders():
    # a target tied with a miss at the top: rank 1 or 2 with probability 1/2 each
    metrics = list_metrics([1.0, 1.0, 0.0], [False, True, False], n_targets=1, ks=[1, 2])
    assert metrics["recall@1"] == 0.5 and metrics["hr@1"] == 0.5 and metrics["ndcg@1"] == 0.5
    assert metrics["recall@2"] == 1.0 and metrics["hr@2"] == 1.0
    assert abs(metrics["ndcg@2"] - (1 + D2) / 2) <= EXACT
    assert abs(metrics["mrr"] - (1 + 1 / 2) / 2) <= EXACT
    # two targets among four tied items: P(no target in the first one) = 1/2, in the first two = 1/6
    tied = list_metrics([3.0, 3.0, 3.0, 3.0], [True, False, True, False], n_targets=2, ks=[1, 2])
    assert abs(tied["hr@1"] - 1 / 2) <= EXACT and abs(tied["hr@2"] - 5 / 6) <= EXACT
    # E[1/rank of the first target]: first at 1 (1/2), 2 (1/3), 3 (1/6)
    assert abs(tied["mrr"] - (1 / 2 + 1 / 3 / 2 + 1 / 6 / 3)) <= EXACT


def test_metrics_equal_the_mean_over_every_order_of_the_ties():
    """Brute force: every order of the tied items, each equally likely."""
    rng = np.random.default_rng(0)
    for _ in range(25):
        size = int(rng.integers(1, 7))
        scores = rng.integers(0, 3, size=size).astype(float)  # few values: many ties
        relevant = rng.random(size) < 0.4
        n_targets = max(1, int(relevant.sum()) + int(rng.integers(0, 2)))
        got = list_metrics(scores, relevant, n_targets, [1, 3, 8])
        totals, orders = dict.fromkeys(got, 0.0), 0
        for perm in itertools.permutations(range(size)):
            s, r = scores[list(perm)], relevant[list(perm)]
            if np.any(s[:-1] < s[1:]):
                continue  # not sorted by score
            orders += 1
            for k in (1, 3, 8):
                ideal = sum(1 / math.log2(i + 2) for i in range(min(n_targets, k)))
                totals[f"recall@{k}"] += r[:k].sum() / n_targets
                totals[f"ndcg@{k}"] += sum(1 / math.log2(i + 2) for i in range(min(k, size)) if r[i]) / ideal
                totals[f"hr@{k}"] += float(r[:k].any())
            totals["mrr"] += 1 / (np.flatnonzero(r)[0] + 1) if r.any() else 0.0
        for name in got:
            assert abs(got[name] - totals[name] / orders) <= EXACT, (name, scores, relevant)


def test_a_list_without_a_target_scores_zero():
    metrics = list_metrics([0.3, 0.2, 0.1], [False, False, False], n_targets=2, ks=[1, 5])
    assert set(metrics.values()) == {0.0}
    assert set(list_metrics([], [], n_targets=1, ks=[3]).values()) == {0.0}


def test_metric_input_errors():
    with pytest.raises(CorarecError, match="NaN"):
        list_metrics([0.1, float("nan")], [True, False], 1, [1])
    with pytest.raises(CorarecError, match="equal length"):
        list_metrics([0.1, 0.2], [True], 1, [1])
    with pytest.raises(CorarecError, match="n_targets"):
        list_metrics([0.1, 0.2], [True, True], 1, [1])
    assert parse_k("20, 5,10,5") == [5, 10, 20]
    for bad in ("0", "5,x", "", "-1"):
        with pytest.raises(CorarecError, match="--k"):
            parse_k(bad)


def _interleaved_dataset():
    """The tiny dataset with user 0's earliest test row moved before its valid rows (two liked): the
    valid rows then lie in the test period and must not reach the history."""
    ds = tiny_dataset()
    test = ds.splits["test"]
    first = test.index[test["user_id"] == 0][0]
    test.loc[first, "timestamp"] = 1_009_500  # after user 0's train rows (<= 1_009_000), before its valid rows
    return ds


def test_users_history_stops_before_the_first_test_timestamp():
    ds = _interleaved_dataset()
    users = {u.user_id: u for u in ranking_users(ds, None, seed=0)}
    for user in users.values():
        first_test = ds.test.loc[ds.test["user_id"] == user.user_id, "timestamp"].min()
        earlier = pd.concat([ds.train, ds.valid])
        earlier = earlier[(earlier["user_id"] == user.user_id) & (earlier["label"] == 1)
                          & (earlier["timestamp"] < first_test)].sort_values("timestamp")
        assert user.history == earlier["item_id"].tolist()
        assert not set(user.history) & set(ds.test.loc[ds.test["user_id"] == user.user_id, "item_id"])
        assert user.targets == set(ds.test.loc[(ds.test["user_id"] == user.user_id) & (ds.test["label"] == 1),
                                               "item_id"]) - user.seen
    valid_liked = ds.valid.loc[(ds.valid["user_id"] == 0) & (ds.valid["label"] == 1), "item_id"]
    assert len(valid_liked) and not set(valid_liked) & set(users[0].history)  # the case the check is about
    assert users[11].cold and users[11].history == [] and not users[0].cold
    drawn = ranking_users(ds, 4, seed=0)
    assert len(drawn) == 4 and [u.user_id for u in drawn] == sorted(u.user_id for u in drawn)
    assert [u.user_id for u in ranking_users(ds, 4, seed=0)] == [u.user_id for u in drawn]  # seeded


@pytest.fixture(scope="module")
def ranked(tiny_run, tmp_path_factory):
    """A copy of the tiny run evaluated on the interleaved dataset; every pool and history captured."""
    from corarec.data.schema import write_dataset
    from corarec.serving.recommender import Recommender

    root = tmp_path_factory.mktemp("ranking")
    run = shutil.copytree(tiny_run.run, root / "run")
    data = write_dataset(_interleaved_dataset(), root / "data")
    seen: dict[str, list] = {"scored": [], "folded": []}
    patch = pytest.MonkeyPatch()
    logits, prior = Recommender.logits, Recommender.prior_scores

    def scoring(self, rows, journal=None):
        out = logits(self, rows, journal)
        seen["scored"].append((rows.copy(), out))
        return out

    def folding(self, state, items, chunk=4096):
        seen["folded"].append((state.user_id, list(state.history)))
        return prior(self, state, items, chunk)

    patch.setattr(Recommender, "logits", scoring)
    patch.setattr(Recommender, "prior_scores", folding)
    try:
        result = evaluate_ranking(run, data=data, k="1,3,50", pool=8, max_users=0, progress=False)
    finally:
        patch.undo()
    return {"result": result, "run": run, "data": data, **seen}


def test_no_test_period_item_reaches_the_prompt_or_the_fold_in(ranked):
    ds = read_dataset(ranked["data"])
    every = pd.concat([ds.train, ds.valid, ds.test])
    first_test = ds.test.groupby("user_id")["timestamp"].min()
    (rows, _), = ranked["scored"]  # every user's pool in one scoring pass
    histories = [(int(u), list(h)) for u, h in zip(rows["user_id"], rows["history"])] + ranked["folded"]
    assert {u for u, _ in ranked["folded"]} == set(rows["user_id"]) and 0 in set(rows["user_id"])
    for user, history in histories:
        mine = every[every["user_id"] == user]
        when = dict(zip(mine.loc[mine["label"] == 1, "item_id"], mine.loc[mine["label"] == 1, "timestamp"]))
        assert all(when[i] < first_test[user] for i in history), (user, history)
    # user 0 liked valid items after its first test row: they are in its dataset history, not here
    late = ds.valid.loc[(ds.valid["user_id"] == 0) & (ds.valid["label"] == 1), "item_id"]
    assert len(late) and set(late) <= set(ds.test.loc[ds.test["user_id"] == 0, "history"].iloc[-1])
    assert not set(late) & {i for u, h in histories if u == 0 for i in h}


def test_pools_lists_and_averages(ranked):
    ds, result = read_dataset(ranked["data"]), ranked["result"]
    (rows, logits), = ranked["scored"]
    users = ranking_users(ds, None, seed=0)
    assert [u["user"] for u in result["per_user"]] == [u.raw for u in users]
    assert result["parts"]["cold"]["users"] == 1 and result["per_user"][-1]["user"] == COLD_USER
    popularity = np.bincount(ds.train.loc[ds.train["label"] == 1, "item_id"], minlength=ds.n_items)
    offset = 0
    for user, entry in zip(users, result["per_user"]):
        pool = rows.iloc[offset:offset + 8]
        assert len(pool) == 8 and (pool["user_id"] == user.user_id).all()
        assert not set(pool["item_id"]) & user.seen  # outside the user's train and valid rows
        hit = pool["item_id"].isin(user.targets).to_numpy()
        assert entry["in_pool"] == int(hit.sum()) and entry["targets"] == len(user.targets)
        for name, value in list_metrics(logits[offset:offset + 8], hit, len(user.targets), [1, 3, 50]).items():
            assert entry["reranked"][name] == value
        for name, value in list_metrics(pool["cf_logit"], hit, len(user.targets), [1, 3, 50]).items():
            assert entry["cf"][name] == value
        catalogue = np.setdiff1d(np.arange(ds.n_items), list(user.seen))
        top = catalogue[np.argsort(-popularity[catalogue], kind="stable")[:8]]
        expected = list_metrics(popularity[top], np.isin(top, list(user.targets)), len(user.targets), [1, 3, 50])
        assert entry["popularity"] == expected
        offset += 8
    every = result["parts"]["all"]
    assert abs(every["targets_in_pool"] - np.mean([u["in_pool"] / u["targets"] for u in result["per_user"]])) <= EXACT
    assert abs(every["reranked"]["ndcg@3"] - np.mean([u["reranked"]["ndcg@3"] for u in result["per_user"]])) <= EXACT
    for order in ("cf", "popularity", "reranked"):  # k beyond the pool: recall reaches the pool's share
        assert every[order]["recall@50"] <= every["targets_in_pool"] + EXACT
    assert abs(every["reranked"]["recall@50"] - every["targets_in_pool"]) <= EXACT
    saved = json.loads((ranked["run"] / "eval" / "ranking-test.json").read_text())
    assert saved["parts"] == json.loads(json.dumps(result["parts"]))
    assert "ranking" not in (ranked["run"] / "metrics.json").read_text()
    assert "NDCG@3" in format_ranking(result) and "re-ranked" in format_ranking(result)


def test_cli_evaluate_ranking(tiny_run, tmp_path):
    run = shutil.copytree(tiny_run.run, tmp_path / "run")
    result = runner.invoke(app, ["evaluate", "--run", str(run), "--ranking", "--k", "2,4", "--pool", "6",
                                 "--max-users", "5"])
    assert result.exit_code == 0, result.output
    assert "NDCG@4" in result.output and "re-ranked" in result.output and "CF order" in result.output
    assert "ranking-test.json" in result.output
    saved = json.loads((run / "eval" / "ranking-test.json").read_text())
    assert saved["k"] == [2, 4] and saved["pool"] == 6 and len(saved["per_user"]) == 5
    assert saved["pool_from"] == "mf" and saved["scored_rows"] == 30
    for args, message in ((["--split", "valid"], "--split does not apply to --ranking"),
                          (["--k", "0"], "--k: expected"), (["--pool", "0"], "--pool must be"),
                          (["--max-users", "-1"], "--max-users must be")):
        result = runner.invoke(app, ["evaluate", "--run", str(run), "--ranking", *args])
        assert isinstance(result.exception, CorarecError) and message in str(result.exception)


def test_a_cut_off_ranking_evaluation_goes_on_where_it_stopped(tiny_run, tmp_path, monkeypatch):
    from corarec.methods.cora import CoRA

    run = shutil.copytree(tiny_run.run, tmp_path / "run")
    options = dict(k="2,4", pool=6, max_users=5, batch_size=4, progress=False)
    straight = evaluate_ranking(run, **options)  # 5 users × 6 items: 8 batches of 4
    cut = CutOff(CoRA.score, stop_at=3)
    monkeypatch.setattr(CoRA, "score", lambda self, batch: cut(self, batch))
    with pytest.raises(KeyboardInterrupt):
        evaluate_ranking(run, **options)
    assert len(list((run / "eval").glob("ranking-test-*.partial.safetensors"))) == 1
    cut.calls, cut.stop_at = 0, None
    resumed = evaluate_ranking(run, **options)
    assert cut.calls == 8 - 2
    for a, b in zip(straight["per_user"], resumed["per_user"]):
        assert a["user"] == b["user"] and a["reranked"] == pytest.approx(b["reranked"], abs=1e-6)
    assert list((run / "eval").glob("*.partial.safetensors")) == []


def test_benchmark_ranking_columns_on_the_same_users(tmp_path):
    from corarec.benchmarking import benchmark
    from test_benchmark import setup

    data, llm, preset = setup(tmp_path)
    out = tmp_path / "bench"
    summary = benchmark(data, out, methods="mf,icl,cora-mf", preset=str(preset), tune_cf=False, llm=llm, ranking=True)
    ranking = summary["ranking"]
    assert [m["name"] for m in ranking["methods"]] == ["icl", "cora-mf"]  # the methods that re-rank
    icl, cora = ranking["methods"]
    assert icl["pool_from"] == "popularity" and icl["parts"]["all"]["cf"] is None and cora["pool_from"] == "mf"
    assert icl["parts"]["all"]["popularity"] == cora["parts"]["all"]["popularity"]  # the same users and lists
    stored = out / "runs" / "cora-mf" / "seed-0" / "eval" / "ranking-test.json"
    saved = json.loads(stored.read_text())
    assert saved["seed"] == 0 and saved["pool"] == 100 and saved["parts"]["all"] == cora["parts"]["all"]
    assert [u["user"] for u in saved["per_user"]] == [u.raw for u in ranking_users(read_dataset(data), 50, 0)]
    markdown = (out / "results.md").read_text()
    assert "## Top-k" in markdown and "| CoRA-MF (re-ranked) | MF |" in markdown and "| Popularity |" in markdown
    assert "| MF (its pool, CF order) | MF |" in markdown and "ndcg_at_k.png" in markdown
    assert (out / "ndcg_at_k.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = pd.read_csv(out / "results.csv")
    ndcg = cora["parts"]["all"]["reranked"]["ndcg@10"]
    assert table.loc[table["name"] == "cora-mf", "topk_ndcg@10"].item() == round(ndcg, 4)
    assert table.loc[table["name"] == "mf", "topk_ndcg@10"].isna().all()  # CF models alone do not re-rank
    stamp = stored.stat().st_mtime_ns
    again = benchmark(data, out, methods="mf,icl,cora-mf", preset=str(preset), tune_cf=False, llm=llm, ranking=True)
    assert again["ranking"]["methods"] == ranking["methods"] and stored.stat().st_mtime_ns == stamp  # reused
    assert "ranking" not in benchmark(data, out, methods="mf", preset=str(preset), tune_cf=False)
