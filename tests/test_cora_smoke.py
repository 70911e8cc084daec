"""Smoke test on the real bundled SmolLM2-135M: load, score, one CoRA training step."""

import pytest
import torch
import torch.nn.functional as F

from corarec.llm.model import load_llm, score
from corarec.methods.cora import CoRA, CoRAConfig, GeneratorConfig

from tiny import PROMPTS, TinyCF, make_cf_batch


@pytest.mark.slow
def test_real_smollm2_scores_and_trains_one_step(tokenizer):  # tokenizer: the converted model exists
    llm = load_llm("smollm2-135m")  # bf16 autocast where the CPU has it
    ids, mask = llm.tokenize(PROMPTS[:2])
    frozen = score(llm, ids, mask)
    assert frozen.shape == (2,) and torch.isfinite(frozen).all()

    torch.manual_seed(0)
    cf = TinyCF()
    cora = CoRA(CoRAConfig(generator=GeneratorConfig(depth=1), layers="top:4"), llm, cf)
    assert sum(p.numel() for p in cora.injector.parameters()) == 4 * 16 * (576 + 192 + 192 + 576)
    cora.train()
    with llm.autocast():
        logits = cora(ids, mask, make_cf_batch(2))
    loss = F.binary_cross_entropy_with_logits(logits, torch.tensor([1.0, 0.0]))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is None for p in llm.model.parameters())
    assert all(p.grad is None for p in cf.parameters())
    P = cora.injector.deltas["29"]["q_proj"].P
    assert P.grad is not None and torch.isfinite(P.grad).all() and P.grad.abs().sum() > 0
    assert all(p.grad is not None for p in cora.generator.parameters())  # zero while P = 0, but connected
    torch.testing.assert_close(logits.detach(), frozen)  # P = 0: CoRA starts as the frozen LLM
    torch.optim.AdamW(cora.trainable_parameters(), lr=0.05).step()
    cora.eval()
    with torch.no_grad(), llm.autocast():
        moved = cora(ids, mask, make_cf_batch(2))
    assert (moved - frozen).abs().max() > 0.1  # bf16 logits resolve steps of ~0.06 at this size
    cora.injector.remove()
