"""One runner per kind of method: train (or reuse) one run with one seed, score the shared rows.

Every runner scores the same two samples (:class:`Bench`): the validation rows (the table's valid AUC;
LLM methods validate on exactly these rows while they train) and the test rows. CF models and
references are also scored on the whole valid and test splits (cheap), printed beside the samples.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from corarec.benchmarking.aggregate import seed_result
from corarec.benchmarking.plan import Entry, parse_entry
from corarec.benchmarking.reuse import (cached_result, check_partial_run, difference, file_digest, run_dir, run_name,
                                     save_result, set_aside_stale, trained_with)
from corarec.benchmarking.tune import chosen_settings
from corarec.cf.references import REFERENCES
from corarec.data.schema import Dataset
from corarec.evaluation.evaluate import report
from corarec.utils.io import read_json
from corarec.evaluation.metrics import auc


@dataclass
class Bench:
    """What every run of one benchmark shares."""

    data: Path
    ds: Dataset
    test: pd.DataFrame
    """The test rows every method is scored on (whole users, drawn with the sample seed)."""
    valid: pd.DataFrame
    """The validation rows every method's valid AUC is computed on (the LLM methods validate on them)."""
    rows: dict[str, dict]
    """``{"test": ..., "valid": ...}``: the samples' descriptions (what a stored result must match)."""
    preset: str | None
    sections: dict
    sample_seed: int
    tune_cf: bool
    llm: str | None
    device: str | None
    bf16: bool | None
    runs: Path
    retrain_stale: bool
    cf_choices: dict[str, dict] = field(default_factory=dict)
    """CF model → its settings for every seed (tuned once, on the first use)."""

    def cf_choice(self, model: str) -> dict[str, Any]:
        """The CF settings of ``model`` (see :func:`corarec.benchmarking.tune.chosen_settings`)."""
        if model not in self.cf_choices:
            self.cf_choices[model] = chosen_settings(self.data, model, self.sections, self.tune_cf, self.sample_seed,
                                                     self.runs / model, self.retrain_stale)
        return self.cf_choices[model]


def run_reference(entry: Entry, bench: Bench, seed: int) -> dict:
    """A simple reference: computed from train (logistic: fitted on valid), nothing to reuse."""
    function, ds = REFERENCES[entry.name], bench.ds
    t0 = time.perf_counter()
    test_scores = np.asarray(function(ds, "test"), dtype=np.float64)
    seconds = time.perf_counter() - t0
    valid_scores = np.asarray(function(ds, "valid"), dtype=np.float64)
    fitted = ds.train["item_id"].nunique()
    if entry.name == "logistic-rate":
        fitted += ds.train["user_id"].nunique() + 3  # the user rates and the logistic regression's 3 numbers
    result = seed_result(entry, seed, ds, bench.test, test_scores[_positions(ds.test, bench.test)],
                         valid_auc=reference_valid_auc(bench, valid_scores), train_seconds=seconds,
                         parameters=int(fitted), run=None, valid_auc_whole=auc(ds.valid["label"], valid_scores),
                         test_whole=report(ds.test, test_scores, ds.train))
    save_result(run_dir(bench.runs, entry, seed), result, {"kind": "reference"}, bench.rows, bench.test)
    return result


def reference_valid_auc(bench: Bench, valid_scores: np.ndarray | None = None, name: str = "logistic-rate") -> float:
    """A reference's AUC on the validation rows (its scores of the whole valid split, or computed here)."""
    if valid_scores is None:
        valid_scores = np.asarray(REFERENCES[name](bench.ds, "valid"), dtype=np.float64)
    return auc(bench.valid["label"], valid_scores[_positions(bench.ds.valid, bench.valid)])


def run_cf(entry: Entry, bench: Bench, seed: int) -> dict:
    """A CF model alone: trained with :func:`corarec.cf.train_cf` (tuned settings), scored by its own CTR head."""
    from corarec.cf import cf_logits, load_cf, train_cf

    run = run_dir(bench.runs, entry, seed)
    settings = bench.cf_choice(entry.cf)["settings"]
    spec = {"kind": "cf", "model": entry.cf, "settings": settings, "seed": seed, "data": str(bench.data.resolve())}
    cached = cached_result(run, spec, bench.rows, bench.test, bench.retrain_stale)
    if cached is not None:
        return cached
    if not trained_with(run, spec):
        # the run directory belongs to the benchmark: a CF run cut off before it was scored is trained again
        train_cf(bench.data, entry.cf, run, seed=seed, progress=True, overwrite=True, **settings)
    model = load_cf(run, bench.ds)
    metrics = read_json(run / "metrics.json")
    curve = [(e["epoch"], e["valid_auc"]) for e in metrics.get("epochs", [])]
    result = seed_result(entry, seed, bench.ds, bench.test, cf_logits(model, bench.test),
                         valid_auc=auc(bench.valid["label"], cf_logits(model, bench.valid)),
                         train_seconds=metrics.get("train_seconds"), curve=curve, curve_unit="epoch",
                         parameters=int(sum(p.numel() for p in model.parameters())), run=str(run),
                         valid_auc_whole=metrics["valid"]["all"]["auc"], test_whole=metrics["test"])
    save_result(run, result, spec, bench.rows, bench.test)
    return result


NEUTRAL_TRAIN_SETTINGS = ("checkpoint_every",)
"""Training settings that change no result (how often a run saves itself): editing them leaves a run current."""


def result_settings(train: dict) -> dict:
    """A preset's ``train`` section less :data:`NEUTRAL_TRAIN_SETTINGS` (what a run's spec records)."""
    return {key: value for key, value in train.items() if key not in NEUTRAL_TRAIN_SETTINGS}


def run_llm(entry: Entry, bench: Bench, seed: int) -> dict:
    """An LLM method: trained by the shared loop (:func:`corarec.training.loop.train`) on the run of its CF model
    (and TALLRec, for CoLLM) of the same seed, validated on the benchmark's validation rows, resumed if cut off."""
    from corarec.evaluation.evaluate import EVAL_DIR, score_rows
    from corarec.evaluation.journal import ENDING
    from corarec.training.runs import CONFIG, is_finished, load_run
    from corarec.training.loop import train
    from corarec.utils import distributed

    run = run_dir(bench.runs, entry, seed)
    cf = run_dir(bench.runs, parse_entry(entry.cf), seed) if entry.cf else None
    init = run_dir(bench.runs, parse_entry(entry.init), seed) if entry.init else None
    # validation on exactly the benchmark's rows: the same size and the sample seed (None = the whole split);
    # training rows drawn with the sample seed too: every method and seed trains on the same rows
    samples = {"max_eval_samples": bench.rows["valid"]["max_samples"] or len(bench.ds.valid),
               "valid_sample_seed": bench.sample_seed, "train_sample_seed": bench.sample_seed}
    spec = {"kind": "llm", "method": entry.method, "cf": run_name(cf), "init": run_name(init), "preset": bench.preset,
            # the preset's content, not only its name: an edited preset makes the run stale
            "settings": {"train": result_settings(bench.sections.get("train") or {}),
                         entry.method: bench.sections.get(entry.method) or {}},
            "samples": samples, "seed": seed, "llm": bench.llm, "data": str(bench.data.resolve()),
            # the prerequisites' weights: a retrained CF model or TALLRec makes this run stale
            "cf_weights": file_digest(cf / "model.safetensors") if cf else None,
            "init_weights": file_digest(init / "model.safetensors") if init else None}
    # the settings of the entries beyond the paper (the paper's entries: specs as before)
    variant = {"anchor": entry.anchor} if entry.anchor != "none" else {}
    if entry.train_split != "train":  # stacked: it trains and validates on disjoint halves of the validation users
        variant["train_split"] = entry.train_split
    spec.update(variant)
    cached = cached_result(run, spec, bench.rows, bench.test, bench.retrain_stale)
    if cached is not None:
        return cached
    arguments = dict(method=entry.method, data=bench.data, out=run, cf=cf, llm=bench.llm, preset=bench.preset,
                     init=init, seed=seed, device=bench.device, bf16=bench.bf16, **samples, **variant)
    if (run / CONFIG).is_file() and check_partial_run(run, _started_with(run, spec), _wanted(spec), bench.retrain_stale):
        if not is_finished(run):
            resume_partial_run(run, arguments, bench.retrain_stale)
    if not (run / CONFIG).is_file():
        train(**arguments)
    loaded = load_run(run, device=bench.device)
    distributed.start(loaded.device)  # under a launcher the processes share the scoring (no-op otherwise)
    journal = run / EVAL_DIR / f"benchmark-test{ENDING}"  # the scores so far, if cut off
    scores = score_rows(loaded, bench.test, desc=f"test {entry.name}", journal=journal)
    metrics = read_json(run / "metrics.json")
    curve = [(c["step"], c["valid_auc"]) for c in metrics.get("valid_curve", []) if c.get("valid_auc") is not None]
    result = seed_result(entry, seed, bench.ds, bench.test, scores, valid_auc=metrics.get("best_valid_auc"),
                         train_seconds=metrics.get("train_seconds"), curve=curve if loaded.method.trains else [],
                         parameters=int(metrics.get("trainable_parameters") or 0), run=str(run))
    result["llm"] = loaded.config.llm
    save_result(run, result, spec, bench.rows, bench.test)
    return result


def resume_partial_run(run: Path, arguments: dict, retrain_stale: bool) -> None:
    """Continue a run cut off before it finished: from its last checkpoint, or from step 0 when cut off before the
    first (keeping what its validation had scored: its scoring journal), if its ``config.json`` holds the settings
    the benchmark would train it with now (the preset's content, device, precision). Otherwise a run with a
    checkpoint is stale (an error, or set aside with ``--retrain-stale``), and one without is emptied (under the
    run's lock): nothing of it is worth keeping, and the caller trains it anew."""
    from corarec.methods import method_classes
    from corarec.training.checkpoint import CHECKPOINT
    from corarec.training.config import apply_fields, resolve_config, to_dict
    from corarec.training.loop import train
    from corarec.training.runs import read_run_config
    from corarec.utils.io import recover_dir
    from corarec.utils.outdir import LOCK, run_lock

    def settings(config) -> dict:
        """What changes a result: not ``out``, nor where and how often the run logs and saves itself."""
        values = {k: v for k, v in to_dict(config).items() if k != "out"}
        values["train"] = {k: v for k, v in result_settings(values["train"]).items() if k != "log_dir"}
        config_cls, _ = method_classes(config.method)  # every field, also those an older corarec did not write
        values["method_config"] = to_dict(apply_fields(config_cls(), config.method_config, f"{run}: method_config"))
        return values

    found, wanted = settings(read_run_config(run)), settings(resolve_config(**arguments))
    if found == wanted:
        train(out=run, resume=True)
        return
    recover_dir(run / CHECKPOINT)  # a kill mid-swap leaves the last checkpoint in .checkpoint.old
    if (run / CHECKPOINT / "state.json").is_file():
        set_aside_stale(run, difference(found, wanted), retrain_stale)
        return
    with run_lock(run, "corarec benchmark"):  # not while another process writes it
        for child in run.iterdir():
            if child.name == LOCK:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()


RUNNERS = {"reference": run_reference, "cf": run_cf, "llm": run_llm}


def _wanted(spec: dict) -> dict:
    keys = ("method", "cf", "init", "preset", "seed", "llm", "data", "samples")
    return {k: spec[k] for k in keys}


def _started_with(run: Path, spec: dict) -> dict:
    """What a partial LLM run's ``config.json`` says about the settings :func:`_wanted` compares."""
    from corarec.training.runs import read_run_config

    config = read_run_config(run)
    return {"method": config.method, "cf": run_name(config.cf), "init": run_name(config.init), "preset": config.preset,
            "seed": config.seed, "llm": config.llm if spec["llm"] else None, "data": str(Path(config.data).resolve()),
            "samples": {"max_eval_samples": config.train.max_eval_samples,
                        "valid_sample_seed": config.train.valid_sample_seed,
                        "train_sample_seed": config.train.train_sample_seed}}


def _positions(split: pd.DataFrame, rows: pd.DataFrame) -> np.ndarray:
    """Where the sample's rows sit within their split (the samples keep the split's index)."""
    return split.index.get_indexer(rows.index)
