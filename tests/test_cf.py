"""CF models: interface shapes, planted preference, save/load, causality, cold start, errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from corarec.cf import CFBatch, build_model, cf_logits, history_tensor, load_cf, make_config, rows_tensors, train_cf
from corarec.cf.references import item_rate_scores, logistic_rates_scores
from corarec.data import Dataset, read_dataset, write_dataset
from corarec.data.history import add_history
from corarec.errors import CorarecError
from corarec.evaluation.metrics import auc
from numerics import assert_within, rounding_tolerance, within

MODELS = ("mf", "lightgcn", "sasrec")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread (and far faster on a busy shared machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def planted_dataset(n_users: int = 60, n_items: int = 40, rows_per_user: int = 24, seed: int = 0) -> Dataset:
    """Users and items each belong to group 0 or 1; a user likes the items of its own group.

    Users 0..49 appear in train (first 16 rows), valid and test; users 50..59 only in test
    (cold users whose history comes from their earlier test rows). Item 39 never occurs in train.
    """
    rng = np.random.default_rng(seed)
    user_group, item_group = np.arange(n_users) % 2, np.arange(n_items) % 2
    rows = []
    for u in range(n_users):
        items = rng.choice(n_items - 1, size=rows_per_user, replace=True)
        if u in (0, 1):
            items[-1] = n_items - 1  # a test row on the item unseen in train
        for t, i in enumerate(items):
            label = int(user_group[u] == item_group[i]) if rng.random() > 0.05 else int(rng.random() < 0.5)
            split = "test" if u >= 50 else ("train" if t < 16 else "valid" if t < 20 else "test")
            rows.append((u, int(i), label, 1000 * u + t, split))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "label", "timestamp", "split"])
    splits = {s: frame[frame["split"] == s].drop(columns="split").reset_index(drop=True) for s in ("train", "valid", "test")}
    items = pd.DataFrame({"item_id": np.arange(n_items), "title": [f"Item {i}" for i in range(n_items)]})
    return Dataset(name="planted", item_noun="item", items=items, splits=add_history(splits), info={"n_users": n_users})


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_dataset(planted_dataset(), tmp_path_factory.mktemp("cf") / "planted")


def small(model: str, **kw):
    return dict(dim=16, epochs=kw.pop("epochs", 30), batch_size=64, lr=kw.pop("lr", 1e-2), patience=5, progress=False, **kw)


def test_history_tensor_left_pads_and_keeps_the_last_items():
    h = history_tensor([[], [5], [1, 2, 3, 4]], 3)
    assert h.tolist() == [[-1, -1, -1], [-1, -1, 5], [2, 3, 4]]
    assert h.dtype == torch.long


@pytest.mark.parametrize("kind", MODELS)
def test_shapes_and_cold_rows_are_finite(kind):
    ds = planted_dataset()
    model = build_model(make_config(kind, dim=8), ds.n_users, ds.n_items)
    rows = rows_tensors(ds.train, model.max_len)
    model.fit_train(rows["users"], rows["items"], rows["labels"])
    model.eval()
    batch = CFBatch(
        users=torch.tensor([0, 55, -1, 3]),  # warm, unseen in train, unknown, warm
        items=torch.tensor([1, 39, -1, 2]),  # warm, unseen in train, unknown, warm
        history=history_tensor([[1, 2], [3], [], [39, 4]], 5),
    )
    user_emb, item_emb = model.embed(batch)
    assert user_emb.shape == (4, model.embed_dim) and item_emb.shape == (4, model.embed_dim)
    logits = model(batch)
    assert logits.shape == (4,) and torch.isfinite(logits).all()
    # The embeddings carry the whole score (biases as extra coordinates), not the dot product alone.
    with torch.no_grad():
        model.global_bias.fill_(0.3)
        model.item_bias.normal_()
        if hasattr(model, "user_bias"):
            model.user_bias.normal_()
        user_emb, item_emb = model.embed(batch)
        dot = (user_emb * item_emb).sum(-1)  # the same products as model(batch), summed in another order
        magnitude = (user_emb * item_emb).abs().sum(-1) + model.global_bias.abs()
        tolerance = rounding_tolerance(magnitude, model.embed_dim + 1)
        assert_within(dot + model.global_bias, model(batch), tolerance, kind)
        assert not within(dot * (1 + 1e-3) + model.global_bias, model(batch), tolerance)  # 0.1% off is caught
    assert torch.isfinite(user_emb).all() and torch.isfinite(item_emb).all()
    # Unseen and unknown items share the documented fallback (mean train item).
    assert torch.allclose(item_emb[1], item_emb[2])
    loss = model.train().loss(batch, torch.tensor([1.0, 0.0, 1.0, 0.0]))
    assert loss.ndim == 0 and torch.isfinite(loss)


@pytest.mark.parametrize("kind", ["mf", "lightgcn"])
def test_fold_in_replaces_the_user_embedding(kind):
    ds = planted_dataset()
    model = build_model(make_config(kind, dim=8), ds.n_users, ds.n_items)
    rows = rows_tensors(ds.train, model.max_len)
    model.fit_train(rows["users"], rows["items"], rows["labels"])
    model.eval()
    batch = CFBatch(torch.tensor([0, 0]), torch.tensor([1, 1]), history_tensor([[2, 4], [2, 4]], 5))
    own, _ = model.embed(batch)
    forced, _ = model.embed(batch, fold_in=torch.tensor([False, True]))
    assert torch.allclose(own[0], forced[0])
    assert not torch.allclose(own[1], forced[1])
    # A forced fold-in of a warm user equals the embedding of a cold user with the same history.
    cold = CFBatch(torch.tensor([55]), torch.tensor([1]), history_tensor([[2, 4]], 5))
    assert torch.allclose(model.embed(cold)[0][0], forced[1])
    # Only the most recent max_len (25) history items count, whatever width the caller passes.
    long_a = history_tensor([[7] + list(range(25))], 30)
    long_b = history_tensor([[9] + list(range(25))], 30)
    cold_a, cold_b = (CFBatch(torch.tensor([55]), torch.tensor([1]), h) for h in (long_a, long_b))
    assert torch.equal(model.embed(cold_a)[0], model.embed(cold_b)[0])
    assert not torch.equal(model.embed(cold_a)[0], model.embed(CFBatch(torch.tensor([55]), torch.tensor([1]), long_a[:, -3:]))[0])


def test_mf_learns_a_planted_preference(data_dir, tmp_path):
    metrics = train_cf(data_dir, "mf", tmp_path / "mf", **small("mf"))
    assert metrics["test"]["all"]["auc"] > 0.9
    assert metrics["test"]["warm"]["auc"] > 0.9
    # The fold-in must carry the preference to users that never occurred in train.
    assert metrics["test"]["cold"]["auc"] > 0.8
    assert set(metrics["test"]) == {"all", "warm", "cold"}
    for part in metrics["valid"].values():
        assert {"auc", "uauc", "gauc", "rows"} <= set(part)


@pytest.mark.parametrize("kind", ["lightgcn", "sasrec"])
def test_other_models_learn_the_planted_preference(data_dir, tmp_path, kind):
    metrics = train_cf(data_dir, kind, tmp_path / kind, **small(kind, epochs=20))
    assert metrics["test"]["all"]["auc"] > 0.8


@pytest.mark.parametrize("kind", MODELS)
def test_save_load_gives_identical_predictions(data_dir, tmp_path, kind):
    run = tmp_path / kind
    train_cf(data_dir, kind, run, **small(kind, epochs=2))
    assert {p.name for p in run.iterdir()} == {"config.json", "model.safetensors", "metrics.json"}
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == kind and config["n_users"] == 60 and config["n_items"] == 40 and config["seed"] == 0
    ds = read_dataset(data_dir)
    first, second = load_cf(run, ds), load_cf(run)
    assert not first.training
    np.testing.assert_array_equal(cf_logits(first, ds.test), cf_logits(second, ds.test))
    batch = CFBatch(torch.tensor([0, 57]), torch.tensor([3, 39]), history_tensor([[1, 2], [5]], 25))
    for a, b in zip(first.embed(batch), second.embed(batch)):
        assert torch.equal(a, b)


def test_same_seed_same_model(data_dir, tmp_path):
    a = train_cf(data_dir, "mf", tmp_path / "a", **small("mf", epochs=2))
    b = train_cf(data_dir, "mf", tmp_path / "b", **small("mf", epochs=2))
    assert a["test"] == b["test"]


def test_sasrec_is_causal():
    ds = planted_dataset()
    model = build_model(make_config("sasrec", dim=16, heads=2, max_len=6), ds.n_users, ds.n_items)
    model.fit_train(torch.arange(ds.n_users) % 50, torch.arange(ds.n_users) % ds.n_items, torch.ones(ds.n_users))
    model.eval()
    history = torch.tensor([[-1, -1, 3, 7, 1, 2], [4, 5, 6, 7, 8, 9]])
    changed = history.clone()
    changed[:, 4] = torch.tensor([11, 12])  # change position 4 only
    a, b = model.encode(history), model.encode(changed)
    # Every output is a final LayerNorm's (|value| ≤ √dim·max|weight| + max|bias|) after, per block, two
    # LayerNorms (2·dim sums each), qkv, proj and two FFN matmuls (dim each), scores (dim/heads), softmax and
    # the weighted sum of values (L each): encodings of the same prefix differ by rounding only.
    config, L = model.config, history.shape[1]
    length = config.num_layers * (8 * config.dim + config.dim // config.heads + 2 * L) + 2 * config.dim
    scale = math.sqrt(config.dim) * model.ln.weight.abs().max().item() + model.ln.bias.abs().max().item()
    tolerance = rounding_tolerance(scale, length)
    assert_within(a[:, :4], b[:, :4], tolerance, "positions before the change")
    assert not within(a[:, 4:], b[:, 4:], tolerance)
    # The user vector is the last position's output and depends on the history.
    batch = CFBatch(torch.tensor([0, 0]), torch.tensor([1, 1]), history)
    assert_within(model.embed(batch)[0][:, :-1], a[:, -1], tolerance, "user vectors")
    assert not within(model.embed(batch)[0][:, :-1], a[:, -2], tolerance)  # not another position's
    # fold_in has no effect: SASRec always reads the history.
    assert torch.equal(model.embed(batch, fold_in=torch.tensor([True, True]))[0], model.embed(batch)[0])


def test_mismatched_checkpoint_is_a_clear_error(data_dir, tmp_path):
    run = tmp_path / "mf"
    train_cf(data_dir, "mf", run, **small("mf", epochs=1))
    other = planted_dataset(n_users=70, n_items=40)
    with pytest.raises(CorarecError, match=r"60 users and 40 items.*70 users and 40 items") as err:
        load_cf(run, other)
    assert str(run) in str(err.value)


def test_bad_arguments_are_clear_errors(data_dir, tmp_path):
    with pytest.raises(CorarecError, match="unknown CF model 'bpr'"):
        train_cf(data_dir, "bpr", tmp_path / "x")
    with pytest.raises(CorarecError, match="not found"):
        train_cf(tmp_path / "missing", "mf", tmp_path / "x")
    with pytest.raises(CorarecError, match="unknown device 'tpu'"):
        train_cf(data_dir, "mf", tmp_path / "x", device="tpu")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(CorarecError, match="not a CF run directory"):
        train_cf(data_dir, "mf", tmp_path / "notes", **small("mf", epochs=1))
    with pytest.raises(CorarecError, match="config.json"):
        load_cf(tmp_path / "nothing-here")
    one_class = planted_dataset()
    one_class.splits["valid"]["label"] = 1
    with pytest.raises(CorarecError, match="valid split holds only label 1"):
        train_cf(write_dataset(one_class, tmp_path / "one-class"), "mf", tmp_path / "y", **small("mf", epochs=1))
    with pytest.raises(CorarecError, match="valid split holds only label 1"):
        logistic_rates_scores(one_class, "test")


def test_grid_keeps_the_best_valid_auc(data_dir, tmp_path):
    preset = tmp_path / "grid.yaml"  # the preset's cf tune lists replace the bundled grid's, key by key
    preset.write_text("cf: {tune: {weight_decay: [0.0], dim: [16]}, mf: {tune: {lr: [1.0e-4, 1.0e-2]}}}\n")
    metrics = train_cf(data_dir, "mf", tmp_path / "grid", grid=True, preset=str(preset), **small("mf", epochs=3))
    assert [(g["lr"], g["weight_decay"], g["dim"]) for g in metrics["grid"]] == [(1e-4, 0.0, 16), (1e-2, 0.0, 16)]
    best = max(metrics["grid"], key=lambda g: g["valid_auc"])
    config = json.loads((tmp_path / "grid" / "config.json").read_text())
    assert config["lr"] == best["lr"]
    assert metrics["valid"]["all"]["auc"] == pytest.approx(best["valid_auc"])


def test_references_score_every_row():
    ds = planted_dataset()
    for split in ("valid", "test"):
        for scores in (item_rate_scores(ds, split), logistic_rates_scores(ds, split)):
            assert scores.shape == (len(ds.splits[split]),) and np.isfinite(scores).all()
    # Item rate knows nothing of the user, so it cannot see the planted user × item preference.
    assert auc(ds.test["label"], item_rate_scores(ds, "test")) < 0.75
