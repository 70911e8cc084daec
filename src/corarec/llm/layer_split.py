"""Running the frozen LLM up to a decoder layer, or from one.

- :func:`layer_inputs` ends a forward pass where decoder layer L begins and returns the hidden states
  entering it (what the prefix cache stores);
- :func:`start_at_layer` makes the model's own forward skip layers ``< L`` and feed given hidden states
  into layer L (how a method reads the prefix cache).

Both work through forward pre-hooks on layer L and pass-through stand-ins for the skipped layers, so the
model's forward (masks, rotary positions, final norm, ``logits_to_keep``) does the rest — no forked
modeling code.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from corarec.llm.model import LLM, decoder_layers, position_ids


class _Stop(Exception):
    """Raised by the capture hook to end a forward pass at layer L."""


class _PassThrough(nn.Module):
    """Stands in for a skipped decoder layer: returns its input hidden states unchanged."""

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return hidden_states


def layer_inputs(llm: LLM, layer: int, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Hidden states entering decoder ``layer`` for a batch: ``[B, T, d]`` (no gradient)."""
    captured: list[torch.Tensor] = []

    def capture(module, args, kwargs):
        captured.append(args[0] if args else kwargs["hidden_states"])
        raise _Stop

    handle = decoder_layers(llm.model)[layer].register_forward_pre_hook(capture, with_kwargs=True)
    try:
        with torch.no_grad(), llm.autocast():
            llm.model(input_ids=input_ids, attention_mask=attention_mask,
                      position_ids=position_ids(attention_mask), use_cache=False)
    except _Stop:
        pass
    finally:
        handle.remove()
    return captured[0]  # [B, T, d]


@contextmanager
def start_at_layer(llm: LLM, layer: int, hidden: torch.Tensor) -> Iterator[None]:
    """Inside the block, a forward pass of ``llm.model`` skips layers ``< layer`` and feeds
    ``hidden [B, T, d]`` into ``layer`` (the input ids still have to be passed, for shapes)."""
    layers = decoder_layers(llm.model)
    originals = [layers[i] for i in range(layer)]

    def swap_in(module, args, kwargs):
        if args:
            return (hidden.to(args[0].dtype),) + tuple(args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden.to(kwargs["hidden_states"].dtype)}

    handle = layers[layer].register_forward_pre_hook(swap_in, with_kwargs=True)
    for i in range(layer):
        layers[i] = _PassThrough()
    try:
        yield
    finally:
        for i, original in enumerate(originals):
            layers[i] = original
        handle.remove()
