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
  (:meth:`answer`), the random fold-in rows of training (:meth:`fold_in_rows`) and the prefix
  cache of the frozen layers below the lowest adapted one (:meth:`init_prefix_cache`,
  :meth:`prefix_hidden`, :meth:`start_at_prefix`).
"""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar

import torch
from torch import nn

from corarec.data.prompts import template_id
from corarec.errors import CorarecError
from corarec.llm.model import SCORE_MODES, answer_score
from corarec.llm.prefix_cache import PrefixCache, start_at_layer


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
        (required when :attr:`uses_cf`)."""
        super().__init__()
        if self.uses_cf and cf is None:
            raise CorarecError(f"method '{self.name}' reads a CF model: pass one (--cf RUN from `corarec train-cf`)")
        if cfg.score_mode not in SCORE_MODES:
            raise CorarecError(f"{self.name} score_mode {cfg.score_mode!r}: expected one of {', '.join(SCORE_MODES)}")
        self.cfg = cfg
        self.hold("llm", llm)
        self.hold("cf", None if cf is None else cf.to(llm.device).eval().requires_grad_(False))
        self.prefix_cache: PrefixCache | None = None
        self.prefix_layer: int | None = None

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
        fold-in (cold-start) user embedding instead of their own; None otherwise."""
        if not self.training or fraction <= 0:
            return None
        return torch.rand(len(batch), device=batch.input_ids.device) < fraction  # [B]

    def init_prefix_cache(self, first_layer: int) -> None:
        """Layers below ``first_layer`` (the lowest adapted layer) are the frozen LLM reading the
        prompt; with ``cfg.cache_prefix`` their output comes from a
        :class:`~corarec.llm.prefix_cache.PrefixCache` keyed by the LLM's current weights (so call
        this before anything changes them in place, e.g. before attaching a LoRA)."""
        self.prefix_layer = first_layer
        if self.cfg.cache_prefix:
            self.prefix_cache = PrefixCache(self.llm, first_layer, template_id(self.template),
                                            root=self.cfg.prefix_cache_dir)

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
