"""The per-sample low-rank injection: parity with explicit W + ΔW_b, exact no-op when off."""

import pytest
import torch
import torch.nn.functional as F

from corarec.errors import CorarecError
from corarec.llm.model import answer_logits, decoder_layers
from corarec.methods.cora.injection import CollaborativeInjector
from corarec.methods.targets import parse_layers, parse_targets

from tiny import PROMPTS
from numerics import assert_within, product_magnitude, rounding_tolerance, within

ALL = "q,k,v,o,gate,up,down"


def randomise(injector: CollaborativeInjector, std: float = 0.5) -> None:
    torch.manual_seed(3)
    with torch.no_grad():
        for p in injector.parameters():
            p.normal_(0, std)


def random_factors(B: int, d: int, r: int) -> torch.Tensor:
    A = torch.randn(B, d, r)
    return A / A.flatten(1).norm(dim=1)[:, None, None]  # unit norm, like the generator's


def test_layer_and_target_specs():
    assert parse_layers("all", 4) == [0, 1, 2, 3]
    assert parse_layers("top:2", 4) == [2, 3]
    assert parse_layers("3, 0,1", 4) == [0, 1, 3]
    for bad in ("top:0", "top:9", "1,7", "x", "-1"):
        with pytest.raises(CorarecError, match="layers"):
            parse_layers(bad, 4)
    assert parse_targets("q,k,v,o") == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert parse_targets("down, mlp.up_proj") == ["down_proj", "mlp.up_proj"]
    with pytest.raises(CorarecError, match="targets"):
        parse_targets(" , ")


@pytest.mark.parametrize("share_inputs", [False, True], ids=["plain", "shared-input-product"])
def test_every_module_equals_explicit_per_sample_W_plus_delta(tiny_llm, share_inputs):
    """Batched injection == F.linear(x_b, W + ΔW_b) for every sample and every targeted module
    (also when q/k/v and gate/up reuse one ``x A_b`` per layer)."""
    injector = CollaborativeInjector(tiny_llm.model, 64, rank=4, alpha=8, targets=ALL, layers="all")
    injector.share_inputs = share_inputs
    randomise(injector)
    ids, mask = tiny_llm.tokenize(PROMPTS)
    A = random_factors(len(PROMPTS), 64, 4)

    seen = {}  # module name → (input, injected output), recorded by hooks that run after the injector's
    handles = [
        tiny_llm.model.get_submodule(name).register_forward_hook(
            lambda m, args, out, name=name: seen.__setitem__(name, (args[0], out))
        )
        for name in injector.module_names.values()
    ]
    with injector.use(A):
        answer_logits(tiny_llm, ids, mask)
    for h in handles:
        h.remove()

    assert len(seen) == 4 * 7
    for b in range(len(PROMPTS)):
        deltas = injector.delta_weights(A[b])
        for (layer, suffix), name in injector.module_names.items():
            x, y = seen[name]
            W = tiny_llm.model.get_submodule(name).weight
            delta = injector.deltas[str(layer)][suffix]
            chain = [delta.R, A[b]] if delta.R is not None else [A[b]]  # A' = R A, or A
            # Σ|terms| of y = W x + scale·x A' P; the longest chain of sums is R A (d terms, with R
            # only), x A' (d_in), · P (r), then one addition (of W + ΔW on the explicit side)
            magnitude = product_magnitude(x[b], W.T) + injector.scale * product_magnitude(x[b], *chain, delta.P)
            length = (injector.d if delta.R is not None else 0) + x.shape[-1] + injector.rank + 1
            tolerance = rounding_tolerance(magnitude, length)  # [T, d_out], elementwise
            explicit = F.linear(x[b], W + deltas[name])  # [T, d_out]
            assert_within(y[b], explicit, tolerance, name)
            # ... and the comparison can still fail: ΔW off by 0.1% is caught
            assert not within(y[b], F.linear(x[b], W + deltas[name] * (1 + 1e-3)), tolerance), name
            assert (y[b] - F.linear(x[b], W)).abs().max() > 1e-2, name  # the increment is not negligible


def test_modules_with_another_input_size_get_their_own_input_factor(tiny_llm):
    injector = CollaborativeInjector(tiny_llm.model, 64, rank=4, alpha=8, targets="q,down", layers="all")
    q, down = injector.deltas["0"]["q_proj"], injector.deltas["0"]["down_proj"]
    assert q.R is None and q.P.shape == (4, 64)
    assert down.R.shape == (96, 64) and down.P.shape == (4, 64)
    assert torch.count_nonzero(q.P) == 0 and torch.count_nonzero(down.P) == 0  # P starts at zero
    assert injector.delta_weights(random_factors(1, 64, 4)[0])["model.layers.0.mlp.down_proj"].shape == (64, 96)


def test_without_factors_the_model_is_bit_identical_to_the_base(tiny_llm):
    ids, mask = tiny_llm.tokenize(PROMPTS)
    base = answer_logits(tiny_llm, ids, mask)
    injector = CollaborativeInjector(tiny_llm.model, 64, rank=4, alpha=8, targets=ALL)
    randomise(injector)
    assert torch.equal(answer_logits(tiny_llm, ids, mask), base)  # hooks attached, no A set
    with injector.use(random_factors(3, 64, 4)):
        assert not torch.allclose(answer_logits(tiny_llm, ids, mask), base, atol=1e-3)
    assert torch.equal(answer_logits(tiny_llm, ids, mask), base)  # context left: off again
    injector.remove()
    with injector.use(random_factors(3, 64, 4)):
        assert torch.equal(answer_logits(tiny_llm, ids, mask), base)  # hooks removed


def test_layer_subset_only_hooks_those_layers(tiny_llm):
    injector = CollaborativeInjector(tiny_llm.model, 64, rank=2, alpha=4, targets="q,v", layers="top:2")
    assert injector.layers == [2, 3] and injector.first_layer == 2
    assert sorted(injector.state_dict()) == sorted(
        f"deltas.{i}.{t}.P" for i in (2, 3) for t in ("q_proj", "v_proj")
    )
    layers = decoder_layers(tiny_llm.model)
    assert not layers[1].self_attn.q_proj._forward_hooks and len(layers[2].self_attn.q_proj._forward_hooks) == 1
    assert not any(k.startswith("model.") for k in injector.state_dict())  # nothing of the LLM


def test_bad_targets_and_factor_shapes_are_errors(tiny_llm):
    with pytest.raises(CorarecError, match="target 'nope_proj' in layer 0"):
        CollaborativeInjector(tiny_llm.model, 64, rank=2, alpha=4, targets="nope_proj")
    with pytest.raises(CorarecError, match="not an nn.Linear"):
        CollaborativeInjector(tiny_llm.model, 64, rank=2, alpha=4, targets="mlp")
    with pytest.raises(CorarecError, match="exactly one module"):
        CollaborativeInjector(tiny_llm.model, 64, rank=2, alpha=4, targets="proj")  # matches nothing exactly
    injector = CollaborativeInjector(tiny_llm.model, 64, rank=2, alpha=4)
    with pytest.raises(ValueError, match=r"A must be \[B, 64, 2\]"):
        with injector.use(torch.zeros(2, 64, 3)):
            pass
