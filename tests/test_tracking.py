"""Training you can watch: `--log-dir` writes TensorBoard scalars for `train` and `train-cf`, every
learning-curve point records gradient norms, and a missing tensorboard package is one clear error.

Scalars are read back with TensorBoard's own EventAccumulator. TensorBoard stores a scalar as float32,
so a value read back is compared with the same value rounded to float32 (exactly: one rounding)."""

from __future__ import annotations

import math
import shutil
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from corarec.cf import train_cf
from corarec.cli import app, main
from corarec.data.schema import write_dataset
from corarec.errors import CorarecError
from corarec.training import loop as training
from corarec.training.config import TrainConfig
from corarec.utils.io import read_json
from corarec.utils.tracking import check_finite_gradient, event_files, gradient_norm, gradient_summary
from test_training import SETTINGS, inputs, run_cora  # noqa: F401 (inputs: the module's fixture)
from tiny import tiny_dataset

TRAIN_TAGS = {"train/loss", "train/lr", "train/grad_norm", "train/rows_per_second"}
VALID_TAGS = {"valid/auc", "valid/uauc"}
CF = dict(dim=8, epochs=2, batch_size=64, progress=False)


def scalars(path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar under ``path`` (a directory or one event file) as ``{tag: [(step, value), ...]}``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(path))
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def f32(x: float) -> float:
    return float(np.float32(x))


def test_train_with_a_log_dir_writes_every_step_and_validation_and_trains_the_same(inputs, tmp_path):
    plain = run_cora(inputs, tmp_path / "plain")
    logged = run_cora(inputs, tmp_path / "logged", log_dir=str(tmp_path / "tb"))
    # logging changes nothing of the training (the curves differ only in wall-clock seconds)
    assert logged["valid_curve"] == [dict(p, seconds=q["seconds"]) for p, q in zip(plain["valid_curve"], logged["valid_curve"])]
    assert not event_files(tmp_path / "plain")  # nothing written without a log dir
    assert read_json(tmp_path / "logged" / "config.json")["train"]["log_dir"] == str((tmp_path / "tb").resolve())

    found = scalars(tmp_path / "tb")
    assert TRAIN_TAGS | VALID_TAGS <= set(found)
    for tag in TRAIN_TAGS:
        assert [step for step, _ in found[tag]] == [1, 2, 3, 4], tag
    curve = logged["valid_curve"]
    assert [step for step, _ in found["valid/auc"]] == [p["step"] for p in curve] == [2, 4]
    assert [value for _, value in found["valid/auc"]] == [f32(p["valid_auc"]) for p in curve]
    tc = TrainConfig(**{k: v for k, v in SETTINGS.items() if k in TrainConfig.__dataclass_fields__})
    assert [value for _, value in found["train/lr"]] == [f32(training.learning_rate(s, 4, tc)) for s in range(4)]
    assert all(value > 0 for _, value in found["train/rows_per_second"])
    # the curve's gradient summary is that of the logged per-step norms (steps 1-2, then 3-4)
    norms = [value for _, value in found["train/grad_norm"]]
    for point, window in zip(curve, (norms[:2], norms[2:])):
        assert point["grad_norm_max"] > 0 and point["grad_norm_max"] >= point["grad_norm_mean"]
        assert f32(point["grad_norm_max"]) == max(window)
        assert point["grad_norm_mean"] == pytest.approx(np.mean(window), rel=1e-6)  # float32 rounding of each norm
    losses = [value for _, value in found["train/loss"]]
    assert curve[0]["train_loss"] == pytest.approx(np.mean(losses[:2]), rel=1e-6)


def test_a_resumed_run_logs_on_in_the_same_dir_and_tensorboard_drops_the_redone_steps(inputs, tmp_path, monkeypatch):
    original = training.check_finite_gradient

    def interrupt_at_step_4(norm, step):
        if step == 4:
            raise KeyboardInterrupt  # after step 3 was logged; the last checkpoint is that of step 2
        original(norm, step)

    monkeypatch.setattr(training, "check_finite_gradient", interrupt_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        run_cora(inputs, tmp_path / "run", log_dir=str(tmp_path / "tb"))
    monkeypatch.setattr(training, "check_finite_gradient", original)
    metrics = training.train(out=tmp_path / "run", resume=True)  # the log dir comes from config.json
    assert metrics["finished"] and all(p["grad_norm_mean"] is not None for p in metrics["valid_curve"])

    files = event_files(tmp_path / "tb")
    assert len(files) == 2
    first, resumed = sorted(files, key=lambda f: scalars(f)["train/loss"][0][0])  # the attempt that logged step 1
    assert [s for s, _ in scalars(first)["train/loss"]] == [1, 2, 3]
    assert [s for s, _ in scalars(resumed)["train/loss"]] == [3, 4]
    # read in the order they were written, step 3 of the cut-off attempt is dropped: each step once
    ordered = tmp_path / "ordered"
    ordered.mkdir()
    shutil.copy(first, ordered / "events.out.tfevents.1")
    shutil.copy(resumed, ordered / "events.out.tfevents.2")
    seen = scalars(ordered)
    assert [s for s, _ in seen["train/loss"]] == [1, 2, 3, 4]
    assert [s for s, _ in seen["valid/auc"]] == [2, 4]


def test_train_cf_with_a_log_dir_writes_every_step_and_epoch(tmp_path):
    data = write_dataset(tiny_dataset(), tmp_path / "data")
    result = CliRunner().invoke(app, ["train-cf", "--data", str(data), "--model", "mf", "--out", str(tmp_path / "cf"),
                                      "--dim", "8", "--epochs", "2", "--batch-size", "64", "--log-dir", str(tmp_path / "tb")])
    assert result.exit_code == 0, result.output
    metrics = read_json(tmp_path / "cf" / "metrics.json")
    config = read_json(tmp_path / "cf" / "config.json")
    steps_per_epoch = math.ceil(len(tiny_dataset().train) / 64)
    found = scalars(tmp_path / "tb")
    assert TRAIN_TAGS | VALID_TAGS <= set(found)
    for tag in ("train/loss", "train/grad_norm"):
        assert [s for s, _ in found[tag]] == list(range(1, 2 * steps_per_epoch + 1)), tag
    for tag in ("train/lr", "train/rows_per_second", "valid/auc", "valid/uauc"):
        assert [s for s, _ in found[tag]] == [steps_per_epoch, 2 * steps_per_epoch], tag
    assert [v for _, v in found["valid/auc"]] == [f32(e["valid_auc"]) for e in metrics["epochs"]]
    assert [v for _, v in found["train/lr"]] == [f32(config["lr"])] * 2
    norms = [v for _, v in found["train/grad_norm"]]
    for epoch, window in zip(metrics["epochs"], (norms[:steps_per_epoch], norms[steps_per_epoch:])):
        assert f32(epoch["grad_norm_max"]) == max(window)
        assert epoch["grad_norm_mean"] == pytest.approx(np.mean(window), rel=1e-6)
    assert config["log_dir"] == str((tmp_path / "tb").resolve())


def test_train_cf_grid_logs_each_candidate_in_its_own_subdirectory(tmp_path):
    data = write_dataset(tiny_dataset(), tmp_path / "data")
    metrics = train_cf(data, "mf", tmp_path / "cf", grid={"dim": [4, 8]}, log_dir=str(tmp_path / "tb"), **dict(CF, dim=None))
    lr, wd = metrics["grid"][0]["lr"], metrics["grid"][0]["weight_decay"]
    names = [f"lr={lr:g}_wd={wd:g}_dim={dim}" for dim in (4, 8)]
    assert sorted(p.name for p in (tmp_path / "tb").iterdir()) == names
    assert all(event_files(tmp_path / "tb" / name) for name in names)
    best = max(metrics["grid"], key=lambda c: c["valid_auc"])
    config = read_json(tmp_path / "cf" / "config.json")  # the kept model says where its training was logged
    assert config["log_dir"] == str((tmp_path / "tb" / f"lr={lr:g}_wd={wd:g}_dim={best['dim']}").resolve())


def test_without_tensorboard_a_log_dir_is_one_clear_error_and_nothing_is_written(inputs, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # `import tensorboard` now fails, as when not installed
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    data = write_dataset(tiny_dataset(), tmp_path / "data")
    with pytest.raises(CorarecError, match=r"--log-dir .*tb: .*needs the tensorboard package.*pip install tensorboard"):
        train_cf(data, "mf", tmp_path / "cf", log_dir=str(tmp_path / "tb"), **CF)
    with pytest.raises(CorarecError, match="needs the tensorboard package"):
        run_cora(inputs, tmp_path / "run", log_dir=str(tmp_path / "tb"))
    assert not (tmp_path / "cf").exists() and not (tmp_path / "run").exists() and not (tmp_path / "tb").exists()

    monkeypatch.setattr("sys.argv", ["corarec", "train-cf", "--data", str(data), "--model", "mf",
                                     "--out", str(tmp_path / "cf"), "--log-dir", str(tmp_path / "tb")])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err.startswith("error:") and len(err.splitlines()) == 1
    assert "tensorboard" in err

    train_cf(data, "mf", tmp_path / "cf", **CF)  # without a log dir tensorboard is never needed
    assert (tmp_path / "cf" / "metrics.json").is_file()


def test_a_log_dir_that_is_a_file_is_refused_before_training(tmp_path):
    data = write_dataset(tiny_dataset(), tmp_path / "data")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(CorarecError, match="is a file, not a directory"):
        train_cf(data, "mf", tmp_path / "cf", log_dir=str(tmp_path / "notes.txt"), **CF)
    assert (tmp_path / "notes.txt").read_text() == "mine" and not (tmp_path / "cf").exists()


def test_gradient_norm_is_measured_before_clipping_and_a_non_finite_one_stops_training():
    weight = torch.nn.Parameter(torch.zeros(2))
    unused = torch.nn.Parameter(torch.zeros(3))  # no gradient: left out
    weight.grad = torch.tensor([3.0, 4.0])
    assert gradient_norm([weight, unused]) == 5.0 and torch.equal(weight.grad, torch.tensor([3.0, 4.0]))
    assert gradient_norm([weight, unused], clip=1.0) == pytest.approx(5.0, rel=1e-6)  # the norm before clipping
    assert weight.grad.norm().item() == pytest.approx(1.0, rel=1e-5)  # ... and the gradient clipped
    assert gradient_summary([1.0, 3.0]) == {"grad_norm_mean": 2.0, "grad_norm_max": 3.0}
    assert gradient_summary([]) == {"grad_norm_mean": None, "grad_norm_max": None}
    for bad in (float("nan"), float("inf")):
        with pytest.raises(CorarecError, match="diverged at step 7"):
            check_finite_gradient(bad, 7)
