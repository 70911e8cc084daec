"""The scoring journal: a scoring pass cut off goes on where it stopped (evaluate, validation, the benchmark),
scores only the batches not done, gives the scores of a pass never cut off, and never reads nor replaces another
pass's scores."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors import SafetensorError

from corarec.benchmarking import benchmark
from corarec.evaluation import journal as journals
from corarec.evaluation.evaluate import evaluate, score_rows
from corarec.methods.cora import CoRA
from corarec.methods.icl import ICL
from corarec.training import loop as training
from corarec.training.runs import load_run
from corarec.utils import io
from tiny import CutOff, tiny_dataset_dir, tiny_llm_dir
from tiny_archs import tolerance_of_scores

BATCH = 4


def journals_in(folder: Path, kind: str) -> list[Path]:
    return sorted(folder.glob(f"{kind}-*{journals.ENDING}"))


def tolerance(run, rows) -> float:
    """Two computations of the same batch differ by rounding only (the tiny fp32 model's bound for these prompts)."""
    longest = int(run.batcher.token_lengths(rows).max())
    return tolerance_of_scores(run.llm.model, longest, run.method.cfg.rank)


@pytest.fixture(scope="module")
def loaded(tiny_run):
    return load_run(tiny_run.run, device="cpu")


def test_a_cut_off_pass_scores_only_the_rest_and_gives_the_uncut_scores(loaded, tmp_path, monkeypatch):
    rows = loaded.dataset.test.iloc[:22]  # 6 batches of 4, the last of 2
    reference = score_rows(loaded, rows, BATCH, progress=False)
    family = tmp_path / f"test{journals.ENDING}"

    first = CutOff(loaded.method.score, stop_at=3)
    monkeypatch.setattr(loaded.method, "score", first)
    with pytest.raises(KeyboardInterrupt):
        score_rows(loaded, rows, BATCH, progress=False, journal=family)
    journal = journals.ScoreJournal(family, loaded, rows, BATCH)
    assert journals_in(tmp_path, "test") == [journal.path]
    saved = journal.load(len(rows))
    assert saved is not None and saved[1].sum() == 2 * BATCH  # the two batches scored before Ctrl-C

    second = CutOff(first.score)
    monkeypatch.setattr(loaded.method, "score", second)
    resumed = score_rows(loaded, rows, BATCH, progress=False, journal=family)
    assert second.calls == 4  # batches 3-6 only
    np.testing.assert_array_equal(resumed[saved[1]], saved[0][saved[1]])  # the first attempt's scores, as saved
    np.testing.assert_array_equal(np.sort(np.concatenate(first.scored)), np.sort(saved[0][saved[1]]))
    bound = tolerance(loaded, rows)
    assert np.abs(resumed - reference).max() <= bound
    assert bound < 0.01 * np.abs(reference).max()  # ... and the comparison can fail: 1 % off is caught
    assert journals_in(tmp_path, "test") == []  # the pass completed: its journal is gone


def test_the_journal_of_another_pass_is_neither_read_nor_replaced(loaded, tmp_path, monkeypatch):
    rows = loaded.dataset.test.iloc[:16]
    family = tmp_path / f"valid{journals.ENDING}"
    first = CutOff(loaded.method.score, stop_at=3)
    monkeypatch.setattr(loaded.method, "score", first)
    with pytest.raises(KeyboardInterrupt):
        score_rows(loaded, rows, BATCH, progress=False, journal=family)
    (kept,) = journals_in(tmp_path, "valid")
    content = kept.read_bytes()

    final_norm = loaded.llm.model.model.norm.weight  # [d]: the LLM's fingerprint samples every value of it
    norm_as_loaded = final_norm.detach().clone()
    weights_as_loaded = loaded.method.trainable_state_dict()

    def change_weights():
        name = next(iter(weights_as_loaded))
        with torch.no_grad():
            dict(loaded.method.named_parameters())[name].add_(1e-3)

    def change_llm():
        with torch.no_grad():
            final_norm.add_(1e-2)

    other_rows = pd.concat([rows.iloc[:8], loaded.dataset.test.iloc[20:28]])
    try:
        for these, size, before in ((other_rows, BATCH, None), (rows, 2 * BATCH, None), (rows, BATCH, change_weights),
                                    (rows, BATCH, change_llm)):
            if before is not None:
                before()
            fresh = score_rows(loaded, these, size, progress=False)  # no journal: this pass's reference
            count = CutOff(first.score)
            monkeypatch.setattr(loaded.method, "score", count)
            scores = score_rows(loaded, these, size, progress=False, journal=family)
            assert count.calls == -(-len(these) // size)  # every batch scored: nothing read from the other pass
            assert np.abs(scores - fresh).max() <= tolerance(loaded, these)
            assert journals_in(tmp_path, "valid") == [kept] and kept.read_bytes() == content  # left as it was
    finally:  # the module-scoped run back as loaded
        with torch.no_grad():
            final_norm.copy_(norm_as_loaded)
        loaded.method.load_trainable_state_dict(weights_as_loaded)


def test_the_journal_is_saved_while_scoring_an_unreadable_one_replaced_and_a_failed_save_costs_nothing(
        loaded, tmp_path, monkeypatch, capsys):
    rows = loaded.dataset.test.iloc[:12]
    family = tmp_path / f"test{journals.ENDING}"
    journal = journals.ScoreJournal(family, loaded, rows, BATCH)
    journal.path.write_text("not a journal")
    monkeypatch.setattr(journals, "SAVE_SECONDS", 0.0)
    seen = []
    score = loaded.method.score

    def watch(batch):
        saved = journal.load(len(rows))
        seen.append(None if saved is None else int(saved[1].sum()))
        return score(batch)

    monkeypatch.setattr(loaded.method, "score", watch)
    reference = score_rows(loaded, rows, BATCH, progress=False, journal=family)
    assert seen == [None, BATCH, 2 * BATCH]  # saved after every batch (SAVE_SECONDS 0), the bad file replaced
    assert not journal.path.exists()

    def full_disk(*args, **kwargs):  # what safetensors raises when its write fails (not an OSError)
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(io, "save_file", full_disk)
    monkeypatch.setattr(loaded.method, "score", score)
    scores = score_rows(loaded, rows, BATCH, progress=False, journal=family)
    assert np.abs(scores - reference).max() <= tolerance(loaded, rows)
    assert not journal.path.exists() and not list(tmp_path.glob(".*.tmp"))  # nothing half-written left
    warnings = [line for line in capsys.readouterr().out.splitlines() if "cannot save the scoring journal" in line]
    assert len(warnings) == 1 and "No space left on device" in warnings[0]  # once, one line; the pass went on


def test_evaluate_cut_off_resumes_from_its_journal(tiny_run, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(tiny_run.run, run)
    straight = evaluate(run, split="test", batch_size=BATCH)

    cut = CutOff(CoRA.score, stop_at=3)
    monkeypatch.setattr(CoRA, "score", lambda self, batch: cut(self, batch))
    with pytest.raises(KeyboardInterrupt):
        evaluate(run, split="test", batch_size=BATCH)
    assert len(journals_in(run / "eval", "test")) == 1
    cut.calls, cut.stop_at = 0, None
    again = evaluate(run, split="test", batch_size=BATCH)
    assert cut.calls == -(-straight["all"]["rows"] // BATCH) - 2
    assert again["all"]["auc"] == pytest.approx(straight["all"]["auc"], abs=1e-6)
    assert journals_in(run / "eval", "test") == []


def test_train_resume_reuses_a_cut_off_validation(tiny_run, tmp_path, monkeypatch):
    settings = dict(method="cora", data=tiny_run.data, cf=tiny_run.cf, llm=str(tiny_run.llm), seed=0, device="cpu",
                    bf16=False, rank=4, alpha=8.0, generator_queries=2, generator_depth=1, generator_heads=2,
                    max_steps=4, eval_every=2, batch_size=8, eval_batch_size=BATCH, max_eval_samples=16,
                    warmup_steps=1)
    straight = training.train(out=tmp_path / "straight", **settings)
    batches = -(-straight["valid"]["all"]["rows"] // BATCH)  # the validation rows: whole users, at most 16

    cut = CutOff(CoRA.score, stop_at=None)
    monkeypatch.setattr(CoRA, "score", lambda self, batch: cut(self, batch))
    monkeypatch.setattr(training, "validate", cut_second_validation(training.validate, cut))
    with pytest.raises(KeyboardInterrupt):
        training.train(out=tmp_path / "cut", **settings)
    assert len(journals_in(tmp_path / "cut", "validate")) == 1  # the step-4 validation's first batch
    older = tmp_path / "cut" / f"validate-{'0' * 16}{journals.ENDING}"  # an earlier validation's, of other weights
    older.write_bytes(journals_in(tmp_path / "cut", "validate")[0].read_bytes())
    cut.calls, cut.stop_at = 0, None
    monkeypatch.undo()
    counted = CutOff(CoRA.score)
    monkeypatch.setattr(CoRA, "score", lambda self, batch: counted(self, batch))
    resumed = training.train(out=tmp_path / "cut", resume=True)
    # steps 3-4 retrained from the step-2 checkpoint (one batch each), then the validation's batches but its first
    assert counted.calls == 2 + batches - 1
    assert [p["valid_auc"] for p in resumed["valid_curve"]] == [p["valid_auc"] for p in straight["valid_curve"]]
    assert journals_in(tmp_path / "cut", "validate") == []  # its own, and the older one: the run moved past them


def cut_second_validation(validate, cut: CutOff):
    """``validate`` that lets the first validation run and stops the second after its first scored batch."""
    seen = {"n": 0}

    def wrapped(*args, **kwargs):
        seen["n"] += 1
        if seen["n"] == 2:
            cut.calls, cut.stop_at = 0, 2
        return validate(*args, **kwargs)

    return wrapped


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

    cut = CutOff(ICL.score, stop_at=3)
    monkeypatch.setattr(ICL, "score", lambda self, batch: cut(self, batch))
    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        benchmark(data, out, methods="icl", preset=str(preset), tune_cf=False, llm=llm)
    assert len(journals_in(out / "runs" / "icl", "validate")) == 1  # kept, not deleted with the run
    cut.calls, cut.stop_at = 0, None
    resumed = benchmark(data, out, methods="icl", preset=str(preset), tune_cf=False, llm=llm)
    valid_batches = -(-straight["valid_rows"]["rows"] // 4)
    test_batches = -(-straight["test_rows"]["rows"] // 4)
    assert cut.calls == (valid_batches - 2) + test_batches
    (a,), (b,) = straight["methods"], resumed["methods"]
    for key in ("valid_auc", "auc"):  # the means over the one seed
        assert b[key]["mean"] == pytest.approx(a[key]["mean"], abs=1e-6), key
    assert journals_in(out / "runs" / "icl", "validate") == []


def test_a_benchmark_run_cut_off_before_its_first_checkpoint_with_other_settings_is_trained_anew(tmp_path,
                                                                                               monkeypatch):
    data, llm = tiny_dataset_dir(tmp_path), str(tiny_llm_dir(tmp_path))
    preset = tmp_path / "tiny.yaml"
    preset.write_text(PRESET)
    cut = CutOff(ICL.score, stop_at=3)
    monkeypatch.setattr(ICL, "score", lambda self, batch: cut(self, batch))
    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        benchmark(data, out, methods="icl", preset=str(preset), tune_cf=False, llm=llm)
    preset.write_text(PRESET.replace("eval_batch_size: 4", "eval_batch_size: 2"))  # the preset edited since
    cut.calls, cut.stop_at = 0, None
    benchmark(data, out, methods="icl", preset=str(preset), tune_cf=False, llm=llm)
    from corarec.training.runs import read_run_config

    assert read_run_config(out / "runs" / "icl").train.eval_batch_size == 2  # not resumed with the old settings
