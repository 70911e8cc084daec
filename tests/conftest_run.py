"""A session-wide tiny trained CoRA run (see :mod:`tiny_run`), built once however many test modules
use it. Import the fixture into a test module: ``from conftest_run import tiny_run``."""

from __future__ import annotations

import pytest

from tiny_run import TinyRun, build_tiny_run

_BUILT: dict[str, object] = {}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> TinyRun:
    """A tiny CoRA run (MF + random 2-layer Llama, two training steps) under a session temp dir."""
    if "run" not in _BUILT:
        _BUILT["run"] = build_tiny_run(tmp_path_factory.mktemp("tiny-run"))
    return _BUILT["run"]


@pytest.fixture(scope="session")
def recommender(tiny_run):
    """The tiny run loaded once through the public API."""
    import corarec

    if "recommender" not in _BUILT:
        _BUILT["recommender"] = corarec.load(tiny_run.run)
    return _BUILT["recommender"]
