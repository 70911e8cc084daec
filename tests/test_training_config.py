"""The training loop's pure parts: schedule, subsampling, config resolution, optimizer checkpoints."""

import math

import numpy as np
import pandas as pd
import pytest

from corarec.training.config import (TrainConfig, apply_fields, load_preset, resolve_config, run_config_from_dict,
                                     to_dict)
from corarec.data.sampling import subsample_rows, subsample_users
from corarec.errors import CorarecError
from corarec.training.loop import learning_rate


def test_learning_rate_warms_up_linearly_then_decays_by_cosine():
    tc = TrainConfig(lr=1e-3, warmup_steps=10, warmup_start_lr=1e-5)
    assert learning_rate(0, 110, tc) == pytest.approx(1e-5)
    assert learning_rate(5, 110, tc) == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5)
    assert learning_rate(10, 110, tc) == pytest.approx(1e-3)
    assert learning_rate(60, 110, tc) == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert learning_rate(110, 110, tc) == pytest.approx(0.0, abs=1e-12)


def test_subsample_keeps_whole_users_and_is_deterministic():
    rng = np.random.default_rng(0)
    rows = pd.DataFrame({"user_id": rng.integers(0, 50, 1000), "item_id": rng.integers(0, 9, 1000)})
    a = subsample_users(rows, 200, seed=3)
    b = subsample_users(rows, 200, seed=3)
    c = subsample_users(rows, 200, seed=4)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)
    assert len(a) <= 200
    for user in a["user_id"].unique():  # every kept user keeps all of its rows
        assert (a["user_id"] == user).sum() == (rows["user_id"] == user).sum()
    assert subsample_users(rows, None, 0) is rows


def test_row_subsample_is_deterministic_ordered_and_spans_users():
    rng = np.random.default_rng(0)
    rows = pd.DataFrame({"user_id": np.repeat(np.arange(50), 20), "item_id": rng.integers(0, 9, 1000)})
    a = subsample_rows(rows, 200, seed=3)
    pd.testing.assert_frame_equal(a, subsample_rows(rows, 200, seed=3))
    assert not a.equals(subsample_rows(rows, 200, seed=4))
    assert len(a) == 200 and a.index.is_monotonic_increasing and not a.index.duplicated().any()
    assert a["user_id"].nunique() > 40  # whole users would give 10
    assert subsample_rows(rows, None, 0) is rows and subsample_rows(rows, 5000, 0) is rows


def test_train_sample_setting_is_checked():
    assert TrainConfig().train_sample == "users"
    assert apply_fields(TrainConfig(), {"train_sample": "rows"}, "t").train_sample == "rows"
    with pytest.raises(CorarecError, match="train_sample must be 'rows' or 'users'"):
        apply_fields(TrainConfig(), {"train_sample": "items"}, "t")


def test_presets_load_and_unknown_settings_are_clear_errors(tmp_path):
    cpu = load_preset("cpu")
    assert apply_fields(TrainConfig(), cpu["train"], "cpu").batch_size == cpu["train"]["batch_size"]
    with pytest.raises(CorarecError, match="unknown preset 'nope'"):
        load_preset("nope")
    with pytest.raises(CorarecError, match="unknown setting"):
        apply_fields(TrainConfig(), {"learning_rate": 1.0}, "test")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(CorarecError, match="malformed YAML"):
        load_preset(str(bad))


def test_a_method_train_section_overrides_the_preset_train_section_for_that_method_only(tmp_path):
    from corarec.training.loop import resolve_config

    preset = tmp_path / "p.yaml"
    preset.write_text("train: {lr: 1.0e-3, epochs: 1, batch_size: 4}\n"
                      "cora: {generator: {depth: 2}, train: {lr: 3.0e-4, epochs: 2}}\n")

    def resolved(method, **explicit):
        return resolve_config(method, "d", "o", None, None, str(preset), **explicit)

    cora = resolved("cora")
    assert (cora.train.lr, cora.train.epochs, cora.train.batch_size) == (3e-4, 2, 4)
    assert cora.method_config["generator"]["depth"] == 2 and "train" not in cora.method_config
    both = resolved("cora", generator_heads=2).method_config["generator"]  # an option and the preset: both kept
    assert (both["depth"], both["heads"], both["queries"]) == (2, 2, 4)
    assert resolved("cora", lr=5e-4).train.lr == 5e-4  # an explicit flag still wins
    tallrec = resolved("tallrec")
    assert (tallrec.train.lr, tallrec.train.epochs) == (1e-3, 1)
    preset.write_text("cora: {train: {learning_rate: 1.0}}\n")
    with pytest.raises(CorarecError, match=r"cora\.train: unknown setting"):
        resolved("cora")


def test_run_config_round_trips_through_json():
    from corarec.training.config import RunConfig

    config = RunConfig(method="cora", data="d", out="o", cf="c", train=TrainConfig(lr=5e-4, betas=(0.8, 0.9)),
                       method_config={"rank": 4})
    back = run_config_from_dict(to_dict(config))
    assert back == config


def test_atomic_writes_leave_no_temporary_files_and_use_the_usual_modes(tmp_path):
    import os
    import stat

    from corarec.utils.io import atomic_dir, atomic_path, write_json

    write_json(tmp_path / "a.json", {"x": 1})
    with atomic_dir(tmp_path / "d") as tmp:
        (tmp / "f.txt").write_text("hi")
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "b.txt") as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "d"]  # b.txt never appeared
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o777 & ~umask


def test_a_preset_extends_another_key_by_key_and_a_loop_is_a_clear_error(tmp_path):
    full, cpu = load_preset("cpu-full"), load_preset("cpu")
    assert full["train"]["max_train_samples"] is None and cpu["train"]["max_train_samples"] == 8000
    assert full["train"]["batch_size"] == cpu["train"]["batch_size"] and full["cora"] == cpu["cora"]  # inherited
    # a method's own train section (inherited) still beats the extending preset's shared train section
    assert resolve_config("cora", data="d", preset="cpu-full").train.lr == cpu["cora"]["train"]["lr"] != full["train"]["lr"]
    assert resolve_config("tallrec", data="d", preset="cpu-full").train.lr == full["train"]["lr"]
    (tmp_path / "base.yaml").write_text("train: {lr: 0.01, batch_size: 4}\ncora: {generator: {depth: 3, queries: 2}}\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\ntrain: {lr: 0.02}\ncora: {generator: {depth: 5}}\n")
    child = load_preset(str(tmp_path / "child.yaml"))  # a relative 'extends' is read beside the file
    assert child == {"train": {"lr": 0.02, "batch_size": 4}, "cora": {"generator": {"depth": 5, "queries": 2}}}
    (tmp_path / "a.yaml").write_text(f"extends: {tmp_path / 'b.yaml'}\n")
    (tmp_path / "b.yaml").write_text(f"extends: {tmp_path / 'a.yaml'}\n")
    with pytest.raises(CorarecError, match="'extends' loops back"):
        load_preset(str(tmp_path / "a.yaml"))
    (tmp_path / "self.yaml").write_text(f"extends: ../{tmp_path.name}/self.yaml\n")  # itself, spelled otherwise
    with pytest.raises(CorarecError, match="'extends' loops back"):
        load_preset(str(tmp_path / "self.yaml"))
    (tmp_path / "bad.yaml").write_text("extends: [cpu]\n")
    with pytest.raises(CorarecError, match="'extends' must name a preset"):
        load_preset(str(tmp_path / "bad.yaml"))
