"""`corarec benchmark` end to end on a tiny dataset and a tiny random Llama (a few steps per method):
the shared validation and test rows, the seeds loop and its reuse, the intervals, the CF tuning."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from corarec.benchmarking import benchmark, parse_entry, parse_seeds, plan, result_row
from corarec.benchmarking.aggregate import cf_notes
from corarec.cf.references import item_rate_scores, logistic_rates_scores
from corarec.data.sampling import subsample_users
from corarec.data.schema import read_dataset
from corarec.errors import CorarecError
from corarec.evaluation.metrics import auc
from corarec.evaluation.bootstrap import paired_auc_difference
from corarec.training.runs import read_run_config
from corarec.training.rows import training_rows
from tiny import tiny_dataset_dir, tiny_llm_dir

PRESET = """
run: {bf16: false, device: cpu}
train: {max_steps: 2, eval_every: 1, batch_size: 8, warmup_steps: 0, lr: 1.0e-2, max_eval_samples: 24}
tallrec: {rank: 4}
collm: {rank: 4, hidden_factor: 2}
cora: {rank: 2, alpha: 4, generator: {queries: 2, depth: 1, heads: 2}}
cf: {dim: 8, epochs: 2, batch_size: 64, tune: {lr: [1.0e-2, 1.0e-3], weight_decay: [0.0], dim: [4, 8]}}
benchmark: {max_test_samples: 40, max_valid_samples: 30}
"""


def test_plan_adds_prerequisites_first_and_rejects_unknown_names():
    requested, ordered = plan(["collm-lightgcn", "item-rate", "icl"])
    assert [e.name for e in requested] == ["collm-lightgcn", "item-rate", "icl"]
    assert [e.name for e in ordered] == ["item-rate", "lightgcn", "icl", "tallrec", "collm-lightgcn"]
    assert parse_entry("CoRA-SASRec").label == "CoRA-SASRec"
    assert [e.per_seed for e in ordered] == [False, True, False, True, True]  # references and ICL run once
    with pytest.raises(CorarecError, match="unknown method 'cora-bpr'"):
        parse_entry("cora-bpr")
    assert parse_seeds("0, 2,2,1") == [0, 2, 1] and parse_seeds(3) == [3]
    with pytest.raises(CorarecError, match="--seeds: expected comma-separated whole numbers"):
        parse_seeds("0,-1")
    with pytest.raises(CorarecError, match="--seeds: a seed is a whole number from 0 to 4294967295"):
        parse_seeds(str(2**32))


def test_benchmark_end_to_end_writes_tables_plots_and_reuses_runs(tmp_path):
    data, llm, preset = setup(tmp_path)
    out = tmp_path / "bench"
    methods = "item-rate,mf,icl,collm-mf,cora-mf"

    summary = benchmark(data, out, methods=methods, preset=str(preset), seeds=0, tune_cf=False, llm=llm)

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
    assert (out / "runs" / "tallrec" / "seed-0" / "adapter" / "adapter_model.safetensors").is_file()
    assert read_run_config(out / "runs" / "collm-mf" / "seed-0").init.endswith("tallrec/seed-0")

    # every method scored the very same test rows: a whole-user sample of 40 rows, sample seed 0
    ds = read_dataset(data)
    rows = subsample_users(ds.test, 40, 0)
    assert summary["test_rows"]["rows"] == len(rows) <= 40
    for run in ("item-rate", "mf/seed-0", "icl", "collm-mf/seed-0", "tallrec/seed-0", "cora-mf/seed-0"):
        scores = pd.read_csv(out / "runs" / run / "test_scores.csv")
        assert np.array_equal(scores["user_id"], rows["user_id"]) and np.array_equal(scores["item_id"], rows["item_id"])
    item_rate = item_rate_scores(ds, "test")[rows.index.to_numpy()]
    assert table.loc[table["name"] == "item-rate", "auc"].item() == pytest.approx(auc(rows["label"], item_rate), abs=1e-4)
    assert table["test_auc_whole"].notna().tolist() == [True, True, False, False, False]  # CF and references only

    # a second call reuses every complete run (nothing retrained); other test rows only re-score
    weights = out / "runs" / "collm-mf" / "seed-0" / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    again = benchmark(data, out, methods=methods, preset=str(preset), seeds=0, tune_cf=False, llm=llm)
    assert untimed_rows(again) == untimed_rows(summary)
    fewer = benchmark(data, out, methods="mf,collm-mf", preset=str(preset), tune_cf=False, llm=llm, max_test_samples=20)
    assert fewer["test_rows"]["rows"] == len(subsample_users(ds.test, 20, 0)) < len(rows)
    assert weights.stat().st_mtime_ns == stamp
    preset.write_text(PRESET.replace("max_steps: 2,", "max_steps: 2, checkpoint_every: 1,"))  # changes no result
    benchmark(data, out, methods="mf,collm-mf", preset=str(preset), tune_cf=False, llm=llm, max_test_samples=20)
    assert weights.stat().st_mtime_ns == stamp  # still reused, not stale

    # another sample seed: the LLM runs validated on other rows, so they are stale (CF runs only re-score)
    with pytest.raises(CorarecError, match=r"tallrec/seed-0: trained with other settings \(samples\.train_sample_seed: 0 there, 1 now; samples\.valid_sample_seed: 0 there, 1 now"):
        benchmark(data, out, methods="mf,collm-mf", preset=str(preset), sample_seed=1, tune_cf=False, llm=llm)
    preset.write_text(PRESET.replace("rank: 2, alpha: 4", "rank: 4, alpha: 4"))  # same file, edited: not reused
    with pytest.raises(CorarecError, match=r"other settings \(settings\.cora\.rank: 2 there, 4 now\).*--retrain-stale"):
        benchmark(data, out, methods="cora-mf", preset=str(preset), tune_cf=False, llm=llm)

    # --retrain-stale sets the stale run aside (nothing deleted) and trains it again with the new settings
    old_scores = (out / "runs" / "cora-mf" / "seed-0" / "test_scores.csv").read_text()
    retrained = benchmark(data, out, methods="cora-mf", preset=str(preset), tune_cf=False, llm=llm, retrain_stale=True)
    assert (out / "runs" / "cora-mf" / "seed-0.stale-1" / "test_scores.csv").read_text() == old_scores
    assert read_run_config(out / "runs" / "cora-mf" / "seed-0").method_config["rank"] == 4
    assert retrained["methods"][0]["trainable_parameters"] > params["cora-mf"]


def test_seeds_train_each_method_per_seed_on_the_same_rows_and_reuse_earlier_seeds(tmp_path):
    data, llm, preset = setup(tmp_path)
    out = tmp_path / "bench"
    summary = benchmark(data, out, methods="logistic-rate,mf,cora-mf", preset=str(preset), seeds="0,1",
                        sample_seed=2, tune_cf=False, llm=llm)
    ds = read_dataset(data)
    test, valid = subsample_users(ds.test, 40, 2), subsample_users(ds.valid, 30, 2)
    assert summary["seeds"] == [0, 1] and summary["sample_seed"] == 2
    assert summary["valid_rows"]["rows"] == len(valid) and summary["valid_rows"]["users"] == valid["user_id"].nunique()
    records = {r["name"]: r for r in summary["methods"]}
    assert records["logistic-rate"]["seeds"] == [2] and records["cora-mf"]["seeds"] == [0, 1]  # once: sample seed

    # the same test rows for every method and seed; every valid AUC on one validation row set
    logistic = logistic_rates_scores(ds, "valid")[ds.valid.index.get_indexer(valid.index)]
    assert records["logistic-rate"]["valid_auc"]["mean"] == pytest.approx(auc(valid["label"], logistic), abs=1e-12)
    for seed in (0, 1):
        for run in (f"mf/seed-{seed}", f"cora-mf/seed-{seed}", "logistic-rate"):
            scores = pd.read_csv(out / "runs" / run / "test_scores.csv")
            assert np.array_equal(scores[["user_id", "item_id"]].to_numpy(), test[["user_id", "item_id"]].to_numpy())
        config = read_run_config(out / "runs" / "cora-mf" / f"seed-{seed}")
        assert config.seed == seed and config.cf.endswith(f"mf/seed-{seed}")
        _, cora_valid = training_rows(ds, config)  # the rows CoRA validated on while it trained
        assert cora_valid.index.equals(valid.index)
        from corarec.cf import cf_logits, load_cf

        mf_valid = auc(valid["label"], cf_logits(load_cf(out / "runs" / "mf" / f"seed-{seed}", ds), valid))
        assert records["mf"]["per_seed"][seed]["valid_auc"] == pytest.approx(mf_valid, abs=1e-12)

    # mean ± std over seeds, and the interval to MF from the stored scores (AUC averaged over seeds)
    cora = records["cora-mf"]
    aucs = [r["test"]["all"]["auc"] for r in cora["per_seed"]]
    assert cora["auc"]["mean"] == pytest.approx(np.mean(aucs)) and cora["auc"]["std"] == pytest.approx(np.std(aucs, ddof=1))
    stored = {name: np.stack([pd.read_csv(out / "runs" / name / f"seed-{s}" / "test_scores.csv")["score"] for s in (0, 1)])
              for name in ("mf", "cora-mf")}
    expected = paired_auc_difference(test["user_id"], test["label"], stored["cora-mf"], stored["mf"])
    assert cora["vs_mf"]["difference"] == pytest.approx(expected["difference"], abs=1e-6)
    assert cora["vs_mf"]["low"] <= cora["vs_mf"]["difference"] <= cora["vs_mf"]["high"]
    assert " ± " in summary["table"] and "(baseline)" in summary["table"]

    # a third seed trains only seed 2; seeds 0 and 1 are reused as they are
    stamps = {s: (out / "runs" / "cora-mf" / f"seed-{s}" / "model.safetensors").stat().st_mtime_ns for s in (0, 1)}
    more = benchmark(data, out, methods="logistic-rate,mf,cora-mf", preset=str(preset), seeds="0,1,2",
                     sample_seed=2, tune_cf=False, llm=llm)
    assert {s: (out / "runs" / "cora-mf" / f"seed-{s}" / "model.safetensors").stat().st_mtime_ns for s in (0, 1)} == stamps
    assert read_run_config(out / "runs" / "cora-mf" / "seed-2").cf.endswith("mf/seed-2")
    assert [r["seeds"] for r in more["methods"]] == [[2], [0, 1, 2], [0, 1, 2]]
    assert more["methods"][2]["per_seed"][:2] == cora["per_seed"]


def test_cf_models_are_tuned_once_and_the_chosen_settings_recorded(tmp_path):
    data, _, preset = setup(tmp_path, llm=False)
    out = tmp_path / "bench"
    (out / "runs" / "mf").mkdir(parents=True)
    (out / "runs" / "mf" / "benchmark.json").write_text("{}")  # a run of the layout before seeds
    with pytest.raises(CorarecError, match="before runs were kept per seed"):
        benchmark(data, out, methods="mf", preset=str(preset), seeds="0,1")
    summary = benchmark(data, out, methods="mf", preset=str(preset), seeds="0,1", retrain_stale=True)
    assert (out / "runs" / "mf.stale-1" / "benchmark.json").is_file()

    tuning = summary["cf_settings"]["mf"]
    assert tuning["tuned"] and len(tuning["candidates"]) == 4  # 2 lr × 1 weight decay × 2 dim
    best = max(tuning["candidates"], key=lambda c: c["valid_auc"])
    assert tuning["chosen"] == {k: best[k] for k in ("lr", "weight_decay", "dim")}
    assert summary["methods"][0]["cf_settings"]["chosen"] == tuning["chosen"]
    for seed in (0, 1):
        config = json.loads((out / "runs" / "mf" / f"seed-{seed}" / "config.json").read_text())
        assert {k: config[k] for k in ("lr", "weight_decay", "dim")} == tuning["chosen"] and config["seed"] == seed
    assert f"MF settings: lr {tuning['chosen']['lr']:g}" in (out / "results.md").read_text()

    record = out / "runs" / "mf" / "tuning" / "tuning.json"
    stamp = record.stat().st_mtime_ns
    assert benchmark(data, out, methods="mf", preset=str(preset), seeds="0,1,2")["cf_settings"]["mf"] == tuning
    assert record.stat().st_mtime_ns == stamp  # tuned once, whatever the training seeds
    # a preset that now holds other values of the searched settings keeps its tuning; any other setting does not
    preset.write_text(PRESET.replace("cf: {dim: 8,", "cf: {dim: 4, lr: 5.0e-2,"))
    assert benchmark(data, out, methods="mf", preset=str(preset), seeds="0,1")["cf_settings"]["mf"] == tuning
    assert record.stat().st_mtime_ns == stamp
    # ... and the error names only the setting that makes it stale, not the searched dim that changed with it
    preset.write_text(PRESET.replace("epochs: 2,", "epochs: 3,").replace("cf: {dim: 8,", "cf: {dim: 4,"))
    with pytest.raises(CorarecError, match=r"tuning: trained with other settings \(settings.epochs: 2 there, 3 now\)"):
        benchmark(data, out, methods="mf", preset=str(preset), seeds="0,1")
    preset.write_text(PRESET)

    fixed = benchmark(data, tmp_path / "fixed", methods="mf", preset=str(preset), tune_cf=False)
    assert fixed["cf_settings"]["mf"] == {"tuned": False, "chosen": {"lr": 1e-3, "weight_decay": 3e-5, "dim": 8}}
    assert not (tmp_path / "fixed" / "runs" / "mf" / "tuning").exists()
    assert "the preset's values, not tuned" in fixed["notes"][0]


def test_a_partial_llm_run_resumes_unless_its_settings_changed(tmp_path, monkeypatch):
    """Cut off right after its first checkpoint: the same benchmark resumes it; an edited preset makes it stale
    (an error naming the difference; --retrain-stale sets it aside, nothing deleted)."""
    from corarec.training import loop as training

    data, llm, preset = setup(tmp_path)
    out = tmp_path / "bench"
    validate = training.validate

    def validate_then_stop(*args, **kwargs):
        validate(*args, **kwargs)
        raise KeyboardInterrupt  # right after the step-1 validation and its checkpoint

    monkeypatch.setattr(training, "validate", validate_then_stop)
    with pytest.raises(KeyboardInterrupt):
        benchmark(data, out, methods="cora-mf", preset=str(preset), tune_cf=False, llm=llm)
    monkeypatch.setattr(training, "validate", validate)
    run = out / "runs" / "cora-mf" / "seed-0"
    assert (run / "checkpoint" / "state.json").is_file() and not (run / "benchmark.json").exists()
    validations = []
    monkeypatch.setattr(training, "validate", lambda *a, **k: (validations.append(a[2].step), validate(*a, **k)))
    benchmark(data, out, methods="cora-mf", preset=str(preset), tune_cf=False, llm=llm)
    assert validations == [2]  # resumed after step 1, not trained again from step 0
    assert [p["step"] for p in json.loads((run / "metrics.json").read_text())["valid_curve"]] == [1, 2]

    partial = out / "runs" / "cora-mf" / "seed-1"  # another seed, cut the same way, then the preset edited
    monkeypatch.setattr(training, "validate", validate_then_stop)
    with pytest.raises(KeyboardInterrupt):
        benchmark(data, out, methods="cora-mf", preset=str(preset), seeds=1, tune_cf=False, llm=llm)
    monkeypatch.setattr(training, "validate", validate)
    preset.write_text(PRESET.replace("lr: 1.0e-2,", "lr: 5.0e-3,"))
    with pytest.raises(CorarecError, match=r"seed-1: trained with other settings \(.*lr: 0\.01 there, 0\.005 now"):
        benchmark(data, out, methods="cora-mf", preset=str(preset), seeds=1, tune_cf=False, llm=llm)
    benchmark(data, out, methods="cora-mf", preset=str(preset), seeds=1, tune_cf=False, llm=llm, retrain_stale=True)
    assert (partial.with_name("seed-1.stale-1") / "checkpoint" / "state.json").is_file()
    assert read_run_config(partial).train.lr == 5.0e-3


def test_a_cf_model_below_the_logistic_reference_on_validation_is_said_plainly():
    def record(label, valid):
        return {"label": label, "kind": "cf", "valid_auc": {"mean": valid},
                "cf_settings": {"tuned": False, "chosen": {"lr": 1e-3, "weight_decay": 0.0, "dim": 64}}}

    notes = cf_notes({"mf": record("MF", 0.70), "lightgcn": record("LightGCN", 0.74)}, logistic_valid_auc=0.72)
    warnings = [n for n in notes if n.startswith("WARNING")]
    assert warnings == ["WARNING: MF does not beat the logistic rate reference on validation "
                        "(valid AUC 0.7000 vs 0.7200 on the same rows)."]
    assert "LightGCN settings: lr 0.001, weight decay 0, dim 64 (the preset's values, not tuned)." in notes


def test_benchmark_cli_is_a_thin_wrapper(tmp_path):
    from typer.testing import CliRunner

    from corarec.cli import app

    data, _, preset = setup(tmp_path, llm=False)
    result = CliRunner().invoke(app, ["benchmark", "--data", str(data), "--out", str(tmp_path / "b"),
                                      "--methods", "item-rate,logistic-rate,mf", "--preset", str(preset),
                                      "--max-test-samples", "30", "--max-valid-samples", "0", "--seeds", "0,1",
                                      "--sample-seed", "3", "--no-tune-cf"])
    assert result.exit_code == 0, result.output
    assert "| Logistic on rates |" in result.output and "MF settings: lr 0.001" in result.output
    assert pd.read_csv(tmp_path / "b" / "results.csv")["name"].tolist() == ["item-rate", "logistic-rate", "mf"]
    saved = json.loads((tmp_path / "b" / "results.json").read_text())
    assert saved["seeds"] == [0, 1] and saved["sample_seed"] == 3 and saved["test_rows"]["seed"] == 3
    assert saved["valid_rows"]["rows"] == len(read_dataset(data).valid)  # 0: the whole split


def test_make_demo_does_not_tune_it_trains_with_the_demo_preset_which_fixes_the_cpu_presets_cf_values(tmp_path, monkeypatch):
    import types

    import corarec.benchmarking.demo as demo
    from corarec.benchmarking import cf_settings
    from corarec.cf.config import CF_MODELS
    from corarec.training.config import load_preset, resolve_config

    seen: dict = {}

    def fake_benchmark(data, out, **options):
        seen.update(options)
        return {"test_rows": {"rows": 1, "users": 1}, "llm": "tiny", "table": "| table |", "notes": ["a note"],
                "wall_seconds": 0.0}

    monkeypatch.setattr(demo, "prepare", lambda name, out: types.SimpleNamespace(info={"stats": {}}))
    monkeypatch.setattr(demo, "format_stats", lambda stats: "")
    monkeypatch.setattr(demo, "benchmark", fake_benchmark)
    printed = demo.demo(out=tmp_path, seed=0)
    assert seen["tune_cf"] is False and seen["preset"] == "demo" and seen["seeds"] == seen["sample_seed"] == 0
    assert seen["max_test_samples"] is None  # the preset's
    assert "| table |" in printed and "a note" in printed
    cpu, demo_preset = load_preset("cpu"), load_preset("demo")
    for model in CF_MODELS:  # what the demo trains with: every tuned setting fixed in the preset, the cpu preset's
        assert {"lr", "weight_decay", "dim"} <= set(cf_settings(demo_preset, model)), model
        assert cf_settings(demo_preset, model) == cf_settings(cpu, model)
    # the demo's shorter CoRA run: 2,000 training rows read twice (500 steps), one validation at the end, CoRA's
    # own settings (lr, layers, prefix cache) the cpu preset's
    config = resolve_config("cora", data="d", preset="demo")
    steps = config.train.max_train_samples * config.train.epochs // config.train.batch_size
    assert steps == 500 and config.train.eval_every == steps and config.train.lr == cpu["cora"]["train"]["lr"]
    assert config.train.checkpoint_every == 100  # a cut-off demo loses at most 100 steps
    assert demo_preset["cora"] == cpu["cora"] and demo_preset["benchmark"]["max_test_samples"] == 2000


def setup(tmp_path, llm: bool = True):
    """The tiny dataset, (a tiny LLM,) and the tiny preset file."""
    preset = tmp_path / "tiny.yaml"
    preset.write_text(PRESET)
    return tiny_dataset_dir(tmp_path), str(tiny_llm_dir(tmp_path)) if llm else None, preset


def untimed_rows(summary: dict) -> list[dict]:
    """The table rows, less the references' train time (recomputed and timed anew on every call)."""
    return [{k: v for k, v in result_row(r).items() if not (r["kind"] == "reference" and k == "train_seconds")}
            for r in summary["methods"]]
