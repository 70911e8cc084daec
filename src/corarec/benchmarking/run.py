"""``benchmark()``: draw the shared rows, run every method once per seed, aggregate, write the results."""

from __future__ import annotations

import time
from pathlib import Path

from tqdm.auto import tqdm

from corarec.benchmarking.aggregate import add_intervals, cf_notes, method_record
from corarec.benchmarking.plan import DEFAULT_METHODS, check_seed, parse_seeds, plan
from corarec.benchmarking.plots import plot_ndcg_at_k, plot_roc, plot_valid_curves
from corarec.benchmarking.report import (format_markdown, format_ranking_table, format_table, llm_name, warm_count,
                                      write_results_csv)
from corarec.benchmarking.reuse import set_aside_old_layout
from corarec.benchmarking.runners import RUNNERS, Bench, reference_valid_auc
from corarec.benchmarking.samples import draw, sample_size
from corarec.training.config import load_preset
from corarec.data.schema import read_dataset
from corarec.utils.io import atomic_path, read_json, write_json

RANKING_POOL = 100
RANKING_USERS = 50
"""``--ranking``: the pool re-ranked and the test users drawn (with the sample seed), as ``evaluate --ranking``."""


def benchmark(data: str | Path, out: str | Path, methods: str | list[str] | None = None,
              preset: str | None = "cpu", seeds: int | str | list[int] = 0, sample_seed: int = 0,
              max_test_samples: int | None = None, max_valid_samples: int | None = None, tune_cf: bool = True,
              llm: str | None = None, device: str | None = None, bf16: bool | None = None,
              retrain_stale: bool = False, ranking: bool = False) -> dict:
    """Train (or reuse) every method once per training seed, score the same rows, write the tables and plots.

    ``seeds``: the training seeds (``"0,1,2"``); methods that do not train (references, ICL) run once,
    with the sample seed.
    ``sample_seed`` draws the validation and test rows (whole users), the same for every seed and
    method. ``tune_cf``: tune each CF model's lr, weight decay and dim on validation first (else the
    preset's ``cf`` section). A run directory trained with other settings is an error, unless
    ``retrain_stale``: then it is renamed to ``<dir>.stale-N`` (nothing is deleted) and trained anew.
    ``ranking``: also the top-k evaluation (:mod:`corarec.evaluation.ranking`) of every requested
    method that re-ranks (the LLM methods), each seed, on the same test users: ``"ranking"`` and
    ``"ranking_table"`` in the result, a "Top-k" table in ``results.md``, ``ndcg_at_k.png``.
    Returns ``results.json``'s content; ``"table"`` is the markdown table, ``"notes"`` the CF settings
    and warnings printed under it.
    """
    from corarec.utils.distributed import one_process_only

    one_process_only("corarec benchmark")
    started = time.perf_counter()
    out = Path(out)
    names = methods.split(",") if isinstance(methods, str) else list(methods or DEFAULT_METHODS)
    requested, ordered = plan([n for n in names if n.strip()])
    seeds, sample_seed = parse_seeds(seeds), check_seed(sample_seed, "--sample-seed")
    sections = load_preset(preset) if preset else {}
    test_size = sample_size(max_test_samples, sections, "max_test_samples")
    valid_size = sample_size(max_valid_samples, sections, "max_valid_samples")
    ds = read_dataset(data)
    test, test_info = draw(ds.test, "test", test_size, sample_seed)
    valid, valid_info = draw(ds.valid, "valid", valid_size, sample_seed)
    bench = Bench(data=Path(data), ds=ds, test=test, valid=valid, rows={"test": test_info, "valid": valid_info},
                  preset=preset, sections=sections, sample_seed=sample_seed, tune_cf=tune_cf, llm=llm,
                  device=device, bf16=bf16, runs=out / "runs", retrain_stale=retrain_stale)

    # a method that does not train runs once, with the sample seed: --seeds never makes it stale
    jobs = [(entry, seed) for entry in ordered for seed in (seeds if entry.per_seed else [sample_seed])]
    results: dict[str, list[dict]] = {}
    bar = tqdm(jobs, desc="benchmark", unit="run")
    for index, (entry, seed) in enumerate(bar):
        what = f"{entry.label} ({entry.name}" + (f", seed {seed})" if entry.per_seed else ")")
        bar.set_description(f"benchmark [{index + 1}/{len(jobs)}] {entry.label}")
        tqdm.write(f"[{index + 1}/{len(jobs)}] {what}")
        if entry.per_seed and entry.name not in results:
            set_aside_old_layout(bench.runs / entry.name, retrain_stale)
        results.setdefault(entry.name, []).append(RUNNERS[entry.kind](entry, bench, seed))
    bar.close()

    records = {e.name: method_record(e, results[e.name], bench.cf_choices.get(e.cf) if e.cf else None)
               for e in ordered}
    bootstrap = add_intervals(records, [e.name for e in requested], test)
    shown = [records[e.name] for e in requested]
    summary = {
        "dataset": ds.name, "data": str(data), "preset": preset, "seeds": seeds, "sample_seed": sample_seed,
        "llm": llm or llm_name(shown), "tune_cf": tune_cf, "test_rows": test_info, "valid_rows": valid_info,
        "warm_rows": warm_count(test, ds), "bootstrap": bootstrap,
        "cf_settings": {model: {k: v for k, v in choice.items() if k != "settings"}
                        for model, choice in bench.cf_choices.items()},
        "notes": cf_notes({e.name: records[e.name] for e in ordered}, reference_valid_auc(bench)),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "methods": [{k: v for k, v in r.items() if k != "scores"} for r in shown],
    }
    summary["table"] = format_table(summary)
    if ranking:
        summary["ranking"] = rank_methods(requested, results, Path(data), sample_seed, device)
        summary["ranking_table"] = format_ranking_table(summary["ranking"])
    out.mkdir(parents=True, exist_ok=True)
    write_results_csv(out / "results.csv", summary)
    plot_roc(out / "roc.png", shown, test["label"].to_numpy())
    plot_valid_curves(out / "valid_auc.png", shown)
    if ranking:
        plot_ndcg_at_k(out / "ndcg_at_k.png", summary["ranking"])
    write_json(out / "results.json", summary)
    with atomic_path(out / "results.md") as tmp:
        tmp.write_text(format_markdown(summary))
    return summary


def rank_methods(requested: list, results: dict[str, list[dict]], data: Path, sample_seed: int,
                 device: str | None) -> dict:
    """``--ranking``: the top-k evaluation of every requested LLM method's runs (each seed) on the same
    test users (drawn with the sample seed); per method, each part's metrics averaged over its seeds."""
    from corarec.evaluation.ranking import DEFAULT_K

    settings = {"k": list(DEFAULT_K), "pool": RANKING_POOL, "max_users": RANKING_USERS, "seed": sample_seed}
    methods = []
    for entry in requested:
        if entry.kind != "llm":
            continue
        runs = results[entry.name]
        per_seed = [_ranking_of(Path(r["run"]), settings, data, device) for r in runs]
        parts = {part: _mean_part([r["parts"][part] for r in per_seed]) for part in per_seed[0]["parts"]}
        methods.append({"name": entry.name, "label": entry.label, "cf": entry.cf, "seeds": [r["seed"] for r in runs],
                        "pool_from": per_seed[0]["pool_from"], "seconds": [r["seconds"] for r in per_seed],
                        "parts": parts})
    return {**settings, "methods": methods}


def _ranking_of(run: Path, settings: dict, data: Path, device: str | None) -> dict:
    """The run's top-k evaluation: the one stored in ``RUN/eval/`` when it has these settings and data
    and is newer than the run's benchmark result, else computed (and stored) now."""
    from corarec.evaluation.evaluate import EVAL_DIR
    from corarec.evaluation.ranking import RANKING_FILE, evaluate_ranking
    from corarec.benchmarking.reuse import RESULT

    stored = run / EVAL_DIR / RANKING_FILE
    if stored.is_file() and stored.stat().st_mtime_ns >= (run / RESULT).stat().st_mtime_ns:
        saved = read_json(stored)
        if {k: saved.get(k) for k in settings} == settings and Path(saved.get("data", "")).resolve() == data.resolve():
            return saved
    return evaluate_ranking(run, data=data, device=device, **settings)


def _mean_part(parts: list[dict]) -> dict:
    """One part (all / warm / cold) of several seeds: counts as they are (the same users), the share of
    targets in the pool and every list's metrics averaged (None where a seed has none)."""
    out = {"users": parts[0]["users"], "targets": parts[0]["targets"],
           "targets_in_pool": _mean([p["targets_in_pool"] for p in parts])}
    for order in ("cf", "popularity", "reranked"):
        given = [p[order] for p in parts]
        out[order] = (None if any(g is None for g in given)
                      else {name: _mean([g[name] for g in given]) for name in given[0]})
    return out


def _mean(values: list) -> float | None:
    return None if any(v is None for v in values) else float(sum(values) / len(values))
