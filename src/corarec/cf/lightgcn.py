"""LightGCN for CTR: embeddings smoothed over the train graph of positive interactions, then a
biased dot product (:mod:`corarec.cf.dot`) trained with BCE on the label.

The graph is bipartite: one edge per (user, item) train row with label 1. With the symmetric
normalisation ``A = D^-1/2 (adjacency) D^-1/2`` and layer-0 embeddings ``E0`` (users then items),

    E_k = A E_(k-1),        final = (E_0 + E_1 + ... + E_K) / (K + 1)          (K = ``layers``, 2)

A node without positive train edges keeps ``E_0 / (K + 1)``. The edges are saved with the
checkpoint. New users are folded in from their history and scored against the final item table;
new items take the mean final train-item embedding.
"""

from __future__ import annotations

import torch
from torch import Tensor

from corarec.cf.config import CFConfig
from corarec.cf.dot import DotCF


class LightGCN(DotCF):
    """LightGCN with ``config.num_layers`` propagation layers over the positive train edges."""

    kind = "lightgcn"

    def __init__(self, config: CFConfig, n_users: int, n_items: int) -> None:
        super().__init__(config, n_users, n_items)
        self.layers = config.num_layers
        self.register_buffer("edge_users", torch.zeros(0, dtype=torch.long))  # [E]
        self.register_buffer("edge_items", torch.zeros(0, dtype=torch.long))  # [E]
        self._adj: Tensor | None = None
        self._cache: tuple[tuple[int, ...], Tensor, Tensor] | None = None  # (weight versions, users, items)

    def fit_train(self, users: Tensor, items: Tensor, labels: Tensor) -> None:
        super().fit_train(users, items, labels)
        pos = labels.bool()
        pairs = torch.unique(torch.stack([users[pos], items[pos]], 1), dim=0)  # [E, 2]
        self.edge_users = pairs[:, 0].contiguous()
        self.edge_items = pairs[:, 1].contiguous()
        self._reset()

    def load_state(self, tensors: dict[str, Tensor]) -> None:
        self.edge_users = torch.empty_like(tensors["edge_users"])
        self.edge_items = torch.empty_like(tensors["edge_items"])
        super().load_state(tensors)
        self._reset()

    def _reset(self) -> None:
        self._adj, self._cache = None, None

    def adjacency(self) -> Tensor:
        """Normalised adjacency [n_users + n_items, n_users + n_items] (sparse COO)."""
        if self._adj is None or self._adj.device != self.edge_users.device:
            n = self.n_users + self.n_items
            u, i = self.edge_users, self.edge_items + self.n_users
            rows, cols = torch.cat([u, i]), torch.cat([i, u])  # [2E]: both directions
            deg = torch.bincount(rows, minlength=n).float()  # [n]
            norm = deg[rows].rsqrt() * deg[cols].rsqrt()  # [2E]
            self._adj = torch.sparse_coo_tensor(torch.stack([rows, cols]), norm, (n, n), check_invariants=True).coalesce()
        return self._adj

    def tables(self) -> tuple[Tensor, Tensor]:
        # In eval mode the propagated tables are cached until a weight changes (optimizer step,
        # load_state_dict): tensor version counters tell.
        u, i = self.user_emb.weight, self.item_emb.weight
        key = (u._version, i._version, u.data_ptr(), i.data_ptr(), str(u.device))
        if self._cache is not None and not self.training and self._cache[0] == key:
            return self._cache[1], self._cache[2]
        x = torch.cat([self.user_emb.weight, self.item_emb.weight])  # [n_users + n_items, dim]
        adj = self.adjacency()
        total, layer = x, x
        for _ in range(self.layers):
            layer = adj @ layer  # [n_users + n_items, dim]
            total = total + layer
        final = total / (self.layers + 1)
        users, items = final[: self.n_users], final[self.n_users :]  # [n_users, dim], [n_items, dim]
        if not self.training:
            self._cache = (key, users.detach(), items.detach())
        return users, items
