"""Shared fixtures, built from :mod:`tiny` (the tiny Llama, dataset, CF model and trained run).

Session-scoped fixtures are built once per test session, however many modules use them; the
function-scoped ones are cheap and handed to tests that change them (training, hooks)."""

from __future__ import annotations

import pytest

from corarec.llm.model import LLM
from tiny import TinyCF, TinyRun, build_tiny_run, bundled_tokenizer, make_tiny_llm


@pytest.fixture(scope="session")
def tokenizer():
    """The real SmolLM2 tokenizer, left-padding, from the converted bundled model (built once, offline)."""
    tok = bundled_tokenizer()
    tok.padding_side = "left"
    return tok


@pytest.fixture
def tiny_llm(tokenizer) -> LLM:
    """A random 4-layer Llama in memory (d = 64), fp32, frozen."""
    return make_tiny_llm(tokenizer)


@pytest.fixture
def tiny_cf() -> TinyCF:
    """A :class:`tiny.TinyCF` with 10 users, 20 items, 8-dimensional embeddings drawn after seed 1."""
    import torch

    torch.manual_seed(1)
    return TinyCF()


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> TinyRun:
    """A tiny CoRA run (MF + random 2-layer Llama, two training steps) under a session temp dir."""
    return build_tiny_run(tmp_path_factory.mktemp("tiny-run"))


@pytest.fixture(scope="session")
def recommender(tiny_run):
    """The tiny run loaded once through the public API."""
    import corarec

    return corarec.load(tiny_run.run)
