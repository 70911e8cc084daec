"""ICL: the frozen LLM answers the TALLRec prompt zero-shot (the paper's near-0.5 baseline).

Nothing trains; ``corarec train --method icl`` scores the validation rows once and writes a run
directory that ``corarec evaluate`` reads like any other.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from corarec.llm.model import answer_logits
from corarec.methods.base import Method
from corarec.methods.fields import score_mode_field
from corarec.utils.settings import Settings


@dataclass
class ICLConfig(Settings):
    """Settings of the zero-shot baseline."""

    score_mode: str = score_mode_field()


class ICL(Method):
    """The frozen LLM, zero-shot, on the pure-text prompt."""

    name = "icl"
    template = "tallrec"
    trains = False

    def __init__(self, cfg: ICLConfig, llm, cf=None):
        super().__init__(cfg, llm, cf)  # holds the frozen LLM: nothing of this method is registered

    def score(self, batch) -> torch.Tensor:
        logits = answer_logits(self.llm, batch.input_ids, batch.attention_mask)  # [B, V]
        return self.answer(logits)  # [B]
