"""``corarec benchmark``: every method on the same split, backbone, budget and test rows → one table.

For each requested method the benchmark trains a run under ``OUT/runs/<method>/`` (or reuses it
when it is complete and was trained with the same settings), scores the *same* test rows with it —
a whole-user subsample of the test split drawn with the benchmark's seed, so that UAUC stays
meaningful — and writes::

    OUT/results.md       the table (AUC, UAUC, warm AUC, cold AUC, valid AUC, train time, parameters)
    OUT/results.csv      the same, one row per method, machine-readable
    OUT/results.json     everything, including the test-row sample and the wall time
    OUT/roc.png          ROC curves of every method on the test rows
    OUT/valid_auc.png    validation AUC per training step (LLM methods; CF models as lines)
    OUT/runs/<method>/   each method's run directory, ``benchmark.json`` (its test metrics) and
                         ``test_scores.csv`` (its score of every test row)

Methods (``--methods``, comma-separated; default :data:`DEFAULT_METHODS`):

- ``item-rate``, ``logistic-rate``: the simple references of :mod:`corarec.cf.references`;
- ``mf``, ``lightgcn``, ``sasrec``: the CF models alone (:func:`corarec.cf.train_cf`);
- ``icl``, ``tallrec``: the zero-shot LLM and the text-only LoRA;
- ``collm-<cf>``: CoLLM on that CF model, stage 2 initialised from the ``tallrec`` run;
- ``cora-<cf>``: CoRA on that CF model.

A method's prerequisites (its CF model, TALLRec for CoLLM) are trained too, even when not listed.
Settings come from the preset (``--preset cpu|paper|FILE.yaml``): its ``train`` and per-method
sections as for ``corarec train``; a ``cf`` section of :func:`corarec.cf.train_cf` arguments (applied
to every CF model, with optional per-model sub-sections ``mf:``, ``lightgcn:``, ``sasrec:``); and a
``benchmark`` section whose ``max_test_samples`` is the default of ``--max-test-samples``.
"""

from __future__ import annotations

import hashlib
import inspect
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from corarec.cf.config import CF_MODELS
from corarec.config import load_preset
from corarec.data.batches import subsample_users
from corarec.data.schema import Dataset, read_dataset
from corarec.errors import CorarecError
from corarec.evaluation import report
from corarec.io import atomic_path, read_json, write_json
from corarec.metrics import auc as auc_of

DEFAULT_METHODS = ("item-rate", "logistic-rate", "mf", "lightgcn", "sasrec", "icl", "tallrec",
                   "collm-mf", "cora-mf", "cora-lightgcn", "cora-sasrec")
"""What ``corarec benchmark`` runs without ``--methods``: the paper's table plus two references."""

CF_LABELS = {"mf": "MF", "lightgcn": "LightGCN", "sasrec": "SASRec"}
REFERENCES = {"item-rate": ("Item rate", "item rate"), "logistic-rate": ("Logistic on rates", "logistic on rates")}
"""Benchmark name → (table label, key in :data:`corarec.cf.references.REFERENCES`)."""
RESULT = "benchmark.json"
SCORES = "test_scores.csv"


@dataclass(frozen=True)
class Entry:
    """One method of the benchmark."""

    name: str
    """As given to ``--methods`` (``cora-mf``)."""
    label: str
    """As shown in the table (``CoRA-MF``)."""
    kind: str
    """``reference``, ``cf`` or ``llm``."""
    method: str | None = None
    """LLM method name for ``corarec train`` (``cora``, ``collm``, ``tallrec``, ``icl``)."""
    cf: str | None = None
    """CF model the method reads (for a ``cf`` entry: the model itself)."""
    init: str | None = None
    """Entry whose run initialises this one (CoLLM ← TALLRec)."""


def parse_entry(name: str) -> Entry:
    """The :class:`Entry` of a ``--methods`` name; unknown names are a clear error."""
    key = name.strip().lower()
    if key in REFERENCES:
        return Entry(key, REFERENCES[key][0], "reference")
    if key in CF_MODELS:
        return Entry(key, CF_LABELS[key], "cf", cf=key)
    if key == "icl":
        return Entry(key, "ICL", "llm", method="icl")
    if key == "tallrec":
        return Entry(key, "TALLRec", "llm", method="tallrec")
    match = re.fullmatch(r"(cora|collm)-(\w+)", key)
    if match and match[2] in CF_MODELS:
        method, cf = match[1], match[2]
        label = ("CoRA-" if method == "cora" else "CoLLM-") + CF_LABELS[cf]
        return Entry(key, label, "llm", method=method, cf=cf, init="tallrec" if method == "collm" else None)
    known = ", ".join([*REFERENCES, *CF_MODELS, "icl", "tallrec", "collm-<cf>", "cora-<cf>"])
    raise CorarecError(f"--methods: unknown method '{name}' (known: {known}; <cf> is one of {', '.join(CF_MODELS)})")


def plan(methods: list[str]) -> tuple[list[Entry], list[Entry]]:
    """(requested entries, every entry to run in order: prerequisites first)."""
    requested: list[Entry] = []
    for name in methods:
        entry = parse_entry(name)
        if entry not in requested:
            requested.append(entry)
    if not requested:
        raise CorarecError("--methods: name at least one method")
    needed = list(requested)
    for entry in requested:
        for dependency in (entry.cf if entry.kind == "llm" else None, entry.init):
            if dependency and parse_entry(dependency) not in needed:
                needed.append(parse_entry(dependency))
    rank = {"reference": 0, "cf": 1, "llm": 2}
    ordered = sorted(needed, key=lambda e: (rank[e.kind], e.init is not None))  # stable: request order
    return requested, ordered


def benchmark(data: str | Path, out: str | Path, methods: str | list[str] | None = None,
              preset: str | None = "cpu", seed: int = 0, max_test_samples: int | None = None,
              llm: str | None = None, device: str | None = None, bf16: bool | None = None,
              retrain_stale: bool = False) -> dict:
    """Train (or reuse) every method, score the same test rows, write the tables and plots.

    A run directory trained with other settings is an error, unless ``retrain_stale``: then it is
    renamed to ``<method>.stale-N`` next to it (nothing is deleted) and the method is trained anew.
    Returns ``results.json``'s content; its ``"table"`` is the markdown table of ``results.md``.
    """
    started = time.perf_counter()
    out = Path(out)
    names = methods.split(",") if isinstance(methods, str) else list(methods or DEFAULT_METHODS)
    requested, ordered = plan([n for n in names if n.strip()])
    sections = load_preset(preset) if preset else {}
    if max_test_samples is None:
        max_test_samples = (sections.get("benchmark") or {}).get("max_test_samples")
    ds = read_dataset(data)
    rows = subsample_users(ds.test, max_test_samples, seed)
    test_rows = {"split": "test", "max_samples": max_test_samples, "seed": seed, "rows": len(rows),
                 "users": int(rows["user_id"].nunique()), "fingerprint": _fingerprint(rows)}
    context = dict(data=Path(data), ds=ds, rows=rows, test_rows=test_rows, preset=preset, sections=sections,
                   seed=seed, llm=llm, device=device, bf16=bf16, runs=out / "runs", retrain_stale=retrain_stale)

    results: dict[str, dict] = {}
    bar = tqdm(ordered, desc="benchmark", unit="method")
    for index, entry in enumerate(bar):
        bar.set_description(f"benchmark [{index + 1}/{len(ordered)}] {entry.label}")
        tqdm.write(f"[{index + 1}/{len(ordered)}] {entry.label} ({entry.name})")
        runner = {"reference": _reference, "cf": _cf, "llm": _llm}[entry.kind]
        results[entry.name] = runner(entry, **context)
    bar.close()

    shown = [results[e.name] for e in requested]
    summary = {
        "dataset": ds.name, "data": str(data), "preset": preset, "seed": seed, "llm": llm or _llm_name(shown),
        "test_rows": test_rows, "warm_rows": int(_warm_count(rows, ds)),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "methods": [{k: v for k, v in r.items() if k != "scores"} for r in shown],
    }
    summary["table"] = format_table(summary)
    out.mkdir(parents=True, exist_ok=True)
    write_results_csv(out / "results.csv", summary)
    plot_roc(out / "roc.png", shown, rows["label"].to_numpy())
    plot_valid_curves(out / "valid_auc.png", shown)
    write_json(out / "results.json", summary)
    with atomic_path(out / "results.md") as tmp:
        tmp.write_text(format_markdown(summary))
    return summary


# ---- one runner per kind of method ----------------------------------------------------------------

def _reference(entry: Entry, ds: Dataset, rows: pd.DataFrame, runs: Path, **_: Any) -> dict:
    """A simple reference: computed from train (logistic: fitted on valid), nothing to reuse."""
    from corarec.cf.references import REFERENCES as FUNCTIONS

    function = FUNCTIONS[REFERENCES[entry.name][1]]
    t0 = time.perf_counter()
    positions = ds.test.index.get_indexer(rows.index)  # the subsample's rows within the test split
    test_scores = np.asarray(function(ds, "test"), dtype=np.float64)[positions]
    seconds = time.perf_counter() - t0
    valid_auc = auc_of(ds.valid["label"].to_numpy(), function(ds, "valid"))
    fitted = ds.train["item_id"].nunique()
    if entry.name == "logistic-rate":
        fitted += ds.train["user_id"].nunique() + 3  # the user rates and the logistic regression's 3 numbers
    result = _result(entry, ds, rows, test_scores, valid_auc=valid_auc, train_seconds=seconds,
                     parameters=int(fitted), curve=[], run=None)
    _save(runs / entry.name, result, {"kind": "reference"}, None, rows)
    return result


def _cf(entry: Entry, data: Path, ds: Dataset, rows: pd.DataFrame, test_rows: dict, sections: dict,
        seed: int, runs: Path, retrain_stale: bool, **_: Any) -> dict:
    """A CF model alone: trained with :func:`corarec.cf.train_cf`, scored by its own CTR head."""
    from corarec.cf import load_cf, predict, train_cf

    run = runs / entry.name
    spec = {"kind": "cf", "model": entry.cf, "settings": cf_settings(sections, entry.cf), "seed": seed,
            "data": str(Path(data).resolve())}
    cached = _cached(run, spec, test_rows, rows, retrain_stale)
    if cached is not None:
        return cached
    if not _trained_with(run, spec):
        train_cf(data, entry.cf, run, seed=seed, progress=True, **spec["settings"])
    model = load_cf(run, ds)
    metrics = read_json(run / "metrics.json")
    scores = predict(model, rows)
    curve = [(e["epoch"], e["valid_auc"]) for e in metrics.get("epochs", [])]
    result = _result(entry, ds, rows, scores, valid_auc=(metrics.get("valid") or {}).get("all", {}).get("auc"),
                     train_seconds=metrics.get("train_seconds"), curve=curve, curve_unit="epoch",
                     parameters=int(sum(p.numel() for p in model.parameters())), run=str(run))
    _save(run, result, spec, test_rows, rows)
    return result


def _llm(entry: Entry, data: Path, ds: Dataset, rows: pd.DataFrame, test_rows: dict, preset: str | None,
         sections: dict, seed: int, llm: str | None, device: str | None, bf16: bool | None, runs: Path,
         retrain_stale: bool, **_: Any) -> dict:
    """An LLM method: trained by the shared loop (:func:`corarec.training.train`), resumed if cut off."""
    from corarec.evaluation import score_rows
    from corarec.runs import CONFIG, is_finished, load_run
    from corarec.training import CHECKPOINT, train

    run = runs / entry.name
    spec = {"kind": "llm", "method": entry.method, "cf": entry.cf, "init": entry.init, "preset": preset,
            # the preset's content, not only its name: an edited preset makes the run stale
            "settings": {"train": sections.get("train") or {}, entry.method: sections.get(entry.method) or {}},
            "seed": seed, "llm": llm, "data": str(Path(data).resolve()),
            # the prerequisites' weights: a retrained CF model or TALLRec makes this run stale
            "cf_weights": _file_digest(runs / entry.cf / "model.safetensors") if entry.cf else None,
            "init_weights": _file_digest(runs / entry.init / "model.safetensors") if entry.init else None}
    cached = _cached(run, spec, test_rows, rows, retrain_stale)
    if cached is not None:
        return cached
    if (run / CONFIG).is_file() and _check_run_config(run, spec, retrain_stale):
        if not is_finished(run):
            if (run / CHECKPOINT / "state.json").is_file():
                train(out=run, resume=True)
            else:  # cut off before its first validation: nothing worth keeping
                shutil.rmtree(run)
    if not (run / CONFIG).is_file():
        train(method=entry.method, data=data, out=run, cf=runs / entry.cf if entry.cf else None,
              llm=llm, preset=preset, init=runs / entry.init if entry.init else None, seed=seed,
              device=device, bf16=bf16)
    loaded = load_run(run, device=device)
    scores = score_rows(loaded, rows, desc=f"test {entry.name}")
    metrics = read_json(run / "metrics.json")
    curve = [(c["step"], c["valid_auc"]) for c in metrics.get("valid_curve", []) if c.get("valid_auc") is not None]
    result = _result(entry, ds, rows, scores, valid_auc=metrics.get("best_valid_auc"),
                     train_seconds=metrics.get("train_seconds"), curve=curve if loaded.method.trains else [],
                     curve_unit="step", parameters=int(metrics.get("trainable_parameters") or 0), run=str(run))
    result["llm"] = loaded.config.llm
    _save(run, result, spec, test_rows, rows)
    return result


def cf_settings(sections: dict, model: str) -> dict[str, Any]:
    """The preset's ``cf`` section for ``model``: shared keys, then the model's own sub-section."""
    from corarec.cf import train_cf

    section = dict(sections.get("cf") or {})
    own = section.pop(model, None) or {}
    for other in CF_MODELS:
        section.pop(other, None)
    settings = {**section, **own}
    allowed = set(inspect.signature(train_cf).parameters) - {"data", "model", "out", "seed", "progress", "grid"}
    unknown = sorted(set(settings) - allowed)
    if unknown:
        raise CorarecError(f"preset cf section: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed))}")
    return settings


# ---- reuse ----------------------------------------------------------------------------------------

def _cached(run: Path, spec: dict, test_rows: dict, rows: pd.DataFrame, retrain_stale: bool) -> dict | None:
    """The stored result when ``run`` was trained *and* scored on these test rows with this spec."""
    if not (run / RESULT).is_file():
        return None
    stored = read_json(run / RESULT)
    if stored.get("spec") != spec:
        _stale(run, _difference(stored.get("spec") or {}, spec), retrain_stale)
        return None
    if stored.get("test_rows") != test_rows or not (run / SCORES).is_file():
        return None  # same training, other test rows: score again
    scores = pd.read_csv(run / SCORES)
    if not (np.array_equal(scores["user_id"], rows["user_id"]) and np.array_equal(scores["item_id"], rows["item_id"])):
        return None
    result = stored["result"]
    result["scores"] = scores["score"].to_numpy()
    tqdm.write(f"    reusing {run} (complete)")
    return result


def _trained_with(run: Path, spec: dict) -> bool:
    """Whether ``run`` holds a finished CF training with ``spec`` (its result may be for other rows)."""
    if not (run / RESULT).is_file() or not (run / "model.safetensors").is_file():
        return False
    return read_json(run / RESULT).get("spec") == spec


def _check_run_config(run: Path, spec: dict, retrain_stale: bool) -> bool:
    """Whether the partial LLM run ``run`` may be continued: only if started with the same settings."""
    from corarec.runs import read_run_config

    config = read_run_config(run)
    found = {"method": config.method, "cf": Path(config.cf).name if config.cf else None,
             "init": Path(config.init).name if config.init else None, "preset": config.preset,
             "seed": config.seed, "llm": config.llm if spec["llm"] else None,
             "data": str(Path(config.data).resolve())}
    wanted = {k: spec[k] for k in found}
    if found != wanted:
        _stale(run, _difference(found, wanted), retrain_stale)
        return False
    return True


def _stale(run: Path, difference: str, retrain_stale: bool) -> None:
    """A run trained with other settings: an error, or (``retrain_stale``) renamed out of the way."""
    if not retrain_stale:
        raise CorarecError(f"{run}: trained with other settings ({difference}); pass --retrain-stale to set it "
                           "aside and train again, or choose another --out")
    n = 1
    while run.with_name(f"{run.name}.stale-{n}").exists():
        n += 1
    aside = run.with_name(f"{run.name}.stale-{n}")
    run.rename(aside)
    tqdm.write(f"    {run} was trained with other settings ({difference}); moved to {aside.name}, training again")


def _save(run: Path, result: dict, spec: dict, test_rows: dict | None, rows: pd.DataFrame) -> None:
    run.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame({"user_id": rows["user_id"].to_numpy(), "item_id": rows["item_id"].to_numpy(),
                          "label": rows["label"].to_numpy(), "score": result["scores"]})
    with atomic_path(run / SCORES) as tmp:
        frame.to_csv(tmp, index=False)
    write_json(run / RESULT, {"spec": spec, "test_rows": test_rows,
                              "result": {k: v for k, v in result.items() if k != "scores"}})


def _difference(found: dict, wanted: dict) -> str:
    """The first three settings that differ, by dotted path: ``settings.cora.depth: 2 there, 8 now``."""
    return "; ".join(f"{path}: {a!r} there, {b!r} now" for path, a, b in _differences(found, wanted)[:3])


def _differences(found: Any, wanted: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    if not (isinstance(found, dict) and isinstance(wanted, dict)):
        return [] if found == wanted else [(path, found, wanted)]
    return [d for k in sorted(set(found) | set(wanted), key=str)
            for d in _differences(found.get(k), wanted.get(k), f"{path}.{k}" if path else str(k))]


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _fingerprint(rows: pd.DataFrame) -> str:
    digest = hashlib.sha256()
    for column in ("user_id", "item_id", "timestamp", "label"):
        digest.update(np.ascontiguousarray(rows[column].to_numpy(dtype=np.int64)).tobytes())
    return digest.hexdigest()[:16]


# ---- results --------------------------------------------------------------------------------------

def _result(entry: Entry, ds: Dataset, rows: pd.DataFrame, scores: np.ndarray, valid_auc: float | None,
            train_seconds: float | None, parameters: int, curve: list, run: str | None,
            curve_unit: str = "step") -> dict:
    scores = np.asarray(scores, dtype=np.float64)
    metrics = report(rows, scores, ds.train)
    return {"name": entry.name, "label": entry.label, "kind": entry.kind, "test": metrics,
            "valid_auc": valid_auc, "train_seconds": None if train_seconds is None else round(float(train_seconds), 1),
            "trainable_parameters": parameters, "curve": [[int(x), float(y)] for x, y in curve],
            "curve_unit": curve_unit, "run": run, "scores": scores}


COLUMNS = ("method", "auc", "uauc", "warm_auc", "cold_auc", "valid_auc", "train_seconds", "trainable_parameters")


def result_row(result: dict) -> dict[str, Any]:
    """One table row of a method's result."""
    test = result["test"]
    return {"method": result["label"], "auc": test["all"]["auc"], "uauc": test["all"]["uauc"],
            "warm_auc": (test.get("warm") or {}).get("auc"), "cold_auc": (test.get("cold") or {}).get("auc"),
            "valid_auc": result["valid_auc"], "train_seconds": result["train_seconds"],
            "trainable_parameters": result["trainable_parameters"]}


def write_results_csv(path: Path, summary: dict) -> None:
    frame = pd.DataFrame([{**result_row(r), "name": r["name"], "gauc": r["test"]["all"]["gauc"],
                           "test_rows": r["test"]["all"]["rows"], "run": r["run"]} for r in summary["methods"]])
    metrics = ["auc", "uauc", "warm_auc", "cold_auc", "valid_auc", "gauc"]
    frame[metrics] = frame[metrics].astype(float).round(4)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def format_table(summary: dict) -> str:
    """The markdown table of the results."""
    lines = ["| Method | AUC | UAUC | warm AUC | cold AUC | valid AUC | train time | trainable params |",
             "|---|---|---|---|---|---|---|---|"]
    for result in summary["methods"]:
        row = result_row(result)
        lines.append("| " + " | ".join([row["method"], *(_f(row[k]) for k in ("auc", "uauc", "warm_auc", "cold_auc", "valid_auc")),
                                          format_seconds(row["train_seconds"]), format_count(row["trainable_parameters"])]) + " |")
    return "\n".join(lines)


def format_markdown(summary: dict) -> str:
    rows = summary["test_rows"]
    sample = (f"a whole-user subsample (at most {rows['max_samples']} rows, seed {rows['seed']})"
              if rows["max_samples"] else "all rows")
    return "\n".join([
        f"# Benchmark on {summary['dataset']}",
        "",
        f"Data `{summary['data']}`, preset `{summary['preset']}`, seed {summary['seed']}, LLM `{summary['llm']}`.",
        f"Test rows: {rows['rows']} ({rows['users']} users; {summary['warm_rows']} warm, "
        f"{rows['rows'] - summary['warm_rows']} cold) — {sample} of the test split, the same for every method.",
        "",
        summary["table"],
        "",
        "- AUC over all test rows; UAUC = mean per-user AUC over users with both labels; warm = user and item "
        "occur in train, cold = the rest.",
        "- valid AUC: the best validation AUC of the training (LLM methods on their validation subsample, "
        "CF models and references on the whole valid split; the logistic reference is fitted on valid, so "
        "its valid AUC is in-sample).",
        "- train time: seconds of training (for LLM methods the loop's time, validations included); "
        "trainable params: trained weights (references: the fitted rates and coefficients).",
        f"- Benchmark wall time: {format_seconds(summary['wall_seconds'])} (runs reused from an earlier "
        "invocation cost nothing here).",
        "",
        "![ROC curves](roc.png)",
        "",
        "![Validation AUC per step](valid_auc.png)",
        "",
    ])


def plot_roc(path: Path, results: list[dict], labels: np.ndarray) -> None:
    """ROC curve of every method on the shared test rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    fig, ax = plt.subplots(figsize=(6, 6))
    for index, result in enumerate(results):
        if len(np.unique(labels)) < 2:
            break
        fpr, tpr, _ = roc_curve(labels, result["scores"])
        ax.plot(fpr, tpr, label=f"{result['label']} ({_f(result['test']['all']['auc'])})", linewidth=1.2,
                color=_color(index), linestyle=_style(result))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC on the test rows (AUC)")
    ax.legend(loc="lower right", fontsize=8)
    _save_figure(fig, path)


def plot_valid_curves(path: Path, results: list[dict]) -> None:
    """Validation AUC per training step of the LLM methods; CF models and references as levels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for index, result in enumerate(results):
        if result["kind"] == "llm" and result["curve"]:
            steps, aucs = zip(*result["curve"])
            ax.plot(steps, aucs, marker="o", markersize=3, label=result["label"], color=_color(index))
        elif result["valid_auc"] is not None:
            ax.axhline(result["valid_auc"], linestyle=_style(result) if result["kind"] != "llm" else "-.",
                       linewidth=1, color=_color(index), label=f"{result['label']} (its valid AUC)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="training step (LLM methods)", ylabel="validation AUC",
           title="Validation AUC during training (horizontal: methods without LLM steps)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    _save_figure(fig, path)


def _color(index: int):
    import matplotlib

    return matplotlib.colormaps["tab10"](index % 10)


def _style(result: dict) -> str:
    return {"reference": ":", "cf": "--"}.get(result["kind"], "-")


def _save_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def format_count(n: int | None) -> str:
    if n is None:
        return "–"
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return str(n)


def _f(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) and value == value else "–"


def _warm_count(rows: pd.DataFrame, ds: Dataset) -> int:
    from corarec.metrics import warm_mask

    return int(np.asarray(warm_mask(rows, ds.train)).sum())


def _llm_name(results: list[dict]) -> str:
    names = {r["llm"] for r in results if r.get("llm")}
    return ", ".join(sorted(names)) if names else "–"
