"""Matrix factorisation for CTR: ``logit = <p_u, q_i> + b_u + b_i + b``, trained with BCE.

The biases are on by default (``bias=False`` gives the paper's plain dot product). New users are
folded in from their history and new items take the mean train item (see :mod:`corarec.cf.dot`).
"""

from __future__ import annotations

from torch import Tensor

from corarec.cf.dot import DotCF


class MF(DotCF):
    """Matrix factorisation: the final tables are the embedding tables themselves."""

    kind = "mf"

    def tables(self) -> tuple[Tensor, Tensor]:
        return self.user_emb.weight, self.item_emb.weight  # [n_users, dim], [n_items, dim]
