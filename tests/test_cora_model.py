"""CoRA end to end on a tiny random Llama: zero init, frozen parts, trainable state, fold-in."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from corarec.methods.batches import Batch
from corarec.errors import CorarecError
from corarec.llm.model import score
from corarec.methods import method_classes
from corarec.methods.cora import CoRA, CoRAConfig, GeneratorConfig

from tiny import PROMPTS, make_cf_batch

SMALL = dict(generator=GeneratorConfig(depth=2, heads=2), rank=4, alpha=8.0)


def make_batch(llm, n=3) -> Batch:
    ids, mask = llm.tokenize(PROMPTS[:n])
    return Batch(input_ids=ids, attention_mask=mask, cf=make_cf_batch(n), labels=torch.tensor([1.0, 0.0, 1.0][:n]),
                 prompts=PROMPTS[:n])


def randomise_P(cora: CoRA, std: float = 0.5) -> None:
    torch.manual_seed(5)
    with torch.no_grad():
        for p in cora.injector.parameters():
            p.normal_(0, std)


def test_defaults_are_the_papers_and_the_registry_builds_it(tiny_llm, tiny_cf):
    cfg = CoRAConfig()
    assert (cfg.rank, cfg.alpha, cfg.targets, cfg.layers) == (16, 32.0, "q,k,v,o", "all")
    assert cfg.generator == GeneratorConfig() and (cfg.generator.queries, cfg.generator.depth) == (4, 8)
    assert (cfg.score_mode, cfg.fold_in_fraction, cfg.cache_prefix) == ("yes", 0.0, False)
    config_cls, cls = method_classes("cora")
    assert config_cls is CoRAConfig and cls is CoRA and cls.uses_cf
    cora = cls(config_cls(**SMALL), llm=tiny_llm, cf=tiny_cf)
    assert cora.generator.queries.shape == (4, 16)  # width = 2 × CF dim 8


def test_zero_initialised_cora_scores_equal_the_frozen_llm(tiny_llm, tiny_cf):
    cora = CoRA(CoRAConfig(**SMALL), tiny_llm, tiny_cf).eval()
    batch = make_batch(tiny_llm)
    frozen = score(tiny_llm, batch.input_ids, batch.attention_mask)
    assert torch.equal(cora.score(batch), frozen)
    cora2 = CoRA(CoRAConfig(**SMALL, score_mode="yes_minus_no"), tiny_llm, tiny_cf).eval()
    assert torch.equal(cora2.score(batch), score(tiny_llm, batch.input_ids, batch.attention_mask, "yes_minus_no"))
    randomise_P(cora)
    assert not torch.allclose(cora.score(batch), frozen, atol=1e-3)


def test_training_changes_only_generator_and_P(tiny_llm, tiny_cf):
    cora = CoRA(CoRAConfig(**{**SMALL, "generator": GeneratorConfig(depth=2, heads=2, dropout=0.0)}), tiny_llm, tiny_cf)
    llm_before = {k: v.clone() for k, v in tiny_llm.model.state_dict().items()}
    cf_before = {k: v.clone() for k, v in tiny_cf.state_dict().items()}
    trained_before = {k: v.clone() for k, v in cora.trainable_state_dict().items()}
    assert all(k.startswith(("generator.", "injector.")) for k in trained_before)
    assert not tiny_cf.training and not any(p.requires_grad for p in tiny_cf.parameters())

    opt = torch.optim.AdamW(cora.trainable_parameters(), lr=1e-2)
    batch = make_batch(tiny_llm)
    cora.train()
    for _ in range(3):
        loss = F.binary_cross_entropy_with_logits(cora.score(batch), batch.labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert not tiny_cf.training  # cora.train() does not reach the CF model
    assert all(p.grad is None for p in tiny_llm.model.parameters())
    for k, v in tiny_llm.model.state_dict().items():
        assert torch.equal(v, llm_before[k]), k
    for k, v in tiny_cf.state_dict().items():
        assert torch.equal(v, cf_before[k]), k
    after = cora.trainable_state_dict()
    assert not torch.equal(after["injector.deltas.0.q_proj.P"], trained_before["injector.deltas.0.q_proj.P"])
    assert not torch.equal(after["generator.out.weight"], trained_before["generator.out.weight"])


def test_trainable_state_round_trips_and_mismatches_are_clear(tiny_llm, tiny_cf):
    cora = CoRA(CoRAConfig(**SMALL), tiny_llm, tiny_cf).eval()
    randomise_P(cora)
    state = cora.trainable_state_dict()
    batch = make_batch(tiny_llm)
    expected = cora.score(batch)
    cora.injector.remove()  # one CoRA per LLM at a time

    torch.manual_seed(123)
    fresh = CoRA(CoRAConfig(**SMALL), tiny_llm, tiny_cf).eval()
    assert not torch.equal(fresh.score(batch), expected)
    fresh.load_trainable_state_dict(state)
    torch.testing.assert_close(fresh.score(batch), expected, rtol=0, atol=0)

    with pytest.raises(CorarecError, match="missing"):
        fresh.load_trainable_state_dict({k: v for k, v in state.items() if "q_proj" not in k})
    bad = dict(state)
    bad["injector.deltas.0.q_proj.P"] = torch.zeros(3, 64)
    with pytest.raises(CorarecError, match="has shape"):
        fresh.load_trainable_state_dict(bad)


def test_fold_in_replaces_the_user_embedding(tiny_llm, tiny_cf):
    cora = CoRA(CoRAConfig(**SMALL, fold_in_fraction=1.0), tiny_llm, tiny_cf)
    randomise_P(cora)
    batch = make_batch(tiny_llm)
    cora.eval()
    own = cora(batch.input_ids, batch.attention_mask, batch.cf)
    folded = cora(batch.input_ids, batch.attention_mask, batch.cf, fold_in=torch.tensor([True, False, True]))
    assert not torch.allclose(own[0], folded[0]) and torch.equal(own[1], folded[1])
    assert torch.equal(cora.score(batch), own)  # eval: no fold-in sampling
    cora.train()
    cora.generator.eval()  # no dropout, so only the fold-in differs
    torch.testing.assert_close(cora.score(batch), cora(batch.input_ids, batch.attention_mask, batch.cf,
                                                       fold_in=torch.ones(3, dtype=torch.bool)))


def test_bad_settings_are_clear_errors(tiny_llm, tiny_cf):
    with pytest.raises(CorarecError, match="score_mode"):
        CoRA(CoRAConfig(**SMALL, score_mode="maybe"), tiny_llm, tiny_cf)
    with pytest.raises(CorarecError, match="fold_in_fraction"):
        CoRA(CoRAConfig(**SMALL, fold_in_fraction=1.5), tiny_llm, tiny_cf)
    assert dataclasses.asdict(CoRAConfig())["prefix_cache_dir"] is None
