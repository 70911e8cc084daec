"""The shared input product: ``x A_b`` computed once per layer for q/k/v (and gate/up), same results.

The explicit W + ΔW_b reference for this path is in ``test_cora_injection.py`` (parametrised over
``share_inputs``); here: it really computes fewer products, it scores and differentiates like the
plain path, and it never reuses a product for another input or another ``A``.
"""

import pytest
import torch

from corarec.llm.model import answer_logits
from corarec.methods.cora import injection
from corarec.methods.cora.injection import CollaborativeInjector, LowRankDelta

from tiny import PROMPTS
from numerics import assert_within, forward_length, rounding_tolerance, score_tolerance, within
from test_cora_injection import ALL, random_factors, randomise


def build(tiny_llm, share_inputs: bool, targets: str = ALL) -> CollaborativeInjector:
    injector = CollaborativeInjector(tiny_llm.model, 64, rank=4, alpha=8, targets=targets, layers="all")
    injector.share_inputs = share_inputs
    randomise(injector)
    return injector


def count_reductions(monkeypatch) -> list[int]:
    """Counts calls of :meth:`LowRankDelta.reduce` (the ``x A'_b`` products)."""
    calls = [0]
    original = LowRankDelta.reduce

    def counted(self, x, A):
        calls[0] += 1
        return original(self, x, A)

    monkeypatch.setattr(LowRankDelta, "reduce", counted)
    return calls


def test_off_by_default():
    assert injection.SHARE_INPUTS is False


@pytest.mark.parametrize("share_inputs, per_layer", [(False, 7), (True, 4)])
def test_one_product_per_layer_and_input(tiny_llm, monkeypatch, share_inputs, per_layer):
    """Per layer, plain: one product per module (7); shared: q/k/v one, o one, gate/up one, down
    (own input factor R) one = 4."""
    injector = build(tiny_llm, share_inputs)
    calls = count_reductions(monkeypatch)
    ids, mask = tiny_llm.tokenize(PROMPTS)
    with injector.use(random_factors(len(PROMPTS), 64, 4)):
        answer_logits(tiny_llm, ids, mask)
    assert calls[0] == per_layer * 4


def test_scores_equal_the_plain_path_and_a_new_A_is_never_served_a_stale_product(tiny_llm):
    ids, mask = tiny_llm.tokenize(PROMPTS)
    A1, A2 = random_factors(len(PROMPTS), 64, 4), random_factors(len(PROMPTS), 64, 4)
    tolerance = score_tolerance(tiny_llm.model, ids.shape[1], rank=4)
    results = {}
    for name, share_inputs in (("plain", False), ("shared", True)):
        injector = build(tiny_llm, share_inputs)  # the same P and R (seeded) for both
        for key, A in (("A1", A1), ("A2", A2)):
            with injector.use(A):
                results[name, key] = answer_logits(tiny_llm, ids, mask)
        injector.remove()  # one injector's hooks at a time
    for key in ("A1", "A2"):
        assert_within(results["shared", key], results["plain", key], tolerance, f"logits with {key}")
    assert not within(results["shared", "A2"], results["plain", "A1"], tolerance)  # A changed → scores changed


def gradient_magnitudes(tiny_llm, injector: CollaborativeInjector, A, ids, mask) -> dict:
    """Σ|terms| of every ``P`` and ``R`` gradient of Σ answer logits, elementwise, from each module's input
    ``x [B, T, d_in]`` and output gradient ``δ [B, T, d_out]``: with ``y += s · x A'_b P`` (``A' = A`` or
    ``R A``), ∂/∂P = s Σ_bt (x_bt A'_b)ᵀ δ_bt → ``s |x| |A'| ⊗ |δ|``, and ∂/∂R = s Σ_b x_bᵀ δ_b Pᵀ A_bᵀ →
    ``s Σ_b |x_b|ᵀ |δ_b| |P|ᵀ |A_b|ᵀ`` (absolute values elementwise, summed over the batch and tokens)."""
    seen, handles = {}, []
    for (layer, suffix), module_name in injector.module_names.items():
        def keep(module, args, output, key=(layer, suffix)):  # runs after the injection: δ is of y itself
            output.retain_grad()
            seen[key] = (args[0].detach(), output)
        handles.append(tiny_llm.model.get_submodule(module_name).register_forward_hook(keep))
    with injector.use(A):
        answer_logits(tiny_llm, ids, mask).sum().backward()
    for h in handles:
        h.remove()
    magnitudes = {}
    for (layer, suffix), (x, y) in seen.items():
        delta, key = injector.delta(layer, suffix), f"deltas.{layer}.{suffix}"
        x, d, P = x.abs().double(), y.grad.abs().double(), delta.P.detach().abs().double()
        factor = A.abs().double() if delta.R is None else delta.R.detach().abs().double() @ A.abs().double()  # |A'| ≤ |R| |A|
        magnitudes[f"{key}.P"] = injector.scale * torch.einsum("btd,bdr,bto->ro", x, factor, d)
        if delta.R is not None:
            magnitudes[f"{key}.R"] = injector.scale * torch.einsum("bti,bto,ro,bdr->id", x, d, P, A.abs().double())
    return magnitudes


def test_gradients_equal_the_plain_path(tiny_llm):
    """∂(Σ answer logits)/∂(P, R) agree: the shared path sums the q/k/v gradients of ``x A_b``
    before one backward product, the plain path after three; only the summation order differs.
    Bound: λ·√n·eps·Σ|terms| elementwise (:func:`gradient_magnitudes`), n = forward + backward
    accumulation length (2× the forward's) + the B·T tokens summed; a 0.1 % larger ``A``
    (gradients ≈ 0.1 % larger) must fail it."""
    ids, mask = tiny_llm.tokenize(PROMPTS)
    A = random_factors(len(PROMPTS), 64, 4)
    length = 2 * forward_length(tiny_llm.model.config, ids.shape[1], rank=4) + ids.numel()
    injector = build(tiny_llm, False)  # the plain path's P and R (seeded: the same in every build)
    magnitudes = gradient_magnitudes(tiny_llm, injector, A, ids, mask)
    injector.remove()
    grads = {}
    for share_inputs, factor in ((False, 1.0), (True, 1.0), (False, 1.001)):
        injector = build(tiny_llm, share_inputs)
        with injector.use(A * factor):
            answer_logits(tiny_llm, ids, mask).sum().backward()
        grads[share_inputs, factor] = {n: p.grad.clone() for n, p in injector.named_parameters()}
        injector.remove()
    plain, shared, off = grads[False, 1.0], grads[True, 1.0], grads[False, 1.001]
    assert plain.keys() == shared.keys() == magnitudes.keys() and len(plain) == 4 * 7 + 4  # every P, R of each down_proj
    caught = 0
    for name, g in plain.items():
        tolerance = rounding_tolerance(magnitudes[name], length)
        assert g.abs().max() > 0, name
        assert (g.double().abs() <= magnitudes[name] * (1 + 1e-3)).all(), f"{name}: |g| above its Σ|terms|"
        assert_within(shared[name], g, tolerance, name)
        caught += not within(off[name], g, tolerance)
    assert caught >= len(plain) // 2  # the bound is tight enough to see a 0.1 % change
