"""What every LLM method offers the shared training / evaluation loop, and what they share.

A method scores a :class:`~corarec.methods.batches.Batch` with one logit per row (the logit of
"Yes" at the answer slot, or Yes − No). The loop trains whatever ``trainable_state_dict`` names,
saves exactly that, and never touches the frozen LLM's weights.

The contract, the same for every method:

- **one constructor**: ``Method(cfg, llm, cf=None)`` — the method's config dataclass, the frozen
  :class:`~corarec.llm.model.LLM` and, for a method whose ``uses_cf`` is True, the frozen CF model
  (a method that reads one refuses to be built without it);
- **frozen parts are held, not registered**: :meth:`Method.hold` keeps the LLM and the CF model
  out of the ``nn.Module`` tree, so ``parameters()``, ``state_dict()``, ``train()`` and ``.to()``
  of the method never reach them; the CF model is put on the LLM's device, in eval mode, with
  ``requires_grad`` False. Only a method's own modules are registered. A peft LoRA
  (TALLRec, CoLLM) is injected into the LLM *in place*, so its registered ``peft`` module does
  reach the LLM's weights: they stay ``requires_grad`` False and :meth:`trainable_state_dict`
  names the trainable weights only (the LLM's layers follow the method's train/eval mode, which
  is what switches the LoRA's dropout);
- **shared pieces written once**: the answer-slot score in the configured ``score_mode``
  (:meth:`answer`), the random fold-in rows of training (:meth:`fold_in_rows`), the prefix
  cache of the frozen layers below the lowest adapted one (:meth:`init_prefix_cache`,
  :meth:`prefix_hidden`, :meth:`start_at_prefix`) and the CF anchor (:meth:`anchored_score`).

The CF anchor (beyond the paper; a method whose config has ``anchor = "cf"``, CoRA and TALLRec)::

    score = γ · s_CF + (s_LLM(ΔW) − s_LLM(ΔW = 0))

``s_CF`` is the frozen CF model's logit for the pair (:meth:`cf_logit`), ``γ`` (``anchor_gamma``) a
trained scalar from 1, and the second LLM pass runs without the method's update
(:meth:`frozen_answer`) and without gradient. With the update zero at initialisation (CoRA's ``P``,
the LoRA's ``B``) both passes are the same computation, the increment is exactly 0 and the score is
``s_CF``: the method starts ranking exactly like its CF model. Such a method reads a CF model
whatever its class says (:meth:`reads_cf`).
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any, ClassVar

import torch
from torch import nn

from corarec.data.prompts import template_id
from corarec.errors import CorarecError
from corarec.llm.model import SCORE_MODES, answer_logits, answer_score
from corarec.llm.layer_split import start_at_layer
from corarec.llm.prefix_cache import PrefixCache

FROZEN_SCORE_BATCHES = 4096
"""How many batches' frozen answers an anchored method keeps in memory (:meth:`Method.frozen_score`)."""


class Method(nn.Module):
    """Base class of the LLM recommenders (CoRA, TALLRec, CoLLM, ICL)."""

    name: ClassVar[str] = ""
    """Method name as given to ``corarec train --method``."""
    template: ClassVar[str] = "tallrec"
    """Prompt template the method reads (see :mod:`corarec.data.prompts`)."""
    trains: ClassVar[bool] = True
    """False for evaluation-only methods (zero-shot ICL)."""
    uses_cf: ClassVar[bool] = False
    """True for methods that read a frozen CF model (``corarec train --cf RUN``)."""

    def __init__(self, cfg: Any, llm, cf: nn.Module | None = None):
        """``cfg``: the method's config dataclass; ``llm``: the frozen LLM; ``cf``: the frozen CF model
        (required when :meth:`reads_cf`)."""
        super().__init__()
        if self.reads_cf(cfg) and cf is None:
            why = "" if self.uses_cf else " with anchor 'cf'"
            raise CorarecError(f"method '{self.name}'{why} reads a CF model: pass one (--cf RUN from `corarec train-cf`)")
        if cfg.score_mode not in SCORE_MODES:
            raise CorarecError(f"{self.name} score_mode {cfg.score_mode!r}: expected one of {', '.join(SCORE_MODES)}")
        self.cfg = cfg
        self.hold("llm", llm)
        self.hold("cf", None if cf is None else cf.to(llm.device).eval().requires_grad_(False))
        self.prefix_cache: PrefixCache | None = None
        self.prefix_layer: int | None = None
        # the CF anchor's weight γ (trained, saved with the method's weights); None: not anchored
        self.anchor_gamma = nn.Parameter(torch.ones((), device=llm.device)) if self.anchors(cfg) else None
        self._frozen_scores: dict[tuple, torch.Tensor] = {}
        self.row_draws: RowDraws | None = None
        """Set by the training loop for a step whose rows are split (processes, accumulation): the
        step's per-row random draws; None: a batch draws for itself."""

    @staticmethod
    def anchors(cfg: Any) -> bool:
        """Whether settings ``cfg`` ask for the CF-anchored score (``anchor = "cf"``)."""
        return getattr(cfg, "anchor", "none") == "cf"

    @classmethod
    def reads_cf(cls, cfg: Any) -> bool:
        """Whether this method with settings ``cfg`` reads a CF model: always when :attr:`uses_cf`, and
        whenever it is CF-anchored."""
        return cls.uses_cf or cls.anchors(cfg)

    def hold(self, name: str, frozen: Any) -> None:
        """Keep ``frozen`` as ``self.<name>`` without registering it: the method's parameters, state
        dict, ``train()`` and ``.to()`` never reach it."""
        self.__dict__[name] = frozen

    # ----- what a method implements ------------------------------------------------------------
    def score(self, batch) -> torch.Tensor:
        """Return ``[B]`` logits for a :class:`~corarec.methods.batches.Batch`."""
        raise NotImplementedError

    def save_extra(self, run_dir) -> None:
        """Write extra artefacts of the current (best) weights into the run directory, next to
        ``model.safetensors`` — e.g. a peft adapter in peft's own format. Default: nothing."""

    # ----- shared pieces -----------------------------------------------------------------------
    def answer(self, logits: torch.Tensor) -> torch.Tensor:
        """Row scores ``[B]`` from the answer-slot logits ``[B, V]`` in the configured ``score_mode``."""
        return answer_score(logits, self.llm.yes_id, self.llm.no_id, self.cfg.score_mode)

    def fold_in_rows(self, batch, fraction: float) -> torch.Tensor | None:
        """In training mode, a random ``fraction`` of the rows ``[B]`` (bool) that read the CF model's
        fold-in (cold-start) user embedding instead of their own; None otherwise. Each row's draw is
        its place in the training step's rows (:attr:`row_draws`), not the process scoring it."""
        if not self.training or fraction <= 0:
            return None
        if self.row_draws is None:
            return torch.rand(len(batch), device=batch.input_ids.device) < fraction  # [B]
        return self.row_draws.take(len(batch), batch.input_ids.device) < fraction  # [B]

    def init_prefix_cache(self, first_layer: int) -> None:
        """Layers below ``first_layer`` (the lowest adapted layer) are the frozen LLM reading the
        prompt; with ``cfg.cache_prefix`` their output comes from a
        :class:`~corarec.llm.prefix_cache.PrefixCache` keyed by the LLM's current weights (so call
        this before anything changes them in place, e.g. before attaching a LoRA). With
        ``first_layer`` 0 (e.g. layers "all") nothing lies below it, and no cache is made."""
        self.prefix_layer = first_layer
        if self.cfg.cache_prefix and first_layer > 0:
            self.prefix_cache = PrefixCache(self.llm, first_layer, template_id(self.template),
                                            root=self.cfg.prefix_cache_dir, max_gb=self.cfg.prefix_cache_max_gb)

    def prefix_hidden(self, batch) -> torch.Tensor | None:
        """Cached hidden states ``[B, T, d]`` entering :attr:`prefix_layer`, or None without a cache."""
        if self.prefix_cache is None:
            return None
        return self.prefix_cache.hidden_states(batch.input_ids, batch.attention_mask)  # [B, T, d]

    def start_at_prefix(self, prefix_hidden: torch.Tensor | None) -> contextlib.AbstractContextManager:
        """Inside the block the LLM's forward starts at :attr:`prefix_layer` with ``prefix_hidden``
        (a no-op when it is None)."""
        if prefix_hidden is None:
            return contextlib.nullcontext()
        return start_at_layer(self.llm, self.prefix_layer, prefix_hidden)

    # ----- the CF anchor (beyond the paper) ------------------------------------------------------
    def frozen_answer(self) -> contextlib.AbstractContextManager:
        """Inside the block the LLM answers without the method's update (ΔW = 0). A method that
        offers ``anchor`` implements it."""
        raise NotImplementedError(f"{self.name} has no CF anchor")

    def cf_logit(self, e_u: torch.Tensor, e_i: torch.Tensor) -> torch.Tensor:
        """The frozen CF model's logit ``[B]`` (fp32) from its embeddings ``e_u, e_i [B, c']``
        (:meth:`~corarec.cf.base.CFModel.embed`: their dot product plus the global bias, if any)."""
        with torch.no_grad(), torch.autocast(e_u.device.type, enabled=False):
            logit = (e_u.float() * e_i.float()).sum(-1)  # [B]
            bias = getattr(self.cf, "global_bias", None)
            return logit if bias is None else logit + bias.float()

    def frozen_score(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     prefix_hidden: torch.Tensor | None = None) -> torch.Tensor:
        """``s_LLM(ΔW = 0)`` ``[B]`` (fp32, no gradient), from the same cached prefix as the scored pass.

        Outside training the result is kept in memory per batch (the same rows, padded alike, under the
        same autocast): validation scores the same batches at every evaluation and pays this pass once.
        The key is the whole batch, not each row, because a row's logit can change in its last bits with
        the batch it is padded in — and the increment at initialisation must stay exactly 0.
        """
        key = None if self.training else _batch_key(input_ids, attention_mask)
        if key is not None and key in self._frozen_scores:
            return self._frozen_scores[key]
        with torch.no_grad(), self.start_at_prefix(prefix_hidden), self.frozen_answer():
            base = self.answer(answer_logits(self.llm, input_ids, attention_mask)).float()  # [B]
        if key is not None:
            if len(self._frozen_scores) >= FROZEN_SCORE_BATCHES:
                self._frozen_scores.clear()
            self._frozen_scores[key] = base
        return base

    def anchored_score(self, llm_score: torch.Tensor, cf_logit: torch.Tensor, input_ids: torch.Tensor,
                       attention_mask: torch.Tensor, prefix_hidden: torch.Tensor | None = None) -> torch.Tensor:
        """``γ · s_CF + (s_LLM(ΔW) − s_LLM(ΔW = 0))`` ``[B]`` (fp32) from the LLM's score with the update
        ``llm_score [B]`` and the CF logit ``cf_logit [B]`` of the same rows."""
        increment = llm_score.float() - self.frozen_score(input_ids, attention_mask, prefix_hidden)  # [B]
        return self.anchor_gamma * cf_logit + increment

    # ----- weights ----------------------------------------------------------------------------
    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The trained weights only (what a run directory stores)."""
        keep = {id(p) for p in self.trainable_parameters()}
        return {k: v.detach().clone() for k, v in self.named_parameters() if id(v) in keep}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
        """Load weights saved by :meth:`trainable_state_dict`; mismatches are a clear error."""
        own = self.trainable_state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            what = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
            raise CorarecError(f"{source}: weights do not match this {self.name} model ({what}); "
                               "was it trained with other settings?")
        params = dict(self.named_parameters())
        with torch.no_grad():
            for key, value in state.items():
                if params[key].shape != value.shape:
                    raise CorarecError(f"{source}: '{key}' has shape {tuple(value.shape)}, "
                                       f"this model expects {tuple(params[key].shape)}")
                params[key].copy_(value)

    def n_trainable(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters())


class RowDraws:
    """The uniform random draws of the rows of one training step, made once for all of its rows.

    When a step's rows are split — between processes (DDP), between accumulation micro-batches —
    every part reads the draws of its own rows: :attr:`offset` is where its rows start among the
    step's ``total``. Every process draws the same ``total`` values from the same seeded generator
    state, so row ``k`` of a step gets the same draw however many processes and micro-batches share
    the step, and with one part of all the rows it is ``torch.rand(total)``, as a batch drawing for itself.
    (Dropout draws per process: when it is on and a step is split unevenly, the processes' generators
    drift apart; every row's draw is still uniform, only no longer the one of a single process.)
    """

    def __init__(self, total: int):
        self.total = total
        self.offset = 0
        self._values: torch.Tensor | None = None

    def take(self, n: int, device: torch.device) -> torch.Tensor:
        """The draws ``[n]`` of rows ``offset .. offset + n`` of the step (drawn on first use)."""
        if self._values is None:
            self._values = torch.rand(self.total, device=device)  # [total]
        if self.offset + n > self.total:
            raise ValueError(f"rows {self.offset}..{self.offset + n} of a step of {self.total}")
        return self._values[self.offset:self.offset + n]  # [n]


def _batch_key(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple:
    """What the frozen answer of a batch depends on besides the frozen weights: its token ids and
    mask (content and shape), the device and the autocast in force."""
    digest = hashlib.blake2b(digest_size=16)
    for tensor in (input_ids, attention_mask):
        digest.update(tensor.detach().cpu().numpy().tobytes())
    device = input_ids.device.type
    autocast = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
    return digest.hexdigest(), tuple(input_ids.shape), str(input_ids.device), autocast
