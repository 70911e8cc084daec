"""`corarec benchmark` end to end on a tiny dataset and a tiny random Llama (a few steps per method)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from corarec.benchmark import benchmark, parse_entry, plan, result_row
from corarec.cf.references import item_rate_scores
from corarec.data.batches import subsample_users
from corarec.data.schema import read_dataset
from corarec.errors import CorarecError
from corarec.metrics import auc
from corarec.runs import read_run_config
from tiny_models import tiny_dataset_dir, tiny_llm_dir

PRESET = """
run: {bf16: false, device: cpu}
train: {max_steps: 2, eval_every: 1, batch_size: 8, warmup_steps: 0, lr: 1.0e-2, max_eval_samples: 24}
tallrec: {rank: 4}
collm: {rank: 4, hidden_factor: 2}
cora: {rank: 2, alpha: 4, queries: 2, depth: 1, heads: 2}
cf: {dim: 8, epochs: 2, batch_size: 64}
benchmark: {max_test_samples: 40}
"""


def test_plan_adds_prerequisites_first_and_rejects_unknown_names():
    requested, ordered = plan(["collm-lightgcn", "item-rate", "icl"])
    assert [e.name for e in requested] == ["collm-lightgcn", "item-rate", "icl"]
    assert [e.name for e in ordered] == ["item-rate", "lightgcn", "icl", "tallrec", "collm-lightgcn"]
    assert parse_entry("CoRA-SASRec").label == "CoRA-SASRec"
    with pytest.raises(CorarecError, match="unknown method 'cora-bpr'"):
        parse_entry("cora-bpr")


def test_benchmark_end_to_end_writes_tables_plots_and_reuses_runs(tmp_path):
    data = tiny_dataset_dir(tmp_path)
    llm = str(tiny_llm_dir(tmp_path))
    preset = tmp_path / "tiny.yaml"
    preset.write_text(PRESET)
    out = tmp_path / "bench"
    methods = "item-rate,mf,icl,collm-mf,cora-mf"

    summary = benchmark(data, out, methods=methods, preset=str(preset), seed=0, llm=llm)

    for name in ("results.md", "results.csv", "results.json", "roc.png", "valid_auc.png"):
        assert (out / name).is_file(), name
    for name in ("roc.png", "valid_auc.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = pd.read_csv(out / "results.csv")
    assert table["method"].tolist() == ["Item rate", "MF", "ICL", "CoLLM-MF", "CoRA-MF"]  # tallrec: prerequisite only
    assert table["auc"].between(0, 1).all() and table["uauc"].between(0, 1).all()
    params = dict(zip(table["name"], table["trainable_parameters"]))
    assert params["icl"] == 0 and params["collm-mf"] > 0 and params["mf"] > 0 and params["cora-mf"] > 0
    markdown = (out / "results.md").read_text()
    assert "| CoLLM-MF |" in markdown and "roc.png" in markdown and "TALLRec" not in markdown
    assert (out / "runs" / "tallrec" / "adapter" / "adapter_model.safetensors").is_file()

    # every method scored the very same test rows: a whole-user subsample of 40 rows, seed 0
    ds = read_dataset(data)
    rows = subsample_users(ds.test, 40, 0)
    assert summary["test_rows"]["rows"] == len(rows) <= 40
    for name in ("item-rate", "mf", "icl", "collm-mf", "tallrec", "cora-mf"):
        scores = pd.read_csv(out / "runs" / name / "test_scores.csv")
        assert np.array_equal(scores["user_id"], rows["user_id"]) and np.array_equal(scores["item_id"], rows["item_id"])
    item_rate = item_rate_scores(ds, "test")[rows.index.to_numpy()]
    assert table.loc[table["name"] == "item-rate", "auc"].item() == pytest.approx(auc(rows["label"], item_rate), abs=1e-4)

    # a second call reuses every complete run (nothing retrained); other test rows only re-score
    weights = out / "runs" / "collm-mf" / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    again = benchmark(data, out, methods=methods, preset=str(preset), seed=0, llm=llm)
    assert untimed_rows(again) == untimed_rows(summary)
    fewer = benchmark(data, out, methods="mf,collm-mf", preset=str(preset), seed=0, llm=llm, max_test_samples=20)
    assert fewer["test_rows"]["rows"] == len(subsample_users(ds.test, 20, 0)) < len(rows)
    assert weights.stat().st_mtime_ns == stamp

    with pytest.raises(CorarecError, match="other settings"):
        benchmark(data, out, methods="mf", preset=str(preset), seed=1, llm=llm)
    preset.write_text(PRESET.replace("rank: 2, alpha: 4", "rank: 4, alpha: 4"))  # same file, edited: not reused
    with pytest.raises(CorarecError, match=r"other settings \(settings\.cora\.rank: 2 there, 4 now\).*--retrain-stale"):
        benchmark(data, out, methods="cora-mf", preset=str(preset), seed=0, llm=llm)

    # --retrain-stale sets the stale run aside (nothing deleted) and trains it again with the new settings
    old_scores = (out / "runs" / "cora-mf" / "test_scores.csv").read_text()
    retrained = benchmark(data, out, methods="cora-mf", preset=str(preset), seed=0, llm=llm, retrain_stale=True)
    assert (out / "runs" / "cora-mf.stale-1" / "test_scores.csv").read_text() == old_scores
    assert read_run_config(out / "runs" / "cora-mf").method_config["rank"] == 4
    assert retrained["methods"][0]["trainable_parameters"] > params["cora-mf"]


def test_benchmark_cli_is_a_thin_wrapper(tmp_path):
    from typer.testing import CliRunner

    from corarec.cli import app

    data = tiny_dataset_dir(tmp_path)
    preset = tmp_path / "tiny.yaml"
    preset.write_text(PRESET)
    result = CliRunner().invoke(app, ["benchmark", "--data", str(data), "--out", str(tmp_path / "b"),
                                      "--methods", "item-rate,logistic-rate", "--preset", str(preset),
                                      "--max-test-samples", "30"])
    assert result.exit_code == 0, result.output
    assert "| Logistic on rates |" in result.output
    assert pd.read_csv(tmp_path / "b" / "results.csv")["name"].tolist() == ["item-rate", "logistic-rate"]


def untimed_rows(summary: dict) -> list[dict]:
    """The table rows, less the references' train time (recomputed and timed anew on every call)."""
    return [{k: v for k, v in result_row(r).items() if not (r["kind"] == "reference" and k == "train_seconds")}
            for r in summary["methods"]]
