"""`corarec train-cf`: a thin command over corarec.cf.train_cf."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from corarec.cli import app, main
from corarec.data import write_dataset
from test_cf import one_thread, planted_dataset  # noqa: F401 (one_thread: autouse fixture)

runner = CliRunner()


def test_train_cf_command_writes_a_run(tmp_path):
    data = write_dataset(planted_dataset(), tmp_path / "data")
    out = tmp_path / "run"
    result = runner.invoke(app, ["train-cf", "--data", str(data), "--model", "mf", "--out", str(out), "--dim", "8",
                                 "--epochs", "2", "--batch-size", "128", "--no-bias", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert "valid (best epoch" in result.output and "test:" in result.output and "cold" in result.output
    config = json.loads((out / "config.json").read_text())
    assert (config["model"], config["dim"], config["bias"], config["seed"], config["epochs"]) == ("mf", 8, False, 3, 2)
    assert config["data"] == str(data.resolve()) and config["dataset"] == "planted"
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["test"]) == {"all", "warm", "cold"}


def test_train_cf_command_user_error_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["corarec", "train-cf", "--data", str(tmp_path / "nope"), "--model", "mf", "--out", str(tmp_path / "r")])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "nope" in err and len(err.splitlines()) == 1
