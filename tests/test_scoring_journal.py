"""The scoring journal: a scoring pass cut off goes on where it stopped (evaluate, validation, the benchmark),
scores only the batches not done, gives the scores of a pass never cut off, and never reads another pass's
scores."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from corarec.benchmarking import benchmark
from corarec.evaluation import journal as journals
from corarec.evaluation.evaluate import evaluate, score_rows
from corarec.methods.icl import ICL
from corarec.training.runs import load_run
from tiny import tiny_dataset_dir, tiny_llm_dir

BATCH = 4
# logits of the tiny fp32 model are O(1); the batches are the same rows in both passes, so a recomputed score can
# differ from the reference only by the order a kernel sums ~64 products in: far below 1e-5
ATOL = 1e-5


class CutOff:
    """Wraps a method's ``score``: counts the batches it scores and stops the pass (Ctrl-C) at batch ``stop_at``."""

    def __init__(self, score, stop_at: int | None = None):
        self.score, self.stop_at, self.calls, self.scored = score, stop_at, 0, []

    def __call__(self, batch):
        self.calls += 1
        if self.calls == self.stop_at:
            raise KeyboardInterrupt
        logits = self.score(batch)
        self.scored.append(logits.detach().float().numpy().copy())
        return logits


@pytest.fixture(scope="module")
def loaded(tiny_run):
    return load_run(tiny_run.run, device="cpu")


def test_a_cut_off_pass_scores_only_the_rest_and_gives_the_uncut_scores(loaded, tmp_path, monkeypatch):
    rows = loaded.dataset.test.iloc[:22]  # 6 batches of 4, the last of 2
    reference = score_rows(loaded, rows, BATCH, progress=False)
    path = tmp_path / "test.partial.safetensors"

    first = CutOff(loaded.method.score, stop_at=3)
    monkeypatch.setattr(loaded.method, "score", first)
    with pytest.raises(KeyboardInterrupt):
        score_rows(loaded, rows, BATCH, progress=False, journal=path)
    saved = journals.ScoreJournal(path, loaded, rows, BATCH).load(len(rows))
    assert saved is not None and saved[1].sum() == 2 * BATCH  # the two batches scored before Ctrl-C

    second = CutOff(first.score)
    monkeypatch.setattr(loaded.method, "score", second)
    resumed = score_rows(loaded, rows, BATCH, progress=False, journal=path)
    assert second.calls == 4  # batches 3-6 only
    np.testing.assert_array_equal(resumed[saved[1]], saved[0][saved[1]])  # the first attempt's scores, as saved
    np.testing.assert_array_equal(np.sort(np.concatenate(first.scored)), np.sort(saved[0][saved[1]]))
    np.testing.assert_allclose(resumed, reference, rtol=0, atol=ATOL)
    assert not path.exists()  # the pass completed: its journal is gone


def test_the_journal_of_another_pass_is_not_read(loaded, tmp_path, monkeypatch):
    rows = loaded.dataset.test.iloc[:16]
    path = tmp_path / "valid.partial.safetensors"
    first = CutOff(loaded.method.score, stop_at=3)
    monkeypatch.setattr(loaded.method, "score", first)
    with pytest.raises(KeyboardInterrupt):
        score_rows(loaded, rows, BATCH, progress=False, journal=path)
    assert path.is_file()

    kept = path.read_bytes()

    def change_weights():
        name = next(iter(loaded.method.trainable_state_dict()))
        with torch.no_grad():
            dict(loaded.method.named_parameters())[name].add_(1e-3)

    final_norm = loaded.llm.model.model.norm.weight  # [d]: the LLM's fingerprint samples every value of it
    norm_as_loaded = final_norm.detach().clone()

    def change_llm():
        with torch.no_grad():
            final_norm.add_(1e-2)

    other_rows = pd.concat([rows.iloc[:8], loaded.dataset.test.iloc[20:28]])
    for these, size, before in ((other_rows, BATCH, None), (rows, 2 * BATCH, None), (rows, BATCH, change_weights),
                                (rows, BATCH, change_llm)):
        if before is not None:
            before()
        fresh = score_rows(loaded, these, size, progress=False)  # no journal: this pass's reference
        path.write_bytes(kept)
        count = CutOff(first.score)
        monkeypatch.setattr(loaded.method, "score", count)
        scores = score_rows(loaded, these, size, progress=False, journal=path)
        assert count.calls == -(-len(these) // size)  # every batch scored: nothing read from the other pass
        np.testing.assert_allclose(scores, fresh, rtol=0, atol=ATOL)
    with torch.no_grad():  # the module-scoped run back as loaded
        final_norm.copy_(norm_as_loaded)
    loaded.method.load_trainable_state_dict(load_run(loaded.root, device="cpu").method.trainable_state_dict())


def test_the_journal_is_saved_while_scoring_and_an_unreadable_one_is_replaced(loaded, tmp_path, monkeypatch):
    rows = loaded.dataset.test.iloc[:12]
    path = tmp_path / "test.partial.safetensors"
    path.write_text("not a journal")
    monkeypatch.setattr(journals, "SAVE_SECONDS", 0.0)
    seen = []
    score = loaded.method.score

    def watch(batch):
        saved = journals.ScoreJournal(path, loaded, rows, BATCH).load(len(rows))
        seen.append(None if saved is None else int(saved[1].sum()))
        return score(batch)

    monkeypatch.setattr(loaded.method, "score", watch)
    score_rows(loaded, rows, BATCH, progress=False, journal=path)
    assert seen == [None, BATCH, 2 * BATCH]  # saved after every batch (SAVE_SECONDS 0), the bad file replaced
    assert not path.exists()


def test_evaluate_cut_off_resumes_from_its_journal(tiny_run, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(tiny_run.run, run)
    straight = evaluate(run, split="test", batch_size=BATCH)

    real = type(load_run(run, device="cpu").method).score
    calls = {"n": 0, "stop": 3}

    def cut(self, batch):
        calls["n"] += 1
        if calls["n"] == calls["stop"]:
            raise KeyboardInterrupt
        return real(self, batch)

    monkeypatch.setattr(type(load_run(run, device="cpu").method), "score", cut)
    with pytest.raises(KeyboardInterrupt):
        evaluate(run, split="test", batch_size=BATCH)
    assert (run / "eval" / "test.partial.safetensors").is_file()
    calls.update(n=0, stop=None)
    again = evaluate(run, split="test", batch_size=BATCH)
    total = -(-straight["all"]["rows"] // BATCH)
    assert calls["n"] == total - 2
    assert again["all"]["auc"] == pytest.approx(straight["all"]["auc"], abs=1e-6)
    assert not (run / "eval" / "test.partial.safetensors").exists()


PRESET = """
run: {bf16: false, device: cpu}
train: {eval_batch_size: 4}
benchmark: {max_test_samples: 20, max_valid_samples: 20}
"""


def test_a_benchmark_cut_off_in_the_zero_shot_validation_resumes_it(tmp_path, monkeypatch):
    data, llm = tiny_dataset_dir(tmp_path), str(tiny_llm_dir(tmp_path))
    preset = tmp_path / "tiny.yaml"
    preset.write_text(PRESET)
    straight = benchmark(data, tmp_path / "straight", methods="icl", preset=str(preset), tune_cf=False, llm=llm)

    real, calls = ICL.score, {"n": 0, "stop": 3}

    def cut(self, batch):
        calls["n"] += 1
        if calls["n"] == calls["stop"]:
            raise KeyboardInterrupt
        return real(self, batch)

    monkeypatch.setattr(ICL, "score", cut)
    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        benchmark(data, out, methods="icl", preset=str(preset), tune_cf=False, llm=llm)
    assert (out / "runs" / "icl" / "validate.partial.safetensors").is_file()  # kept, not deleted with the run
    calls.update(n=0, stop=None)
    resumed = benchmark(data, out, methods="icl", preset=str(preset), tune_cf=False, llm=llm)
    valid_batches = -(-straight["valid_rows"]["rows"] // 4)
    test_batches = -(-straight["test_rows"]["rows"] // 4)
    assert calls["n"] == (valid_batches - 2) + test_batches
    (a,), (b,) = straight["methods"], resumed["methods"]
    for key in ("valid_auc", "auc"):  # the means over the one seed
        assert b[key]["mean"] == pytest.approx(a[key]["mean"], abs=1e-6), key
    assert not (out / "runs" / "icl" / "validate.partial.safetensors").exists()
