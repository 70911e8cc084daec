"""Dot-product CF models with biases and a fold-in for new users (MF and LightGCN share this).

    logit(u, i) = <e_u, e_i> + b_u + b_i + b          (biases optional, config ``bias``)

A subclass only says how the final user and item tables are made (:meth:`tables`): MF uses its
embeddings directly, LightGCN propagates them over the train graph. Users unseen in train (and
rows with ``fold_in`` set) take ``e_u, b_u`` from :class:`~corarec.cf.fold_in.HistoryFoldIn`;
items unseen in train take the mean train-item embedding and bias (:meth:`CFModel.item_lookup`).

Training scores every row twice — with the user's own embedding and with the fold-in of its
history — and sums the two BCE losses, so that the fold-in learns the space of the user embeddings.
"""

from __future__ import annotations

from abc import abstractmethod

import torch
from torch import Tensor, nn

from corarec.cf.base import CFBatch, CFModel
from corarec.cf.config import CFConfig
from corarec.cf.fold_in import HistoryFoldIn


class DotCF(CFModel):
    """User/item embedding tables + biases + fold-in; subclasses define :meth:`tables`."""

    def __init__(self, config: CFConfig, n_users: int, n_items: int) -> None:
        super().__init__(n_users, n_items, config.dim, config.max_len)
        self.config = config
        self.user_emb = nn.Embedding(n_users, config.dim)  # [n_users, dim]
        self.item_emb = nn.Embedding(n_items, config.dim)  # [n_items, dim]
        nn.init.normal_(self.user_emb.weight, std=0.01)
        nn.init.normal_(self.item_emb.weight, std=0.01)
        self.use_bias = config.bias
        if self.use_bias:
            self.user_bias = nn.Parameter(torch.zeros(n_users))  # [n_users]
            self.item_bias = nn.Parameter(torch.zeros(n_items))  # [n_items]
            self.global_bias = nn.Parameter(torch.zeros(()))  # []
        self.fold = HistoryFoldIn(n_items, config.dim, config.fold_in)

    @abstractmethod
    def tables(self) -> tuple[Tensor, Tensor]:
        """Final (user table [n_users, dim], item table [n_items, dim])."""

    # ----- pieces ------------------------------------------------------------------------------
    def _users(
        self, batch: CFBatch, user_table: Tensor, item_table: Tensor, fold_in: Tensor | None,
        fold: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """User embedding [B, dim] and bias [B]: own row when warm, fold-in (given or computed) otherwise."""
        warm = self.warm_users(batch.users)  # [B]
        if fold_in is not None:
            warm = warm & ~fold_in.to(warm.device).bool()
        safe = batch.users.clamp(0, self.n_users - 1)
        own = user_table[safe]  # [B, dim]
        own_b = self.user_bias[safe] if self.use_bias else own.new_zeros(len(batch))  # [B]
        fold, fold_b = fold if fold is not None else self._fold(batch, user_table, item_table)  # [B, dim], [B]
        return torch.where(warm.unsqueeze(-1), own, fold), torch.where(warm, own_b, fold_b)

    def _fold(self, batch: CFBatch, user_table: Tensor, item_table: Tensor) -> tuple[Tensor, Tensor]:
        history = batch.history[:, -self.max_len :]  # [B, <= max_len]: the most recent items
        emb, bias = self.fold(
            history, self.item_seen, item_table, user_table, self.user_seen,
            self.user_bias if self.use_bias else None,
        )
        return emb, (bias if self.use_bias else torch.zeros_like(bias))

    def _items(self, batch: CFBatch, item_table: Tensor) -> tuple[Tensor, Tensor]:
        emb, bias = self.item_lookup(item_table, batch.items, self.item_bias if self.use_bias else None)
        return emb, (bias if bias is not None else emb.new_zeros(len(batch)))  # [B, dim], [B]

    def _logit(self, u: Tensor, ub: Tensor, i: Tensor, ib: Tensor) -> Tensor:
        logit = (u * i).sum(-1) + ub + ib  # [B]
        return logit + self.global_bias if self.use_bias else logit

    # ----- the interface -----------------------------------------------------------------------
    @property
    def embed_dim(self) -> int:
        return self.dim + 2 if self.use_bias else self.dim

    def embed(self, batch: CFBatch, fold_in: torch.BoolTensor | None = None) -> tuple[Tensor, Tensor]:
        """``[e_u, b_u, 1]`` and ``[e_i, 1, b_i]`` (``[B, dim + 2]``), or ``e_u, e_i`` without biases."""
        user_table, item_table = self.tables()
        u, ub = self._users(batch, user_table, item_table, fold_in)
        i, ib = self._items(batch, item_table)
        if not self.use_bias:
            return u, i  # [B, dim] each
        one = torch.ones_like(ub)  # [B]
        return torch.cat([u, ub[:, None], one[:, None]], -1), torch.cat([i, one[:, None], ib[:, None]], -1)

    def forward(self, batch: CFBatch) -> Tensor:
        user_table, item_table = self.tables()
        u, ub = self._users(batch, user_table, item_table, None)
        i, ib = self._items(batch, item_table)
        return self._logit(u, ub, i, ib)

    def loss(self, batch: CFBatch, labels: Tensor) -> Tensor:
        user_table, item_table = self.tables()
        i, ib = self._items(batch, item_table)
        f, fb = self._fold(batch, user_table, item_table)
        u, ub = self._users(batch, user_table, item_table, None, fold=(f, fb))
        return self.bce(self._logit(u, ub, i, ib), labels) + self.bce(self._logit(f, fb, i, ib), labels)
