"""Behaviour unchanged: every method's tiny trained run scores as recorded in ``tests/golden/scores.json``.

The scores were written by ``python tests/golden.py --write``. Another machine sums fp32 in another
order, so the comparison allows rounding (:mod:`numerics`): λ·√n·eps·Σ|terms| for one pass, on the
scale Σ|terms| of the score and the accumulation length n of the model, and that again for every
pass of training whose update carried rounding into the weights (Adam's update is a ratio of the
gradient's moments, so a step moves a weight by the gradient's relative error, not more). Each bound
is checked to be far below the size of the scores, so a real change cannot hide in it.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from golden import CF_TRAIN, GOLDEN, TRAIN, golden_scores
from numerics import forward_length, logit_scale, rounding_tolerance


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("golden")
    return root, golden_scores(root)


def llm_tolerance(root) -> float:
    """Yes − No of the tiny Llama at its longest prompt, the scoring pass and a forward + backward per step."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(root / "llm", trust_remote_code=False)
    length = forward_length(model.config, model.config.max_position_embeddings, rank=4)
    passes = 1 + 2 * TRAIN["max_steps"]
    return 2 * passes * rounding_tolerance(logit_scale(model), length)


def cf_tolerance(root, model: str) -> float:
    """A CF logit is Σ_k e_u,k · e_i,k (+ global bias): Σ|terms| from the embeddings of the test rows;
    the length is the embedding size times the propagation layers / blocks plus the history read."""
    from corarec.cf import load_cf, rows_tensors
    from corarec.cf.base import CFBatch
    from corarec.data.schema import read_dataset

    ds = read_dataset(root / "data")
    cf = load_cf(root / model, ds)
    rows = rows_tensors(ds.test, cf.max_len if hasattr(cf, "max_len") else 25)
    with torch.no_grad():
        e_u, e_i = cf.embed(CFBatch(rows["users"], rows["items"], rows["history"]))
    scale = (e_u * e_i).abs().sum(-1).max().item() + abs(float(getattr(cf, "global_bias", 0.0)))
    length = cf.embed_dim * (1 + 2) + 25  # 2 layers / blocks in the tiny runs, 25 history items
    steps = CF_TRAIN["epochs"] * math.ceil(len(ds.train) / CF_TRAIN["batch_size"])
    return (1 + 2 * steps) * rounding_tolerance(scale, length)


def test_every_method_scores_as_recorded(built):
    root, scores = built
    expected = json.loads(GOLDEN.read_text())
    assert sorted(scores) == sorted(expected)
    llm_tol = llm_tolerance(root)
    for name, values in expected.items():
        tol = cf_tolerance(root, name) if name in ("mf", "lightgcn", "sasrec") else llm_tol
        got, want = np.asarray(scores[name]), np.asarray(values)
        assert got.shape == want.shape, name
        assert tol < 1e-2 * np.abs(want).max(), (name, tol)  # tight enough to see a 1 % change
        np.testing.assert_allclose(got, want, rtol=0, atol=tol, err_msg=name)
        assert not np.allclose(got * 1.01, want, rtol=0, atol=tol), name
