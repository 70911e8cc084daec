"""The collaborative weights generator: (user, item) CF embeddings → one low-rank factor ``A_b``.

A small Q-Former-like decoder (as in BLIP-2 / VLoRA)::

    x = concat(e_u, e_i)                         [B, 1, 2c'] (→ Linear to width h if h != 2c')
        (interaction=True: concat(e_u, e_i, e_u ⊙ e_i)  [B, 1, 3c'], always → Linear to h)
    q = k learnable queries                      [B, k, h]
    N × { q = LN(q + SelfAttn(q))                post-LN BERT layer, dropout on each branch
          q = LN(q + CrossAttn(q → x))
          q = LN(q + FFN(q)) }
    A = normalize(Linear(mean_k q)) .view(d, r)  [B, d, r]   (L2 norm over the whole d·r vector)

One ``A_b`` per sample is shared by every targeted module of every layer (see ``injection.py``).
``c'`` is the CF model's :attr:`~corarec.cf.base.CFModel.embed_dim`: its dimension ``c`` plus one
coordinate per bias term (MF with biases: ``c + 2``), so the generator sees the whole CF score.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from corarec.errors import CorarecError
from corarec.utils.settings import Settings, setting


@dataclass
class GeneratorConfig(Settings):
    """Sizes of the collaborative weights generator (defaults: the paper's); CoRA's ``generator`` setting.
    The rank ``r`` of ``A_b`` is not here: it is CoRA's ``rank``, shared with the injector."""

    queries: int = setting(4, at_least=1, doc="k: number of learnable query vectors.")
    depth: int = setting(8, at_least=0, doc="""
        N: number of decoder blocks (self-attention, cross-attention, feed-forward).""")
    heads: int = setting(8, at_least=1, doc="Attention heads per block (must divide the width).")
    width: int | None = setting(None, at_least=1, doc="""
        h: the blocks' width; none = 2 × the CF dimension c (the paper: 512 for c = 256).""")
    ffn_mult: int = setting(4, at_least=1, doc="Feed-forward inner size as a multiple of the width (BERT: 4).")
    dropout: float = setting(0.1, at_least=0, below=1, doc="""
        Dropout on attention weights and on every residual branch (BERT: 0.1).""")
    input_norm: bool = setting(True, doc="""
        LayerNorm on the input token x (CF embeddings come at any scale; BLIP-2 normalises its encoder features
        the same way before the Q-Former).""")
    interaction: bool = setting(False, doc="""
        Append the element-wise product ``e_u ⊙ e_i`` to the input token (beyond the paper). A dot-product CF
        model's logit is then a *linear* function of the input (the sum of the product, biases included); from
        ``concat(e_u, e_i)`` alone the generator has to learn that bilinear form itself, which a few thousand
        training rows on a CPU do not teach it.""")
    query_init_std: float = setting(0.02, at_least=0, doc="Standard deviation of the queries' normal initialisation.")

class GeneratorBlock(nn.Module):
    """One post-LN BERT-style decoder block: self-attention, cross-attention, feed-forward."""

    def __init__(self, width: int, heads: int, ffn_mult: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.self_norm = nn.LayerNorm(width)
        self.cross_attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.cross_norm = nn.LayerNorm(width)
        self.ffn = nn.Sequential(nn.Linear(width, ffn_mult * width), nn.GELU(), nn.Linear(ffn_mult * width, width))
        self.ffn_norm = nn.LayerNorm(width)
        self.drop = nn.Dropout(dropout)

    def forward(self, q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        # q: [B, k, h] queries; x: [B, 1, h] the (user, item) token
        q = self.self_norm(q + self.drop(self.self_attn(q, q, q, need_weights=False)[0]))
        q = self.cross_norm(q + self.drop(self.cross_attn(q, x, x, need_weights=False)[0]))
        q = self.ffn_norm(q + self.drop(self.ffn(q)))
        return q  # [B, k, h]


class CollaborativeWeightsGenerator(nn.Module):
    """Maps CF embeddings ``e_u, e_i [B, c']`` to the per-sample factor ``A [B, d, r]``.

    ``rank`` is ``r``, ``cf_dim`` the CF model's dimension ``c`` (it sets the default width),
    ``embed_dim`` the size ``c'`` of the vectors it hands over (``c`` plus its bias coordinates;
    ``None`` = ``c``).
    """

    def __init__(self, cfg: GeneratorConfig, rank: int, cf_dim: int, d_model: int, embed_dim: int | None = None):
        super().__init__()
        self.cfg, self.rank, self.cf_dim, self.d_model = cfg, rank, cf_dim, d_model
        self.embed_dim = embed_dim or cf_dim
        width = cfg.width or 2 * cf_dim
        if width % cfg.heads:
            raise CorarecError(f"generator width {width} is not divisible by its {cfg.heads} heads")
        in_dim = (3 if cfg.interaction else 2) * self.embed_dim
        self.in_proj = nn.Linear(in_dim, width) if width != in_dim else nn.Identity()
        self.in_norm = nn.LayerNorm(width) if cfg.input_norm else nn.Identity()
        self.queries = nn.Parameter(torch.randn(cfg.queries, width) * cfg.query_init_std)  # [k, h]
        self.blocks = nn.ModuleList(
            GeneratorBlock(width, cfg.heads, cfg.ffn_mult, cfg.dropout) for _ in range(cfg.depth)
        )
        self.out = nn.Linear(width, d_model * rank)

    def forward(self, e_u: torch.Tensor, e_i: torch.Tensor) -> torch.Tensor:
        B = e_u.shape[0]
        parts = [e_u, e_i, e_u * e_i] if self.cfg.interaction else [e_u, e_i]
        x = torch.cat(parts, dim=-1).unsqueeze(1)  # [B, 1, 2c'] (interaction: [B, 1, 3c'])
        x = self.in_norm(self.in_proj(x))  # [B, 1, h]
        q = self.queries.unsqueeze(0).expand(B, -1, -1)  # [B, k, h]
        for block in self.blocks:
            q = block(q, x)  # [B, k, h]
        a = self.out(q.mean(dim=1))  # [B, d·r]
        a = F.normalize(a, dim=-1)  # unit L2 norm over the whole d·r vector
        return a.view(B, self.d_model, self.rank)  # [B, d, r]
