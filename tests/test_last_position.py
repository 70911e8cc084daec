"""The last layer's position-wise maps run for the answer slot only (:mod:`corarec.llm.last_position`): the same
scores and training gradients as the whole computation, on every layout, with CoRA's hooks and a peft LoRA on those
maps, and nothing left on the model outside a score."""

from __future__ import annotations

import pytest
import torch

from corarec.llm import last_position
from corarec.llm.model import answer_logits, decoder_layers
from corarec.methods.cora import CoRA, CoRAConfig, GeneratorConfig
from corarec.methods.tallrec import TallRec, TallRecConfig
from numerics import assert_within, rounding_tolerance, within
from test_architectures import ALPHA, RANK, TARGETS, randomise
from tiny import PROMPTS, TinyCF, make_cf_batch
from tiny_archs import ARCHITECTURES, forward_length, tiny_arch_llm, tolerance_of_scores

POSITION_WISE = {arch: ["self_attn.o_proj", "mlp"] for arch in ARCHITECTURES} | {"gpt2": ["attn.c_proj", "mlp"]}


@pytest.fixture
def plain(monkeypatch):
    """Runs a function with the whole last layer (the plain path)."""
    def run(fn):
        monkeypatch.setattr(last_position, "ENABLED", False)
        try:
            return fn()
        finally:
            last_position.ENABLED = True
    return run


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_cora_scores_like_the_whole_last_layer_on_every_layout(tokenizer, arch, plain):
    llm = tiny_arch_llm(arch, tokenizer)
    last = decoder_layers(llm.model)[-1]
    names = {id(m): n for n, m in last.named_modules()}
    assert [names[id(m)] for m in last_position.position_wise_modules(last)] == POSITION_WISE[arch]
    torch.manual_seed(1)
    cora = CoRA(CoRAConfig(generator=GeneratorConfig(depth=1, heads=2), rank=RANK, alpha=ALPHA, targets=TARGETS[arch]),
                llm, TinyCF()).eval()
    randomise(cora.injector)  # the increments of the last layer's o and FFN maps ride along on the last position
    hooks = hook_count(last)  # CoRA's
    ids, mask = llm.tokenize(PROMPTS)
    cf = make_cf_batch(len(PROMPTS))

    seen = []
    hook = last.mlp.register_forward_hook(lambda m, args, out: seen.append(tuple(args[0].shape)))  # its input
    fast = cora(ids, mask, cf)                                                        # [B]
    assert seen == [(len(PROMPTS), 1, llm.hidden_size)]  # the FFN saw the last position only
    whole = plain(lambda: cora(ids, mask, cf))
    hook.remove()
    assert seen[1] == (len(PROMPTS), ids.shape[1], llm.hidden_size)
    tolerance = tolerance_of_scores(llm.model, ids.shape[1], RANK)
    assert_within(fast, whole, tolerance, f"{arch} scores")
    # ... and the comparison can fail: the last layer's down projection off by 1 % is caught
    down = next(m for n, m in last.named_modules() if n.endswith(("down_proj", "mlp.c_proj")) and hasattr(m, "weight"))
    with torch.no_grad():
        down.weight.mul_(1.01)
    assert not within(plain(lambda: cora(ids, mask, cf)), whole, tolerance), arch
    assert hook_count(last) == hooks  # nothing left on the model after a score


def hook_count(module: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_training_gradients_are_those_of_the_whole_last_layer(tokenizer, arch, plain):
    llm = tiny_arch_llm(arch, tokenizer)
    torch.manual_seed(1)
    cora = CoRA(CoRAConfig(generator=GeneratorConfig(depth=1, heads=2), rank=RANK, alpha=ALPHA, targets=TARGETS[arch]),
                llm, TinyCF()).eval()
    randomise(cora.injector)
    ids, mask = llm.tokenize(PROMPTS)
    cf = make_cf_batch(len(PROMPTS))

    def gradients():
        cora.zero_grad(set_to_none=True)
        cora(ids, mask, cf).sum().backward()
        return {n: p.grad.clone() for n, p in cora.named_parameters() if p.grad is not None}

    fast, whole = gradients(), plain(gradients)
    assert fast.keys() == whole.keys() and len(fast) > 0
    # a gradient entry is a sum over the forward pass and a backward pass of about twice its length: the scores'
    # relative bound with 3x the accumulation length, on the scale of the tensor's largest entry
    bound = relative_bound(llm, 3 * ids.shape[1])

    def agree(a: dict, b: dict) -> bool:
        return all((a[n] - b[n]).abs().max().item() <= bound * b[n].abs().max().item() for n in b)

    assert agree(fast, whole)
    last_p = next(n for n in fast if n.startswith(f"injector.deltas.{llm.n_layers - 1}.") and n.endswith(".P"))
    assert whole[last_p].abs().max() > 0  # the last layer's increments do get a gradient
    down = next(m for n, m in decoder_layers(llm.model)[-1].named_modules()
                if n.endswith(("down_proj", "mlp.c_proj")) and hasattr(m, "weight"))
    with torch.no_grad():
        down.weight.mul_(1.01)
    assert not agree(plain(gradients), whole)  # ... and the comparison can fail


def relative_bound(llm, seq_len: int) -> float:
    """λ·√n·eps for the accumulation length ``n`` of a forward pass over ``seq_len`` tokens, per unit magnitude."""
    return rounding_tolerance(1.0, forward_length(llm.model.config, seq_len, RANK))


@pytest.mark.parametrize("arch", ["llama", "phi3"])
def test_a_peft_lora_on_the_last_layers_maps_scores_like_the_whole_layer(tokenizer, arch, plain):
    llm = tiny_arch_llm(arch, tokenizer)
    targets = "q,k,v,o,gate,up,down" if arch == "phi3" else "q,v,o,down"
    method = TallRec(TallRecConfig(targets=targets, rank=RANK, alpha=ALPHA), llm).eval()
    randomise(method.peft)
    ids, mask = llm.tokenize(PROMPTS)
    last = decoder_layers(llm.model)[-1]
    seen = []
    hook = last.mlp.register_forward_hook(lambda m, args, out: seen.append(tuple(args[0].shape)))  # its input
    fast = answer_logits(llm, ids, mask)
    whole = plain(lambda: answer_logits(llm, ids, mask))
    hook.remove()
    assert seen == [(len(PROMPTS), 1, llm.hidden_size), (len(PROMPTS), ids.shape[1], llm.hidden_size)]
    tolerance = tolerance_of_scores(llm.model, ids.shape[1], RANK)
    assert_within(fast, whole, tolerance, f"{arch} LoRA logits")
    lora_down = next(m for n, m in last.named_modules() if n.endswith("down_proj.lora_B.default"))
    with torch.no_grad():  # ... and the comparison can fail: the last layer's LoRA on down 10 % off is caught
        lora_down.weight.mul_(1.1)
    assert not within(plain(lambda: answer_logits(llm, ids, mask)), whole, tolerance), arch
