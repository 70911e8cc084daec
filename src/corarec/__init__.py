"""corarec: CoRA (Collaborative LoRA, arXiv 2408.10645) — an LLM recommender that keeps the LLM
frozen and the prompt pure text, and injects collaborative knowledge as per-sample low-rank
weight increments generated from CF user and item embeddings."""

__version__ = "0.1.0"

from corarec.errors import CorarecError

# One library function per pipeline stage, each the function behind the CLI command of the same name.
_EXPORTS = {
    "prepare": "corarec.data.prepare",
    "train_cf": "corarec.cf.train",
    "train": "corarec.training.loop",
    "evaluate": "corarec.evaluation.evaluate",
    "predict": "corarec.serving.predict",
    "recommend": "corarec.serving.recommend",
    "load": "corarec.serving.recommender",
    "serve": "corarec.serving.server",
    "benchmark": "corarec.benchmarking",
}

__all__ = ["CorarecError", "__version__", *_EXPORTS]


def __getattr__(name: str):
    """Lazy exports, so that ``import corarec`` stays light (no torch until it is needed)."""
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'corarec' has no attribute {name!r}")
