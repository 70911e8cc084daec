"""Run directories that outlive the code: every config.json records the run-directory format and the
library versions; a newer format is refused with one line; an older one (format 1: no "format", as
corarec wrote before formats were recorded) loads through the migration chain."""

from __future__ import annotations

import dataclasses
import json
import shutil
from importlib import metadata

import pytest
import torch
import transformers

import corarec
from corarec.training import loop as training
from corarec.cf import load_cf
from corarec.training.config import RunConfig, run_config_from_dict
from corarec.errors import CorarecError
from corarec.training.run_format import MIGRATIONS, RUN_FORMAT, STAMP_KEYS, check_and_migrate, migrate, settings_of
from corarec.training.runs import load_run, read_run_config
from tiny import assert_same_tensors

FORMAT_1_CORA = {  # config.json of a CoRA run as corarec wrote it before formats were recorded
    "method": "cora", "data": "/data/ml-1m", "out": "runs/cora", "cf": "runs/mf", "llm": "smollm2-135m",
    "seed": 0, "device": "auto", "bf16": True, "init": None,
    "train": {"lr": 0.001, "weight_decay": 0.001, "betas": [0.9, 0.999], "warmup_steps": 200,
              "warmup_start_lr": 1e-05, "batch_size": 8, "eval_batch_size": 16, "epochs": 1, "max_steps": None,
              "eval_every": 100, "patience": 20, "max_train_samples": None, "train_sample": "users",
              "max_eval_samples": None, "grad_clip": 1.0},
    "method_config": {"rank": 8}, "preset": "cpu",
}


def config_of(run) -> dict:
    return json.loads((run / "config.json").read_text())


def rewrite_config(run, change) -> None:
    config = config_of(run)
    change(config)
    (run / "config.json").write_text(json.dumps(config, indent=2))


def copy_run(source, target):
    return shutil.copytree(source, target, ignore=shutil.ignore_patterns("checkpoint"))


def old_layout(config: dict) -> None:
    """The settings as corarec wrote them before format 3: CoRA's generator settings at the top of
    ``method_config`` (``query_init_std`` was no setting), a CF run's ``num_layers`` named ``layers``."""
    if config.get("type") == "cf":
        config["layers"] = config.pop("num_layers")
    elif config.get("method") == "cora":
        generator = config["method_config"].pop("generator")
        assert generator.pop("query_init_std") == 0.02
        config["method_config"].update(generator)


def as_format_2(config: dict) -> None:
    """What corarec wrote from formats 2 on until format 3: format and versions, the old layout."""
    old_layout(config)
    config["format"] = 2


def as_format_1(config: dict) -> None:
    """What corarec wrote before formats were recorded: the old layout, no format, no versions."""
    old_layout(config)
    for key in STAMP_KEYS:
        del config[key]


def test_runs_written_now_record_the_format_and_library_versions(tiny_run):
    for run in (tiny_run.run, tiny_run.cf):
        config = config_of(run)
        assert config["format"] == RUN_FORMAT
        versions = config["versions"]
        assert versions["torch"] == torch.__version__ and versions["transformers"] == transformers.__version__
        assert versions["peft"] == metadata.version("peft") and versions["corarec"] == corarec.__version__


def test_runs_written_now_load(tiny_run):
    assert read_run_config(tiny_run.run).method == "cora"
    loaded = load_run(tiny_run.run, device="cpu")
    assert loaded.method.trainable_state_dict()
    assert load_cf(tiny_run.cf).n_users == loaded.dataset.n_users


def test_a_newer_format_is_refused_with_one_clear_line(tiny_run, tmp_path, capsys, monkeypatch):
    run, cf = copy_run(tiny_run.run, tmp_path / "run"), copy_run(tiny_run.cf, tmp_path / "cf")
    newer = RUN_FORMAT + 1
    for directory in (run, cf):
        rewrite_config(directory, lambda config: config.update(format=newer))
    expected = f"has format {newer}, this corarec reads up to {RUN_FORMAT}; upgrade corarec"
    with pytest.raises(CorarecError) as error:
        read_run_config(run)
    assert str(error.value) == f"run dir {run} {expected}"
    with pytest.raises(CorarecError) as error:
        load_cf(cf)
    assert str(error.value) == f"run dir {cf} {expected}"

    from corarec.cli import main

    monkeypatch.setattr("sys.argv", ["corarec", "evaluate", "--run", str(run)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err == f"error: run dir {run} {expected}"


@pytest.mark.parametrize("value", ["2", True, 0, -1, 1.5, None])
def test_a_format_that_is_not_a_whole_number_is_a_clear_error(tmp_path, value):
    with pytest.raises(CorarecError, match=r"config.json: \"format\" must be a whole number >= 1"):
        check_and_migrate({**FORMAT_1_CORA, "format": value}, tmp_path)


def test_format_1_config_migrates_to_the_current_format():
    migrated = migrate(FORMAT_1_CORA)
    assert migrated["format"] == RUN_FORMAT and set(migrated["versions"]) >= {"corarec", "torch", "transformers", "peft"}
    assert all(version is None for version in migrated["versions"].values())  # not recorded then: unknown
    assert settings_of(migrated) == FORMAT_1_CORA and "format" not in FORMAT_1_CORA  # the input is not changed
    config = run_config_from_dict(settings_of(check_and_migrate(FORMAT_1_CORA, "runs/cora")))
    assert isinstance(config, RunConfig) and config.method_config == {"rank": 8} and config.train.betas == (0.9, 0.999)
    assert migrate(migrated) == migrated  # the current format passes through unchanged


def test_every_older_format_has_a_migration():
    assert sorted(MIGRATIONS) == list(range(1, RUN_FORMAT))


FORMAT_2_CORA = {"format": 2, "versions": {"corarec": "0.1.0"}, **FORMAT_1_CORA,
                 "method_config": {"rank": 4, "alpha": 8.0, "queries": 2, "depth": 1, "heads": 2, "width": None,
                                   "ffn_mult": 4, "dropout": 0.1, "input_norm": True, "interaction": False,
                                   "score_mode": "yes"}}
FORMAT_2_CF = {"format": 2, "versions": {"corarec": "0.1.0"}, "type": "cf", "model": "lightgcn", "dim": 8,
               "layers": 3, "heads": 1, "n_users": 5, "n_items": 7}


def test_format_2_config_migrates_to_the_nested_generator_and_num_layers():
    from corarec.cf import CFConfig
    from corarec.methods.cora import CoRAConfig, GeneratorConfig
    from corarec.utils.settings import config_from_dict

    migrated = settings_of(migrate(FORMAT_2_CORA))
    assert migrated["method_config"] == {"rank": 4, "alpha": 8.0, "score_mode": "yes", "generator": {
        "queries": 2, "depth": 1, "heads": 2, "width": None, "ffn_mult": 4, "dropout": 0.1, "input_norm": True,
        "interaction": False, "query_init_std": 0.02}}
    config = run_config_from_dict(migrated)
    assert config_from_dict(CoRAConfig, config.method_config, "x") == CoRAConfig(
        rank=4, alpha=8.0, generator=GeneratorConfig(queries=2, depth=1, heads=2))
    cf = settings_of(migrate(FORMAT_2_CF))
    assert cf["num_layers"] == 3 and "layers" not in cf
    assert CFConfig.from_dict({k: v for k, v in cf.items() if k not in ("type", "n_users", "n_items")}).num_layers == 3
    other = {**FORMAT_2_CORA, "method": "tallrec", "method_config": {"rank": 4, "dropout": 0.1}}
    assert settings_of(migrate(other))["method_config"] == other["method_config"]  # only CoRA's settings move


@pytest.mark.parametrize("write_old", [as_format_1, as_format_2], ids=["format-1", "format-2"])
def test_older_run_directories_load_through_the_migration(tiny_run, tmp_path, write_old):
    run, cf = copy_run(tiny_run.run, tmp_path / "run"), copy_run(tiny_run.cf, tmp_path / "cf")
    for directory in (run, cf):
        rewrite_config(directory, write_old)
        assert config_of(directory).get("format") in (None, 2)
    assert "layers" in config_of(cf) and "depth" in config_of(run)["method_config"]
    assert "generator" not in config_of(run)["method_config"]
    rewrite_config(run, lambda config: config.update(cf=str(cf)))
    assert read_run_config(run) == dataclasses.replace(read_run_config(tiny_run.run), cf=str(cf))
    old, now = load_run(run, device="cpu"), load_run(tiny_run.run, device="cpu")
    assert_same_tensors(old.method.trainable_state_dict(), now.method.trainable_state_dict(), "CoRA")
    assert_same_tensors(load_cf(cf).state_dict(), load_cf(tiny_run.cf).state_dict(), "CF")
    assert config_of(run).get("format") == config_of(cf).get("format") != RUN_FORMAT  # reading never rewrites it


def test_resuming_a_format_1_run_writes_the_current_format(tiny_run, tmp_path):
    run = shutil.copytree(tiny_run.run, tmp_path / "run")
    rewrite_config(run, as_format_1)
    metrics = training.train(out=run, resume=True)
    assert metrics["finished"]
    config = config_of(run)
    assert config["format"] == RUN_FORMAT and config["versions"]["torch"] == torch.__version__
