"""LLM methods behind one interface (:class:`~corarec.methods.base.Method`).

``cora`` is the paper's method; ``icl``, ``tallrec`` and ``collm`` are its baselines. Each method
has a config dataclass (its settings, paper defaults) and is built the same way,
``Method(cfg, llm, cf=None)``, from its config, the frozen LLM and, where it uses one
(:attr:`~corarec.methods.base.Method.uses_cf`), the frozen CF model. CoRA and TALLRec also offer a
CF-anchored score (``anchor = "cf"``, beyond the paper), under which TALLRec reads a CF model too.
"""

from __future__ import annotations

import importlib
from typing import Any

from corarec.errors import CorarecError
from corarec.methods.base import Method

# name → (module, config class, method class)
REGISTRY: dict[str, tuple[str, str, str]] = {
    "cora": ("corarec.methods.cora", "CoRAConfig", "CoRA"),
    "icl": ("corarec.methods.icl", "ICLConfig", "ICL"),
    "tallrec": ("corarec.methods.tallrec", "TallRecConfig", "TallRec"),
    "collm": ("corarec.methods.collm", "CoLLMConfig", "CoLLM"),
}


def method_names() -> list[str]:
    return sorted(REGISTRY)


def method_classes(name: str) -> tuple[type, type]:
    """(config dataclass, method class) of a method name."""
    if name not in REGISTRY:
        raise CorarecError(f"unknown method '{name}' (known: {', '.join(method_names())})")
    module_name, config_name, class_name = REGISTRY[name]
    module = importlib.import_module(module_name)
    return getattr(module, config_name), getattr(module, class_name)


def uses_cf(name: str, cfg: Any = None) -> bool:
    """Whether the method reads a CF model: by its class (:attr:`Method.uses_cf`) or, given its settings
    ``cfg``, also when they ask for one (TALLRec with ``anchor = "cf"``; :meth:`Method.reads_cf`)."""
    cls = method_classes(name)[1]
    return cls.uses_cf if cfg is None else cls.reads_cf(cfg)


__all__ = ["Method", "REGISTRY", "method_names", "method_classes", "uses_cf"]
