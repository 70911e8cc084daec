"""corarec: CoRA (Collaborative LoRA, arXiv 2408.10645) — an LLM recommender that keeps the LLM
frozen and the prompt pure text, and injects collaborative knowledge as per-sample low-rank
weight increments generated from CF user and item embeddings."""

__version__ = "0.1.0"

from corarec.errors import CorarecError

__all__ = ["CorarecError", "__version__", "load"]


def __getattr__(name: str):
    """Lazy exports, so that ``import corarec`` stays light (no torch until it is needed)."""
    if name == "load":
        from corarec.recommender import load

        return load
    raise AttributeError(f"module 'corarec' has no attribute {name!r}")
