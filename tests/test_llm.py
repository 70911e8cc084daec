"""LLM loading errors, Yes/No ids, the answer-slot score, padding invariance."""

import pytest
import torch

from corarec.errors import CorarecError
from corarec.llm.model import (
    answer_logits, answer_score, autocast_dtype, load_llm, position_ids, score, single_token_id,
)
from corarec.llm.packaged import BUNDLED_ALIAS

from tiny import PROMPTS
from numerics import assert_within, score_tolerance, within


def test_position_ids_count_from_the_first_real_token():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert position_ids(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]


def test_left_padded_batch_scores_equal_single_prompt_scores(tiny_llm):
    ids, mask = tiny_llm.tokenize(PROMPTS)
    assert (mask[:, -1] == 1).all() and (mask[:, 0] == 0).any()  # left padding: the slot is last
    batched = score(tiny_llm, ids, mask)
    tolerance = score_tolerance(tiny_llm.model, ids.shape[1])  # fp32, summed in another order
    final_norm = tiny_llm.model.model.norm.weight
    for b, prompt in enumerate(PROMPTS):
        one = score(tiny_llm, *tiny_llm.tokenize([prompt]))
        assert_within(batched[b : b + 1], one, tolerance, f"prompt {b}")
        with torch.no_grad():  # ... and the comparison can fail: logits 1% too large are caught
            saved = final_norm.clone()
            final_norm.mul_(1.01)
            off = score(tiny_llm, *tiny_llm.tokenize([prompt]))
            final_norm.copy_(saved)
        assert not within(batched[b : b + 1], off, tolerance)


def test_score_modes_pick_yes_or_yes_minus_no(tiny_llm):
    ids, mask = tiny_llm.tokenize(PROMPTS[:2])
    logits = answer_logits(tiny_llm, ids, mask)  # [B, V]
    assert logits.shape == (2, len(tiny_llm.tokenizer))
    assert torch.equal(answer_score(logits, 5, 7, "yes"), logits[:, 5])
    assert torch.equal(answer_score(logits, 5, 7, "yes_minus_no"), logits[:, 5] - logits[:, 7])
    with pytest.raises(CorarecError, match="score_mode 'no'"):
        answer_score(logits, 5, 7, "no")


def head_call(head, run):
    """``run()``'s result and the one call of ``head`` it made: (result, head input, head output)."""
    seen = []
    hook = head.register_forward_hook(lambda module, args, out: seen.append((args[0], out)))
    try:
        result = run()
    finally:
        hook.remove()
    (x, out), = seen
    return result, x, out


def test_the_output_head_runs_in_fp32_under_bf16_autocast(tiny_llm):
    """A bf16 logit near 16 is a multiple of 0.125: the head's output must not be rounded to bf16."""
    ids, mask = tiny_llm.tokenize(PROMPTS)
    head = tiny_llm.model.get_output_embeddings()
    saved, tiny_llm.autocast_dtype = tiny_llm.autocast_dtype, torch.bfloat16
    try:
        logits, x, out = head_call(head, lambda: answer_logits(tiny_llm, ids, mask))  # logits [B, V]
    finally:
        tiny_llm.autocast_dtype = saved
    assert out.dtype == torch.float32 and logits.dtype == torch.float32
    with torch.no_grad():  # exactly the fp32 product of the head's input (the bf16 layers' output) and weight
        assert torch.equal(logits, torch.nn.functional.linear(x.float(), head.weight.float())[:, -1])
    rounded = logits.to(torch.bfloat16).float()
    assert (logits != rounded).float().mean() > 0.5  # most logits are not bf16 numbers: nothing rounded them
    assert head.weight.dtype == torch.float32  # the weights themselves are untouched


def test_a_copy_of_the_model_computes_with_its_own_fp32_head(tiny_llm):
    """What ``corarec merge`` relies on: a deep copy's head is its own module, reading its own weight."""
    import copy

    ids, mask = tiny_llm.tokenize(PROMPTS[:2])
    twin = copy.deepcopy(tiny_llm.model)
    head = twin.get_output_embeddings()
    assert type(head).__name__ == "FP32Linear" and head.weight is not tiny_llm.model.get_output_embeddings().weight
    with torch.no_grad():
        head.weight.mul_(2.0)
        _, x, out = head_call(head, lambda: twin(input_ids=ids, attention_mask=mask, logits_to_keep=1))
    assert torch.equal(out, torch.nn.functional.linear(x.float(), head.weight.float()))  # the copy's own weight


def test_yes_no_must_be_single_tokens(tokenizer):
    assert single_token_id(tokenizer, " Yes", "m") != single_token_id(tokenizer, " No", "m")
    with pytest.raises(CorarecError, match="single token"):
        single_token_id(tokenizer, " Yes indeed", "m")


def test_prompts_longer_than_max_length_are_an_error(tiny_llm):
    with pytest.raises(CorarecError, match="longer than max_length=5"):
        tiny_llm.tokenize(PROMPTS, max_length=5)


def test_unknown_models_are_clear_errors(tmp_path):
    with pytest.raises(CorarecError, match="cannot load it offline"):
        load_llm("no-such-org/no-such-model-xyz")
    with pytest.raises(CorarecError, match="no config.json"):
        load_llm(str(tmp_path))  # an empty directory
    with pytest.raises(CorarecError, match="not a model directory"):
        load_llm(str(tmp_path / "missing"))


@pytest.mark.parametrize("avx512_bf16, amx, expected", [(False, False, None), (True, False, torch.bfloat16),
                                                         (False, True, torch.bfloat16), (True, True, torch.bfloat16)])
def test_autocast_dtype_follows_the_hardware(monkeypatch, avx512_bf16, amx, expected):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert autocast_dtype("cpu") == expected  # emulated bf16 (neither) is slower than fp32: off
    for bf16, dtype in ((True, torch.bfloat16), (False, torch.float16)):  # older GPUs: fp16
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda bf16=bf16: bf16)
        assert autocast_dtype("cuda") == dtype
    assert autocast_dtype("mps") is None


@pytest.mark.parametrize("native", [False, True])
def test_a_cpu_without_native_bf16_is_named_once_per_process(monkeypatch, capsys, tmp_path, native):
    from corarec.llm import model
    from tiny import tiny_llm_dir

    path = str(tiny_llm_dir(tmp_path))
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    model.note_fp32_cpu.cache_clear()
    load_llm(path, autocast=False)  # fp32 asked for: nothing to say
    assert "no native bf16" not in capsys.readouterr().err
    for _ in range(2):
        assert load_llm(path).autocast_dtype == (torch.bfloat16 if native else None)
    assert capsys.readouterr().err.count("this CPU has no native bf16") == (0 if native else 1)
    model.note_fp32_cpu.cache_clear()


@pytest.mark.slow
def test_bundled_smollm2_loads_from_its_cache_and_is_frozen(tokenizer):  # tokenizer: cache built
    llm = load_llm(BUNDLED_ALIAS, autocast=False)
    assert llm.name == BUNDLED_ALIAS and llm.n_layers == 30 and llm.hidden_size == 576
    assert llm.tokenizer.padding_side == "left" and llm.tokenizer.pad_token is not None
    assert llm.yes_id == single_token_id(llm.tokenizer, " Yes", "m")
    assert not llm.model.training and not any(p.requires_grad for p in llm.model.parameters())
    ids, mask = llm.tokenize(PROMPTS[:2])
    s = score(llm, ids, mask)
    assert s.shape == (2,) and torch.isfinite(s).all()
