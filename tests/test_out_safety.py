"""`--out` never destroys what the user did not ask to replace, and never mixes two runs.

prepare and train-cf replace only their own kind of directory, and only with --overwrite; a resumed
run writes to the --out it is given (a copy advances, the original stays as it was); a run directory
has one writer at a time (a lock); evaluate checks its options before any work and writes beside the
training's metrics, never over them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from corarec.training import loop as training
from corarec.cf import train_cf
from corarec.cli import app
from corarec.data.prepare import prepare
from corarec.errors import CorarecError
from corarec.evaluation.evaluate import evaluate
from corarec.utils.io import read_json
from corarec.utils.outdir import LOCK, run_lock
from test_data_custom import ITEMS, LOG

runner = CliRunner()
SETTINGS = dict(rank=4, alpha=8.0, generator_queries=2, generator_depth=1, generator_heads=2,
                max_steps=4, eval_every=2, batch_size=8, eval_batch_size=16, warmup_steps=1)
CUSTOM = dict(label_threshold=4, split="0.6,0.2,0.2", item_noun="movie")


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative path → bytes)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def one_line_cli_error(args: list[str]) -> str:
    """Run a command through the CLI app; it must fail with a one-line CorarecError, returned."""
    result = runner.invoke(app, args)
    assert result.exit_code != 0
    assert isinstance(result.exception, CorarecError), result.output
    message = str(result.exception)
    assert "\n" not in message
    return message


@pytest.fixture
def inputs(tmp_path):
    folder = tmp_path / "inputs"
    folder.mkdir()
    (folder / "log.csv").write_text(LOG)
    (folder / "items.csv").write_text(ITEMS)
    return folder


def prepare_custom(inputs: Path, out: Path, **kwargs):
    return prepare("custom", out=out, interactions=inputs / "log.csv", items=inputs / "items.csv", **CUSTOM, **kwargs)


# --- 1. prepare ---------------------------------------------------------------------------------

def test_prepare_into_the_folder_of_its_inputs_keeps_them(inputs):
    before = snapshot(inputs)
    for overwrite in (False, True):
        with pytest.raises(CorarecError, match=r"holds the input .*log\.csv \(--interactions\)"):
            prepare_custom(inputs, inputs, overwrite=overwrite)
        assert snapshot(inputs) == before
    message = one_line_cli_error(["prepare", "custom", "--interactions", str(inputs / "log.csv"), "--items",
                                  str(inputs / "items.csv"), "--label-threshold", "4", "--split", "0.6,0.2,0.2",
                                  "--out", str(inputs), "--overwrite"])
    assert "holds the input" in message and snapshot(inputs) == before


def test_prepare_never_replaces_a_directory_that_is_not_a_prepared_dataset(inputs, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("three years of work")
    for overwrite in (False, True):
        with pytest.raises(CorarecError, match="is not a prepared dataset, so it is never replaced"):
            prepare_custom(inputs, mine, overwrite=overwrite)
    assert snapshot(mine) == {"thesis.tex": b"three years of work"}
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(CorarecError, match="not a directory"):
        prepare_custom(inputs, tmp_path / "a-file", overwrite=True)
    (tmp_path / "empty").mkdir()
    prepare_custom(inputs, tmp_path / "empty")  # an empty directory holds nothing to lose
    assert (tmp_path / "empty" / "dataset.json").is_file()


def test_replacing_a_prepared_dataset_needs_overwrite_and_keeps_other_files(inputs, tmp_path):
    out = tmp_path / "ds"
    prepare_custom(inputs, out)
    before = snapshot(out)
    with pytest.raises(CorarecError, match="already holds a prepared dataset; pass --overwrite"):
        prepare_custom(inputs, out)
    assert snapshot(out) == before
    result = runner.invoke(app, ["prepare", "custom", "--interactions", str(inputs / "log.csv"), "--items",
                                 str(inputs / "items.csv"), "--label-threshold", "4", "--split", "0.5,0.25,0.25",
                                 "--out", str(out), "--overwrite"])
    assert result.exit_code == 0, result.output
    assert read_json(out / "dataset.json")["protocol"]["split"] == {"fractions": [0.5, 0.25, 0.25]}  # replaced

    (out / "notes.md").write_text("my notes on this dataset")
    with pytest.raises(CorarecError, match=r"holds a prepared dataset and other files \(notes\.md\)"):
        prepare_custom(inputs, out, overwrite=True)
    assert (out / "notes.md").read_text() == "my notes on this dataset"


# --- 2. train-cf --------------------------------------------------------------------------------

def small_cf(data: Path, out: Path, **kwargs):
    return train_cf(data, "mf", out, dim=8, epochs=1, batch_size=64, progress=False, **kwargs)


def test_train_cf_replaces_only_a_cf_run_and_only_on_request(tiny_run, tmp_path):
    cora, llm, data = tmp_path / "cora-run", tmp_path / "hf-model", tmp_path / "data"
    shutil.copytree(tiny_run.run, cora)
    shutil.copytree(tiny_run.llm, llm)
    shutil.copytree(tiny_run.data, data)
    for victim in (cora, llm, data):
        before = snapshot(victim)
        for overwrite in (False, True):
            with pytest.raises(CorarecError, match="is not a CF run directory, so it is never replaced"):
                small_cf(data, victim, overwrite=overwrite)
        assert snapshot(victim) == before
        message = one_line_cli_error(["train-cf", "--data", str(data), "--model", "mf", "--out", str(victim),
                                      "--overwrite"])
        assert "never replaced" in message and snapshot(victim) == before

    run = tmp_path / "mf"
    small_cf(data, run, seed=1)
    before = snapshot(run)
    with pytest.raises(CorarecError, match="already holds a CF run directory; pass --overwrite"):
        small_cf(data, run, seed=2)
    assert snapshot(run) == before
    small_cf(data, run, seed=2, overwrite=True)
    assert read_json(run / "config.json")["seed"] == 2

    (run / "result.json").write_text("{}")  # someone else's file inside the run
    with pytest.raises(CorarecError, match=r"other files \(result\.json\)"):
        small_cf(data, run, overwrite=True)
    assert (run / "result.json").read_text() == "{}"


# --- 3. resume writes to --out ------------------------------------------------------------------

def interrupted_run(tiny_run, out: Path, monkeypatch) -> None:
    """A CoRA run stopped (Ctrl-C) right after its first checkpoint, at step 2 of 4."""
    original = training.validate

    def validate_then_stop(*args, **kwargs):
        original(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "validate", validate_then_stop)
    with pytest.raises(KeyboardInterrupt):
        training.train(method="cora", data=tiny_run.data, out=out, cf=tiny_run.cf, llm=str(tiny_run.llm), seed=0,
                       device="cpu", bf16=False, **SETTINGS)
    monkeypatch.setattr(training, "validate", original)
    assert read_json(out / "metrics.json")["steps"] == 2


def test_resuming_a_copy_advances_the_copy_from_any_directory(tiny_run, tmp_path, monkeypatch):
    original, copy, elsewhere = tmp_path / "work" / "run", tmp_path / "backup" / "run", tmp_path / "elsewhere"
    interrupted_run(tiny_run, original, monkeypatch)
    shutil.copytree(original, copy)
    config = read_json(copy / "config.json")
    config["out"] = "run"  # as an older version stored it: relative to a working directory long gone
    (copy / "config.json").write_text(json.dumps(config))
    before = snapshot(original)
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    metrics = training.train(out=Path("..") / "backup" / "run", resume=True)
    assert metrics["finished"] and metrics["steps"] == 4
    assert read_json(copy / "metrics.json")["steps"] == 4
    assert Path(read_json(copy / "config.json")["out"]) == copy.resolve()  # now says where the run is
    assert snapshot(original) == before  # the original was not advanced
    assert list(elsewhere.iterdir()) == []  # no stray folder where the stored path pointed
    assert not (copy / LOCK).exists()


def test_resume_from_the_command_line_needs_only_out_and_refuses_new_settings(tiny_run, tmp_path, monkeypatch):
    out = tmp_path / "run"
    interrupted_run(tiny_run, out, monkeypatch)
    before = snapshot(out)
    message = one_line_cli_error(["train", "--out", str(out), "--resume", "--lr", "0.1", "--seed", "3"])
    assert "--resume continues" in message and "--seed, --lr cannot change them" in message
    message = one_line_cli_error(["train", "--out", str(out), "--resume", "--method", "tallrec"])  # not another method
    assert "--method cannot change them" in message
    assert snapshot(out) == before
    result = runner.invoke(app, ["train", "--out", str(out), "--resume"])  # no --data: the run's own
    assert result.exit_code == 0, result.output
    assert read_json(out / "metrics.json")["steps"] == 4
    message = one_line_cli_error(["train", "--out", str(tmp_path / "new")])  # a new run does need --data
    assert "--data is required" in message and not (tmp_path / "new").exists()


def test_a_failed_start_leaves_no_folder_behind(tiny_run, tmp_path):
    with pytest.raises(CorarecError):
        training.train(method="cora", data=tiny_run.data, out=tmp_path / "new", cf=tmp_path / "no-such-cf",
                       llm=str(tiny_run.llm), seed=0, device="cpu", bf16=False, **SETTINGS)
    with pytest.raises(CorarecError, match="not a run directory"):
        training.train(out=tmp_path / "missing", resume=True)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "a-file").write_text("mine")
    with pytest.raises(CorarecError, match="exists and is not a directory"):
        training.train(method="cora", data=tiny_run.data, out=tmp_path / "a-file", cf=tiny_run.cf,
                       llm=str(tiny_run.llm), seed=0, device="cpu", bf16=False, **SETTINGS)
    assert (tmp_path / "a-file").read_text() == "mine"
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    with pytest.raises(CorarecError, match=r"is not empty \(keep\.txt\) and holds no run"):
        training.train(method="cora", data=tiny_run.data, out=mine, cf=tiny_run.cf, llm=str(tiny_run.llm),
                       seed=0, device="cpu", bf16=False, **SETTINGS)
    assert snapshot(mine) == {"keep.txt": b"mine"}


# --- 4. one writer per run directory ------------------------------------------------------------

HOLDER = textwrap.dedent("""
    import sys
    from corarec.utils.outdir import run_lock
    with run_lock(sys.argv[1]):
        print("locked", flush=True)
        sys.stdin.readline()
""")


def start_holder(directory: Path) -> subprocess.Popen:
    """Another process that holds ``directory``'s lock until its stdin is closed (or it is killed)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(directory)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_writer_of_a_run_directory_gets_a_clear_error(tiny_run, tmp_path, monkeypatch):
    out = tmp_path / "run"
    new_run = dict(method="cora", data=tiny_run.data, out=out, cf=tiny_run.cf, llm=str(tiny_run.llm), seed=0,
                   device="cpu", bf16=False, **SETTINGS)
    holder = start_holder(out)
    try:
        with pytest.raises(CorarecError, match=rf"another corarec train \(pid {holder.pid}\) is writing this run"):
            training.train(**new_run)
        assert sorted(p.name for p in out.iterdir()) == [LOCK]  # the second process wrote nothing
    finally:
        holder.kill()  # kill -9: the kernel releases the lock, no stale lock remains
        holder.wait()
    interrupted_run(tiny_run, out, monkeypatch)  # the lock of a killed process does not block anyone

    with run_lock(out):  # another writer holds the run (same process, its own open file: still exclusive)
        before = snapshot(out)
        with pytest.raises(CorarecError, match="is writing this run directory"):
            training.train(out=out, resume=True)
        with pytest.raises(CorarecError, match="is writing this run directory"):
            training.train(**new_run)
        assert snapshot(out) == before
    assert training.train(out=out, resume=True)["steps"] == 4
    assert not (out / LOCK).exists()


# --- 5. evaluate --------------------------------------------------------------------------------

@pytest.fixture
def run_copy(tiny_run, tmp_path):
    """A copy of the tiny run, so that what evaluate writes stays in this test."""
    shutil.copytree(tiny_run.run, tmp_path / "run")
    return tmp_path / "run"


def test_evaluate_checks_its_options_before_any_work(run_copy, tmp_path, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("the run was loaded before the options were checked")

    monkeypatch.setattr("corarec.training.runs.load_run", no_work)
    before = snapshot(run_copy)
    for bad in (0, -3):
        with pytest.raises(CorarecError, match=f"--max-samples must be at least 1.*got {bad}"):
            evaluate(run_copy, max_samples=bad)
    with pytest.raises(CorarecError, match=r"pred\.txt: predictions must be a \.csv or \.parquet"):
        evaluate(run_copy, max_samples=5, predictions=tmp_path / "pred.txt")
    (tmp_path / "folder.csv").mkdir()
    with pytest.raises(CorarecError, match="is a directory"):
        evaluate(run_copy, predictions=tmp_path / "folder.csv")
    assert snapshot(run_copy) == before
    message = one_line_cli_error(["evaluate", "--run", str(run_copy), "--max-samples", "0"])
    assert "--max-samples" in message and snapshot(run_copy) == before


def test_evaluate_writes_beside_the_training_metrics(run_copy, tmp_path):
    training_metrics = (run_copy / "metrics.json").read_bytes()
    metrics = evaluate(run_copy, split="valid", max_samples=20, predictions=tmp_path / "valid.parquet")
    saved = read_json(run_copy / "eval" / "valid.json")
    assert saved["split"] == "valid" and saved["max_samples"] == 20 and saved["all"] == metrics["all"]
    assert (run_copy / "metrics.json").read_bytes() == training_metrics  # the training's valid metrics stand
    assert (tmp_path / "valid.parquet").is_file()
