"""What every LLM method offers the shared training / evaluation loop.

A method scores a :class:`~corarec.data.batches.Batch` with one logit per row (the logit of
"Yes" at the answer slot, or Yes − No). The loop trains whatever ``trainable_state_dict`` names,
saves exactly that, and never touches the frozen LLM's weights.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from corarec.errors import CorarecError


class Method(nn.Module):
    """Base class of the LLM recommenders (CoRA, TALLRec, CoLLM, ICL)."""

    name: ClassVar[str] = ""
    """Method name as given to ``corarec train --method``."""
    template: ClassVar[str] = "tallrec"
    """Prompt template the method reads (see :mod:`corarec.data.prompts`)."""
    trains: ClassVar[bool] = True
    """False for evaluation-only methods (zero-shot ICL)."""

    def score(self, batch) -> torch.Tensor:
        """Return ``[B]`` logits for a :class:`~corarec.data.batches.Batch`."""
        raise NotImplementedError

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

    def save_extra(self, run_dir) -> None:
        """Write extra artefacts of the current (best) weights into the run directory, next to
        ``model.safetensors`` — e.g. a peft adapter in peft's own format. Default: nothing."""

    def n_trainable(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters())
