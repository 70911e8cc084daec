"""The shared input product: ``x A_b`` computed once per layer for q/k/v (and gate/up), same results.

The explicit W + ΔW_b reference for this path is in ``test_cora_injection.py`` (parametrised over
``share_inputs``); here: it really computes fewer products, it scores and differentiates like the
plain path, and it never reuses a product for another input or another ``A``.
"""

import pytest

from corarec.llm.model import answer_logits
from corarec.methods.cora import injection
from corarec.methods.cora.injection import CollaborativeInjector, LowRankDelta

from tiny import PROMPTS
from numerics import SAFETY, assert_within, eps, forward_length, score_tolerance, within
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


def test_gradients_equal_the_plain_path(tiny_llm):
    """∂(Σ answer logits)/∂(P, R) agree: the shared path sums the q/k/v gradients of ``x A_b``
    before one backward product, the plain path after three; only the summation order differs.
    Bound: λ·√n·eps·max|g| per parameter, n = forward + backward accumulation length (2× the
    forward's); a 0.1 % larger ``A`` (gradients ≈ 0.1 % larger) must fail it."""
    ids, mask = tiny_llm.tokenize(PROMPTS)
    A = random_factors(len(PROMPTS), 64, 4)
    length = 2 * forward_length(tiny_llm.model.config, ids.shape[1], rank=4)
    grads = {}
    for share_inputs, factor in ((False, 1.0), (True, 1.0), (False, 1.001)):
        injector = build(tiny_llm, share_inputs)
        with injector.use(A * factor):
            answer_logits(tiny_llm, ids, mask).sum().backward()
        grads[share_inputs, factor] = {n: p.grad.clone() for n, p in injector.named_parameters()}
        injector.remove()
    plain, shared, off = grads[False, 1.0], grads[True, 1.0], grads[False, 1.001]
    assert plain.keys() == shared.keys() and len(plain) == 4 * 7 + 4  # every P, and R of each down_proj
    caught = 0
    for name, g in plain.items():
        tolerance = SAFETY * length ** 0.5 * eps() * g.abs().max().item()
        assert g.abs().max() > 0, name
        assert_within(shared[name], g, tolerance, name)
        caught += not within(off[name], g, tolerance)
    assert caught >= len(plain) // 2  # the bound is tight enough to see a 0.1 % change
