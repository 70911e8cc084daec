"""TALLRec: a LoRA fine-tuned on the pure-text prompt, BCE on the " Yes" logit.

The text-only LLM recommender CoRA compares against: the same prompt and loss as CoRA, but the
knowledge enters through a sample-independent LoRA (peft; r = 8, alpha = 16, dropout 0.05 on the
q and v projections of every layer — the TALLRec paper's settings) instead of CF embeddings.
The run directory holds the LoRA twice: in ``model.safetensors`` (what ``corarec`` loads) and in
peft's format under ``adapter/`` (:mod:`corarec.methods.peft_lora`).

With ``layers="top:N"`` and ``cache_prefix`` the layers below the lowest LoRA layer are the frozen LLM
reading a fixed prompt, so their output comes from the same :class:`~corarec.llm.prefix_cache.PrefixCache`
CoRA uses (the ``cpu`` preset gives TALLRec the same top-8 layers and cache as CoRA).

With ``anchor = "cf"`` (beyond the paper; needs ``--cf``) TALLRec is the *fusion baseline* of the
CF-anchored CoRA: ``γ · s_CF + (s_LLM(LoRA) − s_LLM(adapter disabled))``, the same rule, so with the
LoRA's ``B`` = 0 at initialisation it ranks exactly like the CF model; the LLM side reads text only.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch

from corarec.llm.model import answer_logits
from corarec.methods.base import Method
from corarec.methods.fields import alpha_field, anchor_field, cache_prefix_field, layers_field, prefix_cache_dir_field, prefix_cache_max_gb_field, rank_field, score_mode_field, targets_field
from corarec.methods.peft_lora import attach_lora, save_adapter
from corarec.methods.targets import parse_layers
from corarec.utils.settings import Settings, setting


@dataclass
class LoRASettings(Settings):
    """Settings of a LoRA on the frozen LLM (defaults: the TALLRec paper), shared by TALLRec and CoLLM so
    that CoLLM's stage 2 starts from a TALLRec run with the very same LoRA; checked by type and the rule
    beside each field."""

    rank: int = rank_field(8)
    alpha: float = alpha_field(16.0)
    dropout: float = setting(0.05, at_least=0, below=1, doc="Dropout on the LoRA branch's input during training.")
    targets: str = targets_field("q,v")
    layers: str = layers_field()
    score_mode: str = score_mode_field()
    cache_prefix: bool = cache_prefix_field()
    prefix_cache_dir: str | None = prefix_cache_dir_field()
    prefix_cache_max_gb: float | None = prefix_cache_max_gb_field()


@dataclass
class TallRecConfig(LoRASettings):
    """TALLRec's settings: its LoRA and the optional CF anchor (the fusion baseline)."""

    anchor: str = anchor_field()


class TallRec(Method):
    """The frozen LLM plus a trainable peft LoRA, on the TALLRec prompt."""

    name = "tallrec"
    template = "tallrec"

    def __init__(self, cfg: TallRecConfig, llm, cf=None):
        super().__init__(cfg, llm, cf)
        # the layers below the lowest LoRA layer stay the frozen LLM; the cache is keyed by the base
        # LLM's weights, so it is set up before the LoRA is attached
        self.init_prefix_cache(parse_layers(cfg.layers, llm.n_layers)[0])
        self.peft = attach_lora(llm, cfg.rank, cfg.alpha, cfg.dropout, cfg.targets, cfg.layers)  # LLM + LoRA

    def score(self, batch) -> torch.Tensor:
        prefix_hidden = self.prefix_hidden(batch)  # [B, T, d] from the cache, if any
        with self.start_at_prefix(prefix_hidden):
            logits = answer_logits(self.llm, batch.input_ids, batch.attention_mask)  # [B, V], through the LoRA
        score = self.answer(logits)  # [B]
        if self.anchor_gamma is None:
            return score
        with torch.no_grad():
            e_u, e_i = self.cf.embed(batch.cf)  # [B, c'] each (cold users: the CF model's fold-in)
        return self.anchored_score(score, self.cf_logit(e_u, e_i), batch.input_ids, batch.attention_mask,
                                   prefix_hidden)  # [B]

    def frozen_answer(self) -> contextlib.AbstractContextManager:
        """The LLM with the LoRA switched off (peft's ``disable_adapter``): the base model."""
        return self.peft.disable_adapter()

    def save_extra(self, run_dir: str | Path) -> None:
        """Also write the LoRA in peft's format to ``run_dir/adapter``."""
        save_adapter(self.peft, run_dir)
