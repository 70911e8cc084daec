"""The CF-anchored score (beyond the paper), CoRA and TALLRec, on the tiny model:

    score = γ · s_CF + (s_LLM(ΔW) − s_LLM(ΔW = 0))

at initialisation it *is* the CF logit (the two LLM passes are the same computation, so the increment
is exactly 0) and ranks like the CF model; γ, P, the generator and the LoRA all learn; a trained
anchored run is saved, reloaded and served like any run; TALLRec's anchor needs a CF run; and the
paper's setting (``anchor = "none"``) is what it was."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from corarec.benchmarking.plan import parse_entry, plan
from corarec.cf import load_cf
from corarec.data.schema import read_dataset
from corarec.errors import CorarecError
from corarec.training.config import apply_fields
from corarec.llm.model import load_llm, score as llm_score
from corarec.methods import uses_cf
from corarec.methods.batches import PromptBatcher
from corarec.methods.collm import CoLLMConfig
from corarec.methods.cora import CoRA, CoRAConfig, GeneratorConfig
from corarec.methods.tallrec import TallRec, TallRecConfig
from corarec.utils.io import load_tensors
from numerics import assert_within, method_score_tolerance, rounding_tolerance, within
from tiny import tiny_cf_dir, tiny_dataset_dir, tiny_llm_dir

SMALL = dict(rank=4, alpha=8.0, generator=GeneratorConfig(queries=2, depth=1, heads=2, dropout=0.0))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("anchor")
    data = tiny_dataset_dir(root)
    dataset = read_dataset(data)
    cf_dir = tiny_cf_dir(root, data)  # MF with biases: s_CF includes the global bias
    return SimpleNamespace(root=root, data=data, dataset=dataset, llm=tiny_llm_dir(root), cf_dir=cf_dir)


def fresh(tiny):
    """A fresh fp32 copy of the tiny LLM and the MF model (a LoRA is injected into the LLM in place)."""
    return load_llm(str(tiny.llm), autocast=False), load_cf(tiny.cf_dir, tiny.dataset)


def batch_of(tiny, method, split="test", start=0, n=12):
    batcher = PromptBatcher(tiny.dataset, method.llm.tokenizer, template=method.template, cf_history_len=method.cf.max_len)
    return batcher(tiny.dataset.splits[split].iloc[start:start + n])


def cf_tolerance(cf, batch):
    """How far the CF logit from ``embed`` (one dot product over the bias coordinates too) may lie from the
    CF model's own forward (dot product, then the biases added): two roundings of a sum of dim + 3 terms."""
    e_u, e_i = cf.embed(batch.cf)
    magnitude = (e_u.double().abs() * e_i.double().abs()).sum(-1) + float(getattr(cf, "global_bias", 0.0) or 0.0)
    return rounding_tolerance(magnitude, cf.embed_dim + 1)


def anchored_cora(tiny, **settings):
    llm, cf = fresh(tiny)
    return CoRA(CoRAConfig(**{**SMALL, "anchor": "cf", **settings}), llm, cf)


def anchored_tallrec(tiny, **settings):
    llm, cf = fresh(tiny)
    return TallRec(TallRecConfig(**{"anchor": "cf", **settings}), llm, cf)


# ---- the paper's setting is unchanged -------------------------------------------------------------

def test_anchor_none_is_the_default_and_adds_nothing(tiny):
    assert CoRAConfig().anchor == "none" and TallRecConfig().anchor == "none"
    assert "anchor" not in {f.name for f in dataclasses.fields(CoLLMConfig)}  # CoLLM has no anchor to offer
    llm, cf = fresh(tiny)
    plain = CoRA(CoRAConfig(**SMALL), llm, cf)
    assert plain.anchor_gamma is None and all(k.startswith(("generator.", "injector.")) for k in plain.trainable_state_dict())
    tallrec = TallRec(TallRecConfig(), load_llm(str(tiny.llm), autocast=False))
    assert tallrec.cf is None and all("lora_" in k for k in tallrec.trainable_state_dict())
    # whether a CF run is loaded: the class, or the settings when they anchor
    assert uses_cf("tallrec") is False and uses_cf("tallrec", TallRecConfig()) is False
    assert uses_cf("tallrec", TallRecConfig(anchor="cf")) is True and uses_cf("cora", CoRAConfig()) is True
    with pytest.raises(CorarecError, match="anchor must be 'none' or 'cf'"):
        apply_fields(TallRecConfig(), {"anchor": "mf"}, "tallrec settings")


# ---- at initialisation: the CF model ----------------------------------------------------------------

@pytest.mark.parametrize("settings", [{}, {"layers": "top:1", "cache_prefix": True}], ids=["all-layers", "top1-prefix-cache"])
def test_anchored_cora_at_initialisation_is_the_cf_logit_and_ranks_like_the_cf_model(tiny, tmp_path, settings):
    if settings.get("cache_prefix"):
        settings = {**settings, "prefix_cache_dir": str(tmp_path)}
    method = anchored_cora(tiny, **settings).eval()
    batch = batch_of(tiny, method)
    with torch.no_grad():
        anchored = method.score(batch)
        cf_logit = method.cf_logit(*method.cf.embed(batch.cf))
        own = method.cf(batch.cf)
    # the increment is the difference of two identical passes: exactly 0, and γ = 1
    assert float(method.anchor_gamma.detach()) == 1.0 and torch.equal(anchored, cf_logit)
    # equal to the CF logit, so its ranking is the CF model's; and that logit is the CF model's own forward
    assert_within(anchored, own, cf_tolerance(method.cf, batch), "anchored score vs the CF model's forward")
    assert len(set(own.tolist())) > 1  # a ranking worth comparing
    # the frozen pass starts from the same cached prefix and is not the LLM's own answer: it is subtracted
    if method.prefix_cache is not None:
        assert method.prefix_cache.misses > 0
    with torch.no_grad():
        assert not torch.allclose(llm_score(method.llm, batch.input_ids, batch.attention_mask), torch.zeros(len(batch)))


def test_anchored_cora_uses_the_fold_in_embedding_of_a_folded_row_for_both_sides(tiny):
    method = anchored_cora(tiny, fold_in_fraction=0.5).train()
    batch = batch_of(tiny, method, split="train", n=16)
    torch.manual_seed(3)
    folded = method.fold_in_rows(batch, 0.5)
    assert folded.any() and not folded.all()
    torch.manual_seed(3)
    anchored = method.score(batch)  # draws the same fold-in rows first
    with torch.no_grad():
        expected = method.cf_logit(*method.cf.embed(batch.cf, fold_in=folded))
        unfolded = method.cf_logit(*method.cf.embed(batch.cf))
    assert torch.equal(anchored.detach(), expected)
    assert not torch.equal(expected[folded], unfolded[folded])  # the fold-in does change those rows


def test_anchored_tallrec_at_initialisation_is_the_cf_logit(tiny):
    method = anchored_tallrec(tiny).eval()
    batch = batch_of(tiny, method)
    with torch.no_grad():
        anchored = method.score(batch)
        assert torch.equal(anchored, method.cf_logit(*method.cf.embed(batch.cf)))
        assert_within(anchored, method.cf(batch.cf), cf_tolerance(method.cf, batch), "anchored TALLRec vs the CF model")
    method.train()  # the LoRA's dropout does not matter while B = 0
    assert torch.equal(method.score(batch).detach(), anchored)


def test_anchored_score_under_bf16_autocast_is_still_exactly_the_cf_logit(tiny):
    method = anchored_cora(tiny).eval()
    batch = batch_of(tiny, method)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        anchored = method.score(batch)
    assert anchored.dtype == torch.float32
    assert torch.equal(anchored, method.cf_logit(*method.cf.embed(batch.cf)))


# ---- what the increment is once the update is not zero ----------------------------------------------

def test_the_increment_is_the_llm_score_with_the_update_minus_the_frozen_llm(tiny):
    method = anchored_cora(tiny).eval()
    torch.manual_seed(5)
    with torch.no_grad():
        for p in method.injector.parameters():
            p.normal_(0, 0.5)
        method.anchor_gamma.fill_(0.75)
    plain_llm, cf = fresh(tiny)
    plain = CoRA(CoRAConfig(**SMALL), plain_llm, cf).eval()  # the same weights, not anchored
    plain.load_trainable_state_dict({k: v for k, v in method.trainable_state_dict().items() if k != "anchor_gamma"})
    batch = batch_of(tiny, method)
    with torch.no_grad():
        anchored = method.score(batch)
        cf_logit = method.cf_logit(*method.cf.embed(batch.cf))
        increment = plain.score(batch) - llm_score(plain.llm, batch.input_ids, batch.attention_mask)
    assert increment.abs().max() > 1e-3  # P ≠ 0 moves the LLM's answer
    # anchored − 0.75·s_CF rounds twice (the product and the sum): within a few ulps of the summands
    magnitude = 0.75 * cf_logit.abs() + increment.abs() + anchored.abs()
    assert_within(anchored - 0.75 * cf_logit, increment, rounding_tolerance(magnitude, 3), "the increment")
    # the frozen pass is remembered per batch outside training and reused bit for bit
    assert len(method._frozen_scores) == 1
    with torch.no_grad():
        assert torch.equal(method.score(batch), anchored)
    assert len(method._frozen_scores) == 1
    method.train()
    method.score(batch)
    assert len(method._frozen_scores) == 1  # not in training mode


# ---- everything that should learn, learns -------------------------------------------------------------

def loss_of(method, batch):
    return F.binary_cross_entropy_with_logits(method.score(batch), batch.labels)


def test_gamma_P_and_then_the_generator_receive_gradients(tiny):
    method = anchored_cora(tiny).train()
    batch = batch_of(tiny, method, split="train", n=8)
    optimizer = torch.optim.AdamW(method.trainable_parameters(), lr=1e-2)
    loss_of(method, batch).backward()
    assert float(method.anchor_gamma.grad.abs()) > 0
    P = [p for n, p in method.injector.named_parameters() if n.endswith(".P")]
    assert all(p.grad is not None and p.grad.abs().max() > 0 for p in P)
    assert method.frozen_score(batch.input_ids, batch.attention_mask).requires_grad is False
    optimizer.step()
    optimizer.zero_grad()
    assert all(p.abs().max() > 0 for p in P) and float(method.anchor_gamma) != 1.0
    loss_of(method, batch).backward()  # with P ≠ 0 the generator's A matters
    assert method.generator.out.weight.grad.abs().max() > 0
    assert all(p.grad is None for p in method.llm.model.parameters())
    assert all(p.grad is None for p in method.cf.parameters())


def test_gamma_and_the_lora_of_anchored_tallrec_receive_gradients(tiny):
    method = anchored_tallrec(tiny, dropout=0.0).train()
    batch = batch_of(tiny, method, split="train", n=8)
    optimizer = torch.optim.AdamW(method.trainable_parameters(), lr=1e-2)
    loss_of(method, batch).backward()
    lora = dict((n, p) for n, p in method.named_parameters() if "lora_" in n)
    assert float(method.anchor_gamma.grad.abs()) > 0
    assert all(p.grad.abs().max() > 0 for n, p in lora.items() if "lora_B" in n)
    optimizer.step()
    optimizer.zero_grad()
    loss_of(method, batch).backward()  # with B ≠ 0, A learns too
    assert all(p.grad.abs().max() > 0 for n, p in lora.items() if "lora_A" in n)


# ---- a run: trained by the loop, saved, reloaded, served --------------------------------------------

TRAIN = dict(max_steps=2, eval_every=2, batch_size=8, eval_batch_size=16, warmup_steps=0, lr=1e-2, seed=0,
             device="cpu", bf16=False)


@pytest.mark.parametrize("method", ["cora", "tallrec"])
def test_an_anchored_run_trains_saves_reloads_and_scores_the_same(tiny, tmp_path, method):
    import corarec
    from corarec.evaluation.evaluate import score_rows
    from corarec.training.loop import train
    from corarec.training.runs import load_run

    extra = dict(rank=4, alpha=8.0, generator_queries=2, generator_depth=1, generator_heads=2) if method == "cora" else {}
    run = tmp_path / "run"
    metrics = train(method=method, data=tiny.data, out=run, cf=tiny.cf_dir, llm=str(tiny.llm), anchor="cf", **TRAIN, **extra)
    weights = load_tensors(run / "model.safetensors")
    assert weights["anchor_gamma"].shape == () and float(weights["anchor_gamma"]) != 1.0  # trained and saved

    loaded = load_run(run)
    assert loaded.config.method_config["anchor"] == "cf" and float(loaded.method.anchor_gamma) == float(weights["anchor_gamma"])
    valid = loaded.dataset.valid
    from corarec.evaluation.metrics import auc

    assert auc(valid["label"], score_rows(loaded, valid, progress=False)) == pytest.approx(metrics["best_valid_auc"], abs=1e-12)
    test = loaded.dataset.test
    users = loaded.dataset.users.set_index("user_id")["user_raw"]
    items = loaded.dataset.items.set_index("item_id")["item_raw"]
    pairs = [{"user": users[u], "item": items[i]} for u, i in zip(test["user_id"], test["item_id"])]
    recommender = corarec.load(run)
    served = recommender.score(pairs)  # serving reads each user's history as of the end of train
    rows = pd.DataFrame.from_records(recommender.resolve(pairs))[["user_id", "item_id", "history"]]
    expected = score_rows(loaded, rows, progress=False)
    assert served["logit"].to_numpy().tolist() == expected.astype(float).tolist()
    with torch.no_grad():  # and what is served is the anchored score: γ·s_CF plus a (now non-zero) increment
        batch = loaded.batcher(rows)
        cf_part = loaded.method.anchor_gamma * loaded.method.cf_logit(*loaded.method.cf.embed(batch.cf))
    assert not within(torch.as_tensor(expected), cf_part, method_score_tolerance(loaded.method))
    top = recommender.recommend(users[0], k=3)
    assert isinstance(top, pd.DataFrame) and len(top) == 3


def test_tallrec_anchor_without_a_cf_run_is_one_clear_error(tiny, tmp_path):
    from corarec.training.loop import train

    with pytest.raises(CorarecError, match=r"^method 'tallrec' with --anchor cf needs a CF run: pass --cf RUN") as error:
        train(method="tallrec", data=tiny.data, out=tmp_path / "run", llm=str(tiny.llm), anchor="cf", **TRAIN)
    assert "\n" not in str(error.value)
    with pytest.raises(CorarecError, match="with anchor 'cf' reads a CF model"):
        TallRec(TallRecConfig(anchor="cf"), load_llm(str(tiny.llm), autocast=False))


# ---- the benchmark's entries ------------------------------------------------------------------------

def test_benchmark_entries_of_the_anchored_methods_read_their_cf_model():
    cora, tallrec = parse_entry("cora-anchored-mf"), parse_entry("tallrec-anchored-lightgcn")
    assert (cora.method, cora.cf, cora.anchor, cora.label) == ("cora", "mf", "cf", "CoRA-MF (anchored, beyond the paper)")
    assert (tallrec.method, tallrec.cf, tallrec.anchor, tallrec.label) == (
        "tallrec", "lightgcn", "cf", "TALLRec + LightGCN anchor (fusion baseline)")
    assert parse_entry("cora-mf").anchor == "none" and parse_entry("tallrec").anchor == "none"
    requested, ordered = plan(["cora-anchored-mf", "tallrec-anchored-mf", "cora-mf"])
    assert [e.name for e in ordered] == ["mf", "cora-anchored-mf", "tallrec-anchored-mf", "cora-mf"]
    with pytest.raises(CorarecError, match="unknown method"):
        parse_entry("collm-anchored-mf")
    stacked, fusion = parse_entry("cora-stacked-mf"), parse_entry("tallrec-stacked-mf")
    assert (stacked.anchor, stacked.train_split, fusion.anchor, fusion.train_split) == ("cf", "valid-half", "cf", "valid-half")
    assert stacked.label == "CoRA-MF (stacked on held-out users, beyond the paper)"
    assert fusion.label == "TALLRec + MF anchor, stacked (fusion baseline)"
    assert parse_entry("cora-anchored-mf").train_split == "train"


def test_a_stacked_run_trains_on_one_half_of_the_validation_users_and_validates_on_the_other(tiny, tmp_path):
    from corarec.data.sampling import split_users
    from corarec.evaluation.evaluate import evaluate, score_rows
    from corarec.evaluation.metrics import auc
    from corarec.training.loop import train
    from corarec.training.runs import load_run

    run = tmp_path / "run"
    metrics = train(method="tallrec", data=tiny.data, out=run, cf=tiny.cf_dir, llm=str(tiny.llm), anchor="cf",
                    train_split="valid-half", valid_sample_seed=5, **TRAIN)
    loaded = load_run(run)
    assert loaded.config.train.train_split == "valid-half"
    _, half_b = split_users(loaded.dataset.valid, 5)
    assert 0 < len(half_b) < len(loaded.dataset.valid)
    assert auc(half_b["label"], score_rows(loaded, half_b, progress=False)) == pytest.approx(metrics["best_valid_auc"], abs=1e-12)
    assert "trained on half of the validation split's users" in evaluate(run, split="valid")["in_sample"]
    assert "in_sample" not in evaluate(run, split="test")
