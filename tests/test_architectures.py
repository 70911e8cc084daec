"""CoRA, the prefix cache, TALLRec and CoLLM on seven Hugging Face architectures (:mod:`tiny_archs`).

For each of Llama, Mistral, Qwen2, Qwen3, Gemma 3 (``gemma3_text``), Phi-3 and GPT-2, built from a
config with random weights, offline:

- the targets name the modules of that layout (fused ``qkv_proj`` / ``gate_up_proj`` / ``c_attn``
  as a whole; a part of a fused group is one clear error);
- batched per-sample injection equals the explicit ``W + ΔW_b`` of every module, plain and with the
  shared input product, and end to end (the merged weights in the model's own layout, ``Conv1D``
  transposed); with the branch off or ``P = 0`` the logits are bit-identical to the base model's;
- the prefix cache reproduces the full forward (sliding-window and mixed layer types included);
- TALLRec's peft LoRA equals explicit ``W + (α/r) B A`` per module, is the base model at ``B = 0`` and
  runs from the prefix cache; CoLLM's spliced embeddings reach the answer through the architecture's
  ``inputs_embeds`` path (Gemma's scaled embeddings, GPT-2's learned positions).

Tolerances: :mod:`numerics` (elementwise, from magnitudes and accumulation lengths) per module and
:func:`tiny_archs.tolerance_of_scores` for logits; every loosened comparison has its negative check.
"""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from corarec.data.prompts import build_prompt
from corarec.errors import CorarecError
from corarec.llm.layouts import stores_transposed
from corarec.llm.model import NO, YES, answer_logits, decoder_layers, load_llm, single_token_id
from corarec.llm.layer_split import layer_inputs
from corarec.llm.prefix_cache import PrefixCache
from corarec.methods.batches import Batch
from corarec.methods.collm import CoLLM, CoLLMConfig
from corarec.methods.cora import CoRA, CoRAConfig, GeneratorConfig, merge
from corarec.methods.cora.injection import CollaborativeInjector, LowRankDelta
from corarec.methods.tallrec import TallRec, TallRecConfig

from numerics import assert_within, product_magnitude, rounding_tolerance, scaled_delta_weights, within
from tiny import PROMPTS, TinyCF, bundled_tokenizer, make_cf_batch
from tiny_archs import ARCHITECTURES, HIDDEN, tiny_arch_llm, tiny_model, tolerance_of_scores

FUSED = ("phi3", "gpt2")
TARGETS = {arch: "q,k,v,o,up,down" if arch == "gpt2" else "q,k,v,o,gate,up,down" for arch in ARCHITECTURES}
"""Every linear map of a layer (GPT-2's FFN has no gate)."""
LORA_TARGETS = {arch: "q,k,v" if arch in FUSED else "q,v" for arch in ARCHITECTURES}
"""TALLRec's q,v where q and v are modules of their own; the fused q,k,v module elsewhere."""
LAYER_MODULES = {
    "phi3": ["self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj"],
    "gpt2": ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"],
}
SEPARATE = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
            "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
RANK, ALPHA = 4, 8.0

parametrize_archs = pytest.mark.parametrize("arch", ARCHITECTURES)


@pytest.fixture
def llm_of(tokenizer):
    """Builds a fresh tiny LLM of an architecture (hooks and LoRAs of one test never reach another)."""
    return lambda arch: tiny_arch_llm(arch, tokenizer)


def randomise(module: torch.nn.Module, std: float = 0.5, seed: int = 3) -> None:
    """Draw every trainable increment (CoRA's P and R, a LoRA's A and B) at random."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith((".P", ".R")) or "lora_" in name:
                p.normal_(0, std)


def random_factors(B: int, seed: int = 4) -> torch.Tensor:
    torch.manual_seed(seed)
    A = torch.randn(B, HIDDEN, RANK)
    return A / A.flatten(1).norm(dim=1)[:, None, None]  # unit norm, like the generator's


def module_output(module: torch.nn.Module, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """``module``'s map with ``weight + delta`` (in the weight's own layout): Linear ``x (W+Δ)ᵀ + b``,
    Conv1D ``x (W+Δ) + b``."""
    weight = module.weight + delta
    if stores_transposed(module):
        return x @ weight + module.bias
    return F.linear(x, weight, module.bias)


def weight_magnitude(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Σ|terms| of ``module(x)``: ``|x| |W|`` in the map's orientation, plus ``|b|``."""
    weight = module.weight if stores_transposed(module) else module.weight.T  # [d_in, d_out]
    bias = 0 if module.bias is None else module.bias.detach().double().abs()
    return product_magnitude(x, weight) + bias


def record_io(model: torch.nn.Module, names: list[str]) -> tuple[dict, list]:
    """Forward hooks that record (input, output) of the named modules (registered after any other hook)."""
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    handles = [model.get_submodule(name).register_forward_hook(
        lambda m, args, out, name=name: seen.__setitem__(name, (args[0], out))) for name in names]
    return seen, handles


# ---- the tiny models and the layouts ------------------------------------------------------------


@parametrize_archs
def test_the_tiny_models_have_what_they_stand_for(llm_of, arch):
    """Each model really has the feature it is in the matrix for (see :mod:`tiny_archs`)."""
    model = llm_of(arch).model
    layer = decoder_layers(model)[0]
    modules = dict(layer.named_modules())
    ids, mask = llm_of(arch).tokenize(PROMPTS)
    if arch in ("mistral", "qwen2", "gemma3"):  # the sliding window masks: a window as long as the prompts differs
        wide = tiny_model(arch, model.config.vocab_size, sliding_window=256)
        logits = lambda m: m(input_ids=ids, attention_mask=mask, use_cache=False, logits_to_keep=1).logits
        assert not torch.allclose(logits(model), logits(wide), atol=1e-3)
    if arch in ("qwen2", "gemma3"):
        assert sorted(set(model.config.layer_types)) == ["full_attention", "sliding_attention"]
    if arch in ("qwen3", "gemma3"):
        assert "self_attn.q_norm" in modules and "self_attn.k_norm" in modules
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert tied == (arch not in ("mistral", "qwen3", "phi3"))
    if arch == "qwen2":
        assert modules["self_attn.q_proj"].bias.abs().max() > 0
    if arch == "gemma3":
        assert float(model.get_input_embeddings().embed_scale) == HIDDEN ** 0.5
        assert "post_feedforward_layernorm" in modules
    if arch == "gpt2":
        assert all(stores_transposed(modules[n]) for n in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"))


@parametrize_archs
def test_targets_name_the_modules_of_each_layout(llm_of, arch):
    llm = llm_of(arch)
    injector = CollaborativeInjector(llm.model, HIDDEN, RANK, ALPHA, TARGETS[arch])
    layer0 = [name for (layer, _), name in injector.module_names.items() if layer == 0]
    prefix = "transformer.h.0." if arch == "gpt2" else "model.layers.0."
    assert layer0 == [prefix + m for m in LAYER_MODULES.get(arch, SEPARATE)]
    assert all(stores_transposed(llm.model.get_submodule(n)) == (arch == "gpt2") for n in layer0)
    if arch not in FUSED:
        return
    fused_qkv = injector.delta(0, injector.targets[0])
    q_k_v_widths = HIDDEN + 2 * 32  # 4 query heads and 2 key/value heads of 16
    assert fused_qkv.P.shape == (RANK, q_k_v_widths if arch == "phi3" else 3 * HIDDEN) and fused_qkv.R is None
    fused = "qkv_proj" if arch == "phi3" else "c_attn"
    for partial in ("q,v", "q,k,o"):  # a part of the fused group: refused, for CoRA and for a LoRA alike
        with pytest.raises(CorarecError, match=rf"one fused module here \({fused}\).*missing: (k|v)"):
            CollaborativeInjector(llm.model, HIDDEN, RANK, ALPHA, partial)
        with pytest.raises(CorarecError, match=rf"{type(llm.model).__name__}: q,k,v are one fused module"):
            TallRec(TallRecConfig(targets=partial), llm_of(arch))
    assert CollaborativeInjector(llm.model, HIDDEN, RANK, ALPHA, fused).targets == [fused]  # named directly
    if arch == "phi3":
        with pytest.raises(CorarecError, match=r"gate,up are one fused module here \(gate_up_proj\)"):
            CollaborativeInjector(llm.model, HIDDEN, RANK, ALPHA, "up")
    else:  # GPT-2's FFN has no gate
        with pytest.raises(CorarecError, match=r"'gate_proj' in layer 0 of GPT2LMHeadModel: .*found none "
                                               r"\(its linear maps: attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj\)"):
            CollaborativeInjector(llm.model, HIDDEN, RANK, ALPHA, "gate")


# ---- CoRA's injection ---------------------------------------------------------------------------


@parametrize_archs
@pytest.mark.parametrize("share_inputs", [False, True], ids=["plain", "shared-input-product"])
def test_batched_injection_equals_explicit_per_sample_weights(llm_of, arch, share_inputs):
    """Every targeted module's batched output == its map with ``W + ΔW_b`` for each sample b, and the
    whole model with the merged ``W + ΔW_b`` answers like the injected batch's row b."""
    llm = llm_of(arch)
    injector = CollaborativeInjector(llm.model, HIDDEN, RANK, ALPHA, TARGETS[arch])
    injector.share_inputs = share_inputs
    randomise(injector)
    ids, mask = llm.tokenize(PROMPTS)
    A = random_factors(len(PROMPTS))
    seen, handles = record_io(llm.model, list(injector.module_names.values()))
    with injector.use(A):
        injected = answer_logits(llm, ids, mask)  # [B, V]
    for h in handles:
        h.remove()
    assert len(seen) == len(injector.module_names) == 2 * len(injector.targets)

    for b in range(len(PROMPTS)):
        deltas = injector.delta_weights(A[b])  # in each module's weight layout
        for (layer, suffix), name in injector.module_names.items():
            module, delta, (x, y) = llm.model.get_submodule(name), injector.delta(layer, suffix), seen[name]
            assert deltas[name].shape == module.weight.shape, name
            chain = [delta.R, A[b]] if delta.R is not None else [A[b]]  # A' = R A, or A
            magnitude = weight_magnitude(module, x[b]) + injector.scale * product_magnitude(x[b], *chain, delta.P)
            length = (injector.d if delta.R is not None else 0) + x.shape[-1] + injector.rank + 2
            tolerance = rounding_tolerance(magnitude, length)  # [T, d_out], elementwise
            assert_within(y[b], module_output(module, x[b], deltas[name]), tolerance, f"{arch} {name}")
            assert not within(y[b], module_output(module, x[b], deltas[name] * (1 + 1e-3)), tolerance), name
            assert (y[b] - module_output(module, x[b], 0)).abs().max() > 1e-2, name  # not negligible

    # end to end: row 0's merged weights (hooks idle outside `use`) give row 0's injected logits
    tolerance = tolerance_of_scores(llm.model, ids.shape[1], RANK)
    for factor, agrees in ((1.0, True), (1.01, False)):  # ... and ΔW off by 1% is caught
        merged = {f"{name}.weight": llm.model.get_submodule(name).weight + factor * delta
                  for name, delta in injector.delta_weights(A[0]).items()}
        logits = functional_call(llm.model, merged, kwargs=dict(
            input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0), use_cache=False,
            logits_to_keep=1)).logits[:, -1]
        assert within(logits[0], injected[0], tolerance) == agrees, (arch, factor)


@parametrize_archs
def test_merged_export_answers_like_the_injected_forward(llm_of, arch):
    """:func:`~corarec.methods.cora.merge.merge` writes ``W + ΔW_b`` in each weight's own layout (for
    GPT-2's square ``attn.c_proj`` a ``ΔW`` added untransposed would go unnoticed by the shapes)."""
    llm = llm_of(arch)
    torch.manual_seed(1)
    cora = CoRA(CoRAConfig(generator=GeneratorConfig(depth=1, heads=2), rank=RANK, alpha=ALPHA, targets=TARGETS[arch]),
                llm, TinyCF()).eval()
    randomise(cora.injector)
    ids, mask = llm.tokenize(PROMPTS[:1])
    cf = make_cf_batch(1)
    injected = cora(ids, mask, cf)  # [1]
    tolerance = tolerance_of_scores(llm.model, ids.shape[1], RANK)
    for factor, agrees in ((1.0, True), (1.01, False)):  # ... and ΔW off by 1% is caught
        with scaled_delta_weights(cora, factor):
            merged = merge(cora, cf)
        out = merged(input_ids=ids, attention_mask=mask, use_cache=False, logits_to_keep=1).logits[:, -1, llm.yes_id]
        assert within(out, injected, tolerance) == agrees, (arch, factor)
    assert not any(m._forward_hooks for m in merged.modules())


@parametrize_archs
def test_shared_input_product_reads_each_input_once(llm_of, arch, monkeypatch):
    """Per layer the shared path computes one ``x A_b`` per distinct input: q/k/v (or the fused qkv),
    o, gate/up (or the fused gate_up / GPT-2's c_fc), down (own input factor R) — 4; the plain path one
    per module (7 with separate modules, 4 where they are fused)."""
    calls = [0]
    original = LowRankDelta.reduce

    def counted(self, x, A):
        calls[0] += 1
        return original(self, x, A)

    monkeypatch.setattr(LowRankDelta, "reduce", counted)
    ids, mask = llm_of(arch).tokenize(PROMPTS)
    for share_inputs, per_layer in ((False, 4 if arch in FUSED else 7), (True, 4)):
        llm = llm_of(arch)
        injector = CollaborativeInjector(llm.model, HIDDEN, RANK, ALPHA, TARGETS[arch])
        injector.share_inputs, calls[0] = share_inputs, 0
        with injector.use(random_factors(len(PROMPTS))):
            answer_logits(llm, ids, mask)
        assert calls[0] == per_layer * llm.n_layers, (arch, share_inputs)


@parametrize_archs
def test_branch_off_or_zero_P_is_bit_identical_to_the_base(llm_of, arch):
    llm = llm_of(arch)
    ids, mask = llm.tokenize(PROMPTS)
    base = answer_logits(llm, ids, mask)
    injector = CollaborativeInjector(llm.model, HIDDEN, RANK, ALPHA, TARGETS[arch])
    with injector.use(random_factors(3)):  # P = 0 at initialisation (R random)
        assert torch.equal(answer_logits(llm, ids, mask), base)
    randomise(injector)
    assert torch.equal(answer_logits(llm, ids, mask), base)  # hooks attached, no A set
    with injector.use(random_factors(3)):
        assert not torch.allclose(answer_logits(llm, ids, mask), base, atol=1e-3)
    assert torch.equal(answer_logits(llm, ids, mask), base)  # context left: off again
    injector.remove()
    with injector.use(random_factors(3)):
        assert torch.equal(answer_logits(llm, ids, mask), base)  # hooks removed


# ---- the prefix cache ---------------------------------------------------------------------------


@parametrize_archs
def test_cora_from_the_prefix_cache_equals_the_full_forward(llm_of, arch, tmp_path):
    llm = llm_of(arch)
    ids, mask = llm.tokenize(PROMPTS)
    out = llm.model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                    output_hidden_states=True, use_cache=False)
    assert torch.equal(layer_inputs(llm, 1, ids, mask), out.hidden_states[1])
    torch.manual_seed(1)
    cora = CoRA(CoRAConfig(generator=GeneratorConfig(depth=1, heads=2), rank=RANK, alpha=ALPHA, layers="top:1",
                           targets=TARGETS[arch]), llm, TinyCF()).eval()
    randomise(cora.injector)
    cf = make_cf_batch(3)
    full = cora(ids, mask, cf)
    cache = PrefixCache(llm, 1, "tallrec-test", root=tmp_path, dtype=torch.float32)
    hidden = cache.hidden_states(ids, mask)  # computes, verifies against the full forward, stores
    tolerance = tolerance_of_scores(llm.model, ids.shape[1], RANK)
    assert_within(cora(ids, mask, cf, prefix_hidden=hidden), full, tolerance, f"{arch} scores from cached inputs")
    with scaled_delta_weights(cora, 1 + 1e-2):  # ... and the comparison can fail: ΔW off by 1% is caught
        assert not within(cora(ids, mask, cf, prefix_hidden=hidden), full, tolerance)
    layers = llm.model.transformer.h if arch == "gpt2" else llm.model.model.layers
    assert all(type(layer).__name__.endswith(("DecoderLayer", "Block")) for layer in layers)  # restored


# ---- TALLRec and CoLLM (peft LoRA) --------------------------------------------------------------


@parametrize_archs
def test_tallrec_lora_equals_explicit_weights_and_starts_as_the_llm(llm_of, arch, tokenizer):
    llm = llm_of(arch)
    ids, mask = llm.tokenize(PROMPTS)
    base = answer_logits(llm, ids, mask)
    method = TallRec(TallRecConfig(targets=LORA_TARGETS[arch], rank=RANK, alpha=ALPHA), llm).eval()
    assert torch.equal(answer_logits(llm, ids, mask), base)  # B = 0: bit-identical
    randomise(method.peft)
    lora_layers = {n: m for n, m in llm.model.named_modules() if hasattr(m, "lora_A") and hasattr(m, "base_layer")}
    assert len(lora_layers) == llm.n_layers * (1 if arch in FUSED else 2)
    seen, handles = record_io(llm.model, list(lora_layers))
    adapted = answer_logits(llm, ids, mask)
    for h in handles:
        h.remove()
    assert not torch.allclose(adapted, base, atol=1e-3)
    for name, lora in lora_layers.items():
        module, (x, y) = lora.base_layer, seen[name]
        A, B, scale = lora.lora_A["default"].weight, lora.lora_B["default"].weight, lora.scaling["default"]
        delta = scale * (B @ A)  # [d_out, d_in]
        delta = delta.T if stores_transposed(module) else delta
        magnitude = weight_magnitude(module, x) + scale * product_magnitude(x, A.T, B.T)
        tolerance = rounding_tolerance(magnitude, x.shape[-1] + RANK + 2)
        assert_within(y, module_output(module, x, delta), tolerance, f"{arch} {name}")
        assert not within(y, module_output(module, x, delta * (1 + 1e-3)), tolerance), name


@parametrize_archs
def test_tallrec_from_the_prefix_cache_scores_like_the_full_forward(llm_of, arch, tmp_path):
    """TALLRec's own cached path (its ``prefix_cache``, here storing fp32 so that the comparison is
    tight; the bf16 default is checked on the tiny Llama in ``test_baselines.py``)."""
    cached = TallRec(TallRecConfig(targets=LORA_TARGETS[arch], layers="top:1"), llm_of(arch)).eval()
    cached.prefix_cache = PrefixCache(cached.llm, cached.prefix_layer, "tallrec-test", root=tmp_path,
                                      dtype=torch.float32)
    full = TallRec(TallRecConfig(targets=LORA_TARGETS[arch], layers="top:1"), llm_of(arch)).eval()
    randomise(cached.peft)
    full.load_trainable_state_dict(cached.trainable_state_dict())
    ids, mask = cached.llm.tokenize(PROMPTS)
    batch = Batch(ids, mask, make_cf_batch(3), torch.ones(3), PROMPTS)
    expected = full.score(batch)
    tolerance = tolerance_of_scores(full.llm.model, ids.shape[1], rank=8)
    assert_within(cached.score(batch), expected, tolerance, f"{arch} scores from the prefix cache")
    assert cached.prefix_cache.misses == 3 and cached.prefix_layer == 1
    with scaled_delta_weights(cached.peft, 1.1):  # ... and the comparison can fail: a LoRA ΔW off by 10% is caught
        assert not within(cached.score(batch), expected, tolerance)  # (one layer's q and v: 1% is too close to call)


@pytest.fixture(scope="module")
def collm_tokenizer():
    """A tokenizer of its own: CoLLM adds its placeholder tokens to the tokenizer it is given."""
    tok = bundled_tokenizer()
    tok.padding_side = "left"
    return tok


@parametrize_archs
def test_collm_splices_cf_embeddings_through_the_architectures_input_embeddings(arch, collm_tokenizer):
    llm = tiny_arch_llm(arch, collm_tokenizer)
    table = llm.model.get_input_embeddings()
    ids, mask = llm.tokenize(PROMPTS)
    embedded = answer_logits(llm, None, mask, inputs_embeds=table(ids))  # the inputs_embeds path ...
    assert torch.equal(embedded, answer_logits(llm, ids, mask))  # ... is the input_ids path

    torch.manual_seed(2)
    method = CoLLM(CoLLMConfig(targets=LORA_TARGETS[arch], rank=RANK, alpha=ALPHA), llm, TinyCF()).eval()
    prompts = [build_prompt(["Heat", "Alien"], title, "movie", template="collm") for title in ("Fargo", "Heat", "Up")]
    ids, mask = llm.tokenize(prompts)
    batch = Batch(ids, mask, make_cf_batch(3), torch.ones(3), prompts)
    user, item = method.placeholder_positions(ids)
    e_u, e_i = method.cf.embed(batch.cf)
    spliced = table(ids.masked_fill(user | item, method.pad_id))
    spliced[user], spliced[item] = method.mapping(e_u), method.mapping(e_i)
    by_hand = method.answer(answer_logits(llm, None, mask, inputs_embeds=spliced))
    assert torch.equal(method.score(batch), by_hand)  # LoRA B = 0: the frozen LLM reading the spliced vectors
    padded = method.answer(answer_logits(llm, None, mask, inputs_embeds=table(ids.masked_fill(user | item, method.pad_id))))
    assert not torch.allclose(by_hand, padded, atol=1e-4)  # the mapped vectors reach the answer

    method.train()  # one step's gradient reaches the mapping and the LoRA, never the LLM
    method.score(batch).sum().backward()
    trained = {n: p for n, p in method.named_parameters() if p.requires_grad}
    assert any(n.startswith("mapping.") for n in trained) and any("lora_" in n for n in trained)
    assert all(p.grad is not None and p.grad.abs().max() > 0 for n, p in trained.items() if "lora_B" in n or "mapping" in n)
    assert all(p.grad is None for n, p in llm.model.named_parameters() if "lora_" not in n)


# ---- the Yes/No answer tokens -------------------------------------------------------------------


def sentencepiece_style(pieces: list[str]):
    """A Unigram tokenizer that, like Llama 2's and Mistral's, starts a text with "▁" and writes every
    space as "▁"; it knows ``pieces`` and the single characters of the answer slot and the answers."""
    from tokenizers import Tokenizer, models, normalizers
    from transformers import PreTrainedTokenizerFast

    vocab = [("<unk>", 0.0)] + [(p, -1.0) for p in pieces] + [(c, -5.0) for c in sorted(set("#Answer:YesNo"))]
    model = Tokenizer(models.Unigram(vocab, unk_id=0))
    model.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    return PreTrainedTokenizerFast(tokenizer_object=model, unk_token="<unk>")


def test_yes_no_ids_are_the_answer_tokens_of_each_tokenizer_family(tokenizer):
    # byte-level BPE (SmolLM2's, like GPT-2's, Llama 3's, Qwen's): " Yes" is one token, alone or after the slot
    assert tokenizer.encode(YES, add_special_tokens=False) == [single_token_id(tokenizer, YES, "smollm2")]
    assert single_token_id(tokenizer, NO, "smollm2") != single_token_id(tokenizer, YES, "smollm2")
    # SentencePiece style: a lone " Yes" is two pieces ("▁", "▁Yes"); after "#Answer:" the one piece "▁Yes"
    sp = sentencepiece_style(["▁", "▁Yes", "▁No", "▁#Answer:"])
    assert sp.convert_ids_to_tokens(sp.encode(YES, add_special_tokens=False)) == ["▁", "▁Yes"]
    assert sp.convert_ids_to_tokens([single_token_id(sp, YES, "sp"), single_token_id(sp, NO, "sp")]) == ["▁Yes", "▁No"]


def test_an_answer_that_is_not_one_known_token_is_a_clear_error(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    split = sentencepiece_style(["▁", "▁No", "▁#Answer:"])  # knows no "▁Yes": it spells it out
    with pytest.raises(CorarecError, match=r"encodes ' Yes' after '#Answer:' as 4 tokens \['▁', 'Y', 'e', 's'\], "
                                           r"the answer needs a single token"):
        single_token_id(split, YES, "sp")
    words = Tokenizer(models.WordLevel({"[UNK]": 0, "#Answer:": 1, "No": 2}, unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    unknown = PreTrainedTokenizerFast(tokenizer_object=words, unk_token="[UNK]")
    with pytest.raises(CorarecError, match=r"does not know ' Yes': it encodes it as the unknown token '\[UNK\]'"):
        single_token_id(unknown, YES, "words")

    out = tmp_path / "no-yes-token"  # the same through loading a model directory
    tiny_model("llama", len(split)).save_pretrained(out)
    split.save_pretrained(out)
    with pytest.raises(CorarecError, match=rf"--llm {re.escape(str(out))}: .*' Yes' after '#Answer:' as 4 tokens"):
        load_llm(str(out), autocast=False)
