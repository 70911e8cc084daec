"""Tolerances for floating-point comparisons in the tests, derived from the arithmetic.

Two computations of the same quantity (another summation order, another kernel, a merged weight
in place of two matmuls, a batch in place of one row) differ by rounding only. How much they may
differ follows from the floating-point format, the accumulation length and the size of the terms —
never from what one machine happened to produce (AVX-512 and AMX kernels sum in other orders).

The model (Higham & Mary, "A new approach to probabilistic rounding error analysis",
SIAM J. Sci. Comput. 41(5), 2019): with independent, mean-zero rounding errors of
size at most the unit roundoff ``u = eps / 2``, a computed sum of ``n`` products, in any order,
satisfies::

    |computed − exact| ≤ λ · √n · u · Σ|terms|     with probability ≥ 1 − 2n·exp(−λ²(1 − u)²/2)

and a product of matrices ``F1 F2 … Fk`` does so elementwise with ``n`` = the sum of the inner
dimensions and ``Σ|terms|`` = ``|F1| |F2| … |Fk|`` (absolute values taken elementwise). Both sides
of a comparison carry such an error, so they differ by at most ``2 · λ·√n·u·M = λ·√n·eps·M``.
The worst case without the probabilistic model is ``n·u·M`` (γ_n), √n times larger.

``SAFETY`` is λ = 8: the bound then fails for one element with probability ≤ 2n·e^−32 ≈ 2.5e−14·n,
at most 3e−4 over a million elements with n = 10⁴ (and Σ|terms| already overstates a typical sum),
so a test using it does not flake; it is still √n/8 times tighter than the worst case. Every
comparison loosened this way is paired with a negative check: the same comparison against a
result computed with ΔW (or the logits) slightly off — 0.1 % to 10 % — must fail.

A whole decoder forward pass is a chain of such stages (norms, projections, attention, FFN, the
output head): their errors add as independent random walks, so ``n`` is the sum of the stages'
accumulation lengths (:func:`forward_length`), on the scale of the values at the output
(:func:`logit_scale`). This assumes that a layer does not amplify relative errors (RMSNorm
renormalises every layer's input; the tests' models are small and random); λ covers the rest.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch
from torch import nn

SAFETY = 8.0
"""λ above: the number of standard deviations of the random-walk rounding model that are allowed."""


def eps(dtype: torch.dtype = torch.float32) -> float:
    """Machine epsilon (``2^-23`` for fp32, ``2^-7`` for bf16, ``2^-10`` for fp16)."""
    return torch.finfo(dtype).eps


def rounding_tolerance(magnitude, length: int, dtype: torch.dtype = torch.float32):
    """``λ · √length · eps · magnitude``: how far two roundings of the same value may lie apart.

    ``magnitude`` is Σ|terms| of the computation (a float, or a tensor for an elementwise bound);
    ``length`` its accumulation length.
    """
    return SAFETY * math.sqrt(length) * eps(dtype) * magnitude


def product_magnitude(*factors: torch.Tensor) -> torch.Tensor:
    """``|F1| @ |F2| @ … @ |Fk|`` in float64: Σ|terms| of every element of the product ``F1 F2 … Fk``."""
    out = factors[0].detach().double().abs()
    for f in factors[1:]:
        out = out @ f.detach().double().abs()
    return out


def forward_length(config, seq_len: int, rank: int = 0) -> int:
    """Accumulation length along one Llama-style decoder forward pass (sum of its sequential stages).

    Per layer: two RMSNorms (``d`` each), the q/k/v and o projections (``d``), the attention scores
    (``head_dim``), the softmax sum and the weighted sum of values (``seq_len`` each), gate/up
    (``d``) and down (``ffn``); then the final norm and the output head (``d`` each). With CoRA-style
    injection (``rank`` > 0) each of a layer's four projection stages may add an ``x·A'·P`` path of
    length at most ``ffn + rank``.
    """
    d, ffn = config.hidden_size, config.intermediate_size
    head_dim = getattr(config, "head_dim", None) or d // config.num_attention_heads
    per_layer = 5 * d + head_dim + 2 * seq_len + ffn + (4 * (ffn + rank) if rank else 0)
    return config.num_hidden_layers * per_layer + 2 * d


def logit_scale(model: nn.Module) -> float:
    """An upper bound of Σ|terms| of any output logit: ``‖final-normed h‖ · max_j ‖E_j‖``.

    RMSNorm gives ``h`` the norm √d times at most max|norm weight|, and Σ_k |h_k E_jk| ≤ ‖h‖ ‖E_j‖
    (Cauchy–Schwarz), so no logit — and no Σ|terms| of one — exceeds this value.
    """
    head = model.get_output_embeddings().weight.detach().double()  # [V, d]
    norm = model.base_model.norm.weight.detach().double()  # [d]
    return math.sqrt(head.shape[1]) * norm.abs().max().item() * head.norm(dim=1).max().item()


def score_tolerance(model: nn.Module, seq_len: int, rank: int = 0, differences: int = 1,
                    dtype: torch.dtype = torch.float32) -> float:
    """Tolerance of a score read from the answer-slot logits of ``model`` (``differences=2`` for Yes − No)."""
    length = forward_length(model.config, seq_len, rank)
    return differences * rounding_tolerance(logit_scale(model), length, dtype)


def method_score_tolerance(method) -> float:
    """Tolerance of a method's scores for any batch of its prompts (e.g. one row alone vs in a batch):
    no prompt is longer than the model's position table, and a CoRA method adds its rank's paths."""
    model, cfg = method.llm.model, getattr(method, "cfg", None)
    differences = 2 if getattr(cfg, "score_mode", "yes") == "yes_minus_no" else 1
    return score_tolerance(model, model.config.max_position_embeddings, getattr(cfg, "rank", 0), differences)


def storage_tolerance(scores, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Tolerance of row scores ``scores(x) [B]`` when the input ``x [B, ...]`` is stored in ``dtype``.

    Storing rounds each element independently by at most ``u·|x_k|`` (``u = eps/2``). To first order
    row b's score then moves by ``Σ_k g_k δ_k`` with ``g = ∂score_b/∂x_b`` — a sum of independent,
    bounded, mean-zero terms, which exceeds ``λ·u·‖g ⊙ x_b‖`` with probability at most
    ``2·exp(−λ²/2)`` (Hoeffding; 2.5e−14 for λ = 8). Terms of second order are O(u²). Rows must be
    independent of each other (one backward pass then gives every row's gradient).
    """
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(scores(x).sum(), x)
    return SAFETY * eps(dtype) / 2 * (grad * x).detach().double().flatten(1).norm(dim=1)  # [B]


def _float64(values) -> torch.Tensor:
    """A tensor, array, list or number as a float64 tensor (a copy: arrays from pandas may be read-only)."""
    if isinstance(values, torch.Tensor):
        return values.detach().double()
    return torch.tensor(np.asarray(values, dtype=np.float64))


def within(actual, expected, tolerance) -> bool:
    """Whether every element satisfies ``|actual − expected| ≤ tolerance`` (a float or an elementwise tensor)."""
    actual, expected = _float64(actual), _float64(expected)
    assert actual.shape == expected.shape, f"shapes {list(actual.shape)} and {list(expected.shape)}"
    return bool(((actual - expected).abs() <= _float64(tolerance)).all())


def assert_within(actual, expected, tolerance, what: str = "values") -> None:
    """``|actual − expected| ≤ tolerance`` elementwise, else an error naming the worst element."""
    actual, expected = _float64(actual), _float64(expected)
    assert actual.shape == expected.shape, f"{what}: shapes {list(actual.shape)} and {list(expected.shape)}"
    tol = _float64(tolerance).expand_as(actual)
    diff = (actual - expected).abs()
    beyond = ~(diff <= tol)  # NaN counts as beyond
    if beyond.any():
        worst = int(torch.where(beyond, diff.nan_to_num(math.inf) - tol, -math.inf).argmax())
        raise AssertionError(
            f"{what}: {int(beyond.sum())} of {diff.numel()} element(s) beyond the derived tolerance; worst "
            f"{actual.flatten()[worst].item():.8g} vs {expected.flatten()[worst].item():.8g}, "
            f"|diff| {diff.flatten()[worst].item():.3g} > tolerance {tol.flatten()[worst].item():.3g}"
        )


@contextmanager
def scaled_delta_weights(module: nn.Module, factor: float) -> Iterator[None]:
    """Inside the block every low-rank weight increment in ``module`` is ``factor`` times as large —
    CoRA's ``ΔW_b = scale·(A'P)ᵀ`` is linear in each ``P``, a LoRA's ``scale·BA`` in each ``B`` — for
    the negative checks (a comparison must fail when ΔW is slightly off). Restored bit for bit after."""
    chosen = [p for name, p in module.named_parameters() if name.endswith(".P") or "lora_B" in name]
    assert chosen, f"{type(module).__name__} holds no low-rank increments (no .P or lora_B parameters)"
    saved = [p.detach().clone() for p in chosen]
    with torch.no_grad():
        for p in chosen:
            p.mul_(factor)
    try:
        yield
    finally:
        with torch.no_grad():
            for p, original in zip(chosen, saved):
                p.copy_(original)
