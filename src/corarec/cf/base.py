"""The one interface every collaborative-filtering (CF) model offers to the rest of corarec.

A CF model reads a batch of rows (user, target item, the row's history of earlier liked items)
and returns a user embedding and an item embedding of size ``dim`` for each row, and a CTR logit.
The LLM methods (CoRA, CoLLM) use only :meth:`CFModel.embed`; training and evaluation use
:meth:`CFModel.forward` and :meth:`CFModel.loss`.

Cold start, shared by all models:

- a user id of ``-1``, or a user that never occurred in train, is *cold*: MF and LightGCN give it
  the **fold-in** embedding computed from the row's history (:mod:`corarec.cf.fold_in`); SASRec
  reads the history for every user anyway;
- an item id of ``-1``, or an item that never occurred in train, gets the **mean embedding of the
  train items** and the **mean item bias** of the train items.

Which users and items occurred in train is kept in the ``user_seen``/``item_seen`` buffers, which
are saved with the checkpoint.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

HISTORY_PAD = -1
"""Id that fills the left of a history tensor (and marks an unknown user or item)."""


def history_tensor(histories: Sequence[Sequence[int]], max_len: int) -> torch.LongTensor:
    """The last ``max_len`` items of each history, left-padded with ``HISTORY_PAD``, most recent last."""
    out = torch.full((len(histories), max_len), HISTORY_PAD, dtype=torch.long)  # [B, max_len]
    if max_len <= 0:
        return out
    for row, hist in enumerate(histories):
        tail = list(hist)[-max_len:]
        if tail:
            out[row, max_len - len(tail):] = torch.as_tensor(tail, dtype=torch.long)
    return out


@dataclass
class CFBatch:
    """Rows handed to a CF model (internal ids of the prepared dataset)."""

    users: torch.LongTensor
    """[B] internal user ids; -1 = a user unknown to the dataset."""
    items: torch.LongTensor
    """[B] internal item ids; -1 = an unknown item."""
    history: torch.LongTensor
    """[B, L] the row's history from :func:`history_tensor` (oldest first, left-padded with -1)."""

    def to(self, device: torch.device | str) -> "CFBatch":
        return CFBatch(self.users.to(device), self.items.to(device), self.history.to(device))

    def __len__(self) -> int:
        return int(self.users.shape[0])


class CFModel(nn.Module, ABC):
    """Abstract CF model: ``embed`` → (user_emb, item_emb), ``forward`` → CTR logit."""

    kind: str = ""
    """Registry name: ``mf``, ``lightgcn`` or ``sasrec``."""

    def __init__(self, n_users: int, n_items: int, dim: int, max_len: int) -> None:
        super().__init__()
        self.n_users = n_users
        self.n_items = n_items
        self.dim = dim
        self.max_len = max_len  # history length the model reads (the last max_len items)
        self.register_buffer("user_seen", torch.zeros(n_users, dtype=torch.bool))  # [n_users]
        self.register_buffer("item_seen", torch.zeros(n_items, dtype=torch.bool))  # [n_items]

    # ----- the interface ---------------------------------------------------------------------
    @property
    def embed_dim(self) -> int:
        """Size of the vectors :meth:`embed` returns: ``dim`` plus one coordinate per bias term."""
        return self.dim

    @abstractmethod
    def embed(self, batch: CFBatch, fold_in: torch.BoolTensor | None = None) -> tuple[Tensor, Tensor]:
        """(user_emb [B, embed_dim], item_emb [B, embed_dim]) whose dot product plus the global bias
        is the model's logit: bias terms ride along as extra coordinates, so a model reading the
        embeddings (CoRA's generator, CoLLM's mapping) sees the whole CF score, not the dot product
        alone. ``fold_in[b]`` forces the cold-start user embedding."""

    @abstractmethod
    def forward(self, batch: CFBatch) -> Tensor:
        """[B] CTR logits (cold users and items use their documented fallbacks)."""

    @abstractmethod
    def loss(self, batch: CFBatch, labels: Tensor) -> Tensor:
        """Scalar training loss for rows with 0/1 ``labels`` [B]."""

    # ----- train-set bookkeeping -------------------------------------------------------------
    def fit_train(self, users: Tensor, items: Tensor, labels: Tensor) -> None:
        """Record which users/items occur in train (models with a graph also build it here)."""
        self.user_seen.zero_()
        self.item_seen.zero_()
        self.user_seen[users] = True
        self.item_seen[items] = True

    def warm_users(self, users: Tensor) -> Tensor:
        """[B] True where the user id is valid and occurred in train."""
        ok = (users >= 0) & (users < self.n_users)
        return ok & self.user_seen[users.clamp(0, self.n_users - 1)]

    def warm_items(self, items: Tensor) -> Tensor:
        """[B] True where the item id is valid and occurred in train."""
        ok = (items >= 0) & (items < self.n_items)
        return ok & self.item_seen[items.clamp(0, self.n_items - 1)]

    def item_lookup(self, table: Tensor, items: Tensor, bias: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Rows of an item ``table`` [n_items, dim] (and ``bias`` [n_items]) for ``items`` [...];
        items unseen in train (or -1) get the mean over train items."""
        warm = self.warm_items(items)  # [...]
        safe = items.clamp(0, self.n_items - 1)
        emb = table[safe]  # [..., dim]
        mean_emb = _masked_mean(table, self.item_seen)  # [dim]
        emb = torch.where(warm.unsqueeze(-1), emb, mean_emb.expand_as(emb))
        if bias is None:
            return emb, None
        b = torch.where(warm, bias[safe], _masked_mean(bias.unsqueeze(-1), self.item_seen).squeeze(-1))  # [...]
        return emb, b

    def load_state(self, tensors: dict[str, Tensor]) -> None:
        """Load a checkpoint's tensors (models whose buffers depend on the data resize them first)."""
        self.load_state_dict(tensors, strict=True)

    @staticmethod
    def bce(logits: Tensor, labels: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(logits, labels.float())


def _masked_mean(table: Tensor, mask: Tensor) -> Tensor:
    """Mean of the rows of ``table`` [N, d] where ``mask`` [N]; the plain mean if none is set."""
    if not bool(mask.any()):
        return table.mean(0)
    return table[mask].mean(0)  # [d]
