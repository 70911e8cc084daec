"""ICL: the frozen LLM answers the TALLRec prompt zero-shot (the paper's near-0.5 baseline).

Nothing trains; ``corarec train --method icl`` scores the validation rows once and writes a run
directory that ``corarec evaluate`` reads like any other.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from corarec.llm.model import SCORE_MODES, answer_logits, answer_score
from corarec.methods.base import Method
from corarec.utils.settings import Settings, setting


@dataclass
class ICLConfig(Settings):
    """Settings of the zero-shot baseline."""

    score_mode: str = setting("yes", choices=SCORE_MODES)
    """'yes': the logit of " Yes" at the answer slot (the paper); 'yes_minus_no': logit(Yes) − logit(No)."""


class ICL(Method):
    """The frozen LLM, zero-shot, on the pure-text prompt."""

    name = "icl"
    template = "tallrec"
    trains = False

    def __init__(self, cfg: ICLConfig, llm):
        super().__init__()
        self.cfg = cfg
        self.llm = llm
        self.model = llm.model  # registered so that .to() / .eval() reach it; every weight frozen

    def score(self, batch) -> torch.Tensor:
        logits = answer_logits(self.llm, batch.input_ids, batch.attention_mask)  # [B, V]
        return answer_score(logits, self.llm.yes_id, self.llm.no_id, self.cfg.score_mode)  # [B]
