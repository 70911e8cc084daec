"""merge(): a plain LLM copy with W + ΔW_b answers exactly like the injected forward for that pair."""

import pytest
import torch

from corarec.cf.base import CFBatch
from corarec.errors import CorarecError
from corarec.llm.model import answer_logits, answer_score
from corarec.methods.cora import CoRA, CoRAConfig, GeneratorConfig, merge, merged_state_dict

from tiny import PROMPTS, make_cf_batch
from numerics import assert_within, score_tolerance, within


def test_merged_model_equals_injected_forward_per_pair(tiny_llm, tiny_cf):
    cora = CoRA(CoRAConfig(generator=GeneratorConfig(depth=2, heads=2), rank=4, alpha=8.0, targets="q,k,v,o,down"), tiny_llm, tiny_cf).eval()
    torch.manual_seed(5)
    with torch.no_grad():
        for p in cora.injector.parameters():
            p.normal_(0, 0.5)
    ids, mask = tiny_llm.tokenize(PROMPTS)
    cf = make_cf_batch(len(PROMPTS))
    injected = cora(ids, mask, cf)  # [B], batched
    base = answer_score(answer_logits(tiny_llm, ids, mask), tiny_llm.yes_id, tiny_llm.no_id)

    def yes_logit(model, b):  # row b alone through a plain HF model: [1]
        out = model(input_ids=ids[b : b + 1], attention_mask=mask[b : b + 1], use_cache=False,
                    position_ids=(mask[b : b + 1].cumsum(-1) - 1).clamp(min=0), logits_to_keep=1)
        return out.logits[:, -1, tiny_llm.yes_id]

    tolerance = score_tolerance(tiny_llm.model, ids.shape[1], rank=4)  # two fp32 forwards, summed differently
    for b in range(len(PROMPTS)):
        row = CFBatch(cf.users[b : b + 1], cf.items[b : b + 1], cf.history[b : b + 1])
        merged = merge(cora, row)
        out = yes_logit(merged, b)
        assert_within(out, injected[b : b + 1], tolerance, f"row {b}")
        assert abs(out[0] - base[b]) > 1e-3  # the merge changed the answer
        with torch.no_grad():  # ... and the comparison can still fail: ΔW off by 0.1% is caught
            for name in cora.injector.module_names.values():
                W, W0 = merged.get_submodule(name).weight, tiny_llm.model.get_submodule(name).weight
                W.copy_(W0 + (W - W0) * (1 + 1e-3))
        assert not within(yes_logit(merged, b), injected[b : b + 1], tolerance), f"row {b}"

    # the original LLM is untouched and the copy carries no hooks
    torch.testing.assert_close(answer_score(answer_logits(tiny_llm, ids, mask), tiny_llm.yes_id, tiny_llm.no_id), base,
                               rtol=0, atol=0)
    assert not any(m._forward_hooks for m in merged.modules())


def test_merged_state_dict_changes_only_targeted_weights(tiny_llm, tiny_cf):
    cora = CoRA(CoRAConfig(generator=GeneratorConfig(depth=1, heads=2), rank=2, targets="v", layers="top:1"), tiny_llm, tiny_cf).eval()
    with torch.no_grad():
        cora.injector.deltas["3"]["v_proj"].P.fill_(0.3)
    state = merged_state_dict(cora, make_cf_batch(1))
    original = tiny_llm.model.state_dict()
    changed = [k for k in state if not torch.equal(state[k], original[k])]
    assert changed == ["model.layers.3.self_attn.v_proj.weight"]
    with pytest.raises(CorarecError, match="one \\(user, item\\) row"):
        merged_state_dict(cora, make_cf_batch(2))
