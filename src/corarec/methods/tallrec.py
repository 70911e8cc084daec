"""TALLRec: a LoRA fine-tuned on the pure-text prompt, BCE on the " Yes" logit.

The text-only LLM recommender CoRA compares against: the same prompt and loss as CoRA, but the
knowledge enters through a sample-independent LoRA (peft; r = 8, alpha = 16, dropout 0.05 on the
q and v projections of every layer — the TALLRec paper's settings) instead of CF embeddings.
The run directory holds the LoRA twice: in ``model.safetensors`` (what ``corarec`` loads) and in
peft's format under ``adapter/`` (:mod:`corarec.methods.peft_lora`).

With ``layers="top:N"`` and ``cache_prefix`` the layers below the lowest LoRA layer are the frozen LLM
reading a fixed prompt, so their output comes from the same :class:`~corarec.llm.prefix_cache.PrefixCache`
CoRA uses (the ``cpu`` preset gives TALLRec the same top-8 layers and cache as CoRA).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch

from corarec.data.prompts import template_id
from corarec.llm.model import SCORE_MODES, answer_logits, answer_score
from corarec.methods.base import Method
from corarec.methods.cora.injection import parse_layers
from corarec.methods.peft_lora import attach_lora, save_adapter
from corarec.llm.prefix_cache import PrefixCache, start_at_layer
from corarec.utils.settings import Settings, setting


@dataclass
class TallRecConfig(Settings):
    """Settings of TALLRec's LoRA (defaults: the TALLRec paper); checked by type and the rule beside each field."""

    rank: int = setting(8, at_least=1)
    """LoRA rank r."""
    alpha: float = 16.0
    """LoRA scale: the update is multiplied by alpha / r."""
    dropout: float = setting(0.05, at_least=0, below=1)
    """Dropout on the LoRA branch's input during training."""
    targets: str = "q,v"
    """Modules that get a LoRA: short names (q, k, v, o, gate, up, down) or module-name suffixes."""
    layers: str = "all"
    """Decoder layers that get a LoRA: 'all', 'top:N' or a list '0,1,5'."""
    score_mode: str = setting("yes", choices=SCORE_MODES)
    """'yes': the logit of " Yes" (the paper); 'yes_minus_no': logit(Yes) − logit(No)."""
    cache_prefix: bool = False
    """Compute the frozen layers below the lowest LoRA layer once per prompt and reuse their output
    (beyond the paper; pays off with ``layers='top:N'``)."""
    prefix_cache_dir: str | None = None
    """Where the prefix cache lives; ``None`` = ``<corarec cache dir>/prefix``."""


class TallRec(Method):
    """The frozen LLM plus a trainable peft LoRA, on the TALLRec prompt."""

    name = "tallrec"
    template = "tallrec"

    def __init__(self, cfg: TallRecConfig, llm):
        super().__init__()
        self.cfg = cfg
        self.llm = llm
        self.prefix_cache: PrefixCache | None = None
        if cfg.cache_prefix:  # keyed by the base LLM's weights: made before the LoRA is attached
            first = parse_layers(cfg.layers, llm.n_layers)[0]  # the layers below it stay the frozen LLM
            self.prefix_cache = PrefixCache(llm, first, template_id(self.template), root=cfg.prefix_cache_dir)
        self.peft = attach_lora(llm, cfg.rank, cfg.alpha, cfg.dropout, cfg.targets, cfg.layers)  # LLM + LoRA

    def score(self, batch) -> torch.Tensor:
        skip = contextlib.nullcontext()
        if self.prefix_cache is not None:
            prefix_hidden = self.prefix_cache.hidden_states(batch.input_ids, batch.attention_mask)  # [B, T, d]
            skip = start_at_layer(self.llm, self.prefix_cache.layer, prefix_hidden)
        with skip:
            logits = answer_logits(self.llm, batch.input_ids, batch.attention_mask)  # [B, V], through the LoRA
        return answer_score(logits, self.llm.yes_id, self.llm.no_id, self.cfg.score_mode)  # [B]

    def save_extra(self, run_dir: str | Path) -> None:
        """Also write the LoRA in peft's format to ``run_dir/adapter``."""
        save_adapter(self.peft, run_dir)
