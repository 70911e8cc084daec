"""benchmarks/diagnose_cora.py on the tiny run: it re-draws the run's rows and reports real numbers."""

import pandas as pd

from scripts import benchmark_script


def load_script():
    return benchmark_script("diagnose_cora")


def test_diagnose_reports_fit_and_signal_of_a_cora_run(tiny_run):
    from corarec.training.runs import load_run
    from corarec.training.rows import training_rows

    diagnose = load_script()
    table, signal = diagnose.diagnose(str(tiny_run.run), rows=6)
    assert [r["n"] for r in table] == [6, 6]
    for r in table:
        for key in ("cf_learned", "cf_fold_in", "cora"):
            assert 0.0 <= r[key] <= 1.0
    run = load_run(tiny_run.run)
    assert signal["modules"] == sum(len(v) for v in run.method.injector.deltas.values())
    assert 0 < signal["bf16_rounding"] < signal["spread"] < 2 and signal["p_max_abs"] > 0  # trained: P has moved off its zero init
    train, valid = training_rows(run.dataset, run.config)
    assert isinstance(train, pd.DataFrame) and len(train) == len(run.dataset.train)  # no max_train_samples: all rows
