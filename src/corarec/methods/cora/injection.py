"""Per-sample low-rank weight increments on the frozen LLM's linear maps — the one mechanism.

Every targeted linear map ``W`` (``[d_out, d_in]``) gets a forward hook that adds, per sample b::

    y_b = W x_b + (alpha / r) · P( A_bᵀ x_b )          i.e.  ΔW_b = (alpha / r) · (A_b P)ᵀ

- ``A [B, d, r]``: the generator's output for the batch, shared by all targeted modules, set for the
  duration of a forward pass with ``with injector.use(A): model(...)``. Outside that context the
  hooks return ``None`` and the model's outputs are bit-identical to the base model's.
- ``P [r, d_out]``: one trainable matrix per module, zero-initialised (so CoRA starts as the LLM).
- A module whose input size ``d_in`` differs from ``d`` (e.g. the FFN ``down_proj``, ``d_in`` = the
  FFN size) gets its own trainable input factor ``R [d_in, d]`` and uses ``R A_b [d_in, r]`` in place
  of ``A_b``. ``R`` is initialised N(0, 1/d_in), which keeps the columns' norms of ``A_b`` in
  expectation. It costs ``d_in · d`` parameters per module (0.9 M per SmolLM2 ``down_proj``).

Computed batched: ``(x [B, T, d_in] @ A [B, d_in, r]) @ P`` — two small matmuls, never ``W + ΔW_b``.

Shared input product (``share_inputs``): modules that read the same input tensor and use ``A_b``
itself (q, k and v read one ``x``; gate and up another) need ``x A_b [B, T, r]`` only once. With
``share_inputs`` on, the first such hook of a layer computes it and the others reuse it (matched by
tensor identity, so a different input is never mistaken for it); each module still applies its own
``P``. It is the same arithmetic on the same operands, so the outputs equal the plain path's.
Off by default (:data:`SHARE_INPUTS`): measured in ``benchmarks/throughput.py``, see docs/speed-experiments.md.
The hooks leave the model's module tree and ``state_dict`` keys untouched (no wrapper modules, no
forked modeling code). A targeted module is an ``nn.Linear`` or transformers' ``Conv1D`` (GPT-2:
the same map, ``W`` stored transposed, ``[d_in, d_out]``; the hook reads only ``x`` and the output,
so it is the same for both; :meth:`CollaborativeInjector.delta_weights` gives ``ΔW_b`` in each
module's own layout). What ``--targets`` means in each architecture's layout, fused modules such
as Phi-3's ``qkv_proj`` included: :mod:`corarec.llm.layouts`. The shared input product needs
nothing special for a fused module: it is one module reading one ``x``.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from corarec.errors import CorarecError
from corarec.llm.layouts import (layer_linear_maps, linear_sizes, matches_suffix, resolve_targets,
                                 stores_transposed)
from corarec.llm.model import decoder_layers
from corarec.methods.targets import parse_layers

SHARE_INPUTS = False
"""Default of :attr:`CollaborativeInjector.share_inputs` for new injectors (see the module docstring)."""


class LowRankDelta(nn.Module):
    """The trainable part of one targeted module: ``P`` and, when ``d_in != d``, the input factor ``R``."""

    def __init__(self, d: int, d_in: int, d_out: int, rank: int):
        super().__init__()
        self.P = nn.Parameter(torch.zeros(rank, d_out))  # [r, d_out], zero-init
        self.R = nn.Parameter(torch.randn(d_in, d) / math.sqrt(d_in)) if d_in != d else None  # [d_in, d]

    def factor(self, A: torch.Tensor) -> torch.Tensor:
        """This module's input factor: ``A [B, d, r]`` → ``[B, d_in, r]``."""
        return A if self.R is None else torch.matmul(self.R, A)

    def forward(self, x: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
        # x: [B, T, d_in], A: [B, d, r]
        return self.project(self.reduce(x, A))  # [B, T, r] → [B, T, d_out]

    def reduce(self, x: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
        """``x A'_b``: ``x [B, T, d_in]``, ``A [B, d, r]`` → ``[B, T, r]``."""
        # .to(x.dtype): a no-op in fp32 and under autocast; lets a bf16/fp16-loaded LLM run without autocast
        return torch.matmul(x, self.factor(A).to(x.dtype))

    def project(self, xA: torch.Tensor) -> torch.Tensor:
        """``(x A'_b) P``: ``[B, T, r]`` → ``[B, T, d_out]``."""
        return torch.matmul(xA, self.P.to(xA.dtype))

    def delta_weight(self, A: torch.Tensor, scale: float) -> torch.Tensor:
        """``ΔW_b = scale · (A'_b P)ᵀ`` for one sample's ``A [d, r]`` → ``[d_out, d_in]``."""
        return scale * (self.factor(A.unsqueeze(0))[0] @ self.P).T


class CollaborativeInjector(nn.Module):
    """Adds per-sample ``(alpha/r) · P(A_bᵀ x)`` to the chosen linear maps of a causal LM.

    Only the ``deltas`` (all ``P`` and ``R``) are parameters of this module; the LLM is referenced,
    not registered, so nothing of it appears in this module's ``state_dict``.
    """

    def __init__(
        self,
        model: nn.Module,
        d: int,
        rank: int,
        alpha: float,
        targets: str | list[str] = "q,k,v,o",
        layers: str = "all",
    ):
        super().__init__()
        self.d, self.rank, self.scale = d, rank, alpha / rank
        all_layers = decoder_layers(model)
        self.layers = parse_layers(layers, len(all_layers))
        self.targets = resolve_targets(model, targets)  # module-name suffixes in this model's layout
        self.deltas = nn.ModuleDict()  # deltas[str(layer)][delta_key(suffix)] → LowRankDelta
        self.module_names: dict[tuple[int, str], str] = {}  # (layer, suffix) → full module name in the LLM
        self._A: torch.Tensor | None = None
        self.share_inputs = SHARE_INPUTS
        """Compute ``x A_b`` once per layer for the modules reading the same ``x`` (module docstring)."""
        self._shared: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}  # layer → (x, A, x A_b)
        self._handles = []
        self._transposed: set[str] = set()  # names of the targeted Conv1D modules (weight [d_in, d_out])
        layer_names = {id(m): n for n, m in model.named_modules()}
        for i in self.layers:
            layer = all_layers[i]
            per_layer = nn.ModuleDict()
            for suffix in self.targets:
                name, linear = _find_one(layer, suffix, i, model)
                d_in, d_out = linear_sizes(linear)
                delta = per_layer[delta_key(suffix)] = LowRankDelta(d, d_in, d_out, rank)
                delta.to(linear.weight.device)
                self.module_names[(i, suffix)] = full_name = f"{layer_names[id(layer)]}.{name}"
                if stores_transposed(linear):
                    self._transposed.add(full_name)
                self._handles.append(linear.register_forward_hook(self._hook(delta, i)))
            self.deltas[str(i)] = per_layer

    @property
    def first_layer(self) -> int:
        """The lowest injected layer: inputs to it depend on the prompt only (see ``prefix_cache``)."""
        return self.layers[0]

    @contextmanager
    def use(self, A: torch.Tensor) -> Iterator[None]:
        """Inject the per-sample factors ``A [B, d, r]`` into every forward pass inside the block."""
        if A.dim() != 3 or A.shape[1:] != (self.d, self.rank):
            raise ValueError(f"A must be [B, {self.d}, {self.rank}], got {list(A.shape)}")
        previous, self._A = self._A, A
        self._shared.clear()
        try:
            yield
        finally:
            self._A = previous
            self._shared.clear()  # drop the references to this pass's inputs

    def _hook(self, delta: LowRankDelta, layer: int):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
            A = self._A
            if A is None:
                return None  # collaborative branch off: the base output, untouched
            x = args[0]  # [B, T, d_in]
            if x.shape[0] != A.shape[0]:
                raise RuntimeError(f"injected batch {A.shape[0]} does not match the module's input {list(x.shape)}")
            return output + (self.scale * delta.project(self._reduce(delta, layer, x, A))).to(output.dtype)  # [B, T, d_out]

        return hook

    def _reduce(self, delta: LowRankDelta, layer: int, x: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
        """``x A'_b [B, T, r]``, reused from the layer's previous hook when it read this same ``x`` with ``A_b``."""
        if not self.share_inputs or delta.R is not None:  # an own input factor R: nothing to share
            return delta.reduce(x, A)
        cached = self._shared.get(layer)
        if cached is not None and cached[0] is x and cached[1] is A:  # held references keep identities unique
            return cached[2]
        xA = delta.reduce(x, A)
        self._shared[layer] = (x, A, xA)
        return xA

    def delta(self, layer: int, suffix: str) -> LowRankDelta:
        """The trainable part of the module ``suffix`` (as in :attr:`targets`) of decoder layer ``layer``."""
        return self.deltas[str(layer)][delta_key(suffix)]

    def delta_weights(self, A: torch.Tensor) -> dict[str, torch.Tensor]:
        """``ΔW_b`` of every targeted module for one sample's ``A [d, r]``: LLM module name → the increment
        in the layout of that module's own ``weight`` (``[d_out, d_in]`` for ``nn.Linear``, the transpose
        for ``Conv1D``), so that ``weight + ΔW_b`` is always the merged weight."""
        weights = {}
        for (i, suffix), name in self.module_names.items():
            delta_w = self.delta(i, suffix).delta_weight(A, self.scale)  # [d_out, d_in]
            weights[name] = delta_w.T if name in self._transposed else delta_w
        return weights

    def remove(self) -> None:
        """Detach the hooks from the LLM (the LLM is then exactly the base model again)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()


def delta_key(suffix: str) -> str:
    """Key of a module's :class:`LowRankDelta` in :attr:`CollaborativeInjector.deltas`: the suffix, with
    ``-`` for ``.`` (``attn.c_proj`` → ``attn-c_proj``; a module key cannot hold a dot)."""
    return suffix.replace(".", "-")


def _find_one(layer: nn.Module, suffix: str, index: int, model: nn.Module) -> tuple[str, nn.Module]:
    """The single submodule of ``layer`` whose name ends with ``suffix``: an ``nn.Linear`` or ``Conv1D``."""
    hits = [(n, m) for n, m in layer.named_modules() if matches_suffix(n, suffix)]
    if len(hits) != 1:
        found = ", ".join(n for n, _ in hits) or "none"
        raise CorarecError(f"target {suffix!r} in layer {index} of {type(model).__name__}: expected exactly one "
                           f"module, found {found} "
                           f"(its linear maps: {', '.join(layer_linear_maps(layer))})")
    name, module = hits[0]
    if linear_sizes(module) is None:
        raise CorarecError(f"target {suffix!r} in layer {index} of {type(model).__name__} is a "
                           f"{type(module).__name__}, not an nn.Linear or Conv1D")
    return name, module
