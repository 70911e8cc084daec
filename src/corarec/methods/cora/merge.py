"""Merge one (user, item) pair's collaborative weights into the LLM: ``W ← W + ΔW_b``.

This is the paper's "merging into the LLM's weights", done explicitly for one sample — for export
(a plain HF model that answers for that pair with no CoRA code) and for checking the batched
injection. Training and scoring never do this; they use :mod:`injection`.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch
from torch import nn

from corarec.cf.base import CFBatch
from corarec.errors import CorarecError

if TYPE_CHECKING:
    from corarec.methods.cora.model import CoRA


def merged_state_dict(cora: "CoRA", cf_batch: CFBatch, fold_in: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The LLM's state dict with ``W + ΔW_b`` written into every targeted weight, for the single
    row of ``cf_batch`` (the generator runs in eval mode: no dropout)."""
    if len(cf_batch) != 1:
        raise CorarecError(f"merge: expects one (user, item) row, got {len(cf_batch)}")
    A = cora.factors(cf_batch, fold_in=fold_in, deterministic=True)[0]  # [d, r]
    with torch.no_grad():
        state = {k: v.detach().clone() for k, v in cora.llm.model.state_dict().items()}
        for name, delta in cora.injector.delta_weights(A).items():
            w = state[f"{name}.weight"]
            state[f"{name}.weight"] = (w.float() + delta.float()).to(w.dtype)  # [d_out, d_in]
    return state


def merge(cora: "CoRA", cf_batch: CFBatch, fold_in: torch.Tensor | None = None) -> nn.Module:
    """A plain copy of the LLM (no hooks, nothing of CoRA) with ``W + ΔW_b`` for one pair."""
    state = merged_state_dict(cora, cf_batch, fold_in)
    model = copy.deepcopy(cora.llm.model)
    for name in cora.injector.module_names.values():
        model.get_submodule(name)._forward_hooks.clear()  # drop the copied injection hooks
    model.load_state_dict(state)
    return model
