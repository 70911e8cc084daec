"""Which decoder layers and which linear maps of the LLM a method adapts.

Shared by every method that changes the LLM's weights — CoRA's collaborative increments
(:mod:`corarec.methods.cora.injection`) and the peft LoRA of TALLRec / CoLLM
(:mod:`corarec.methods.peft_lora`) — so that ``--layers`` and ``--targets`` mean the same everywhere.
"""

from __future__ import annotations

from corarec.errors import CorarecError

SHORT_TARGETS = {
    "q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj",
    "gate": "gate_proj", "up": "up_proj", "down": "down_proj",
}
"""Short target names accepted on the command line (``q,k,v,o``) → Llama-style module suffixes."""


def parse_targets(spec: str | list[str]) -> list[str]:
    """``"q,k,v,o"`` or ``"q_proj,mlp.down_proj"`` → module-name suffixes."""
    names = [t.strip() for t in (spec.split(",") if isinstance(spec, str) else spec) if t.strip()]
    if not names:
        raise CorarecError(f"targets {spec!r}: name at least one module (e.g. q,k,v,o)")
    return [SHORT_TARGETS.get(t, t) for t in names]


def parse_layers(spec: str, n_layers: int) -> list[int]:
    """``"all"``, ``"top:N"`` (the last N layers) or an explicit list ``"0,1,5"`` → sorted layer indices."""
    spec = str(spec).strip()
    if spec == "all":
        return list(range(n_layers))
    try:
        if spec.startswith("top:"):
            n = int(spec[4:])
            if not 1 <= n <= n_layers:
                raise ValueError
            return list(range(n_layers - n, n_layers))
        layers = sorted({int(x) for x in spec.split(",") if x.strip()})
    except ValueError:
        raise CorarecError(f"layers {spec!r}: expected all, top:N (1 ≤ N ≤ {n_layers}) or a list like 0,1,5") from None
    if not layers or layers[0] < 0 or layers[-1] >= n_layers:
        raise CorarecError(f"layers {spec!r}: indices must lie in 0..{n_layers - 1}")
    return layers
