"""The Python API on a tiny trained run: score pairs in raw ids, recommend, predict from files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from corarec.errors import CorarecError
from corarec.serving.pairs import pair_records, read_candidates
from corarec.serving.recommend import format_recommendations
from numerics import assert_within, method_score_tolerance, scaled_delta_weights, within
from tiny import COLD_ITEM, COLD_USER, N_ITEMS, item_raw


def _positives_in_time_order(ds, user_id: int) -> list[int]:
    rows = pd.concat([ds.splits[s] for s in ("train", "valid", "test")])
    rows = rows[(rows["user_id"] == user_id) & (rows["label"] == 1)].sort_values("timestamp", kind="stable")
    return rows["item_id"].tolist()


def test_load_is_lazy_and_returns_a_recommender(recommender):
    import subprocess
    import sys

    from corarec.serving.recommender import Recommender

    # in a fresh interpreter: `import corarec` loads neither torch nor the serving code; `corarec.load` does
    probe = ("import sys, corarec; before = {'torch', 'corarec.serving.recommender'} & set(sys.modules); "
             "corarec.load; after = {'torch', 'corarec.serving.recommender'} <= set(sys.modules); "
             "print(sorted(before), after)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[] True"
    assert isinstance(recommender, Recommender)


def test_known_user_history_is_all_positives_in_time_order(recommender):
    ds = recommender.dataset
    for raw, uid in list(ds.user_index().items())[:4]:
        state = recommender.user_state(raw)
        assert state.user_id == uid
        assert state.history == _positives_in_time_order(ds, uid)
        every = pd.concat([ds.splits[s] for s in ("train", "valid", "test")])
        assert state.seen == set(every.loc[every["user_id"] == uid, "item_id"])
        assert state.cold is (uid not in set(ds.train["user_id"]))


def test_score_matches_the_method_on_a_hand_built_batch(recommender):
    run = recommender.run
    ds = recommender.dataset
    liked = _positives_in_time_order(ds, 3)
    pairs = [("u03", item_raw(liked[1])), ("u03", "m1029"), ("u04", item_raw(7))]
    out = recommender.score(pairs)
    rows = pd.DataFrame({"user_id": [3, 3, 4], "item_id": [liked[1], 29, 7],
                         "history": [liked[:1] + liked[2:],  # a pair's own item leaves its history
                                     liked, [i for i in _positives_in_time_order(ds, 4) if i != 7]]})
    with torch.no_grad():
        expected = run.method.score(run.batcher(rows).to(run.device)).float().numpy()
    tolerance = method_score_tolerance(run.method)  # fp32, maybe batched and padded otherwise
    assert_within(out["logit"].to_numpy(), expected, tolerance, "logits")
    # ... and the comparison can fail: ΔW off by 10% is caught (two training steps leave ΔW small)
    with scaled_delta_weights(run.method, 1.1):
        assert not within(recommender.score(pairs)["logit"].to_numpy(), expected, tolerance)
    np.testing.assert_allclose(out["probability"], 1 / (1 + np.exp(-out["logit"])), rtol=1e-9)
    assert list(zip(out["user"], out["item"])) == pairs


def test_score_flags_unknown_and_cold_pairs_and_never_drops_them(recommender):
    pairs = pd.DataFrame({"user": ["u00", COLD_USER, "stranger", "u01"],
                          "item": ["m1001", "m1002", "m1003", "not-an-item"]})
    out = recommender.score(pairs)
    assert len(out) == 4 and out["logit"].notna().all()
    assert list(out["cold_user"]) == [False, True, True, False]
    assert list(out["cold_item"])[3] is True
    assert list(out["cold"]) == [c or i for c, i in zip(out["cold_user"], out["cold_item"])]
    cold_item = recommender.score([("u00", COLD_ITEM)])
    assert bool(cold_item["cold_item"].iloc[0]) and not bool(cold_item["cold_user"].iloc[0])


def test_scores_do_not_depend_on_batching(recommender):
    pairs = [("u00", "m1001"), ("u05", "m1010"), ("stranger", "m1003"), ("u02", "m1020"), ("u07", "m1002")]
    together = recommender.score(pairs)["logit"].to_numpy()
    alone = np.concatenate([recommender.score([p])["logit"].to_numpy() for p in pairs])
    tolerance = method_score_tolerance(recommender.run.method)
    assert_within(together, alone, tolerance, "logits in one batch vs one at a time")
    with scaled_delta_weights(recommender.run.method, 1.1):
        assert not within(recommender.score(pairs)["logit"].to_numpy(), alone, tolerance)


def test_history_of_an_unknown_user_changes_its_score(recommender):
    plain = recommender.score([{"user": "stranger", "item": "m1004"}])["logit"].iloc[0]
    with_history = recommender.score([{"user": "stranger", "item": "m1004",
                                       "history": ["m1000", "m1002", "m1006"]}])["logit"].iloc[0]
    assert not within(plain, with_history, method_score_tolerance(recommender.run.method))
    with pytest.raises(CorarecError, match=r"row 1: history: item 2 \('nope'\) is not an item"):
        recommender.score([{"user": "stranger", "item": "m1004", "history": ["m1000", "nope"]}])


def test_pair_records_errors_name_the_row():
    with pytest.raises(CorarecError, match="row 2: item is empty"):
        pair_records([("u1", "m1"), ("u2", None)])
    with pytest.raises(CorarecError, match="row 3: label must be 0 or 1"):
        pair_records(pd.DataFrame({"user": ["a", "b", "c"], "item": ["x", "y", "z"], "label": ["1", "0", "yes"]}))
    with pytest.raises(CorarecError, match="row 1: expected"):
        pair_records([("only-a-user",)])
    with pytest.raises(CorarecError, match="missing column"):
        pair_records(pd.DataFrame({"user_id": [1], "item": [2]}))
    with pytest.raises(CorarecError, match="no pairs"):
        pair_records([])
    assert pair_records([(7, 7.0)]) == [{"user": "7", "item": "7"}]


def test_recommend_excludes_seen_items_and_ranks_by_logit(recommender):
    state = recommender.user_state("u02")
    top = recommender.recommend("u02", k=5, pool=12)
    assert list(top["rank"]) == [1, 2, 3, 4, 5]
    assert top["logit"].is_monotonic_decreasing
    ids = recommender.item_list(top["item"], "test")
    assert not set(ids) & state.seen
    assert list(top["title"]) == [recommender.titles[i] for i in ids]
    assert "cf_logit" in top


def test_recommend_pool_is_the_cf_models_top_unseen_items(recommender):
    state = recommender.user_state("u02")
    unseen = np.asarray([i for i in range(N_ITEMS) if i not in state.seen])
    pool = 6
    rows = recommender.candidates("u02", k=3, pool=pool)
    cf_scores = recommender.prior_scores(state, unseen)
    expected = set(unseen[np.argsort(-cf_scores, kind="stable")[:pool]].tolist())
    assert set(rows["item_id"]) == expected and len(rows) == pool
    top = recommender.recommend("u02", k=3, pool=pool)
    assert set(recommender.item_list(top["item"], "test")) <= expected


def test_recommend_with_candidates(recommender):
    state = recommender.user_state("u00")
    candidates = [item_raw(i) for i in range(10)]
    top = recommender.recommend("u00", k=20, candidates=candidates)
    expected = {item_raw(i) for i in range(10) if i not in state.seen}
    assert set(top["item"]) == expected  # k larger than the candidates: all unseen ones, ranked
    scored = recommender.score([("u00", item) for item in top["item"]])
    tolerance = method_score_tolerance(recommender.run.method)
    assert_within(top["logit"].to_numpy(), scored["logit"].to_numpy(), tolerance, "recommended vs scored logits")
    with scaled_delta_weights(recommender.run.method, 1.1):
        assert not within(recommender.score([("u00", item) for item in top["item"]])["logit"].to_numpy(),
                          scored["logit"].to_numpy(), tolerance)
    everything = recommender.recommend("u00", k=20, candidates=candidates, exclude_seen=False)
    assert set(everything["item"]) == set(candidates)


def test_recommend_errors_and_cold_users(recommender):
    with pytest.raises(CorarecError, match=r"candidates: item 2 \('nope'\) is not an item of dataset 'tiny'"):
        recommender.recommend("u00", candidates=["m1001", "nope"])
    with pytest.raises(CorarecError, match=r"pool \(3\) must be at least k \(5\)"):
        recommender.recommend("u00", k=5, pool=3)
    with pytest.raises(CorarecError, match="k must be at least 1"):
        recommender.recommend("u00", k=0)
    stranger = recommender.recommend("stranger", k=4, pool=8, history=["m1000", "m1002"])
    assert len(stranger) == 4 and stranger["cold"].all()
    assert not {"m1000", "m1002"} & set(stranger["item"])


def test_format_and_read_candidates(recommender, tmp_path):
    table = recommender.recommend("u01", k=3, pool=5)
    text = format_recommendations(table)
    assert text.splitlines()[0].split()[:3] == ["rank", "item", "title"]
    assert all(title[:20] in text for title in table["title"])
    (tmp_path / "c.txt").write_text("m1001\n\nm1002\n")
    assert read_candidates(tmp_path / "c.txt") == ["m1001", "m1002"]
    pd.DataFrame({"item": [1001, 1002]}).to_parquet(tmp_path / "c.parquet")
    assert read_candidates(tmp_path / "c.parquet") == ["1001", "1002"]
    pd.DataFrame({"x": [1]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(CorarecError, match="needs an 'item' column"):
        read_candidates(tmp_path / "bad.csv")


def test_a_run_without_cf_model_pools_by_popularity(tiny_run, tmp_path):
    """A zero-shot ICL run has no CF model: the pool is the most-liked unseen train items."""
    import corarec
    from corarec.training.loop import train

    train(method="icl", data=tiny_run.data, out=tmp_path / "icl", llm=str(tiny_run.llm), device="cpu", bf16=False)
    icl = corarec.load(tmp_path / "icl")
    assert icl.cf is None and icl.info()["cf"] is None and icl.info()["method"] == "icl"
    state = icl.user_state("u05")
    ds = icl.dataset
    liked = ds.train[ds.train["label"] == 1]["item_id"].value_counts()
    unseen = [i for i in range(N_ITEMS) if i not in state.seen]
    counts = np.asarray([liked.get(i, 0) for i in unseen])
    pool = set(np.asarray(unseen)[np.argsort(-counts, kind="stable")[:5]].tolist())
    rows = icl.candidates("u05", k=2, pool=5)
    assert set(rows["item_id"]) == pool and "cf_logit" not in rows
    top = icl.recommend("u05", k=2, pool=5)
    assert len(top) == 2 and "cf_logit" not in top
    assert icl.score([("u05", "m1001")])["logit"].notna().all()


def test_scoring_uses_eval_mode_and_restores_the_methods_mode(recommender, monkeypatch):
    """The recommender scores through the evaluation's loop: dropout off while scoring, the caller's
    train/eval mode back afterwards (also when scoring fails)."""
    method = recommender.run.method
    pairs = [("u00", "m1001"), ("stranger", "m1003"), ("u02", "m1020")]
    try:
        method.train()
        in_train_mode = recommender.score(pairs)["logit"].to_numpy()
        assert method.training
        method.eval()
        assert np.array_equal(recommender.score(pairs)["logit"].to_numpy(), in_train_mode)  # the same pass
        assert not method.training
        method.train()
        monkeypatch.setattr(method, "score", lambda batch: (_ for _ in ()).throw(RuntimeError("boom")))
        with pytest.raises(RuntimeError, match="boom"):
            recommender.score(pairs)
        assert method.training
    finally:
        monkeypatch.undo()
        method.eval()


def test_scoring_batches_by_prompt_length_and_returns_scores_in_the_rows_order(tiny_run):
    from corarec.evaluation.evaluate import score_rows
    from corarec.training.runs import load_run

    run = load_run(tiny_run.run, device="cpu")
    rows = run.dataset.test.iloc[:30].reset_index(drop=True)
    lengths = run.batcher.token_lengths(rows)
    assert len(set(lengths.tolist())) > 1  # the order matters in this case
    batched = score_rows(run, rows, batch_size=8, progress=False)
    alone = np.array([score_rows(run, rows.iloc[[i]], batch_size=1, progress=False)[0] for i in range(len(rows))])
    tolerance = method_score_tolerance(run.method)  # fp32, one row alone vs padded beside others
    assert_within(batched, alone, tolerance)
    assert not within(batched[::-1], alone, tolerance)
