"""corarec: CoRA (Collaborative LoRA, arXiv 2408.10645) — an LLM recommender that keeps the LLM
frozen and the prompt pure text, and injects collaborative knowledge as per-sample low-rank
weight increments generated from CF user and item embeddings."""

__version__ = "0.1.0"

from corarec.errors import CorarecError

__all__ = ["CorarecError", "__version__"]
