"""ICL, TALLRec and CoLLM on a tiny random Llama: parameters, frozen weights, splicing, artefacts."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from corarec.cf import load_cf
from corarec.methods.batches import PromptBatcher
from corarec.data.prompts import ITEM_TOKEN, USER_TOKEN
from corarec.data.schema import read_dataset
from corarec.errors import CorarecError
from corarec.utils.io import load_tensors
from corarec.llm.model import answer_logits, load_llm, score as llm_score
from corarec.methods.collm import CoLLM, CoLLMConfig
from corarec.methods.icl import ICL, ICLConfig
from corarec.methods.tallrec import TallRec, TallRecConfig
from corarec.llm.layer_split import layer_inputs, start_at_layer
from numerics import (
    assert_within, product_magnitude, rounding_tolerance, scaled_delta_weights, score_tolerance, storage_tolerance,
    within,
)
from tiny import tiny_cf_dir, tiny_dataset_dir, tiny_llm_dir


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("baselines")
    data = tiny_dataset_dir(root)
    return SimpleNamespace(root=root, data=data, dataset=read_dataset(data), llm=tiny_llm_dir(root),
                           cf=tiny_cf_dir(root, data))


def fresh_llm(tiny):
    return load_llm(str(tiny.llm), autocast=False)  # fp32: exact comparisons


def batch_of(method, tiny, split="train", n=6, template=None):
    batcher = PromptBatcher(tiny.dataset, method.llm.tokenizer, template=template or method.template)
    return batcher(tiny.dataset.splits[split].iloc[:n])


def llm_weights(llm):
    """The LLM's own weights, named as before peft wrapped its linear maps."""
    return {k.replace(".base_layer", ""): v.detach().clone() for k, v in llm.model.named_parameters()
            if "lora_" not in k}


def take_steps(method, tiny, steps=3, lr=1e-2):
    """A few AdamW steps of BCE on the method's score (what the shared loop does)."""
    optimizer = torch.optim.AdamW(method.trainable_parameters(), lr=lr)
    method.train()
    for step in range(steps):
        batch = PromptBatcher(tiny.dataset, method.llm.tokenizer, template=method.template)(
            tiny.dataset.train.iloc[step * 8:(step + 1) * 8])
        loss = F.binary_cross_entropy_with_logits(method.score(batch), batch.labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    method.eval()


def lora_names(method):
    """{(layer, module, 'A'|'B')} of the trainable LoRA matrices."""
    found = set()
    for name, p in method.named_parameters():
        if p.requires_grad and "lora_" in name:
            m = re.search(r"layers\.(\d+)\.self_attn\.(\w+)\.lora_([AB])\.", name)
            assert m, name
            found.add((int(m[1]), m[2], m[3]))
    return found


def scores_from_layer(llm, layer, batch):
    """``scores(hidden)``: the LLM's Yes logits ``[B]`` for ``batch`` with its inputs to ``layer`` replaced by
    ``hidden [B, T, d]`` — what a method reading the prefix cache computes."""
    def scores(hidden):
        with start_at_layer(llm, layer, hidden):
            return answer_logits(llm, batch.input_ids, batch.attention_mask)[:, llm.yes_id]
    return scores


def bf16_cache_tolerance(llm, layer, batch, rank=0):
    """Tolerance of scores read through the bf16 prefix cache against the full forward: each stored value
    rounded (bounded through the score's gradient, :func:`numerics.storage_tolerance`), then fp32 on."""
    stored = layer_inputs(llm, layer, batch.input_ids, batch.attention_mask)
    return (storage_tolerance(scores_from_layer(llm, layer, batch), stored, torch.bfloat16)
            + score_tolerance(llm.model, batch.input_ids.shape[1], rank=rank))


# ---- ICL ------------------------------------------------------------------------------------------

def test_icl_is_the_frozen_llm_zero_shot(tiny):
    llm = fresh_llm(tiny)
    icl = ICL(ICLConfig(), llm)
    batch = batch_of(icl, tiny)
    scores = icl.score(batch)
    assert scores.shape == (6,)
    assert torch.equal(scores, llm_score(llm, batch.input_ids, batch.attention_mask))
    assert icl.n_trainable() == 0 and not icl.trains and icl.trainable_state_dict() == {}
    margin = ICL(ICLConfig(score_mode="yes_minus_no"), llm).score(batch)
    assert torch.equal(margin, llm_score(llm, batch.input_ids, batch.attention_mask, "yes_minus_no"))
    with pytest.raises(CorarecError, match="score_mode"):
        ICL(ICLConfig(score_mode="maybe"), llm)


def test_icl_from_the_prefix_cache_scores_like_the_full_forward_and_shares_tallrecs_entries(tiny, tmp_path):
    llm = fresh_llm(tiny)
    cached = ICL(ICLConfig(layers="top:1", cache_prefix=True, prefix_cache_dir=str(tmp_path)), llm)
    batch = batch_of(cached, tiny, split="test")
    expected = llm_score(llm, batch.input_ids, batch.attention_mask)  # the full forward, all layers
    tolerance = bf16_cache_tolerance(llm, 1, batch)
    scores = cached.score(batch)
    assert cached.prefix_cache.misses == len(batch) and len(cached.prefix_cache) == len(batch)
    assert_within(scores, expected, tolerance, "ICL scores from the bf16 prefix cache")
    assert torch.equal(cached.score(batch), scores)  # the second pass reads the cache ...
    with torch.no_grad():  # ... and the scores are the top layer's on the cached inputs, not the full forward's
        cached_inputs = cached.prefix_cache.hidden_states(batch.input_ids, batch.attention_mask)
        assert torch.equal(scores, scores_from_layer(llm, 1, batch)(cached_inputs))
    cached.prefix_cache.flush()
    # TALLRec with the same layers reads ICL's entries: the same LLM, template and layer
    tallrec = TallRec(TallRecConfig(layers="top:1", cache_prefix=True, prefix_cache_dir=str(tmp_path)), fresh_llm(tiny))
    assert tallrec.prefix_cache.dir == cached.prefix_cache.dir
    tallrec.eval().score(batch)
    assert tallrec.prefix_cache.misses == 0 and tallrec.prefix_cache.hits == len(batch)
    assert ICL(ICLConfig(layers="top:1"), llm).prefix_cache is None  # layers alone change nothing
    with pytest.raises(CorarecError, match="layers 'top:9'"):
        ICL(ICLConfig(layers="top:9", cache_prefix=True), llm)


# ---- TALLRec --------------------------------------------------------------------------------------

def test_tallrec_lora_is_exactly_q_v_of_every_layer_and_starts_as_the_llm(tiny):
    llm = fresh_llm(tiny)
    plain = fresh_llm(tiny)
    method = TallRec(TallRecConfig(), llm)
    assert lora_names(method) == {(l, m, ab) for l in range(2) for m in ("q_proj", "v_proj") for ab in "AB"}
    expected = 0
    for layer in llm.model.model.layers:
        for proj in (layer.self_attn.q_proj, layer.self_attn.v_proj):
            expected += 8 * proj.in_features + proj.out_features * 8
    assert method.n_trainable() == expected
    assert set(method.trainable_state_dict()) == {n for n, p in method.named_parameters() if p.requires_grad}
    batch = batch_of(method, tiny)
    method.eval()
    assert torch.equal(method.score(batch), llm_score(plain, batch.input_ids, batch.attention_mask))  # B = 0

    top = TallRec(TallRecConfig(targets="q,k,v,o", layers="top:1", rank=4), fresh_llm(tiny))
    assert lora_names(top) == {(1, m, ab) for m in ("q_proj", "k_proj", "v_proj", "o_proj") for ab in "AB"}
    with pytest.raises(CorarecError, match="LoRA targets"):
        TallRec(TallRecConfig(targets="nonexistent_proj"), fresh_llm(tiny))


def test_tallrec_steps_train_only_the_lora_and_round_trip(tiny, tmp_path):
    llm = fresh_llm(tiny)
    before = llm_weights(llm)
    method = TallRec(TallRecConfig(), llm)
    lora_before = method.trainable_state_dict()
    take_steps(method, tiny)
    after = llm_weights(llm)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the LLM is untouched
    lora_after = method.trainable_state_dict()
    assert all(not torch.equal(lora_before[k], lora_after[k]) for k in lora_after if "lora_B" in k)

    batch = batch_of(method, tiny, split="test")
    trained = method.score(batch)
    from corarec.utils.io import save_tensors

    save_tensors(tmp_path / "w.safetensors", lora_after)
    again = TallRec(TallRecConfig(), fresh_llm(tiny))
    again.load_trainable_state_dict(load_tensors(tmp_path / "w.safetensors"))
    again.eval()
    assert torch.equal(again.score(batch), trained)
    with pytest.raises(CorarecError, match="do not match"):
        TallRec(TallRecConfig(rank=4, targets="q"), fresh_llm(tiny)).load_trainable_state_dict(lora_after)


def test_tallrec_top_layers_from_the_prefix_cache_score_like_the_full_forward(tiny, tmp_path):
    cached = TallRec(TallRecConfig(layers="top:1", cache_prefix=True, prefix_cache_dir=str(tmp_path)), fresh_llm(tiny))
    assert lora_names(cached) == {(1, m, ab) for m in ("q_proj", "v_proj") for ab in "AB"}
    take_steps(cached, tiny)  # the LoRA trains from cached layer-1 inputs
    assert len(cached.prefix_cache) > 0 and cached.prefix_cache.misses > 0
    full = TallRec(TallRecConfig(layers="top:1"), fresh_llm(tiny))
    full.load_trainable_state_dict(cached.trainable_state_dict())
    full.eval()
    batch = batch_of(cached, tiny, split="test")
    expected = full.score(batch)
    tolerance = bf16_cache_tolerance(full.llm, 1, batch, rank=8)  # full's scores with stored layer-1 inputs
    assert_within(cached.score(batch), expected, tolerance, "scores from the bf16 prefix cache")
    with scaled_delta_weights(cached.peft, 1.1):  # bf16 storage is coarse: a LoRA ΔW off by 10% is caught
        assert not within(cached.score(batch), expected, tolerance)
    with pytest.raises(CorarecError, match="collm cannot use cache_prefix"):
        make_collm(tiny, layers="top:1", cache_prefix=True)


@pytest.fixture(scope="module")
def tallrec_run(tiny):
    from corarec.training.loop import train

    out = tiny.root / "tallrec-run"
    train(method="tallrec", data=tiny.data, out=out, llm=str(tiny.llm), seed=0, bf16=False, device="cpu",
          max_steps=4, eval_every=2, batch_size=8, lr=1e-2, warmup_steps=0)
    return out


def test_tallrec_run_saves_a_peft_adapter_that_plain_peft_loads(tiny, tallrec_run):
    from peft import PeftModel

    from corarec.training.runs import is_finished, load_run

    assert is_finished(tallrec_run)
    assert (tallrec_run / "adapter" / "adapter_config.json").is_file()
    assert (tallrec_run / "adapter" / "adapter_model.safetensors").is_file()
    loaded = load_run(tallrec_run)
    batch = batch_of(loaded.method, tiny, split="test", n=8)
    ours = loaded.method.score(batch)

    llm = fresh_llm(tiny)
    PeftModel.from_pretrained(llm.model, str(tallrec_run / "adapter")).eval()  # peft alone, no corarec
    theirs = llm_score(llm, batch.input_ids, batch.attention_mask)
    tolerance = score_tolerance(llm.model, batch.input_ids.shape[1], rank=8)  # fp32, maybe summed otherwise
    assert_within(ours, theirs, tolerance, "corarec's vs peft's scores")
    assert not torch.allclose(theirs, llm_score(fresh_llm(tiny), batch.input_ids, batch.attention_mask))
    with scaled_delta_weights(llm.model, 1 + 1e-2):  # ... and the comparison can fail: ΔW off by 1% is caught
        assert not within(ours, llm_score(llm, batch.input_ids, batch.attention_mask), tolerance)

    from corarec.methods.peft_lora import load_adapter

    other = TallRec(TallRecConfig(), fresh_llm(tiny)).eval()
    load_adapter(other.peft, tallrec_run / "adapter")
    assert_within(other.score(batch), ours, tolerance, "scores after load_adapter")
    with scaled_delta_weights(other.peft, 1 + 1e-2):
        assert not within(other.score(batch), ours, tolerance)
    with pytest.raises(CorarecError, match="r="):
        load_adapter(TallRec(TallRecConfig(rank=4), fresh_llm(tiny)).peft, tallrec_run / "adapter")


# ---- CoLLM ----------------------------------------------------------------------------------------

def make_collm(tiny, **settings):
    return CoLLM(CoLLMConfig(**settings), fresh_llm(tiny), load_cf(tiny.cf, tiny.dataset))


def test_collm_trains_the_mapping_and_the_lora(tiny):
    method = make_collm(tiny)
    c, e, d = method.cf.dim, method.cf.embed_dim, method.llm.hidden_size
    mapping = {n: tuple(p.shape) for n, p in method.named_parameters() if n.startswith("mapping.")}
    assert mapping == {"mapping.0.weight": (10 * c, e), "mapping.0.bias": (10 * c,),
                       "mapping.2.weight": (d, 10 * c), "mapping.2.bias": (d,)}
    trainable = {n for n, p in method.named_parameters() if p.requires_grad}
    assert trainable == set(mapping) | {n for n in trainable if "lora_" in n}
    assert lora_names(method) == {(l, m, ab) for l in range(2) for m in ("q_proj", "v_proj") for ab in "AB"}
    assert not any(p.requires_grad for p in method.cf.parameters())

    frozen_lora = make_collm(tiny, train_lora=False)
    assert {n for n, p in frozen_lora.named_parameters() if p.requires_grad} == set(mapping)
    assert frozen_lora.n_trainable() == sum(p.numel() for n, p in frozen_lora.named_parameters() if n in mapping)
    assert any("lora_A" in k for k in frozen_lora.trainable_state_dict())  # saved all the same


def test_collm_splices_mapped_cf_embeddings_at_the_placeholders(tiny):
    method = make_collm(tiny).eval()
    batch = batch_of(method, tiny)
    user_pos, item_pos = method.placeholder_positions(batch.input_ids)
    assert user_pos.sum(1).tolist() == [1] * 6 and item_pos.sum(1).tolist() == [1] * 6
    assert (user_pos.float().argmax(1) < item_pos.float().argmax(1)).all()
    tokens = method.llm.tokenizer.convert_ids_to_tokens(batch.input_ids[0][user_pos[0] | item_pos[0]].tolist())
    assert tokens == [USER_TOKEN, ITEM_TOKEN]

    embeds = method.input_embeddings(batch)
    e_u, e_i = method.cf.embed(batch.cf)
    first, last = method.mapping[0], method.mapping[2]  # Linear → ReLU (|relu z| ≤ |z|) → Linear
    for pos, e in ((user_pos, e_u), (item_pos, e_i)):
        magnitude = product_magnitude(product_magnitude(e, first.weight.T) + first.bias.abs(), last.weight.T)
        tolerance = rounding_tolerance(magnitude + last.bias.abs(), first.in_features + last.in_features + 2)
        assert_within(embeds[pos], method.mapping(e), tolerance, "spliced mapped embeddings")
        assert not within(embeds[pos], method.mapping(e) * (1 + 1e-3), tolerance)  # 0.1% off is caught
    table = method.llm.model.get_input_embeddings()
    rest = ~(user_pos | item_pos)
    assert torch.equal(embeds[rest], table(batch.input_ids[rest]))

    # the score reads the CF embeddings ...
    scores = method.score(batch)
    original = method.cf.embed
    method.cf.embed = lambda cf_batch, fold_in=None: tuple(t + 0.5 for t in original(cf_batch, fold_in))
    moved = method.score(batch)
    assert not torch.allclose(scores, moved)
    # ... only through the mapping: zeroed, the placeholders are zero vectors whatever the CF says
    with torch.no_grad():
        method.mapping[2].weight.zero_()
        method.mapping[2].bias.zero_()
    zeroed = method.score(batch)
    method.cf.embed = original
    assert torch.equal(zeroed, method.score(batch))
    plain = table(batch.input_ids.masked_fill(user_pos | item_pos, 0)).masked_fill((user_pos | item_pos)[..., None], 0.0)
    expected = answer_logits(method.llm, None, batch.attention_mask, inputs_embeds=plain)[:, method.llm.yes_id]
    tolerance = score_tolerance(method.llm.model, batch.input_ids.shape[1], rank=method.cfg.rank)
    assert_within(zeroed, expected, tolerance, "scores with zero placeholders")
    padded = table(batch.input_ids.masked_fill(user_pos | item_pos, method.pad_id))  # pad embeddings, not zeros
    with_pads = answer_logits(method.llm, None, batch.attention_mask, inputs_embeds=padded)[:, method.llm.yes_id]
    assert not within(zeroed, with_pads, tolerance)  # ... and the comparison can fail

    with pytest.raises(CorarecError, match="collm"):
        method.score(batch_of(method, tiny, template="tallrec"))


def test_collm_steps_leave_llm_and_cf_frozen_and_round_trip(tiny, tmp_path):
    method = make_collm(tiny, fold_in_fraction=0.5)
    llm_before = llm_weights(method.llm)
    cf_before = {k: v.clone() for k, v in method.cf.state_dict().items()}
    trained_before = method.trainable_state_dict()
    take_steps(method, tiny)
    assert all(torch.equal(llm_before[k], v) for k, v in llm_weights(method.llm).items())
    assert all(torch.equal(cf_before[k], v) for k, v in method.cf.state_dict().items())
    trained_after = method.trainable_state_dict()
    assert not torch.equal(trained_before["mapping.2.weight"], trained_after["mapping.2.weight"])
    assert any(not torch.equal(trained_before[k], trained_after[k]) for k in trained_after if "lora_B" in k)
    assert not method.cf.training

    batch = batch_of(method, tiny, split="test")
    again = make_collm(tiny)
    again.load_trainable_state_dict(trained_after)
    again.eval()
    assert torch.equal(again.score(batch), method.score(batch))


def test_collm_stage_two_starts_from_the_tallrec_run(tiny, tallrec_run):
    from corarec.training.runs import load_run
    from corarec.training.loop import train

    out = tiny.root / "collm-run"
    train(method="collm", data=tiny.data, out=out, cf=tiny.cf, init=tallrec_run, llm=str(tiny.llm), seed=0,
          bf16=False, device="cpu", train_lora=False,
          max_steps=2, eval_every=2, batch_size=8, lr=1e-2, warmup_steps=0)
    stage1 = load_tensors(tallrec_run / "model.safetensors")
    stage2 = load_tensors(out / "model.safetensors")
    assert set(stage1) < set(stage2)
    assert all(torch.equal(stage1[k], stage2[k]) for k in stage1)  # LoRA copied and kept frozen
    assert {k for k in stage2 if k.startswith("mapping.")} == {"mapping.0.weight", "mapping.0.bias",
                                                              "mapping.2.weight", "mapping.2.bias"}
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    loaded = load_run(out)
    assert loaded.method.n_trainable() == sum(v.numel() for k, v in stage2.items() if k.startswith("mapping."))
    assert loaded.batcher.template == "collm"


def test_with_layers_all_cache_prefix_makes_no_cache_and_writes_nothing(tiny, tmp_path):
    """Nothing lies below layer 0: a cache there would store the token embeddings and save no work."""
    cache = dict(layers="all", cache_prefix=True, prefix_cache_dir=str(tmp_path))
    for method in (ICL(ICLConfig(**cache), fresh_llm(tiny)), TallRec(TallRecConfig(**cache), fresh_llm(tiny))):
        batch = batch_of(method, tiny, split="test")
        method.eval().score(batch)
        assert method.prefix_cache is None and method.prefix_hidden(batch) is None
    assert not any(tmp_path.iterdir())
