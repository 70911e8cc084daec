"""Tiny random causal LMs of several Hugging Face architectures, built from configs, offline.

Every model is 64 wide, 2 layers deep, FFN 96 (≠ 64, so down-projections get CoRA's input factor
``R``), 4 query heads of 16 dimensions, weights drawn with standard deviation 0.1 after a fixed seed,
fp32, biases (where the architecture has them) drawn too, with the vocabulary of the bundled SmolLM2
tokenizer (the tests read real prompts through it).
What each one brings that the tiny Llama of :mod:`tiny` does not:

- ``llama``: the reference layout (separate ``q/k/v/o_proj``, ``gate/up/down_proj``, RMSNorm, RoPE);
- ``mistral``: a sliding attention window (16 tokens, shorter than the prompts) in every layer, untied head;
- ``qwen2``: biases on q/k/v, and a sliding window on its top layer only (mixed layer types);
- ``qwen3``: RMSNorm on every head's queries and keys (``q_norm``/``k_norm``), untied output head;
- ``gemma3``: ``gemma3_text`` — q/k norms, a sliding layer below a full one, ``(1 + w)`` RMSNorms
  before *and* after attention and FFN, embeddings scaled by √d inside the embedding module, tied head;
- ``phi3``: fused ``qkv_proj`` and ``gate_up_proj``;
- ``gpt2``: ``Conv1D`` (``x @ W + b``, ``W [in, out]``) everywhere, fused ``c_attn``, LayerNorm with
  bias, learned absolute positions, no gated FFN.

:func:`tolerance_of_scores` is :func:`numerics.score_tolerance` for any of them: the accumulation
length and the bound of the logits' Σ|terms| are read from each architecture's own layout.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from corarec.llm.model import LLM, NO, YES, decoder_layers, single_token_id
from numerics import rounding_tolerance

HIDDEN, LAYERS, FFN, HEADS, KV_HEADS, HEAD_DIM = 64, 2, 96, 4, 2, 16
WINDOW = 16
"""Sliding-window size of the windowed layers: shorter than every test prompt, so it really masks."""
ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3", "gemma3", "phi3", "gpt2")


def tiny_config(arch: str, vocab_size: int, positions: int = 256, sliding_window: int = WINDOW):
    """The config of a tiny ``arch`` model (see the module docstring)."""
    import transformers as hf

    common = dict(vocab_size=vocab_size, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=LAYERS,
                  num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, max_position_embeddings=positions,
                  initializer_range=0.1, bos_token_id=0, eos_token_id=0, pad_token_id=None)
    if arch == "llama":
        return hf.LlamaConfig(**common, tie_word_embeddings=True)
    if arch == "mistral":
        return hf.MistralConfig(**common, head_dim=HEAD_DIM, sliding_window=sliding_window)
    if arch == "qwen2":
        return hf.Qwen2Config(**common, use_sliding_window=True, sliding_window=sliding_window, max_window_layers=1,
                              tie_word_embeddings=True)
    if arch == "qwen3":
        return hf.Qwen3Config(**common, head_dim=HEAD_DIM, tie_word_embeddings=False)
    if arch == "gemma3":
        return hf.Gemma3TextConfig(**common, head_dim=HEAD_DIM, query_pre_attn_scalar=HEAD_DIM, sliding_window=sliding_window,
                                   layer_types=["sliding_attention", "full_attention"], tie_word_embeddings=True)
    if arch == "phi3":
        return hf.Phi3Config(**common, tie_word_embeddings=False)
    if arch == "gpt2":
        return hf.GPT2Config(vocab_size=vocab_size, n_embd=HIDDEN, n_inner=FFN, n_layer=LAYERS, n_head=HEADS,
                             n_positions=positions, initializer_range=0.1, bos_token_id=0, eos_token_id=0)
    raise ValueError(f"unknown architecture {arch!r}")


def tiny_model(arch: str, vocab_size: int, seed: int = 0, sliding_window: int = WINDOW) -> nn.Module:
    """A random fp32 ``arch`` causal LM (eager attention), eval mode, every weight frozen."""
    from transformers import AutoModelForCausalLM

    config = tiny_config(arch, vocab_size, sliding_window=sliding_window)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).eval().requires_grad_(False)
    with torch.no_grad():  # transformers starts biases at 0; drawn, they take part in every comparison
        for name, param in model.named_parameters():
            if name.endswith(".bias"):
                param.normal_(0, 0.1)
    return model


def tiny_arch_llm(arch: str, tokenizer, seed: int = 0) -> LLM:
    """:func:`tiny_model` wrapped as a frozen full-precision :class:`~corarec.llm.model.LLM`."""
    model = tiny_model(arch, tokenizer.vocab_size, seed)
    return LLM(model=model, tokenizer=tokenizer, name=f"tiny-{arch}-{seed}",
               yes_id=single_token_id(tokenizer, YES, arch), no_id=single_token_id(tokenizer, NO, arch),
               hidden_size=int(model.config.hidden_size), n_layers=len(decoder_layers(model)), autocast_dtype=None)


# ---- tolerances -----------------------------------------------------------------------------------


def forward_length(config, seq_len: int, rank: int = 0) -> int:
    """Accumulation length of one decoder forward pass, counted for the widest of the layouts above.

    Per layer: up to four norms (``d`` each) and the q/k norms (``head_dim`` each), the q/k/v
    projections (``d``), the output projection (``heads · head_dim``), the attention scores
    (``head_dim``), softmax and weighted values (``seq_len`` each), gate/up (``d``), down (``ffn``);
    with injection each of four projection stages may add an ``x·A'·P`` path of ``max(ffn, d) + rank``.
    Then the final norm and the output head (``d`` each).
    """
    d = config.hidden_size
    ffn = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * d
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or d // heads
    per_layer = (4 * d + 2 * head_dim + d + heads * head_dim + head_dim + 2 * seq_len + d + ffn
                 + (4 * (max(ffn, d) + rank) if rank else 0))
    return config.num_hidden_layers * per_layer + 2 * d


def final_norm(model: nn.Module) -> nn.Module:
    """The norm applied to the last hidden states before the output head."""
    base = model.base_model
    for name in ("norm", "ln_f", "final_layernorm"):
        if isinstance(getattr(base, name, None), nn.Module):
            return getattr(base, name)
    raise AssertionError(f"{type(model).__name__}: no final norm found")


def logit_scale(model: nn.Module) -> float:
    """An upper bound of Σ|terms| of any output logit: ``‖final-normed h‖ · max_j ‖E_j‖``.

    A normalised vector has norm √d before its elementwise weight; the weight is ``w`` (RMSNorm,
    LayerNorm) or ``1 + w`` (Gemma's RMSNorm); a LayerNorm's bias adds at most ``‖b‖``.
    """
    norm, head = final_norm(model), model.get_output_embeddings().weight.detach().double()  # [V, d]
    weight = norm.weight.detach().double()
    if "Gemma" in type(norm).__name__:
        weight = 1 + weight
    bound = math.sqrt(head.shape[1]) * weight.abs().max().item()
    if getattr(norm, "bias", None) is not None:
        bound += norm.bias.detach().double().norm().item()
    return bound * head.norm(dim=1).max().item()


def tolerance_of_scores(model: nn.Module, seq_len: int, rank: int = 0, dtype: torch.dtype = torch.float32) -> float:
    """How far two fp32 computations of the same answer-slot logit may lie apart (:mod:`numerics`)."""
    return rounding_tolerance(logit_scale(model), forward_length(model.config, seq_len, rank), dtype)
