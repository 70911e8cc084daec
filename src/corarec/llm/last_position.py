"""The last decoder layer's position-wise maps, run for the answer slot only.

A row's score reads the logits of its last position only (``logits_to_keep=1``,
:func:`corarec.llm.model.answer_logits`). In the last decoder layer no other position's output is ever
read then: attention still needs every position's keys and values (q, k and v run for every token), but
the attention output projection (``o``) and the feed-forward block act on each position alone, so for the
score they need to run for the last position only. Inside :func:`last_position_only` they do: a forward
pre-hook hands each of them the last position ``[B, 1, ·]`` of its input, and a forward hook pads its output
back to ``[B, T, ·]`` with zeros, where nothing reads it (the final norm is position-wise and the head keeps
the last position). Hooks, not replaced modules, and only for the block: the model's structure, its state dict
and any adapter or CoRA hook on these modules stay as they are (those see the last position too; a hook that
runs after the padding adds its last-position term to every position, which nothing reads either).

On SmolLM2 these maps hold 84 % of a layer's weights: the last layer's cost falls to the keys, values and
queries of every token, ~10 % less work when the top 8 layers run (fast mode), ~3 % for all 30. Scores are those
of the whole computation up to float summation order (tested). :data:`ENABLED` = False turns it off (the plain
path ``benchmarks/throughput.py`` measures it against). Layouts without these modules keep the whole layer.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

import torch.nn.functional as F
from torch import nn

ENABLED = True
"""Run the last layer's ``o`` and feed-forward for the answer slot only when a score is computed."""
POSITION_WISE = ("mlp", "self_attn.o_proj", "attn.c_proj")
"""Names (suffixes) of the last layer's position-wise modules: the feed-forward block and the attention's
output projection (``attn.c_proj`` in GPT-2's layout)."""

_lengths: contextvars.ContextVar[dict[int, int] | None] = contextvars.ContextVar("corarec_last_position", default=None)
"""Inside :func:`last_position_only` (per thread): id(module) → the sequence length its pre-hook cut off, for its
forward hook to pad back to. None elsewhere: hooks another thread put on a shared model stay idle here."""


@contextlib.contextmanager
def last_position_only(model: nn.Module) -> Iterator[None]:
    """Inside the block, forward passes of ``model`` (a causal LM) in this thread compute its last layer's
    position-wise maps for the last position only: for callers that read nothing but the last position's
    logits. The hooks exist only inside the block (an exported or copied model never carries them)."""
    from corarec.llm.model import decoder_layers

    if not ENABLED:
        yield
        return
    handles = []
    token = _lengths.set({})
    try:
        for module in position_wise_modules(decoder_layers(model)[-1]):
            handles.append(module.register_forward_pre_hook(_take_last, with_kwargs=True))
            handles.append(module.register_forward_hook(_pad_back, with_kwargs=True))
        yield
    finally:
        _lengths.reset(token)  # a length left by an exception inside a module goes with it
        for handle in handles:
            handle.remove()


def position_wise_modules(layer: nn.Module) -> list[nn.Module]:
    """The modules of ``layer`` named in :data:`POSITION_WISE` (none when the layout has other names)."""
    return [module for name, module in layer.named_modules()
            if any(name == suffix or name.endswith("." + suffix) for suffix in POSITION_WISE)]


def _take_last(module: nn.Module, args: tuple, kwargs: dict):
    lengths = _lengths.get()
    # only a module called with its hidden states alone: any other per-position input would need cutting too
    if lengths is None or len(args) != 1 or kwargs or args[0].dim() != 3 or args[0].shape[1] == 1:
        return None
    x = args[0]  # [B, T, d_in]
    lengths[id(module)] = x.shape[1]
    return (x[:, -1:],), kwargs  # [B, 1, d_in]


def _pad_back(module: nn.Module, args: tuple, kwargs: dict, output):
    lengths = _lengths.get()
    length = lengths.pop(id(module), None) if lengths is not None else None
    if length is None:
        return None
    tensor = output[0] if isinstance(output, tuple) else output  # [B, 1, d_out]
    padded = F.pad(tensor, (0, 0, length - 1, 0))  # [B, T, d_out]: zeros before the last position
    return (padded,) + tuple(output[1:]) if isinstance(output, tuple) else padded
