"""Every setting is checked by type and range in one place (:mod:`corarec.utils.settings`): a bad value in
``config.json``, a preset or an option is one error line naming the setting, the value and the file."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

from corarec.cf.config import CFConfig
from corarec.training.config import RunConfig, TrainConfig, apply_fields, run_config_from_dict, to_dict
from corarec.errors import CorarecError
from corarec.methods import method_classes, method_names
from corarec.training.runs import read_run_config
from corarec.utils.settings import Settings, SettingError, check_option


def one_line(match: str, call, *args, **kwargs) -> str:
    """Run ``call``; it must raise one CorarecError line matching ``match``."""
    with pytest.raises(CorarecError, match=match) as info:
        call(*args, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


# --- config.json of a run ---------------------------------------------------------------------------

@pytest.fixture
def run_dir(tmp_path) -> Path:
    """A run directory holding only a valid CoRA ``config.json`` (nothing is loaded from it)."""
    run = tmp_path / "run"
    run.mkdir()
    config = RunConfig(method="cora", data="d", out=str(run), cf="c", method_config={"rank": 4})
    (run / "config.json").write_text(json.dumps(to_dict(config)))
    return run


def edit_config(run: Path, change) -> None:
    """Rewrite ``run/config.json`` after ``change`` edited its dict in place."""
    config = json.loads((run / "config.json").read_text())
    change(config)
    (run / "config.json").write_text(json.dumps(config))


def test_a_valid_config_json_reads_back(run_dir):
    config = read_run_config(run_dir)
    assert config.method == "cora" and config.method_config == {"rank": 4}
    assert config.train.betas == (0.9, 0.999)  # the JSON list is the annotated tuple again


def test_config_json_without_method(run_dir):
    edit_config(run_dir, lambda c: c.pop("method"))
    one_line(r"run/config\.json: missing setting\(s\) method$", read_run_config, run_dir)


def test_config_json_that_is_a_list(run_dir):
    config = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps([config]))
    one_line(r"run/config\.json: expected a JSON object, got list", read_run_config, run_dir)
    one_line(r"config\.json: config must be a mapping of names to values, got list", run_config_from_dict, [1])


@pytest.mark.parametrize("rank, problem", [(0, "must be at least 1, got 0"), (-3, "must be at least 1, got -3"),
                                           ("4", "must be an integer, got '4'"), (2.5, "must be an integer, got 2.5")])
def test_config_json_with_a_bad_rank(run_dir, rank, problem):
    edit_config(run_dir, lambda c: c["method_config"].__setitem__("rank", rank))
    one_line(rf"run/config\.json: method_config\.rank {problem}$", read_run_config, run_dir)


def test_config_json_with_eval_batch_size_zero(run_dir):
    edit_config(run_dir, lambda c: c["train"].__setitem__("eval_batch_size", 0))
    one_line(r"run/config\.json: train\.eval_batch_size must be at least 1, got 0$", read_run_config, run_dir)


def test_config_json_with_a_string_seed(run_dir):
    edit_config(run_dir, lambda c: c.__setitem__("seed", "x"))
    one_line(r"run/config\.json: seed must be an integer, got 'x'$", read_run_config, run_dir)


def test_config_json_with_an_unknown_device(run_dir):
    edit_config(run_dir, lambda c: c.__setitem__("device", "tpu"))
    one_line(r"run/config\.json: device must be auto, cpu, cuda, cuda:N or mps, got 'tpu'$", read_run_config, run_dir)


def test_config_json_with_an_unknown_top_level_key(run_dir):
    edit_config(run_dir, lambda c: c.__setitem__("learning_rate", 1.0))
    one_line(r"run/config\.json: unknown setting\(s\) learning_rate; known: ", read_run_config, run_dir)


def test_config_json_with_an_unknown_train_key_or_method(run_dir):
    edit_config(run_dir, lambda c: c["train"].__setitem__("lr_max", 1.0))
    one_line(r"run/config\.json: unknown setting\(s\) train\.lr_max", read_run_config, run_dir)

    def other_method(config):
        del config["train"]["lr_max"]
        config["method"] = "bert4rec"

    edit_config(run_dir, other_method)
    one_line(r"run/config\.json: unknown method 'bert4rec'", read_run_config, run_dir)


def test_config_json_that_is_not_utf8(run_dir):
    (run_dir / "config.json").write_bytes(b'{"method": "cora\xff"}')
    one_line(r"run/config\.json: not UTF-8 text \(invalid start byte at byte \d+\)", read_run_config, run_dir)


# --- presets and options of `corarec train` (resolved, nothing trained) -----------------------------

def resolve(preset=None, method="cora", device=None, seed=None, **settings):
    from corarec.training.config import resolve_config

    return resolve_config(method, "d", "o", "c", None, preset, None, seed, device, None, **settings)


def test_train_options_are_checked_before_any_work():
    config = resolve(batch_size=4, rank=2, generator_depth=3)
    assert (config.train.batch_size, config.method_config["rank"], config.method_config["generator"]["depth"]) == (4, 2, 3)
    one_line(r"^training settings: batch_size must be at least 1, got -3$", resolve, batch_size=-3)
    one_line(r"^training settings: eval_batch_size must be at least 1, got 0$", resolve, eval_batch_size=0)
    one_line(r"^cora settings: rank must be at least 1, got 0$", resolve, rank=0)
    one_line(r"^cora settings: generator\.depth must be at least 0, got -1$", resolve, generator_depth=-1)
    one_line(r"^tallrec settings: unknown setting\(s\) generator_depth \(a setting of cora\); tallrec has rank, ",
             resolve, method="tallrec", generator_depth=2)
    one_line(r"^cora settings: unknown setting\(s\) colour; cora has rank, ", resolve, colour="red")
    one_line(r"^run settings: device must be auto, cpu, cuda, cuda:N or mps, got 'tpu'$", resolve, device="tpu")
    one_line(r"^run settings: seed must lie in \[0, 4294967295\], got -1$", resolve, seed=-1)


def test_preset_values_and_sections_are_checked(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("run: {seed: 1, colour: red}\n")
    one_line(r"p\.yaml run: unknown setting\(s\) colour", resolve, preset=str(preset))
    preset.write_text("run: [1, 2]\n")
    one_line(r"p\.yaml: run must be a mapping of names to values, got list", resolve, preset=str(preset))
    preset.write_text("train: {lr: -1.0}\n")
    one_line(r"p\.yaml train: lr must be greater than 0, got -1\.0", resolve, preset=str(preset))
    preset.write_text("cora: {generator: {dropout: 1.5}}\n")
    one_line(r"cora settings: generator\.dropout must lie in \[0, 1\), got 1\.5", resolve, preset=str(preset))
    preset.write_text("cora: {generator: {width: 0, colour: red}}\n")
    one_line(r"cora settings: unknown setting\(s\) generator\.colour; known: ", resolve, preset=str(preset))
    preset.write_text("cora: {depth: 2}\n")  # a generator setting outside `generator:` (the format-2 layout)
    one_line(r"cora settings: unknown setting\(s\) depth; known: ", resolve, preset=str(preset))


def test_preset_that_is_not_utf8(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_bytes(b"train: {lr: 1.0e-3}  # caf\xe9\n")
    one_line(r"p\.yaml: not UTF-8 text \(invalid continuation byte at byte \d+\)$", resolve, preset=str(preset))


# --- the mechanism --------------------------------------------------------------------------------

def config_classes() -> list[type]:
    return [TrainConfig, RunConfig, CFConfig] + [method_classes(name)[0] for name in method_names()]


@pytest.mark.parametrize("cls", config_classes(), ids=lambda c: c.__name__)
def test_every_config_class_validates_on_construction(cls):
    assert issubclass(cls, Settings)
    required = {f.name: "x" for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    cls(**required)  # the defaults pass their own rules
    for f in dataclasses.fields(cls):  # and no field takes a value of another type
        wrong = [1] if f.type in ("str", "str | None") else "wrong"
        with pytest.raises(SettingError, match=rf"^{f.name} must be "):
            cls(**{**required, f.name: wrong})


def test_values_are_normalised_and_non_finite_numbers_refused():
    config = TrainConfig(lr=1, betas=[0.8, 0.9])
    assert isinstance(config.lr, float) and config.betas == (0.8, 0.9)
    with pytest.raises(SettingError, match="lr must be a finite number, got nan"):
        TrainConfig(lr=float("nan"))
    with pytest.raises(SettingError, match="batch_size must be an integer, got True"):
        TrainConfig(batch_size=True)  # a bool is not a count
    with pytest.raises(CorarecError, match=r"^t: betas must lie in \[0, 1\), got \(0\.9, 1\.0\)$"):
        apply_fields(TrainConfig(), {"betas": [0.9, 1.0]}, "t")


def test_check_option_names_the_option():
    assert check_option(TrainConfig, "eval_batch_size", None, "--batch-size") is None
    assert check_option(TrainConfig, "eval_batch_size", 4, "--batch-size") == 4
    one_line(r"^--batch-size must be at least 1, got -3$", check_option, TrainConfig, "eval_batch_size", -3, "--batch-size")


def test_cf_config_checks_types_ranges_and_keys():
    one_line(r"^c\.json: unknown setting\(s\) colour", CFConfig.from_dict, {"colour": 1}, "c.json")
    one_line(r"^c\.json: dim must be at least 1, got 0$", CFConfig.from_dict, {"dim": 0}, "c.json")
    one_line(r"^c\.json: dim 10 is not divisible by heads 3$", CFConfig.from_dict, {"dim": 10, "heads": 3}, "c.json")


def test_one_device_resolver_for_every_command():
    import corarec.cf.train
    import corarec.training.runs
    from corarec.utils.device import resolve_device

    assert corarec.training.runs.resolve_device is resolve_device and corarec.cf.train.resolve_device is resolve_device
    assert str(resolve_device("cpu")) == "cpu"
    one_line(r"^unknown device 'gpu0'; use auto, cpu, cuda, cuda:N or mps$", resolve_device, "gpu0")
    import torch

    if not torch.cuda.is_available():
        one_line(r"^device 'cuda:1' requested but CUDA is not available$", resolve_device, "cuda:1")
    else:
        one_line(r"^device 'cuda:99' requested but only \d+ CUDA device", resolve_device, "cuda:99")


# --- options of evaluate / predict, and the LLM ---------------------------------------------------

def cli_error(monkeypatch, capsys, *argv: str) -> str:
    """Run ``corarec ARGV``; it must exit with status 2 and one ``error:`` line."""
    from corarec.cli import main

    monkeypatch.setattr(sys, "argv", ["corarec", *argv])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: ")
    return err


def test_evaluate_with_an_unknown_device(run_dir, monkeypatch, capsys):
    err = cli_error(monkeypatch, capsys, "evaluate", "--run", str(run_dir), "--device", "gpu0")
    assert err == "error: --device must be auto, cpu, cuda, cuda:N or mps, got 'gpu0'"


def test_evaluate_and_predict_with_a_negative_batch_size(run_dir, tmp_path, monkeypatch, capsys):
    err = cli_error(monkeypatch, capsys, "evaluate", "--run", str(run_dir), "--batch-size", "-3")
    assert err == "error: --batch-size must be at least 1, got -3"
    (tmp_path / "pairs.csv").write_text("user,item\nu1,i1\n")
    err = cli_error(monkeypatch, capsys, "predict", "--run", str(run_dir), "--input", str(tmp_path / "pairs.csv"),
                    "--out", str(tmp_path / "scores.csv"), "--batch-size", "0")
    assert err == "error: --batch-size must be at least 1, got 0"
    assert not (run_dir / "eval").exists() and not (tmp_path / "scores.csv").exists()


def test_predict_out_that_is_a_folder(run_dir, tmp_path, monkeypatch, capsys):
    (tmp_path / "pairs.csv").write_text("user,item\nu1,i1\n")
    folder = tmp_path / "scores.csv"
    folder.mkdir()
    err = cli_error(monkeypatch, capsys, "predict", "--run", str(run_dir), "--input", str(tmp_path / "pairs.csv"),
                    "--out", str(folder))
    assert err == f"error: {folder}: is a directory; --out needs a .csv or .parquet file path"
    assert folder.is_dir() and not any(folder.iterdir())


def test_llm_whose_config_json_was_edited(tmp_path):
    from corarec.llm.model import load_llm
    from tiny import tiny_llm_dir

    llm = tiny_llm_dir(tmp_path, hidden=32)
    assert load_llm(str(llm)).hidden_size == 32
    config = json.loads((llm / "config.json").read_text())
    config["hidden_size"] = 48
    (llm / "config.json").write_text(json.dumps(config))
    one_line(r"--llm .*tiny-llm: its weights do not match its config\.json \(tensor shapes differ",
             load_llm, str(llm))
