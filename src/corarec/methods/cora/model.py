"""CoRA: a frozen LLM reads the pure-text prompt; CF embeddings become per-sample weight increments.

    e_u, e_i = cf.embed(rows)                    frozen CF model              [B, c'] each
    A        = generator(e_u, e_i)               trained                      [B, d, r]
    with injector.use(A):                        trained P per target module
        logits = llm(prompt)[answer slot]        frozen LLM                   [B, V]
    score    = logits[Yes]  (or Yes − No)                                     [B]

With ``anchor = "cf"`` (beyond the paper) the score is ``γ · s_CF + (score − score with A unused)``:
the CF logit of the same ``e_u, e_i`` plus the LLM's increment over its frozen answer
(:meth:`~corarec.methods.base.Method.anchored_score`); every ``P`` = 0 makes it exactly ``s_CF``.

Only the generator and the injector's ``P`` (and input factors) are parameters of this module; the
LLM and the CF model are held, not registered (:meth:`~corarec.methods.base.Method.hold`), so
``state_dict``/``parameters``/``train()`` never touch them. With ``cache_prefix`` the hidden states
entering the lowest injected layer come from a :class:`~corarec.llm.prefix_cache.PrefixCache`
(exact, faster when injecting into the top layers only).
"""

from __future__ import annotations

from dataclasses import dataclass

import contextlib

import torch

from corarec.cf.base import CFBatch, CFModel
from corarec.llm.model import LLM, answer_logits
from corarec.methods.base import Method
from corarec.methods.fields import alpha_field, anchor_field, cache_prefix_field, layers_field, prefix_cache_dir_field, prefix_cache_max_gb_field, rank_field, score_mode_field, targets_field
from corarec.methods.cora.generator import CollaborativeWeightsGenerator, GeneratorConfig
from corarec.methods.cora.injection import CollaborativeInjector
from corarec.utils.settings import Settings, setting


@dataclass
class CoRAConfig(Settings):
    """CoRA's settings (defaults: the paper's CoRA-MF); checked by type and the rule beside each field."""

    rank: int = rank_field(16)
    alpha: float = alpha_field(32.0)
    targets: str = targets_field("q,k,v,o")
    layers: str = layers_field()
    generator: GeneratorConfig = setting(default_factory=GeneratorConfig, doc="""
        Sizes of the collaborative weights generator (:class:`~corarec.methods.cora.generator.GeneratorConfig`);
        its rank is ``rank``.""")
    score_mode: str = score_mode_field()
    fold_in_fraction: float = setting(0.0, at_least=0, at_most=1, doc="""
        Share of training rows whose user embedding is the CF model's fold-in (cold-start) embedding, so that
        training also sees the kind of embedding test-time cold users get.""")
    cache_prefix: bool = cache_prefix_field()
    prefix_cache_dir: str | None = prefix_cache_dir_field()
    prefix_cache_max_gb: float | None = prefix_cache_max_gb_field()
    anchor: str = anchor_field()


class CoRA(Method):
    """Collaborative LoRA over a frozen causal LM and a frozen CF model."""

    name = "cora"
    template = "tallrec"
    uses_cf = True

    def __init__(self, cfg: CoRAConfig, llm: LLM, cf: CFModel | None = None):
        super().__init__(cfg, llm, cf)  # holds the frozen LLM and CF model (not registered)
        self.generator = CollaborativeWeightsGenerator(
            cfg.generator, cfg.rank, cf.dim, llm.hidden_size, embed_dim=cf.embed_dim
        )
        self.injector = CollaborativeInjector(llm.model, llm.hidden_size, cfg.rank, cfg.alpha, cfg.targets, cfg.layers)
        self.to(llm.device)
        self.init_prefix_cache(self.injector.first_layer)

    def factors(self, cf_batch: CFBatch, fold_in: torch.Tensor | None = None, deterministic: bool = False) -> torch.Tensor:
        """The per-sample factors ``A [B, d, r]`` (generator in fp32; ``deterministic``: without dropout)."""
        return self.generate(*self.cf_embeddings(cf_batch, fold_in), deterministic=deterministic)

    def cf_embeddings(self, cf_batch: CFBatch, fold_in: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The frozen CF model's ``e_u, e_i [B, c']`` (c' = c + bias coordinates); ``fold_in [B]`` rows
        take the fold-in user embedding."""
        with torch.no_grad():
            return self.cf.embed(cf_batch, fold_in=fold_in)  # [B, c'] each

    def generate(self, e_u: torch.Tensor, e_i: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """The generator's ``A [B, d, r]`` from ``e_u, e_i [B, c']`` (fp32; ``deterministic``: without dropout)."""
        was_training = self.generator.training
        if deterministic:
            self.generator.eval()
        try:
            with torch.autocast(self.llm.device.type, enabled=False):
                return self.generator(e_u.float(), e_i.float())  # [B, d, r]
        finally:
            self.generator.train(was_training)

    def frozen_answer(self) -> contextlib.AbstractContextManager:
        """Outside :meth:`CollaborativeInjector.use` the hooks add nothing: the LLM is the base model."""
        return contextlib.nullcontext()

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
        Anchored: the fold-in rows' CF logit reads the same fold-in embedding as their ``A``.
        """
        e_u, e_i = self.cf_embeddings(cf_batch, fold_in)  # [B, c'] each
        A = self.generate(e_u, e_i)  # [B, d, r]
        with self.start_at_prefix(prefix_hidden), self.injector.use(A):
            logits = answer_logits(self.llm, input_ids, attention_mask)  # [B, V]
        score = self.answer(logits)  # [B]
        if self.anchor_gamma is None:
            return score
        return self.anchored_score(score, self.cf_logit(e_u, e_i), input_ids, attention_mask, prefix_hidden)  # [B]

    def score(self, batch) -> torch.Tensor:
        """Scores ``[B]`` of a :class:`~corarec.methods.batches.Batch` (the training/evaluation entry point).

        In training mode a random ``fold_in_fraction`` of rows uses the fold-in user embedding.
        """
        fold_in = self.fold_in_rows(batch, self.cfg.fold_in_fraction)  # [B] or None
        return self.forward(batch.input_ids, batch.attention_mask, batch.cf, fold_in=fold_in,
                            prefix_hidden=self.prefix_hidden(batch))
