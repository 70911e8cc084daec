"""CoRA: a frozen LLM reads the pure-text prompt; CF embeddings become per-sample weight increments.

    e_u, e_i = cf.embed(rows)                    frozen CF model              [B, c'] each
    A        = generator(e_u, e_i)               trained                      [B, d, r]
    with injector.use(A):                        trained P per target module
        logits = llm(prompt)[answer slot]        frozen LLM                   [B, V]
    score    = logits[Yes]  (or Yes − No)                                     [B]

Only the generator and the injector's ``P`` (and input factors) are parameters of this module; the
LLM and the CF model are held, not registered, so ``state_dict``/``parameters``/``train()`` never
touch them. With ``cache_prefix`` the hidden states entering the lowest injected layer come from a
:class:`~corarec.llm.prefix_cache.PrefixCache` (exact, faster when injecting into the top layers only).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from corarec.cf.base import CFBatch, CFModel
from corarec.data.prompts import template_id
from corarec.llm.model import LLM, SCORE_MODES, answer_logits, answer_score
from corarec.methods.base import Method
from corarec.methods.cora.generator import CollaborativeWeightsGenerator, GeneratorConfig
from corarec.methods.cora.injection import CollaborativeInjector
from corarec.llm.prefix_cache import PrefixCache, start_at_layer
from corarec.utils.settings import Settings, setting


@dataclass
class CoRAConfig(Settings):
    """CoRA's settings (defaults: the paper's CoRA-MF); checked by type and the rule beside each field."""

    rank: int = setting(16, at_least=1)
    """``r``: rank of the per-sample weight increments."""
    alpha: float = 32.0
    """Scale numerator: increments are multiplied by ``alpha / rank``."""
    targets: str = "q,k,v,o"
    """Target modules, comma-separated: q,k,v,o (attention), gate,up,down (FFN), or full module-name suffixes."""
    layers: str = "all"
    """Injected layers: ``all``, ``top:N`` (the last N) or an explicit list ``0,1,5``."""
    queries: int = setting(4, at_least=1)
    """``k``: learnable queries of the generator."""
    depth: int = setting(8, at_least=0)
    """``N``: generator blocks."""
    heads: int = setting(8, at_least=1)
    """Attention heads per generator block."""
    width: int | None = setting(None, at_least=1)
    """Generator width; ``None`` = 2 × the CF dimension."""
    ffn_mult: int = setting(4, at_least=1)
    """Generator feed-forward size as a multiple of its width."""
    dropout: float = setting(0.1, at_least=0, below=1)
    """Generator dropout."""
    input_norm: bool = True
    """LayerNorm on the generator's input token concat(e_u, e_i)."""
    interaction: bool = False
    """Append ``e_u ⊙ e_i`` to the generator's input token (beyond the paper; see ``GeneratorConfig``)."""
    score_mode: str = setting("yes", choices=SCORE_MODES)
    """Row score: ``yes`` (logit of " Yes", the paper) or ``yes_minus_no``."""
    fold_in_fraction: float = setting(0.0, at_least=0, at_most=1)
    """Fraction of training rows whose user embedding is replaced by the CF model's fold-in
    (cold-start) embedding, so the generator also learns from the kind test-time cold users get."""
    cache_prefix: bool = False
    """Cache the hidden states entering the lowest injected layer on disk and run only the layers
    above it (worth it with ``layers=top:N``; exact up to the storage dtype)."""
    prefix_cache_dir: str | None = None
    """Where the prefix cache lives; ``None`` = ``<corarec cache dir>/prefix``."""

    def generator_config(self) -> GeneratorConfig:
        return GeneratorConfig(
            queries=self.queries, depth=self.depth, heads=self.heads, width=self.width,
            ffn_mult=self.ffn_mult, dropout=self.dropout, rank=self.rank, input_norm=self.input_norm,
            interaction=self.interaction,
        )


class CoRA(Method):
    """Collaborative LoRA over a frozen causal LM and a frozen CF model."""

    name = "cora"
    template = "tallrec"
    uses_cf = True

    def __init__(self, cfg: CoRAConfig, llm: LLM, cf: CFModel):
        super().__init__()
        self.cfg = cfg
        self.__dict__["llm"] = llm  # held, not registered: frozen, never saved, never put in train mode
        self.__dict__["cf"] = cf.to(llm.device).eval().requires_grad_(False)
        self.generator = CollaborativeWeightsGenerator(
            cfg.generator_config(), cf.dim, llm.hidden_size, embed_dim=cf.embed_dim
        )
        self.injector = CollaborativeInjector(llm.model, llm.hidden_size, cfg.rank, cfg.alpha, cfg.targets, cfg.layers)
        self.to(llm.device)
        self.prefix_cache: PrefixCache | None = None
        if cfg.cache_prefix:
            self.prefix_cache = PrefixCache(
                llm, self.injector.first_layer, template_id(self.template), root=cfg.prefix_cache_dir
            )

    def factors(self, cf_batch: CFBatch, fold_in: torch.Tensor | None = None, deterministic: bool = False) -> torch.Tensor:
        """The per-sample factors ``A [B, d, r]`` (generator in fp32; ``deterministic``: without dropout)."""
        with torch.no_grad():
            e_u, e_i = self.cf.embed(cf_batch, fold_in=fold_in)  # [B, c'] each (c' = c + bias coordinates), frozen
        was_training = self.generator.training
        if deterministic:
            self.generator.eval()
        try:
            with torch.autocast(self.llm.device.type, enabled=False):
                return self.generator(e_u.float(), e_i.float())  # [B, d, r]
        finally:
            self.generator.train(was_training)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        cf_batch: CFBatch,
        fold_in: torch.Tensor | None = None,
        prefix_hidden: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scores ``[B]`` of left-padded prompts ``[B, T]`` for the rows of ``cf_batch``.

        ``fold_in [B]`` (bool) replaces those rows' user embeddings by the CF fold-in;
        ``prefix_hidden [B, T, d]``: cached hidden states entering the lowest injected layer.
        """
        A = self.factors(cf_batch, fold_in)  # [B, d, r]
        skip = (
            start_at_layer(self.llm, self.injector.first_layer, prefix_hidden)
            if prefix_hidden is not None
            else contextlib.nullcontext()
        )
        with skip, self.injector.use(A):
            logits = answer_logits(self.llm, input_ids, attention_mask)  # [B, V]
        return answer_score(logits, self.llm.yes_id, self.llm.no_id, self.cfg.score_mode)  # [B]

    def score(self, batch) -> torch.Tensor:
        """Scores ``[B]`` of a :class:`~corarec.data.batches.Batch` (the training/evaluation entry point).

        In training mode a random ``fold_in_fraction`` of rows uses the fold-in user embedding.
        """
        fold_in = None
        if self.training and self.cfg.fold_in_fraction > 0:
            fold_in = torch.rand(len(batch), device=batch.input_ids.device) < self.cfg.fold_in_fraction  # [B]
        prefix_hidden = None
        if self.prefix_cache is not None:
            prefix_hidden = self.prefix_cache.hidden_states(batch.input_ids, batch.attention_mask)  # [B, T, d]
        return self.forward(batch.input_ids, batch.attention_mask, batch.cf, fold_in=fold_in, prefix_hidden=prefix_hidden)
