"""SASRec for CTR: a causal self-attention encoder over the row's history scores the target item.

    h      = the last ``max_len`` history items, left-padded, most recent last       [B, L]
    x      = item_emb[h] * sqrt(dim) + pos_emb[0..L-1]    (dropout)                  [B, L, dim]
    x      = ``layers`` pre-LN blocks: causal multi-head self-attention, then a feed-forward;
                                          dropout on the embeddings and on each block's two outputs
    e_u    = LayerNorm(x)[:, -1]          the encoder output at the last (most recent) position
    logit  = <e_u, item_emb[target]> + b_target + b

Position ``t`` attends to the non-padding positions ``<= t`` and always to itself, so a later
history item never changes an earlier position's output, and a row with an empty history (all
padding) reads a learned constant: the last position's own padding embedding. There is no user-id
embedding: every user, seen in train or not, is represented by its history, so ``fold_in`` has no
effect. History and target items unseen in train (and -1 targets) use the mean train-item
embedding and bias. Input and output item embeddings are shared, as in SASRec.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from corarec.cf.base import CFBatch, CFModel
from corarec.cf.config import CFConfig


class Block(nn.Module):
    """Pre-LN transformer block: x + Drop(Attn(LN(x))), then x + Drop(FFN(LN(x)))."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, allowed: Tensor) -> Tensor:
        """``x`` [B, L, dim]; ``allowed`` [B, 1, L, L]: True where a query may attend to a key."""
        B, L, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(D, dim=-1)  # 3 × [B, L, dim]
        q, k, v = (t.view(B, L, self.heads, D // self.heads).transpose(1, 2) for t in (q, k, v))  # [B, heads, L, dim/heads]
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)  # [B, heads, L, dim/heads]
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(B, L, D)))
        return x + self.drop(self.ffn(self.ln2(x)))


class SASRec(CFModel):
    """Self-attentive sequential recommender, scored pointwise on (history, target) rows."""

    kind = "sasrec"

    def __init__(self, config: CFConfig, n_users: int, n_items: int) -> None:
        super().__init__(n_users, n_items, config.dim, config.max_len)
        self.config = config
        self.item_emb = nn.Embedding(n_items, config.dim)  # [n_items, dim]
        self.pad_emb = nn.Parameter(torch.zeros(config.dim))  # [dim]
        self.pos_emb = nn.Embedding(config.max_len, config.dim)  # [L, dim]
        nn.init.normal_(self.item_emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb.weight, std=0.02)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config.dim, config.heads, config.dropout) for _ in range(config.num_layers))
        self.ln = nn.LayerNorm(config.dim)
        self.item_bias = nn.Parameter(torch.zeros(n_items))  # [n_items]
        self.global_bias = nn.Parameter(torch.zeros(()))  # []

    def _fit_length(self, history: Tensor) -> Tensor:
        """Keep the last ``max_len`` columns; left-pad shorter histories."""
        L = history.shape[1]
        if L >= self.max_len:
            return history[:, L - self.max_len :]
        pad = history.new_full((history.shape[0], self.max_len - L), -1)
        return torch.cat([pad, history], 1)  # [B, max_len]

    def encode(self, history: Tensor) -> Tensor:
        """Encoder outputs at every position [B, L, dim] for a history [B, L] (L <= max_len)."""
        B, L = history.shape
        is_pad = history < 0  # [B, L]
        items, _ = self.item_lookup(self.item_emb.weight, history)  # [B, L, dim]
        x = torch.where(is_pad.unsqueeze(-1), self.pad_emb.expand_as(items), items) * self.dim**0.5
        x = self.drop(x + self.pos_emb.weight[self.max_len - L :])  # positions count back from the most recent
        causal = torch.ones(L, L, dtype=torch.bool, device=history.device).tril()  # [L, L]: key not after query
        eye = torch.eye(L, dtype=torch.bool, device=history.device)
        allowed = causal & (~is_pad.unsqueeze(1) | eye)  # [B, L(query), L(key)]
        for block in self.blocks:
            x = block(x, allowed.unsqueeze(1))
        return self.ln(x)

    def user_vectors(self, history: Tensor) -> Tensor:
        """[B, dim]: the encoder output at the last position; each distinct history is encoded once."""
        distinct, inverse = torch.unique(self._fit_length(history), dim=0, return_inverse=True)  # [U, L], [B]
        return self.encode(distinct)[:, -1][inverse]

    @property
    def embed_dim(self) -> int:
        return self.dim + 1

    def embed(self, batch: CFBatch, fold_in: torch.BoolTensor | None = None) -> tuple[Tensor, Tensor]:
        """``[h_u, 1]`` and ``[e_i, b_i]`` (``[B, dim + 1]``): their dot product is the logit minus ``b``."""
        u = self.user_vectors(batch.history)  # [B, dim]
        i, b = self.item_lookup(self.item_emb.weight, batch.items, self.item_bias)  # [B, dim], [B]
        return torch.cat([u, torch.ones_like(b)[:, None]], -1), torch.cat([i, b[:, None]], -1)

    def forward(self, batch: CFBatch) -> Tensor:
        u = self.user_vectors(batch.history)  # [B, dim]
        i, b = self.item_lookup(self.item_emb.weight, batch.items, self.item_bias)  # [B, dim], [B]
        return (u * i).sum(-1) + b + self.global_bias  # [B]

    def loss(self, batch: CFBatch, labels: Tensor) -> Tensor:
        return self.bce(self.forward(batch), labels)
