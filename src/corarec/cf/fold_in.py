"""Fold-in: the user embedding (and user bias) of a user who was not in train, built from history.

MF and LightGCN learn one embedding per train user, so a new user — most test users of the
MovieLens-100K temporal split — has none. Its embedding is folded in from the items of the row's
history (the user's earlier liked items, most recent ``max_len`` of them). Two rules:

- ``learned`` (default; the better one on the ML-100K valid split): the mean of a second,
  learned item table over the history items, plus a learned offset vector; the user bias is the
  mean of a learned per-item bias plus a learned offset. It is trained together with the model:
  every training row is scored twice, once with the user's own embedding and once with the
  fold-in of its history, and both BCE losses are summed. The fold-in is therefore in the same
  space as the train users' embeddings and is scored by the same item embeddings.
  (An asymmetric-SVD / FISM-style user model.)
- ``mean`` (no parameters): the mean of the model's own item embeddings over the history items,
  and the mean train user bias.

History items unseen in train are ignored. An empty history gives the offset vector (``learned``)
or the mean train user embedding (``mean``), and the offset bias / mean user bias.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

FOLD_IN_RULES = ("learned", "mean")


class HistoryFoldIn(nn.Module):
    """Maps a history [B, L] to a cold-start user embedding [B, dim] and bias [B]."""

    def __init__(self, n_items: int, dim: int, rule: str = "learned") -> None:
        super().__init__()
        if rule not in FOLD_IN_RULES:
            raise ValueError(f"fold-in rule must be one of {FOLD_IN_RULES}, got {rule!r}")
        self.rule = rule
        self.n_items = n_items
        if rule == "learned":
            self.item_vec = nn.Embedding(n_items, dim)  # [n_items, dim]
            self.item_bias = nn.Embedding(n_items, 1)  # [n_items, 1]
            self.offset = nn.Parameter(torch.zeros(dim))  # [dim]
            self.offset_bias = nn.Parameter(torch.zeros(1))  # [1]
            nn.init.normal_(self.item_vec.weight, std=0.01)
            nn.init.zeros_(self.item_bias.weight)

    def forward(
        self,
        history: Tensor,
        item_seen: Tensor,
        item_table: Tensor,
        user_table: Tensor,
        user_seen: Tensor,
        user_bias: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
        """(emb [B, dim], bias [B]). ``item_table``/``user_table`` are the model's final embeddings
        (used by the ``mean`` rule); ``user_bias`` [n_users] or None."""
        valid = history >= 0
        safe = history.clamp(0, self.n_items - 1)  # [B, L]
        valid = valid & item_seen[safe]
        w = valid.float()  # [B, L]
        count = w.sum(1, keepdim=True)  # [B, 1]
        has = count > 0  # [B, 1]
        if self.rule == "learned":
            vec = _bag_mean(safe, self.item_vec.weight, w, count)  # [B, dim]
            bias = _bag_mean(safe, self.item_bias.weight, w, count)  # [B, 1]
            return vec + self.offset, (bias + self.offset_bias).squeeze(-1)
        mean_user = user_table[user_seen].mean(0) if bool(user_seen.any()) else user_table.mean(0)  # [dim]
        vec = _bag_mean(safe, item_table, w, count)  # [B, dim]
        vec = torch.where(has, vec, mean_user.expand_as(vec))
        if user_bias is None:
            bias = vec.new_zeros(vec.shape[0])
        else:
            mb = user_bias[user_seen].mean() if bool(user_seen.any()) else user_bias.mean()
            bias = mb.expand(vec.shape[0])  # [B]
        return vec, bias


def _bag_mean(index: Tensor, table: Tensor, weight: Tensor, count: Tensor) -> Tensor:
    """Weighted mean of ``table`` rows [B, d] over ``index`` [B, L] (weights 0/1, ``count`` [B, 1])."""
    total = F.embedding_bag(index, table, mode="sum", per_sample_weights=weight)  # [B, d]
    return total / count.clamp(min=1)
