"""ICL: the frozen LLM answers the TALLRec prompt zero-shot (the paper's near-0.5 baseline).

Nothing trains; ``corarec train --method icl`` scores the validation rows once and writes a run
directory that ``corarec evaluate`` reads like any other.

With ``cache_prefix`` (beyond the paper; the ``cpu`` preset) the layers below the lowest of ``layers``
come from the same :class:`~corarec.llm.prefix_cache.PrefixCache` CoRA and TALLRec read — the same
LLM, template and layer, so the same entries: in a benchmark or the demo, the validation and test
rows' frozen prefix is computed once for ICL and the methods that train, not once for each. ICL adapts
nothing; ``layers`` only says where the cached prefix ends. The scores differ from the full forward
by the cache's storage rounding (bf16), as CoRA's and TALLRec's do.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from corarec.llm.model import answer_logits
from corarec.methods.base import Method
from corarec.methods.fields import cache_prefix_field, layers_field, prefix_cache_dir_field, prefix_cache_max_gb_field, score_mode_field
from corarec.methods.targets import parse_layers
from corarec.utils.settings import Settings


@dataclass
class ICLConfig(Settings):
    """Settings of the zero-shot baseline."""

    score_mode: str = score_mode_field()
    layers: str = layers_field()
    cache_prefix: bool = cache_prefix_field()
    prefix_cache_dir: str | None = prefix_cache_dir_field()
    prefix_cache_max_gb: float | None = prefix_cache_max_gb_field()


class ICL(Method):
    """The frozen LLM, zero-shot, on the pure-text prompt."""

    name = "icl"
    template = "tallrec"
    trains = False

    def __init__(self, cfg: ICLConfig, llm, cf=None):
        super().__init__(cfg, llm, cf)  # holds the frozen LLM: nothing of this method is registered
        first_layer = parse_layers(cfg.layers, llm.n_layers)[0]  # also checks ``layers`` without a cache
        self.init_prefix_cache(first_layer)  # a cache only with ``cache_prefix`` and layers above 0

    def score(self, batch) -> torch.Tensor:
        with self.start_at_prefix(self.prefix_hidden(batch)):  # [B, T, d] from the cache, if any
            logits = answer_logits(self.llm, batch.input_ids, batch.attention_mask)  # [B, V]
        return self.answer(logits)  # [B]
