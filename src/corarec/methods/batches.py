"""Batches for the LLM methods: rows of a split → tokenised prompts + CF inputs + labels.

Every LLM method reads the same :class:`Batch`; a method takes what it needs (the prompt tokens,
the CF ids and history, or both). The batcher sits with the methods, above both ``data`` (the rows,
the prompts) and ``cf`` (the CF inputs), so that ``data`` never depends on ``cf``.

The CF history is cut to ``cf_history_len`` items — for a method that reads a CF model, that
model's own ``max_len`` (:func:`corarec.training.runs.build_run` passes it), so the LLM path
hands the CF model the same history the CF model was trained on.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from corarec.cf.base import CFBatch, history_tensor
from corarec.data.prompts import build_prompt
from corarec.data.schema import Dataset


@dataclass
class Batch:
    """One batch of rows, ready for any LLM method."""

    input_ids: torch.Tensor
    """``[B, T]`` prompt token ids, left-padded (the answer slot is the last position)."""
    attention_mask: torch.Tensor
    """``[B, T]`` 1 for real tokens, 0 for padding."""
    cf: CFBatch
    """CF inputs: user ids ``[B]``, item ids ``[B]``, history ``[B, L]``."""
    labels: torch.Tensor
    """``[B]`` float 0/1 labels."""
    prompts: list[str]
    """The prompt texts (the prefix cache keys on their token ids)."""

    def __len__(self) -> int:
        return len(self.prompts)

    def to(self, device: torch.device | str) -> "Batch":
        """The same batch with every tensor on ``device``."""
        cf = dataclasses.replace(self.cf, **{f.name: getattr(self.cf, f.name).to(device)
                                            for f in dataclasses.fields(self.cf)})
        return dataclasses.replace(self, input_ids=self.input_ids.to(device),
                                   attention_mask=self.attention_mask.to(device),
                                   cf=cf, labels=self.labels.to(device))


class PromptBatcher:
    """Turns rows of a prepared dataset into :class:`Batch` objects for one prompt template."""

    def __init__(self, dataset: Dataset, tokenizer, template: str = "tallrec",
                 max_history: int = 10, cf_history_len: int = 25):
        self.titles = dataset.titles()
        self.item_noun = dataset.item_noun
        self.tokenizer = tokenizer
        self.template = template
        self.max_history = max_history
        self.cf_history_len = cf_history_len

    def prompt(self, history: list[int], item: int, title: str | None = None) -> str:
        """The prompt text for one row (history = item ids, oldest first). An item unknown to the
        dataset (``item`` < 0) is named by ``title`` when given, else "an unknown <noun>"; a known
        item always reads its dataset title."""
        liked = [self.titles[i] for i in history[-self.max_history:]]
        if item >= 0:
            target = self.titles[item]
        else:
            target = title if title else "an unknown " + self.item_noun
        return build_prompt(liked, target, self.item_noun, template=self.template, max_history=self.max_history)

    def prompts(self, rows: pd.DataFrame) -> list[str]:
        """The prompt of every row (``history``, ``item_id`` and an optional ``title`` column, read
        only for items unknown to the dataset; empty cells there are None or NaN)."""
        titles = rows["title"].tolist() if "title" in rows else [None] * len(rows)
        return [self.prompt(list(h), int(i), t if isinstance(t, str) else None)
                for h, i, t in zip(rows["history"], rows["item_id"].to_numpy(), titles)]

    def token_lengths(self, rows: pd.DataFrame, chunk: int = 4096) -> np.ndarray:
        """``[N]`` prompt length in tokens of each row (scoring, and training with ``group_by_length``, put rows
        of similar length together); tokenised ``chunk`` rows at a time, so a large split never holds all its
        token ids at once."""
        lengths = [len(ids) for start in range(0, len(rows), chunk)
                   for ids in self.tokenizer(self.prompts(rows.iloc[start:start + chunk]))["input_ids"]]
        return np.array(lengths, dtype=np.int64)

    def __call__(self, rows: pd.DataFrame) -> Batch:
        histories = [list(h) for h in rows["history"]]
        items = rows["item_id"].to_numpy()
        prompts = self.prompts(rows)
        tokens = self.tokenizer(prompts, return_tensors="pt", padding=True)
        cf = CFBatch(
            users=torch.tensor(rows["user_id"].to_numpy(), dtype=torch.long),     # [B]
            items=torch.tensor(items, dtype=torch.long),                            # [B]
            history=history_tensor(histories, self.cf_history_len),                  # [B, L]
        )
        labels = rows["label"].to_numpy() if "label" in rows else np.zeros(len(rows))
        return Batch(
            input_ids=tokens["input_ids"],
            attention_mask=tokens["attention_mask"],
            cf=cf,
            labels=torch.tensor(labels, dtype=torch.float32),
            prompts=prompts,
        )
