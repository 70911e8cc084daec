"""The collaborative weights generator."""

import pytest
import torch

from corarec.errors import CorarecError
from corarec.methods.cora.generator import CollaborativeWeightsGenerator, GeneratorConfig
from numerics import assert_within, rounding_tolerance, within


def generator_length(gen: CollaborativeWeightsGenerator, in_dim: int) -> int:
    """Accumulation length along the generator: input projection and LayerNorm (2 sums), per block
    self-attention (q/k/v, scores, softmax and values over k queries, output), cross-attention (one
    key), an FFN and three LayerNorms; then the mean over queries, the output map and the L2 norm."""
    w, k, cfg = gen.out.in_features, gen.queries.shape[0], gen.cfg
    attention = 2 * w + w // cfg.heads
    block = (attention + 2 * k) + (attention + 2) + (w + cfg.ffn_mult * w) + 3 * 2 * w
    return in_dim + 2 * w + cfg.depth * block + k + w + gen.out.out_features


def test_defaults_are_the_papers():
    cfg = GeneratorConfig()
    assert (cfg.queries, cfg.depth, cfg.heads, cfg.width, cfg.dropout) == (4, 8, 8, None, 0.1)
    gen = CollaborativeWeightsGenerator(cfg, rank=16, cf_dim=256, d_model=32)
    assert gen.queries.shape == (4, 512) and len(gen.blocks) == 8
    assert 0.01 < gen.queries.std().item() < 0.03  # N(0, 0.02)
    assert gen.out.out_features == 32 * 16


def test_output_is_a_unit_norm_d_by_r_factor_per_sample():
    torch.manual_seed(0)
    gen = CollaborativeWeightsGenerator(GeneratorConfig(depth=2, heads=4), rank=3, cf_dim=8, d_model=10).eval()
    e_u, e_i = torch.randn(5, 8), torch.randn(5, 8)
    A = gen(e_u, e_i)
    assert A.shape == (5, 10, 3)
    # the norm of a normalised vector: d·r squares summed (Σ|terms| = 1), a square root, a division
    norm_tolerance = rounding_tolerance(1.0, 10 * 3 + 2)
    assert_within(A.flatten(1).norm(dim=1), torch.ones(5), norm_tolerance, "norms")
    assert not within((A * (1 + 1e-3)).flatten(1).norm(dim=1), torch.ones(5), norm_tolerance)  # 0.1% off is caught
    assert not torch.allclose(A[0], A[1], atol=1e-3)  # different pairs → different factors
    # rows are independent: one row alone equals its row of the batch up to rounding; every element
    # of a unit-norm output is at most 1, so relative rounding errors are on that scale
    row_tolerance = rounding_tolerance(1.0, generator_length(gen, 16))
    assert_within(gen(e_u[2:3], e_i[2:3])[0], A[2], row_tolerance, "row 2 alone")
    assert not within(gen(e_u[2:3], e_i[2:3])[0], A[2] * (1 + 1e-3), row_tolerance)
    swapped = gen(e_i, e_u)  # the order user, item matters
    assert not torch.allclose(swapped, A, atol=1e-3)


def test_width_other_than_2c_projects_the_input_and_gradients_reach_everything():
    torch.manual_seed(0)
    gen = CollaborativeWeightsGenerator(GeneratorConfig(depth=1, heads=2, width=6), rank=2, cf_dim=8, d_model=4)
    assert gen.in_proj.in_features == 16 and gen.in_proj.out_features == 6
    gen(torch.randn(3, 8), torch.randn(3, 8)).pow(3).sum().backward()
    for name, p in gen.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_width_must_divide_into_heads():
    with pytest.raises(CorarecError, match="not divisible"):
        CollaborativeWeightsGenerator(GeneratorConfig(heads=3), rank=16, cf_dim=8, d_model=4)


def test_bias_coordinates_and_the_interaction_term_widen_the_input_only():
    torch.manual_seed(0)
    # MF with biases hands over c + 2 coordinates; the width stays 2c (8 heads still divide it)
    gen = CollaborativeWeightsGenerator(GeneratorConfig(depth=1, interaction=True), rank=16, cf_dim=8, d_model=4, embed_dim=10)
    assert gen.in_proj.in_features == 3 * 10 and gen.in_proj.out_features == 16
    e_u, e_i = torch.randn(3, 10), torch.randn(3, 10)
    assert gen(e_u, e_i).shape == (3, 4, 16)
    # the product block is what a linear map needs to read the dot product <e_u, e_i> off the input
    seen = []
    gen.in_proj.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    gen(e_u, e_i)
    x = seen[0][:, 0]  # [B, 3c']
    tolerance = rounding_tolerance((e_u * e_i).abs().sum(-1), 10)  # the same 10 products, maybe summed otherwise
    assert_within(x[:, 20:].sum(-1), (e_u * e_i).sum(-1), tolerance, "product block")
    assert not within(x[:, 20:].sum(-1), (e_u * e_i).sum(-1) * (1 + 1e-3), tolerance)
    plain = CollaborativeWeightsGenerator(GeneratorConfig(depth=1), rank=16, cf_dim=8, d_model=4, embed_dim=10)
    assert plain.in_proj.in_features == 20
