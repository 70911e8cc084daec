"""Scoring the probe sets with an LLM, batched: continuation log-probabilities and yes/no answers.

Two kinds of rows:

- **continuations** (item years, prose passages): the tokens of ``context + continuation`` (with the
  tokenizer's special tokens, e.g. Gemma's ``<bos>``); the tokens after the context's (their longest
  common prefix, at least one token) are the targets. The LLM reads all tokens but the last, left-padded,
  and only the last ``K`` positions' logits are computed (``logits_to_keep``, ``K`` the longest target in
  the batch): position ``t`` predicts token ``t + 1``, so a row's targets are the last ``k`` of its ``K``
  kept positions. A row is *correct* when every target token is the argmax at its position — exactly
  when greedy decoding writes the continuation (in the tokenizer's own split of it).
- **questions**: the prompt ends with ``#Answer:``; the logits of " Yes" and " No" there decide the
  answer, as for the recommendation score (``yes_minus_no`` > 0 means Yes).

:class:`Tally` adds up a batch's rows, so any split into batches gives the same totals.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, replace

import torch

from corarec.errors import CorarecError
from corarec.llm.model import LLM, position_ids
from corarec.llm.layer_split import start_at_layer

IGNORE = -100
"""Target id of the left padding of ``targets`` (no token scored there)."""
LOGIT_BUDGET = 1 << 26
"""Vocabulary logits (fp32 floats: 256 MB) one forward pass may return; longer batches are split."""


@dataclass
class ProbeBatch:
    """One forward pass worth of probe rows of one kind."""

    kind: str
    """``"item"``, ``"text"`` or ``"question"``."""
    input_ids: torch.Tensor
    """``[B, T]`` left-padded token ids."""
    attention_mask: torch.Tensor
    """``[B, T]`` 1 for real tokens."""
    targets: torch.Tensor | None = None
    """``[B, K]`` continuation tokens, right-aligned, :data:`IGNORE` on the left (continuations only)."""
    answers: torch.Tensor | None = None
    """``[B]`` bool, the question's answer is Yes (questions only)."""

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def keep(self) -> int:
        """Positions whose logits are needed (the last ``keep``)."""
        return 1 if self.targets is None else self.targets.shape[1]

    def to(self, device: torch.device) -> "ProbeBatch":
        move = (lambda t: None if t is None else t.to(device))
        return replace(self, input_ids=move(self.input_ids), attention_mask=move(self.attention_mask),
                       targets=move(self.targets), answers=move(self.answers))


def continuation_ids(tokenizer, context: str, continuation: str) -> tuple[list[int], int]:
    """The token ids of ``context + continuation`` and how many of them belong to the context
    (their common prefix with the context's own ids; at least 1, at most all but one)."""
    full = tokenizer(context + continuation)["input_ids"]
    own = tokenizer(context)["input_ids"]
    if len(full) < 2:
        raise CorarecError(f"probe text {context + continuation!r} is {len(full)} token(s): nothing to score")
    common = 0
    while common < min(len(full), len(own)) and full[common] == own[common]:
        common += 1
    return full, min(max(common, 1), len(full) - 1)


def continuation_batches(tokenizer, kind: str, rows: list[tuple[str, str]], batch_size: int,
                         vocab_size: int) -> list[ProbeBatch]:
    """Batches of ``(context, continuation)`` rows; at most ``batch_size`` rows, and fewer when their
    logits would exceed :data:`LOGIT_BUDGET`."""
    encoded = [continuation_ids(tokenizer, context, continuation) for context, continuation in rows]
    batches, start = [], 0
    while start < len(encoded):
        stop = start + 1
        while stop < len(encoded) and stop - start < batch_size:
            longest = max(len(ids) - n for ids, n in encoded[start:stop + 1])
            if (stop + 1 - start) * longest * vocab_size > LOGIT_BUDGET:
                break
            stop += 1
        batches.append(_pad_continuations(kind, encoded[start:stop], tokenizer.pad_token_id))
        start = stop
    return batches


def _pad_continuations(kind: str, encoded: list[tuple[list[int], int]], pad_id: int) -> ProbeBatch:
    inputs = [ids[:-1] for ids, _ in encoded]          # the last token is only predicted
    targets = [ids[n:] for ids, n in encoded]          # what the context is followed by
    T, K = max(map(len, inputs)), max(map(len, targets))
    input_ids = torch.full((len(encoded), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(encoded), T), dtype=torch.long)
    target_ids = torch.full((len(encoded), K), IGNORE, dtype=torch.long)
    for row, (ids, target) in enumerate(zip(inputs, targets)):
        input_ids[row, T - len(ids):] = torch.tensor(ids)
        mask[row, T - len(ids):] = 1
        target_ids[row, K - len(target):] = torch.tensor(target)
    return ProbeBatch(kind, input_ids, mask, targets=target_ids)


def question_batches(tokenizer, prompts: list[str], answers: list[bool], batch_size: int) -> list[ProbeBatch]:
    """Batches of yes/no question prompts (left-padded by the tokenizer) with their answers."""
    batches = []
    for start in range(0, len(prompts), batch_size):
        enc = tokenizer(prompts[start:start + batch_size], return_tensors="pt", padding=True)
        batches.append(ProbeBatch("question", enc["input_ids"], enc["attention_mask"],
                                  answers=torch.tensor(answers[start:start + batch_size], dtype=torch.bool)))
    return batches


def probe_logits(llm: LLM, batch: ProbeBatch, start: tuple[int, torch.Tensor] | None = None) -> torch.Tensor:
    """Vocabulary logits ``[B, keep, V]`` (fp32) at the batch's last ``keep`` positions, through whatever
    update is active on ``llm.model``; ``start = (layer, hidden [B, T, d])`` runs from that layer on."""
    begin = contextlib.nullcontext() if start is None else start_at_layer(llm, *start)
    with torch.no_grad(), begin, llm.autocast():
        out = llm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                        position_ids=position_ids(batch.attention_mask), use_cache=False, logits_to_keep=batch.keep)
    return out.logits[:, -batch.keep:, :].float()


@dataclass
class Tally:
    """Running totals of the three probes."""

    items: int = 0
    items_correct: int = 0
    items_logprob: float = 0.0
    """Sum over titles of log P(year | context), nats."""
    passages: int = 0
    text_tokens: int = 0
    text_nll: float = 0.0
    """Sum over scored prose tokens of −log P(token | the tokens before it), nats."""
    questions: int = 0
    questions_correct: int = 0
    questions_mass: float = 0.0
    """Sum over questions of P(" Yes") + P(" No") at the answer slot."""

    def add(self, batch: ProbeBatch, logits: torch.Tensor, yes_id: int, no_id: int) -> None:
        """Count one batch scored with ``logits [B, keep, V]``."""
        if batch.kind == "question":
            last = logits[:, -1, :].double()                                           # [B, V]
            says_yes = last[:, yes_id] > last[:, no_id]                                # [B]
            probs = torch.softmax(last, dim=-1)
            self.questions += len(batch)
            self.questions_correct += int((says_yes == batch.answers).sum())
            self.questions_mass += float((probs[:, yes_id] + probs[:, no_id]).sum())
            return
        scored = batch.targets != IGNORE                                               # [B, K]
        safe = batch.targets.clamp(min=0)                                              # [B, K]
        picked = logits.gather(-1, safe.unsqueeze(-1)).squeeze(-1).double()            # [B, K]
        logprob = (picked - torch.logsumexp(logits, dim=-1).double()) * scored         # [B, K]
        hit = (logits.argmax(-1) == safe) | ~scored                                    # [B, K]
        if batch.kind == "item":
            self.items += len(batch)
            self.items_correct += int(hit.all(-1).sum())
            self.items_logprob += float(logprob.sum())
        else:
            self.passages += len(batch)
            self.text_tokens += int(scored.sum())
            self.text_nll -= float(logprob.sum())

    def metrics(self) -> dict[str, float | None]:
        """The probe metrics (None for a probe without rows)."""
        share = (lambda part, whole: part / whole if whole else None)
        return {
            "item_year_accuracy": share(self.items_correct, self.items),
            "item_year_logprob": share(self.items_logprob, self.items),
            "text_perplexity": math.exp(self.text_nll / self.text_tokens) if self.text_tokens else None,
            "question_accuracy": share(self.questions_correct, self.questions),
            "question_yes_no_mass": share(self.questions_mass, self.questions),
        }
