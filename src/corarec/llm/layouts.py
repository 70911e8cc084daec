"""Which linear maps of a decoder layer ``--targets`` names, for each architecture's module layout.

The short names (``q,k,v,o,gate,up,down``) are Llama's module names; other layouts map onto them:

- Llama, Mistral, Qwen2, Qwen3, Gemma 3 (and every layout with these names): ``q_proj``,
  ``k_proj``, ``v_proj``, ``o_proj``, ``gate_proj``, ``up_proj``, ``down_proj`` as named;
- Phi-3: q, k, v → ``qkv_proj`` (fused); o → ``o_proj``; gate, up → ``gate_up_proj`` (fused);
  down → ``down_proj``;
- GPT-2 (``Conv1D``): q, k, v → ``c_attn`` (fused); o → ``attn.c_proj``; up → ``mlp.c_fc``;
  down → ``mlp.c_proj``; no gate (its FFN is not gated).

**Fused modules** (Phi-3's ``qkv_proj`` and ``gate_up_proj``, GPT-2's ``c_attn``) compute several of
the named maps from one input. The targets must then name the whole group (``q,k,v``; ``gate,up``),
which means the fused module: one update covering all its outputs. For CoRA that is the very same
function as separate q, k and v updates — they read one ``x`` and one ``A_b``, so
``ΔW_qkv = scale · (A_b [P_q | P_k | P_v])ᵀ`` stacks the three — with the same number of trained
parameters; for a LoRA it is one ``B A`` over the stacked outputs (its ``A`` shared by q, k and v).
A part of a group (``q,v`` on Phi-3, TALLRec's default) would need an update of some rows of the
fused weight only, which neither CoRA nor peft offers: it is refused with one clear error. A fused
module can also be named directly (``qkv_proj``, ``c_attn``), as can any module-name suffix.

**Module types**: ``nn.Linear`` (``y = x Wᵀ + b``, ``W [d_out, d_in]``) and transformers'
``Conv1D`` (GPT-2 and its kin: ``y = x W + b``, ``W [d_in, d_out]``) — the same map with the weight
stored transposed (:func:`linear_sizes`, :func:`stores_transposed`). Anything else is refused.
"""

from __future__ import annotations

from torch import nn

from corarec.errors import CorarecError
from corarec.llm.model import decoder_layers
from corarec.methods.targets import parse_targets

FUSED_GROUPS: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("q_proj", "k_proj", "v_proj"), ("qkv_proj", "c_attn")),  # Phi-3, GPT-2
    (("gate_proj", "up_proj"), ("gate_up_proj",)),  # Phi-3
)
"""(separate module names, the fused modules that compute them together)."""
OTHER_NAMES: dict[str, tuple[str, ...]] = {
    "o_proj": ("attn.c_proj",),  # GPT-2
    "up_proj": ("mlp.c_fc",),  # GPT-2 (no gate: its FFN is not gated)
    "down_proj": ("mlp.c_proj",),  # GPT-2
}
"""Llama module name → the same map's name in other layouts."""


def _conv1d_type() -> type:
    from transformers.pytorch_utils import Conv1D

    return Conv1D


def stores_transposed(module: nn.Module) -> bool:
    """Whether ``module`` is a ``Conv1D``: its weight is ``[d_in, d_out]``, the transpose of ``nn.Linear``'s."""
    return isinstance(module, _conv1d_type())


def linear_sizes(module: nn.Module) -> tuple[int, int] | None:
    """``(d_in, d_out)`` of an ``nn.Linear`` or ``Conv1D``; None for any other module."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if stores_transposed(module):
        return module.nx, module.nf
    return None


def matches_suffix(name: str, suffix: str) -> bool:
    """Whether the module name ``name`` is ``suffix`` or ends with ``"." + suffix`` (how ``--targets``
    name modules: ``q_proj`` matches ``self_attn.q_proj``, never ``self_attn.xq_proj``)."""
    return name == suffix or name.endswith("." + suffix)


def resolve_targets(model: nn.Module, targets: str | list[str]) -> list[str]:
    """``--targets`` (``"q,k,v,o"``, suffixes) → the module-name suffixes they mean in ``model``'s layout.

    Llama-style layouts keep the names as they are (``q_proj``, ...). A name missing from the layer is
    looked up among the fused modules and the other layouts' names (module docstring); a name found
    nowhere is left as it is, for the caller's "no such module" error.
    """
    requested = parse_targets(targets)
    layer = decoder_layers(model)[0]
    names = [n for n, _ in layer.named_modules() if n]

    def present(suffix: str) -> bool:
        return any(matches_suffix(n, suffix) for n in names)

    resolved: list[str] = []
    for suffix in requested:
        meant = suffix
        if not present(suffix):
            meant = _fused(suffix, requested, present, model, targets) or next(
                (other for other in OTHER_NAMES.get(suffix, ()) if present(other)), suffix)
        if meant not in resolved:
            resolved.append(meant)
    return resolved


def _fused(suffix: str, requested: list[str], present, model: nn.Module, targets) -> str | None:
    """The fused module that computes ``suffix`` in this layout, if any; a partial group is an error."""
    for group, fused_names in FUSED_GROUPS:
        fused = next((f for f in fused_names if present(f)), None)
        if suffix not in group or fused is None:
            continue
        if any(present(g) for g in group):  # separate modules exist after all: not this layout
            return None
        missing = [g.removesuffix("_proj") for g in group if g not in requested]
        if missing:
            short = ",".join(g.removesuffix("_proj") for g in group)
            raise CorarecError(
                f"targets {targets!r} on {type(model).__name__}: {short} are one fused module here ({fused}); "
                f"name all of {short} (one update covering all their outputs) or {fused} itself "
                f"(missing: {','.join(missing)})")
        return fused
    return None


def layer_linear_maps(layer: nn.Module) -> list[str]:
    """Names of a decoder layer's linear maps (``nn.Linear`` or ``Conv1D``), for error messages."""
    return [n for n, m in layer.named_modules() if n and linear_sizes(m) is not None]
