"""One Method contract: one constructor, ``uses_cf`` on the class, frozen parts held outside the module
tree, the shared pieces in the base; the LLM path hands the CF model the history it was trained on;
and the package layers (data at the bottom, the baselines apart from CoRA)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pandas as pd
import pytest
import torch

from corarec.errors import CorarecError
from corarec.methods import Method, method_classes, method_names, uses_cf

SRC = Path(__file__).resolve().parents[1] / "src" / "corarec"


def test_every_method_is_built_the_same_way_and_declares_uses_cf_on_the_class():
    for name in method_names():
        _, cls = method_classes(name)
        params = list(inspect.signature(cls.__init__).parameters.values())[1:]
        assert [p.name for p in params] == ["cfg", "llm", "cf"], name
        assert params[2].default is None, name
        assert uses_cf(name) is cls.uses_cf and isinstance(cls.uses_cf, bool)
    assert Method.uses_cf is False
    assert {n for n in method_names() if uses_cf(n)} == {"cora", "collm"}


def _methods(tiny_run):
    """One of each method on a fresh copy of the tiny run's LLM, with its MF model where it reads one."""
    from corarec.cf import load_cf
    from corarec.data.schema import read_dataset
    from corarec.llm.model import load_llm

    dataset = read_dataset(tiny_run.data)
    for name in method_names():
        config_cls, cls = method_classes(name)
        llm = load_llm(str(tiny_run.llm), device="cpu", autocast=False)
        cf = load_cf(tiny_run.cf, dataset) if cls.uses_cf else None
        yield name, cls(config_cls(), llm, cf), llm


def test_frozen_llm_and_cf_model_are_held_outside_the_module_tree(tiny_run):
    for name, method, llm in _methods(tiny_run):
        own = {id(p) for p in method.parameters()}
        if method.uses_cf:
            cf = method.cf
            assert not any(id(p) in own for p in cf.parameters()), name
            assert not any(k.startswith("cf.") for k in method.state_dict()), name
            assert not any(p.requires_grad for p in cf.parameters()), name
            assert next(cf.parameters()).device == llm.device
            method.train()
            assert method.training and not cf.training, name  # train() never reaches the frozen CF model
            method.eval()
        else:
            assert method.cf is None
        reached = [p for n, p in llm.model.named_parameters() if "lora_" not in n and id(p) in own]  # via peft only
        assert all(not p.requires_grad for p in reached), name
        if name in ("cora", "icl"):
            assert not reached and not any(k.startswith(("llm.", "model.")) for k in method.state_dict()), name
        trainable = set(method.trainable_state_dict())
        assert trainable == {k for k, p in method.named_parameters() if p.requires_grad}, name
        assert (len(trainable) == 0) is (not method.trains), name


def test_a_method_that_reads_a_cf_model_refuses_to_be_built_without_one(tiny_llm):
    for name in ("cora", "collm"):
        config_cls, cls = method_classes(name)
        with pytest.raises(CorarecError, match=f"method '{name}' reads a CF model"):
            cls(config_cls(), tiny_llm)


def test_fold_in_rows_are_drawn_only_while_training(tiny_llm):
    from corarec.methods.icl import ICL, ICLConfig

    class Rows:  # what fold_in_rows reads of a batch: its length and device
        input_ids = torch.zeros(1000, 3, dtype=torch.long)

        def __len__(self) -> int:
            return 1000

    method, batch = ICL(ICLConfig(), tiny_llm), Rows()
    assert method.eval().fold_in_rows(batch, 0.5) is None
    method.train()
    assert method.fold_in_rows(batch, 0.0) is None
    assert bool(method.fold_in_rows(batch, 1.0).all())
    torch.manual_seed(3)
    drawn = method.fold_in_rows(batch, 0.3)
    torch.manual_seed(3)
    assert torch.equal(drawn, torch.rand(1000) < 0.3) and 200 < int(drawn.sum()) < 400


def test_llm_path_reads_as_much_cf_history_as_the_cf_run_was_trained_with(tiny_run, tmp_path):
    """A CF model trained with ``max_len`` 50 gets 50 history items from the LLM path, not 25."""
    from corarec.cf import train_cf
    from corarec.training.config import RunConfig
    from corarec.training.runs import build_run

    cf = tmp_path / "mf-50"
    train_cf(tiny_run.data, "mf", cf, dim=8, epochs=1, batch_size=32, max_len=50, progress=False)
    run = build_run(RunConfig(method="cora", data=str(tiny_run.data), out=str(tmp_path / "run"), cf=str(cf),
                              llm=str(tiny_run.llm), device="cpu", bf16=False))
    assert run.method.cf.max_len == 50 and run.batcher.cf_history_len == 50
    history = [i % 29 for i in range(40)]  # 40 liked items: more than the old fixed 25
    rows = pd.DataFrame({"user_id": [0], "item_id": [29], "label": [1], "history": [history]})
    cf_batch = run.batcher(rows).cf
    assert cf_batch.history.shape == (1, 50)
    assert cf_batch.history[0, -40:].tolist() == history and bool((cf_batch.history[0, :10] == -1).all())


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_data_is_the_bottom_layer_and_the_baselines_stand_apart_from_cora():
    for path in (SRC / "data").rglob("*.py"):
        above = {m for m in _imports(path) if m.startswith(("corarec.cf", "corarec.llm", "corarec.methods"))}
        assert not above, f"{path.name} imports {sorted(above)}"
    for path in (SRC / "methods").glob("*.py"):  # the baselines and the shared base, fields, targets and batches
        cora = {m for m in _imports(path) if m.startswith("corarec.methods.cora")}
        assert not cora, f"methods/{path.name} imports {sorted(cora)}"
    baselines = tuple(f"corarec.methods.{p.stem}" for p in (SRC / "methods").glob("*.py")
                      if p.stem not in ("__init__", "base", "fields", "targets", "batches"))
    for path in (SRC / "methods" / "cora").rglob("*.py"):
        from_baselines = {m for m in _imports(path) if m.startswith(baselines)}
        assert not from_baselines, f"methods/cora/{path.name} imports {sorted(from_baselines)}"
