"""The shared training loop end to end on a tiny dataset, a tiny MF run and a random 2-layer Llama:
run-directory contents, exact resume after an interruption, reproducibility, evaluation."""

from __future__ import annotations

import pandas as pd
import pytest

from corarec.training import loop as training
from corarec.training import rows as rows_of
from corarec.errors import CorarecError
from corarec.evaluation.evaluate import evaluate
from corarec.evaluation.metrics import auc as roc_auc
from corarec.utils.io import load_tensors, read_json
from tiny import assert_same_weights, tiny_dataset, tiny_llm_dir

SETTINGS = dict(rank=4, alpha=8.0, generator_queries=2, generator_depth=1, generator_heads=2, fold_in_fraction=0.5,
                max_steps=4, eval_every=2, batch_size=8, eval_batch_size=16, warmup_steps=1, lr=1e-2)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from corarec.cf import train_cf
    from corarec.data.schema import write_dataset

    root = tmp_path_factory.mktemp("training")
    data = write_dataset(tiny_dataset(), root / "data")
    train_cf(data, "mf", root / "cf", dim=16, epochs=2, batch_size=32, progress=False)
    return dict(data=data, cf=root / "cf", llm=str(tiny_llm_dir(root, hidden=64, name="llm")))


def run_cora(inputs, out, **kwargs):
    return training.train(method="cora", out=out, seed=0, device="cpu", bf16=False, **inputs, **{**SETTINGS, **kwargs})


def test_run_directory_holds_config_weights_and_metrics_but_nothing_of_the_llm(inputs, tmp_path):
    metrics = run_cora(inputs, tmp_path / "run")
    assert metrics["finished"] and metrics["steps"] == 4
    assert [point["step"] for point in metrics["valid_curve"]] == [2, 4]
    assert metrics["best_valid_auc"] == max(p["valid_auc"] for p in metrics["valid_curve"])
    assert all(len(p["valid_auc_halves"]) == 2 for p in metrics["valid_curve"])
    config = read_json(tmp_path / "run" / "config.json")
    assert config["method"] == "cora" and config["seed"] == 0 and config["cf"] == str(inputs["cf"])
    assert config["method_config"]["rank"] == 4 and config["train"]["max_steps"] == 4
    weights = load_tensors(tmp_path / "run" / "model.safetensors")
    assert weights and all(k.startswith(("generator.", "injector.")) for k in weights)
    assert any(k.endswith(".P") and v.abs().sum() > 0 for k, v in weights.items())  # P moved off zero


def test_an_interrupted_run_resumes_to_exactly_the_uninterrupted_result(inputs, tmp_path, monkeypatch):
    run_cora(inputs, tmp_path / "straight")

    calls = {"n": 0}
    original = training.validate

    def validate_then_crash(*args, **kwargs):
        original(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C right after the first checkpoint

    monkeypatch.setattr(training, "validate", validate_then_crash)
    with pytest.raises(KeyboardInterrupt):
        run_cora(inputs, tmp_path / "resumed")
    monkeypatch.setattr(training, "validate", original)
    assert not read_json(tmp_path / "resumed" / "metrics.json")["finished"]

    metrics = training.train(out=tmp_path / "resumed", resume=True)
    straight = read_json(tmp_path / "straight" / "metrics.json")
    assert metrics["finished"]
    assert [p["valid_auc"] for p in metrics["valid_curve"]] == [p["valid_auc"] for p in straight["valid_curve"]]
    assert_same_weights(tmp_path / "resumed", tmp_path / "straight")


def test_a_run_cut_off_between_validations_resumes_from_its_last_checkpoint_exactly(inputs, tmp_path, monkeypatch):
    between = dict(eval_every=4, checkpoint_every=1)  # one validation, at step 4; checkpoints at steps 1-3
    straight = run_cora(inputs, tmp_path / "straight", **between)

    saved = []
    original = training.save_checkpoint

    def checkpoint_then_crash(path, run, optimizer, state):
        original(path, run, optimizer, state)
        saved.append(state.step)
        if len(saved) == 2:
            raise KeyboardInterrupt  # cut off right after the step-2 checkpoint, before any validation

    monkeypatch.setattr(training, "save_checkpoint", checkpoint_then_crash)
    with pytest.raises(KeyboardInterrupt):
        run_cora(inputs, tmp_path / "resumed", **between)
    monkeypatch.setattr(training, "save_checkpoint", original)
    assert saved == [1, 2] and not (tmp_path / "resumed" / "metrics.json").exists()
    state = read_json(tmp_path / "resumed" / "checkpoint" / "state.json")
    assert state["step"] == 2 and len(state["losses_since_eval"]) == 2  # the steps the next curve point sums up

    steps_run = []
    real_backward = training.backward
    monkeypatch.setattr(training, "backward", lambda *a, **k: steps_run.append(1) or real_backward(*a, **k))
    resumed = training.train(out=tmp_path / "resumed", resume=True)
    assert len(steps_run) == 2  # steps 3 and 4: it went on from the checkpoint, not from step 0
    assert resumed["finished"] and [p["step"] for p in resumed["valid_curve"]] == [4]
    keys = ("valid_auc", "train_loss", "grad_norm_mean", "grad_norm_max")
    assert [{k: p.get(k) for k in keys} for p in resumed["valid_curve"]] == \
        [{k: p.get(k) for k in keys} for p in straight["valid_curve"]]
    assert_same_weights(tmp_path / "resumed", tmp_path / "straight")
    run_cora(inputs, tmp_path / "unsaved", eval_every=4)  # the checkpoints themselves change nothing
    assert_same_weights(tmp_path / "unsaved", tmp_path / "straight")


def test_a_checkpoint_from_a_newer_version_is_refused_with_a_clear_error(tmp_path):
    from corarec.training.checkpoint import load_checkpoint
    from corarec.utils.io import write_json

    (tmp_path / "checkpoint").mkdir()
    write_json(tmp_path / "checkpoint" / "state.json", {"step": 3, "from_the_future": 1})
    with pytest.raises(CorarecError, match=r"state\.json: written by a newer corarec \(unknown from_the_future\)"):
        load_checkpoint(tmp_path / "checkpoint", run=None, optimizer=None)


def test_same_command_same_metrics_and_no_silent_overwrite(inputs, tmp_path):
    first = run_cora(inputs, tmp_path / "a")
    second = run_cora(inputs, tmp_path / "b")
    assert first["valid_curve"] == [dict(p, seconds=q["seconds"]) for p, q in zip(second["valid_curve"], first["valid_curve"])]
    with pytest.raises(CorarecError, match="already holds a run"):
        run_cora(inputs, tmp_path / "a")
    with pytest.raises(CorarecError, match="not a run directory"):
        training.train(out=tmp_path / "nothing", resume=True)


def test_evaluate_writes_split_metrics_and_predictions(inputs, tmp_path):
    run_cora(inputs, tmp_path / "run")
    training_metrics = read_json(tmp_path / "run" / "metrics.json")
    metrics = evaluate(tmp_path / "run", split="test", predictions=tmp_path / "pred.csv")
    assert set(metrics) >= {"all", "warm", "cold"}
    assert read_json(tmp_path / "run" / "eval" / "test.json")["all"] == metrics["all"]
    assert read_json(tmp_path / "run" / "metrics.json") == training_metrics  # beside them, never over them
    pred = pd.read_csv(tmp_path / "pred.csv")
    assert len(pred) == metrics["all"]["rows"]
    assert pred["user"].str.startswith("u").all() and pred["item"].str.startswith("m").all()  # raw ids
    assert ((pred["probability"] > 0) & (pred["probability"] < 1)).all()
    assert metrics["all"]["auc"] == roc_auc(pred["label"], pred["logit"])  # the metrics are of these very scores
    with pytest.raises(CorarecError, match="unknown split"):
        evaluate(tmp_path / "run", split="dev")


def test_evaluate_draws_the_rows_the_run_validated_on_unless_told_another_seed(inputs, tmp_path):
    from corarec.data.sampling import subsample_users
    from corarec.training.runs import load_run

    run_cora(inputs, tmp_path / "run", max_eval_samples=12, valid_sample_seed=7)
    loaded = load_run(tmp_path / "run", device="cpu")
    _, validated = rows_of.training_rows(loaded.dataset, loaded.config)
    users = loaded.dataset.users["user_raw"].to_numpy()

    def scored_users(**kwargs):
        pred = tmp_path / "pred.csv"
        metrics = evaluate(tmp_path / "run", max_samples=12, predictions=pred, **kwargs)
        return metrics["sample_seed"], sorted(set(pd.read_csv(pred)["user"]))

    assert scored_users(split="valid") == (7, sorted(set(users[validated["user_id"]])))
    test = loaded.dataset.test
    for seed in (0, 3):  # the test split: the run's seed (0) by default, or the one given
        kwargs = {} if seed == 0 else {"sample_seed": seed}
        assert scored_users(split="test", **kwargs) == (seed, sorted(set(users[subsample_users(test, 12, seed)["user_id"]])))
    with pytest.raises(CorarecError, match="--sample-seed does not apply to --ranking"):
        evaluate(tmp_path / "run", ranking=True, sample_seed=1)


def test_the_sample_seeds_fix_the_training_and_validation_rows_whatever_the_training_seed():
    from corarec.training.config import resolve_config

    ds = tiny_dataset()

    def rows(seed, **fixed):
        config = resolve_config("cora", "/d", "/o", "/c", None, None, None, seed, "cpu", False,
                                max_train_samples=40, train_sample="rows", max_eval_samples=10, **fixed)
        train_rows, valid_rows = rows_of.training_rows(ds, config)
        return train_rows[["user_id", "item_id"]].values.tolist(), valid_rows[["user_id", "item_id"]].values.tolist()

    assert rows(0) != rows(1)  # without sample seeds the training seed draws both
    fixed = dict(train_sample_seed=7, valid_sample_seed=7)
    assert rows(0, **fixed) == rows(1, **fixed) == rows(2, **fixed)


def test_valid_half_trains_and_validates_on_disjoint_halves_of_the_validation_users():
    from corarec.training.config import resolve_config

    ds = tiny_dataset()

    def rows(valid_seed, **settings):
        config = resolve_config("cora", "/d", "/o", "/c", None, None, None, 0, "cpu", False, train_split="valid-half",
                                valid_sample_seed=valid_seed, **settings)
        return rows_of.training_rows(ds, config)

    train_rows, valid_rows = rows(3)
    valid_users = set(ds.valid["user_id"])
    assert set(train_rows["user_id"]) | set(valid_rows["user_id"]) == valid_users  # every validation user, once
    assert not set(train_rows["user_id"]) & set(valid_rows["user_id"])
    assert len(set(train_rows["user_id"])) == len(valid_users) // 2
    key = ["user_id", "item_id", "timestamp"]
    assert len(train_rows.merge(ds.valid, on=key)) == len(train_rows) == len(ds.valid) - len(valid_rows)
    assert train_rows.merge(ds.train, on=key).empty  # nothing the CF model learned from
    assert rows(3)[0].equals(train_rows) and not rows(4)[0].equals(train_rows)  # the validation seed cuts
    capped_train, capped_valid = rows(3, max_train_samples=10, train_sample="rows", max_eval_samples=10)
    assert len(capped_train) == 10 and set(capped_train["user_id"]) <= set(train_rows["user_id"])
    assert len(capped_valid) <= 14 and set(capped_valid["user_id"]) <= set(valid_rows["user_id"])  # whole users


def test_a_run_leaves_every_row_it_read_in_the_prefix_cache(inputs, tmp_path):
    from corarec.data.prompts import template_id
    from corarec.llm.prefix_cache import PrefixCache
    from corarec.training.runs import load_run

    cache_dir = tmp_path / "cache"
    run_cora(inputs, tmp_path / "run", layers="top:1", cache_prefix=True, prefix_cache_dir=str(cache_dir))
    run = load_run(tmp_path / "run", device="cpu")
    _, valid_rows = rows_of.training_rows(run.dataset, run.config)
    # fewer rows than one shard: written by the flush that ends every scoring pass, not lost with the process
    reader = PrefixCache(run.llm, run.method.prefix_cache.layer, template_id(run.method.template), root=cache_dir)
    batch = run.batcher(valid_rows)
    reader.hidden_states(batch.input_ids, batch.attention_mask)
    assert reader.misses == 0 and reader.hits == len(valid_rows)


def test_halves_auc_splits_the_validation_users_into_two_fixed_halves():
    from corarec.data.sampling import split_users

    # only user 3 lacks a positive, so either half of two users holds both labels
    rows = pd.DataFrame({"user_id": [0, 0, 1, 1, 2, 2, 3, 3], "label": [1, 0, 1, 0, 1, 0, 0, 0]})
    half_a = set(split_users(rows, rows_of.HALVES_SEED)[0]["user_id"])
    assert len(half_a) == 2
    # scores rank every half-A positive above its negatives (AUC 1) and every half-B positive below (AUC 0)
    scores = [(1.0 if label else 0.0) if user in half_a else (0.0 if label else 1.0)
              for user, label in zip(rows["user_id"], rows["label"])]
    assert rows_of.halves_auc(rows, scores) == [1.0, 0.0]
    assert rows_of.halves_auc(rows.assign(label=1), scores) == [None, None]  # one class in a half: no AUC
