"""A peft LoRA on the frozen LLM: the adapter TALLRec trains and CoLLM reuses as its stage 1.

``attach_lora`` wraps the LLM in a :class:`peft.PeftModel` whose LoRA layers are injected *in
place* into ``llm.model`` — scoring through ``llm.model`` (:func:`corarec.llm.model.answer_logits`)
therefore goes through the adapter. Only the LoRA matrices train; every weight of the LLM stays
frozen (peft sets ``requires_grad`` that way).

Besides the run's ``model.safetensors``, the adapter is written in peft's own format to
``RUN/adapter/`` (``adapter_config.json`` + ``adapter_model.safetensors``), so that plain peft
(``PeftModel.from_pretrained(base_model, "RUN/adapter")``) loads it without corarec.

``targets`` mean the same modules as for CoRA in every architecture's layout
(:mod:`corarec.llm.layouts`): on Phi-3 ``q,k,v`` is the fused ``qkv_proj`` (one LoRA over the three
outputs) and a part of it (``q,v``) is refused; on GPT-2 the targets are ``Conv1D`` modules, which
peft adapts with ``fan_in_fan_out`` (their weight is stored ``[d_in, d_out]``).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from corarec.errors import CorarecError
from corarec.llm.layouts import matches_suffix, resolve_targets, stores_transposed
from corarec.utils.io import atomic_dir, load_tensors, read_json
from corarec.methods.targets import parse_layers

ADAPTER_DIR = "adapter"
"""Sub-directory of a run that holds the adapter in peft's format."""


def attach_lora(llm, rank: int, alpha: float, dropout: float, targets: str, layers: str = "all") -> nn.Module:
    """Inject a LoRA (``W x + (alpha/r) · B A x``, ``B`` zero-initialised) into ``llm.model``.

    ``targets``: ``q,v`` style short names or module-name suffixes (as for CoRA); ``layers``:
    ``all``, ``top:N`` or ``0,1,5``. Returns the :class:`peft.PeftModel` (it holds the LoRA weights).
    """
    from peft import LoraConfig, get_peft_model

    if rank < 1:
        raise CorarecError(f"LoRA rank must be at least 1, got {rank}")
    if not 0.0 <= dropout < 1.0:
        raise CorarecError(f"LoRA dropout must lie in [0, 1), got {dropout}")
    layer_ids = parse_layers(layers, llm.n_layers)
    target_modules = resolve_targets(llm.model, targets)  # module-name suffixes in this model's layout
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules,
        fan_in_fan_out=_targets_conv1d(llm.model, target_modules),
        layers_to_transform=None if len(layer_ids) == llm.n_layers else layer_ids,
        bias="none",
    )
    try:
        model = get_peft_model(llm.model, config)
    except ValueError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CorarecError(f"LoRA targets {targets!r} / layers {layers!r} on {llm.name}: {first}") from None
    model.base_model.model.requires_grad_(False)  # the LLM: frozen (peft already does this) ...
    for name, param in model.named_parameters():
        if "lora_" in name:  # ... the LoRA matrices: trained
            param.requires_grad_(True)
    return model


def _targets_conv1d(model: nn.Module, suffixes: list[str]) -> bool:
    """Whether the first module named by ``suffixes`` is a ``Conv1D`` (GPT-2 style: all of them are);
    peft's ``fan_in_fan_out`` then matches their ``[d_in, d_out]`` weights (peft corrects a mismatch)."""
    for name, module in model.named_modules():
        if any(matches_suffix(name, s) for s in suffixes):
            return stores_transposed(module)
    return False


def save_adapter(peft_model: nn.Module, run_dir: str | Path) -> Path:
    """Write the adapter in peft's format to ``run_dir/adapter`` (atomically); returns that path."""
    out = Path(run_dir) / ADAPTER_DIR
    with atomic_dir(out) as tmp:
        peft_model.save_pretrained(str(tmp), safe_serialization=True)
    return out


def load_adapter(peft_model: nn.Module, adapter_dir: str | Path) -> None:
    """Load weights saved by :func:`save_adapter` (or by peft) into ``peft_model``'s LoRA."""
    from peft import set_peft_model_state_dict

    adapter_dir = Path(adapter_dir)
    saved = read_json(adapter_dir / "adapter_config.json")
    own = peft_model.peft_config["default"]
    for key in ("r", "lora_alpha"):
        if saved.get(key) != getattr(own, key):
            raise CorarecError(f"{adapter_dir}: adapter has {key}={saved.get(key)}, this model {getattr(own, key)}")
    weights = load_tensors(adapter_dir / "adapter_model.safetensors")
    result = set_peft_model_state_dict(peft_model, weights)
    missing = [k for k in result.missing_keys if "lora_" in k]
    if result.unexpected_keys or missing:
        what = f"unexpected {result.unexpected_keys[:2]}" if result.unexpected_keys else f"missing {missing[:2]}"
        raise CorarecError(f"{adapter_dir}: adapter does not fit this model's LoRA ({what})")
