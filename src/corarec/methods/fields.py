"""Settings that several methods share, declared once: each function returns the dataclass field
(default, rule and description) for a method's config, so the same name means the same thing in
CoRA, TALLRec, CoLLM and ICL, and the generated command-line options agree."""

from __future__ import annotations

from typing import Any

from corarec.llm.model import SCORE_MODES
from corarec.utils.settings import setting


def rank_field(default: int) -> Any:
    return setting(default, at_least=1, doc="""
        Rank r of the low-rank update (CoRA: of each per-sample increment; TALLRec and CoLLM: of the LoRA).""")


def alpha_field(default: float) -> Any:
    return setting(default, doc="Scale alpha: the update is multiplied by alpha / rank.")


def targets_field(default: str) -> Any:
    return setting(default, doc="""
        Modules that get the update, comma-separated: q,k,v,o (attention), gate,up,down (FFN), or module-name
        suffixes.""")


def layers_field() -> Any:
    return setting("all", doc="""
        Decoder layers that get the update: ``all``, ``top:N`` (the last N) or a list ``0,1,5``. With ``cache_prefix``
        the layers below the lowest come from the prefix cache; ICL adapts nothing, its ``layers`` are those it runs
        on the cached inputs.""")


def score_mode_field() -> Any:
    return setting("yes", choices=SCORE_MODES, doc="""
        Row score: ``yes`` (the logit of " Yes" at the answer slot, the paper) or ``yes_minus_no``
        (logit(Yes) − logit(No)).""")


def cache_prefix_field() -> Any:
    return setting(False, doc="""
        Cache on disk the hidden states entering the lowest adapted layer and run only the layers above it
        (beyond the paper; pays off with ``layers=top:N``; with layers from 0, e.g. ``layers=all``, nothing lies
        below and no cache is made; exact up to the storage dtype).""")


def prefix_cache_dir_field() -> Any:
    return setting(None, doc="""
        Where the prefix cache lives; none = ``<corarec cache dir>/prefix``.""")


def prefix_cache_max_gb_field() -> Any:
    return setting(None, above=0, doc="""
        Size cap of the prefix cache directory in GB (10⁹ bytes, every LLM and template together): a new entry
        first deletes the least recently used ones that this run does not read; none =
        ``$CORAREC_PREFIX_CACHE_MAX_GB``, else 15 (MovieLens-100K's whole train split plus a benchmark's validation
        and test rows, in bf16 on SmolLM2).""")


ANCHORS = ("none", "cf")
"""Values of the ``anchor`` setting (:func:`anchor_field`)."""


def anchor_field() -> Any:
    return setting("none", choices=ANCHORS, doc="""
        ``cf`` (beyond the paper): score = γ · s_CF + (s_LLM − s_LLM without the update), the frozen CF model's
        logit plus the LLM's increment over its frozen answer, γ trained from 1 — at initialisation it ranks
        exactly like the CF model (needs ``--cf``). ``none``: the LLM's score alone (the paper).""")
