"""Supply-chain safety: code shipped with a model folder never runs, and the supported install pins torch."""

from __future__ import annotations

import ast
import io
import json
import re
import shutil
from pathlib import Path

import pytest

import corarec.llm.model
from corarec.errors import CorarecError
from corarec.llm.model import load_llm
from corarec.llm.packaged import bundled_model_dir

ROOT = Path(__file__).resolve().parents[1]

PLANTED = """from pathlib import Path
Path({marker!r}).write_text("planted code ran")
from transformers import PretrainedConfig


class PlantedConfig(PretrainedConfig):
    model_type = "planted"
"""


def planted_model_dir(root: Path, marker: Path, auto_map_in: str) -> Path:
    """A model folder (the bundled tokenizer, a config naming a custom architecture) whose custom
    code would write ``marker`` if it ever ran; ``auto_map_in`` names the file that points at it."""
    model = root / "planted-model"
    model.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(bundled_model_dir() / name, model / name)
    for module in ("configuration_planted", "modeling_planted", "tokenization_planted"):
        (model / f"{module}.py").write_text(PLANTED.format(marker=str(marker)))
    auto_map = {"AutoConfig": "configuration_planted.PlantedConfig",
                "AutoModelForCausalLM": "modeling_planted.PlantedForCausalLM",
                "AutoTokenizer": ["tokenization_planted.PlantedTokenizer", None]}
    config = {"model_type": "planted", "architectures": ["PlantedForCausalLM"], "hidden_size": 8}
    if auto_map_in == "config.json":
        config["auto_map"] = auto_map
    else:
        tokenizer_config = json.loads((model / "tokenizer_config.json").read_text())
        tokenizer_config["auto_map"] = {"AutoTokenizer": auto_map["AutoTokenizer"]}
        (model / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
        config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64,
                  "num_attention_heads": 4, "intermediate_size": 96, "num_hidden_layers": 1}
    (model / "config.json").write_text(json.dumps(config))
    return model


@pytest.mark.parametrize("auto_map_in", ["config.json", "tokenizer_config.json"])
def test_a_model_folder_naming_custom_code_is_refused_and_its_code_never_runs(tmp_path, monkeypatch, auto_map_in):
    marker = tmp_path / "marker"
    model = planted_model_dir(tmp_path, marker, auto_map_in)
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n" * 8))  # a user who answers yes to any prompt
    with pytest.raises(CorarecError, match=rf"{auto_map_in}: it names custom code .*trust_remote_code=False") as e:
        load_llm(str(model))
    assert "\n" not in str(e.value)
    assert not marker.exists()


def test_transformers_itself_is_told_never_to_run_model_code(tmp_path, monkeypatch):
    """With corarec's own check bypassed, ``trust_remote_code=False`` still refuses (no prompt read)."""
    marker = tmp_path / "marker"
    model = planted_model_dir(tmp_path, marker, "config.json")
    monkeypatch.setattr(corarec.llm.model, "refuse_custom_code", lambda path, name: None)
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n" * 8))
    with pytest.raises(CorarecError, match="never runs code shipped with a model"):
        load_llm(str(model))
    assert not marker.exists()


def test_every_from_pretrained_call_passes_trust_remote_code_false():
    """Every ``*.from_pretrained(...)`` in the library and the benchmarks says ``trust_remote_code=False``."""
    calls = 0
    for source in [*sorted((ROOT / "src").rglob("*.py")), *sorted((ROOT / "benchmarks").rglob("*.py"))]:
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "from_pretrained":
                calls += 1
                flags = [k.value for k in node.keywords if k.arg == "trust_remote_code"]
                assert flags and isinstance(flags[0], ast.Constant) and flags[0].value is False, (
                    f"{source.relative_to(ROOT)}:{node.lineno}: from_pretrained without trust_remote_code=False")
    assert calls >= 4  # the tokenizer and the model, from a directory and from the bundled GGUF


def test_requirements_pin_torch_and_the_package_install_cannot_pull_another():
    pins = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    torch_pins = [p for p in pins if re.match(r"torch\b", p)]
    assert len(torch_pins) == 1 and re.fullmatch(r"torch==\d+\.\d+\.\d+", torch_pins[0]), torch_pins
    setup = [line.strip() for line in (ROOT / "Makefile").read_text().splitlines()]
    requirements = next(i for i, line in enumerate(setup) if re.search(r"pip install .*-r requirements\.txt", line))
    package = next(i for i, line in enumerate(setup) if re.search(r"pip install .*(-e )?\.$", line))
    assert requirements < package, "make setup must install the pinned requirements before the package"
    assert "--no-deps" in setup[package], "the package install must not resolve (and pull) dependencies itself"


def test_every_library_export_stays_the_function_after_its_package_is_imported():
    import importlib

    import corarec

    for name, module in corarec._EXPORTS.items():
        importlib.import_module(module)  # a subpackage named like an export would replace the attribute
        assert callable(getattr(corarec, name)) and getattr(corarec, name).__name__ == name, name
