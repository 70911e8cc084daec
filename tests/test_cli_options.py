"""The settings options of `corarec train` and `corarec train-cf` come from the config dataclasses:
one option per field (a nested one by its flat name), typed as the field, its help the field's
description; the command passes them to the library function of the same name, which takes exactly
the options the command has."""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from dataclasses import dataclass

import pytest
import typer
from typer.testing import CliRunner

from corarec.cf.config import CF_MODELS, CFConfig, make_config
from corarec import cli
from corarec.cli import app
from corarec.methods import REGISTRY, method_classes
from corarec.training.config import TrainConfig
from corarec.utils.options import flat_fields, nest, plain, setting_options
from corarec.utils.settings import Settings, doc_of, setting

runner = CliRunner()
CONFIGS = [TrainConfig, CFConfig, *(method_classes(name)[0] for name in REGISTRY)]


def command(name: str):
    return typer.main.get_command(app).commands[name]


def library_arguments(function) -> set[str]:
    return {p.name for p in inspect.signature(function).parameters.values() if p.kind is not p.VAR_KEYWORD}


def settings_of(*configs) -> dict:
    found = {}
    for config in configs:
        found.update(flat_fields(config))
    return found


def check_option(param, annotation, flat, where: str) -> None:
    """``param``: the option as the command line has it; ``annotation``: its type in the command's signature."""
    flag = "--" + flat.name.replace("_", "-")
    bare = [a for a in typing.get_args(flat.hint) if a is not type(None)] if typing.get_origin(flat.hint) in (
        typing.Union, types.UnionType) else [flat.hint]
    wanted = typing.Tuple[typing.get_args(bare[0])] if typing.get_origin(bare[0]) is tuple else bare[0]
    assert annotation == typing.Optional[wanted], where
    assert param.opts == [flag] and param.secondary_opts == (["--no-" + flag[2:]] if wanted is bool else []), where
    assert param.default is None, where  # not given: the preset and the dataclass default apply
    assert plain(flat.doc).removesuffix(".") in param.help, where


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.__name__)
def test_every_setting_has_a_description(config):
    assert all(doc_of(f) for f in dataclasses.fields(config)), config


def test_train_options_are_the_run_arguments_and_every_setting_and_train_takes_them_all():
    from corarec.training.loop import train

    params = {p.name: p for p in command("train").params if p.name != "help"}
    settings = settings_of(TrainConfig, *(method_classes(name)[0] for name in REGISTRY))
    assert set(params) == library_arguments(train) | set(settings)
    assert not library_arguments(train) & set(settings)
    assert "generator_depth" in settings and "depth" not in settings  # the option says what it sets
    annotations = inspect.signature(cli.train).parameters
    for name, flat in settings.items():
        check_option(params[name], annotations[name].annotation, flat, name)


def test_train_cf_options_are_its_arguments_and_every_cf_setting_and_train_cf_takes_them_all():
    from corarec.cf import train_cf

    params = {p.name: p for p in command("train-cf").params if p.name != "help"}
    settings = {k: v for k, v in flat_fields(CFConfig).items() if k != "model"}
    assert set(params) == (library_arguments(train_cf) - {"progress"}) | set(settings)
    assert not library_arguments(train_cf) & set(settings)
    annotations = inspect.signature(cli.train_cf).parameters
    for name, flat in settings.items():
        check_option(params[name], annotations[name].annotation, flat, name)
    assert "num_layers" in params and "layers" not in params  # an int here; --layers of `train` is a spec string


def test_help_names_each_methods_and_each_models_default():
    help_of = {p.name: p.help for p in command("train").params}
    assert "(cora: 16; tallrec, collm: 8)." in help_of["rank"]
    assert "(cora: 8)." in help_of["generator_depth"] and "(default: 0.001)." in help_of["lr"]
    cf_help = {p.name: p.help for p in command("train-cf").params}
    dims = {model: make_config(model).dim for model in CF_MODELS}
    assert f"(mf, lightgcn: {dims['mf']}; sasrec: {dims['sasrec']})." in cf_help["dim"]


def test_every_preset_option_names_every_bundled_preset():
    from corarec.utils.presets import bundled_presets
    names = bundled_presets()
    assert {"cpu", "cpu-full", "demo", "paper"} <= set(names)
    options = [(name, p) for name, cmd in typer.main.get_command(app).commands.items()
               for p in cmd.params if p.name == "preset"]
    assert len(options) >= 3
    for name, param in options:
        missing = [n for n in names if f"'{n}'" not in param.help]
        assert not missing, f"corarec {name} --preset help does not name {missing}"


def test_the_commands_pass_the_options_to_the_library_functions(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr("corarec.training.loop.train", lambda **kwargs: seen.update(kwargs) or {})
    result = runner.invoke(app, ["train", "--data", "d", "--out", "o", "--generator-depth", "3", "--lr", "0.01",
                                 "--cache-prefix", "--betas", "0.8", "0.9"])
    assert result.exit_code == 0, result.output
    assert (seen["generator_depth"], seen["lr"], seen["cache_prefix"], seen["betas"]) == (3, 0.01, True, (0.8, 0.9))
    assert seen["rank"] is None and seen["method"] is None and seen["resume"] is False  # None: CoRA (not given)

    seen.clear()
    metrics = {"valid": {}, "test": {}, "best_epoch": 1}
    monkeypatch.setattr("corarec.cf.train_cf", lambda **kwargs: seen.update(kwargs) or metrics)
    monkeypatch.setattr("corarec.evaluation.evaluate.format_metrics", lambda *args: "")
    result = runner.invoke(app, ["train-cf", "--data", "d", "--model", "lightgcn", "--out", "o", "--num-layers", "3",
                                 "--no-bias"])
    assert result.exit_code == 0, result.output
    assert (seen["num_layers"], seen["bias"], seen["dim"], seen["preset"]) == (3, False, None, None)
    result = runner.invoke(app, ["train-cf", "--data", "d", "--model", "lightgcn", "--out", "o", "--layers", "3"])
    assert result.exit_code == 2 and "No such option: --layers" in result.output  # renamed --num-layers


def test_flat_names_nest_back_and_unknown_ones_are_errors():
    from corarec.errors import CorarecError
    from corarec.methods.cora import CoRAConfig

    assert nest(CoRAConfig, {"generator_depth": 2, "rank": 4}, "x") == {"generator": {"depth": 2}, "rank": 4}
    with pytest.raises(CorarecError, match=r"^x: unknown setting\(s\) depth; known: rank, "):
        nest(CoRAConfig, {"depth": 2}, "x")


def test_a_shared_option_needs_one_meaning():
    @dataclass
    class A(Settings):
        size: int = setting(1, doc="Rows per step.")

    @dataclass
    class B(Settings):
        size: int = setting(2, doc="Columns per row.")

    @dataclass
    class C(Settings):
        size: int = setting(3)

    assert [o.help for o in setting_options([("a", A), ("b", A())])] == ["Rows per step (default: 1)."]
    with pytest.raises(ValueError, match="'size' has different types or descriptions in a, b"):
        setting_options([("a", A), ("b", B)])
    with pytest.raises(ValueError, match="'size' has no description"):
        setting_options([("c", C)])


def test_torchrun_passes_every_option_of_the_launched_commands_to_corarec():
    """`torchrun ... -m corarec.cli train|evaluate ...`: torchrun's own parser sees the script's options too and
    stops at one that abbreviates two of its own (`--run` → `--run-path`, `--run_path`). Every option of the
    two commands that run under a launcher reaches corarec under at least one of its names, and the commands
    the docs give for launchers parse."""
    import re
    from pathlib import Path

    from torch.distributed.run import get_args_parser

    def passes(args: list[str]) -> bool:
        try:
            parsed = get_args_parser().parse_args(["--standalone", "--nproc_per_node", "2", "-m", "corarec.cli", *args])
        except SystemExit:
            return False
        return parsed.training_script == "corarec.cli" and parsed.training_script_args == args

    assert not passes(["evaluate", "--run", "x"])  # the reason for --run-dir: the check can fail
    for name in ("train", "evaluate"):
        for param in command(name).params:
            names = [o for o in param.opts if o.startswith("--")]
            assert any(passes([name, o, "1"]) for o in names), f"{name}: torchrun swallows {names}"
    root = Path(__file__).resolve().parent.parent
    documented = [line for doc in ("README.md", "docs/scaling.md") for line in (root / doc).read_text().splitlines()
                  if line.startswith(("torchrun", "OMP_NUM_THREADS=1 torchrun")) and "corarec.cli" in line]
    assert len(documented) >= 4
    for line in documented:
        script = re.split(r"\s+#", line)[0].split("corarec.cli", 1)[1].split()
        assert passes([a for a in script if a not in ("...", "\\")]), line
