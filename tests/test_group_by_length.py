"""``group_by_length``: the training steps' rows grouped by prompt length (training/steps.py ``epoch_order``)."""

from __future__ import annotations

import numpy as np
import pytest

import corarec.training.loop as training
from corarec.training.steps import GROUP_STEPS, epoch_order
from corarec.utils.io import read_json
from tiny import assert_same_weights


def padded_over_real(order: np.ndarray, lengths: np.ndarray, step_rows: int) -> float:
    """Tokens a pass over ``order`` in steps of ``step_rows`` computes (each step padded to its longest row),
    over its real tokens."""
    steps = [lengths[order[s:s + step_rows]] for s in range(0, len(order), step_rows)]
    return sum(len(s) * s.max() for s in steps) / lengths.sum()


def train_tiny(tiny_run, out, **settings) -> dict:
    """A tiny CoRA training (fp32, seed 0) into ``out`` with ``settings``."""
    return training.train(method="cora", data=tiny_run.data, out=out, cf=tiny_run.cf, llm=str(tiny_run.llm), seed=0,
                          device="cpu", bf16=False, rank=4, alpha=8.0, generator_queries=2, generator_depth=1,
                          generator_heads=2, eval_batch_size=16, warmup_steps=1, **settings)


def test_without_lengths_the_order_is_the_seeded_permutation_as_before():
    for epoch in (0, 3):
        assert np.array_equal(epoch_order(1003, 7, epoch, 8), np.random.default_rng(7 + epoch).permutation(1003))


def test_grouped_steps_come_from_one_window_of_the_random_order_and_pad_little():
    n, step_rows = 1003, 8  # windows of 400 rows: 400, 400, 203 (25 whole steps and 3 rows)
    lengths = np.random.default_rng(5).integers(50, 200, size=n)
    window = GROUP_STEPS * step_rows
    for epoch in (0, 1):
        plain, grouped = epoch_order(n, 7, epoch, step_rows), epoch_order(n, 7, epoch, step_rows, lengths)
        assert np.array_equal(np.sort(grouped), np.arange(n))  # every row once
        assert np.array_equal(grouped, epoch_order(n, 7, epoch, step_rows, lengths))  # seeded
        for start in range(0, n, window):  # a window's steps hold that window's rows of the random order
            assert set(grouped[start:start + window]) == set(plain[start:start + window])
        assert len(set(grouped[-3:]) & set(plain[800:])) == 3  # the short last step stays last, from the last window
        steps = grouped[:1000].reshape(-1, step_rows)
        for k, step in enumerate(steps):  # a step holds neighbours in length: no other row of its window lies between
            start = k // GROUP_STEPS * window
            others = np.setdiff1d(grouped[start:start + window], step)
            low, high = lengths[step].min(), lengths[step].max()
            assert not np.any((lengths[others] > low) & (lengths[others] < high))
        assert padded_over_real(plain, lengths, step_rows) > 1.3
        assert padded_over_real(grouped, lengths, step_rows) < 1.05
        first = lengths[steps[:50, 0]]
        assert not np.all(np.diff(first) >= 0)  # the steps are shuffled, not shortest first
    assert not np.array_equal(epoch_order(n, 7, 0, step_rows, lengths), epoch_order(n, 7, 1, step_rows, lengths))


def test_training_reads_grouped_steps_when_asked(tiny_run, tmp_path, monkeypatch):
    original, read = training.backward, {}

    def recording(run, stepper, rows):
        lengths = run.batcher.token_lengths(rows)
        read.setdefault(run.config.train.group_by_length, []).append((list(rows.index), lengths))
        return original(run, stepper, rows)

    monkeypatch.setattr(training, "backward", recording)
    for grouped in (False, True):
        out = tmp_path / f"grouped-{grouped}"
        train_tiny(tiny_run, out, epochs=1, eval_every=100, batch_size=8, group_by_length=grouped)
        assert read_json(out / "config.json")["train"]["group_by_length"] is grouped
    padding = {}
    for grouped, steps in read.items():
        indices = [i for rows, _ in steps for i in rows]
        assert sorted(indices) == list(range(len(indices)))  # one epoch: every training row once
        padding[grouped] = sum(len(lengths) * lengths.max() for _, lengths in steps) / sum(
            lengths.sum() for _, lengths in steps)
    assert padding[True] < padding[False] - 0.02, padding


def test_a_grouped_run_cut_off_in_its_second_epoch_resumes_exactly(tiny_run, tmp_path, monkeypatch):
    # 110 training rows in steps of 32: 4 steps an epoch (the last of 14 rows); cut after the step-5 checkpoint
    def run(out):
        return train_tiny(tiny_run, out, epochs=2, max_steps=7, eval_every=7, checkpoint_every=1, batch_size=32,
                          lr=1e-2, group_by_length=True)

    run(tmp_path / "straight")
    original, saved = training.save_checkpoint, []

    def checkpoint_then_stop(path, run_, optimizer, state):
        original(path, run_, optimizer, state)
        saved.append(state.step)
        if state.step == 5:
            raise KeyboardInterrupt

    monkeypatch.setattr(training, "save_checkpoint", checkpoint_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "resumed")
    monkeypatch.setattr(training, "save_checkpoint", original)
    assert saved == [1, 2, 3, 4, 5]
    resumed = training.train(out=tmp_path / "resumed", resume=True)
    assert resumed["finished"] and resumed["steps"] == 7
    assert_same_weights(tmp_path / "resumed", tmp_path / "straight")


@pytest.mark.parametrize("value", ["yes", 2])
def test_the_setting_is_checked(value, tiny_run, tmp_path):
    from corarec.errors import CorarecError

    with pytest.raises(CorarecError, match="group_by_length"):
        training.train(method="cora", data=tiny_run.data, out=tmp_path / "run", cf=tiny_run.cf,
                       llm=str(tiny_run.llm), device="cpu", group_by_length=value)
    assert not (tmp_path / "run").exists()


def test_prompt_lengths_are_the_same_whatever_the_chunk(tiny_run, tokenizer):
    from corarec.data.schema import read_dataset
    from corarec.methods.batches import PromptBatcher

    dataset = read_dataset(tiny_run.data)
    batcher, rows = PromptBatcher(dataset, tokenizer), dataset.train
    whole = np.array([len(ids) for ids in tokenizer(batcher.prompts(rows))["input_ids"]])
    assert np.ptp(whole) > 0  # histories of 0-9 titles
    for chunk in (1, 7, 4096):
        assert np.array_equal(batcher.token_lengths(rows, chunk=chunk), whole)
