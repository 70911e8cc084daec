"""Prefix cache: cached layer-L inputs reproduce the full forward; keys invalidate stale entries."""

import pytest
import torch

from corarec.methods.batches import Batch
from corarec.errors import CorarecError
from corarec.methods.cora import CoRA, CoRAConfig, GeneratorConfig
from corarec.llm.layer_split import layer_inputs
from corarec.llm.prefix_cache import PrefixCache

from tiny import PROMPTS, make_cf_batch, make_tiny_llm
from numerics import assert_within, scaled_delta_weights, score_tolerance, storage_tolerance, within

CFG = dict(generator=GeneratorConfig(depth=2, heads=2), rank=4, alpha=8.0, layers="top:2")


def test_layer_inputs_are_the_hidden_states_entering_the_layer(tiny_llm):
    ids, mask = tiny_llm.tokenize(PROMPTS)
    out = tiny_llm.model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                         output_hidden_states=True, use_cache=False)
    got = layer_inputs(tiny_llm, 2, ids, mask)
    torch.testing.assert_close(got, out.hidden_states[2], rtol=0, atol=0)


def test_running_from_cached_inputs_equals_the_full_forward(tiny_llm, tiny_cf, tmp_path):
    cora = CoRA(CoRAConfig(**CFG), tiny_llm, tiny_cf).eval()
    torch.manual_seed(5)
    with torch.no_grad():
        for p in cora.injector.parameters():
            p.normal_(0, 0.5)
    ids, mask = tiny_llm.tokenize(PROMPTS)
    cf = make_cf_batch(3)
    full = cora(ids, mask, cf)

    cache = PrefixCache(tiny_llm, layer=2, template_id="tallrec-test", root=tmp_path, dtype=torch.float32)
    hidden = cache.hidden_states(ids, mask)  # computes, verifies against the full forward, stores
    assert cache.misses == 3 and hidden.shape == (3, ids.shape[1], 64)
    cached = cora(ids, mask, cf, prefix_hidden=hidden)
    tolerance = score_tolerance(tiny_llm.model, ids.shape[1], rank=4)  # fp32 both ways
    assert_within(cached, full, tolerance, "scores from cached inputs")
    assert (cached - cora(ids, mask, cf, prefix_hidden=hidden * 1.01)).abs().max() > 1e-3  # it is really used
    with scaled_delta_weights(cora, 1 + 1e-2):  # ... and the comparison can fail: ΔW off by 1% is caught
        assert not within(cora(ids, mask, cf, prefix_hidden=hidden), full, tolerance)

    # the same rows in another batch (other order, other padding) are hits and still exact
    ids2, mask2 = tiny_llm.tokenize([PROMPTS[2], PROMPTS[0]])
    hidden2 = cache.hidden_states(ids2, mask2)
    assert cache.hits == 2 and cache.misses == 3
    cf2 = make_cf_batch(3)
    cf2.users, cf2.items, cf2.history = cf2.users[[2, 0]], cf2.items[[2, 0]], cf2.history[[2, 0]]
    assert_within(cora(ids2, mask2, cf2, prefix_hidden=hidden2), full[[2, 0]], tolerance, "another batch")
    # layers below L are restored afterwards
    assert all(type(layer).__name__ == "LlamaDecoderLayer" for layer in tiny_llm.model.model.layers)


def test_cora_with_cache_prefix_scores_batches_like_without(tiny_llm, tiny_cf, tmp_path):
    plain = CoRA(CoRAConfig(**CFG), tiny_llm, tiny_cf).eval()
    torch.manual_seed(5)
    with torch.no_grad():
        for p in plain.injector.parameters():
            p.normal_(0, 0.5)
    ids, mask = tiny_llm.tokenize(PROMPTS)
    batch = Batch(ids, mask, make_cf_batch(3), torch.ones(3), PROMPTS)
    expected = plain.score(batch)
    # bf16 storage rounds each cached value (derived per row from the score's gradient), then fp32 on
    bf16_storage = storage_tolerance(lambda h: plain(ids, mask, batch.cf, prefix_hidden=h),
                                     layer_inputs(tiny_llm, 2, ids, mask), torch.bfloat16)
    tolerance = bf16_storage + score_tolerance(tiny_llm.model, ids.shape[1], rank=4)  # [B]
    plain.injector.remove()
    cached = CoRA(CoRAConfig(**CFG, cache_prefix=True, prefix_cache_dir=str(tmp_path)), tiny_llm, tiny_cf).eval()
    cached.load_trainable_state_dict(plain.trainable_state_dict())
    assert cached.prefix_cache.layer == 2 and cached.prefix_cache.dtype == torch.bfloat16
    first, again = cached.score(batch), cached.score(batch)
    assert cached.prefix_cache.hits == 3 and torch.equal(first, again)
    assert_within(first, expected, tolerance, "scores from bf16-cached inputs")
    with scaled_delta_weights(cached, 1 + 0.1):  # bf16 storage is coarse: ΔW off by 10% is caught
        assert not within(cached.score(batch), expected, tolerance)


def test_flushed_entries_are_reused_by_a_new_cache_without_recomputing(tiny_llm, tmp_path, monkeypatch):
    ids, mask = tiny_llm.tokenize(PROMPTS)
    with PrefixCache(tiny_llm, 1, "tallrec-test", root=tmp_path, dtype=torch.float32) as cache:
        hidden = cache.hidden_states(ids, mask)
        assert len(cache) == 3 and not list(cache.dir.glob("shard-*"))  # still buffered
    assert len(list(cache.dir.glob("shard-*.safetensors"))) == 1  # flushed on exit

    import corarec.llm.prefix_cache as pc

    monkeypatch.setattr(pc, "layer_inputs", lambda *a: pytest.fail("recomputed a cached row"))
    again = PrefixCache(tiny_llm, 1, "tallrec-test", root=tmp_path, dtype=torch.float32)
    assert len(again) == 3
    torch.testing.assert_close(again.hidden_states(ids, mask), hidden, rtol=0, atol=0)
    assert again.misses == 0


def test_changed_template_llm_layer_or_prompt_never_reads_stale_entries(tokenizer, tmp_path):
    llm = make_tiny_llm(tokenizer, seed=0)
    ids, mask = llm.tokenize(PROMPTS[:2])
    with PrefixCache(llm, 1, "tallrec-aaaa", root=tmp_path) as base:
        base.hidden_states(ids, mask)

    def fresh(llm_, template="tallrec-aaaa", layer=1):
        cache = PrefixCache(llm_, layer, template, root=tmp_path)
        return cache, len(cache)

    assert fresh(llm)[1] == 2  # same key: found
    other_template, n = fresh(llm, template="tallrec-bbbb")
    assert n == 0 and other_template.dir != base.dir
    assert fresh(llm, layer=2)[1] == 0
    renamed = make_tiny_llm(tokenizer, seed=0)
    renamed.name = "another-name"
    assert fresh(renamed)[1] == 0
    retrained = make_tiny_llm(tokenizer, seed=0)  # same name, one weight changed
    with torch.no_grad():
        retrained.model.model.layers[0].mlp.down_proj.weight[0, 0] += 1.0
    cache, n = fresh(retrained)
    assert n == 0 and cache.dir != base.dir
    # a changed prompt is a different entry under the same key
    cache, _ = fresh(llm)
    ids2, mask2 = llm.tokenize([PROMPTS[0].replace("Heat", "Ronin"), PROMPTS[1]])
    cache.hidden_states(ids2, mask2)
    assert (cache.hits, cache.misses) == (1, 1)


def test_verify_rejects_states_that_do_not_reproduce_the_full_forward(tiny_llm, tmp_path):
    cache = PrefixCache(tiny_llm, 2, "tallrec-test", root=tmp_path, dtype=torch.float32)
    ids, mask = tiny_llm.tokenize(PROMPTS)
    wrong = layer_inputs(tiny_llm, 1, ids, mask)  # inputs of the wrong layer
    with pytest.raises(CorarecError, match="differ from the full forward"):
        cache.verify(ids, mask, wrong)
    cache.verify(ids, mask, layer_inputs(tiny_llm, 2, ids, mask))  # the right ones pass


def test_cora_with_layers_all_makes_no_prefix_cache(tiny_llm, tiny_cf, tmp_path):
    cfg = CoRAConfig(**{**CFG, "layers": "all"}, cache_prefix=True, prefix_cache_dir=str(tmp_path))
    cora = CoRA(cfg, tiny_llm, tiny_cf)
    assert cora.prefix_cache is None and cora.prefix_layer == 0 and not any(tmp_path.iterdir())
    cora.injector.remove()
