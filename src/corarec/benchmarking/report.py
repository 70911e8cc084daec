"""The benchmark's tables: one row per method (mean ± std over its seeds), as markdown and CSV."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from corarec.data.schema import Dataset
from corarec.utils.io import write_table

HEADER = ("| Method | seeds | AUC | AUC, whole test | UAUC | AUC − MF [95% CI] | warm AUC | cold AUC | valid AUC "
          "| valid AUC, whole split | train time | trainable params |")


def result_row(record: dict) -> dict[str, Any]:
    """One table row of a method's record: means (and stds) over its seeds."""
    vs_mf = record.get("vs_mf") or {}
    return {"method": record["label"], "seeds": len(record["seeds"]),
            "auc": record["auc"]["mean"], "auc_std": record["auc"]["std"],
            "uauc": record["uauc"]["mean"], "uauc_std": record["uauc"]["std"],
            "auc_vs_mf": vs_mf.get("difference"), "auc_vs_mf_low": vs_mf.get("low"), "auc_vs_mf_high": vs_mf.get("high"),
            "warm_auc": record["warm_auc"], "cold_auc": record["cold_auc"],
            "valid_auc": record["valid_auc"]["mean"], "valid_auc_std": record["valid_auc"]["std"],
            "test_auc_whole": record["test_auc_whole"], "valid_auc_whole": record["valid_auc_whole"],
            "train_seconds": record["train_seconds"], "trainable_parameters": record["trainable_parameters"]}


def write_results_csv(path: Path, summary: dict) -> None:
    """``results.csv``: the table's rows, unformatted, plus GAUC, the test-row count and the runs (and
    with ``--ranking`` each re-ranking method's top-k metrics of all users: ``topk_ndcg@10``, ...)."""
    ranked = {m["name"]: m["parts"]["all"] for m in (summary.get("ranking") or {}).get("methods", [])}
    frame = pd.DataFrame([{**result_row(r), "name": r["name"], "gauc": r["gauc"], "test_rows": r["test_rows"],
                           "run": ";".join(str(run) for run in r["runs"] if run), **_topk_columns(ranked.get(r["name"]))}
                          for r in summary["methods"]])
    metrics = [c for c in frame.columns if "auc" in c or c.startswith("topk_")]
    frame[metrics] = frame[metrics].astype(float).round(4)
    write_table(path, frame)


def _topk_columns(part: dict | None) -> dict[str, float | None]:
    """The re-ranked list's metrics and the pool's share of targets, as ``topk_*`` columns (none without)."""
    if part is None:
        return {}
    return {"topk_targets_in_pool": part["targets_in_pool"],
            **{f"topk_{name}": value for name, value in (part["reranked"] or {}).items()}}


def format_ranking_table(ranking: dict) -> str:
    """The "Top-k" markdown table of ``benchmark --ranking``: the popularity order, each CF model's pool
    in its own order, and every method's re-ranked pool (all users; NDCG of warm and cold users apart)."""
    from corarec.benchmarking.plan import CF_LABELS

    ks, methods = ranking["k"], ranking["methods"]
    if not methods:
        return "(no method that re-ranks: the top-k table needs an LLM method)"
    middle = 10 if 10 in ks else ks[0]
    names = [f"{m}@{k}" for k in ks for m in ("Recall", "NDCG", "HR")] + ["MRR"]
    header = ("| List | pool | users (warm / cold) | targets in pool | " + " | ".join(names)
              + f" | NDCG@{middle} warm | NDCG@{middle} cold |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]

    def row(label: str, pool: str, parts: dict, order: str, share: bool) -> str:
        every, warm, cold = parts["all"], parts["warm"], parts["cold"]
        cells = [label, pool, f"{every['users']} ({warm['users']} / {cold['users']})",
                 _percent(every["targets_in_pool"]) if share else "–"]
        cells += [format_metric(every[order][name.lower()]) for name in names]
        cells += [format_metric((p[order] or {}).get(f"ndcg@{middle}")) if p["users"] else "–" for p in (warm, cold)]
        return "| " + " | ".join(cells) + " |"

    lines.append(row("Popularity", "–", methods[0]["parts"], "popularity", False))
    shown_cf = set()
    for method in methods:
        if method["parts"]["all"]["cf"] is not None and method["pool_from"] not in shown_cf:
            shown_cf.add(method["pool_from"])
            label = CF_LABELS.get(method["pool_from"], method["pool_from"])
            lines.append(row(f"{label} (its pool, CF order)", label, method["parts"], "cf", True))
    for method in methods:
        pool = CF_LABELS.get(method["pool_from"], method["pool_from"])
        lines.append(row(f"{method['label']} (re-ranked)", pool, method["parts"], "reranked", True))
    return "\n".join(lines)


def _percent(share: float | None) -> str:
    return "–" if share is None else f"{100 * share:.1f} %"


def format_table(summary: dict) -> str:
    """The markdown table of the results."""
    lines = [HEADER, "|" + "---|" * HEADER.count(" | ") + "---|"]
    for record in summary["methods"]:
        row = result_row(record)
        cells = [row["method"], str(row["seeds"]), _with_std(row["auc"], row["auc_std"], row["seeds"]),
                 format_metric(row["test_auc_whole"]), _with_std(row["uauc"], row["uauc_std"], row["seeds"]),
                 _interval(record), format_metric(row["warm_auc"]), format_metric(row["cold_auc"]),
                 _with_std(row["valid_auc"], row["valid_auc_std"], row["seeds"]), format_metric(row["valid_auc_whole"]),
                 format_seconds(row["train_seconds"]), format_count(row["trainable_parameters"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_markdown(summary: dict) -> str:
    """``results.md``: what was compared on which rows, the table, the notes, the plots."""
    test, valid, boot = summary["test_rows"], summary["valid_rows"], summary.get("bootstrap")
    seeds = ", ".join(map(str, summary["seeds"]))
    interval = (f"paired bootstrap by user ({boot['resamples']} resamples of the {test['users']} test users, "
                f"seed {boot['seed']}; each user's rows kept together), on each method's AUC averaged over its seeds"
                if boot else "no MF in this benchmark, so no intervals")
    return "\n".join([
        f"# Benchmark on {summary['dataset']}",
        "",
        f"Data `{summary['data']}`, preset `{summary['preset']}`, training seeds {seeds}, sample seed "
        f"{summary['sample_seed']}, LLM `{summary['llm']}`, CF models "
        f"{'tuned on validation' if summary['tune_cf'] else 'with the preset settings (not tuned)'}.",
        f"Test rows: {_sample(test)}; {summary['warm_rows']} warm, {test['rows'] - summary['warm_rows']} cold.",
        f"Validation rows: {_sample(valid)}. Both samples are drawn with the sample seed: the same rows for "
        "every method and every training seed.",
        "",
        summary["table"],
        "",
        *[f"- {note}" for note in summary.get("notes", [])],
        "- AUC, UAUC: mean ± std (sample std) over the training seeds; methods that do not train (references, "
        "ICL) run once. UAUC = mean per-user AUC over users with both labels; warm = user and item occur in "
        "train, cold = the rest (means over seeds).",
        f"- AUC − MF [95% CI]: the method's AUC minus MF's on the same test rows, with a {interval}.",
        "- valid AUC: on the validation rows above, for every method (LLM methods: their best validation "
        "during training, on exactly these rows; the logistic reference is fitted on valid, so its valid "
        "AUC is in-sample; the stacked entries train on half of the validation split's users and validate on the "
        "other half, so theirs is on those rows). \"whole test\" / \"whole split\": CF models and references scored on every row "
        "of the test / valid split, beside their figure on the sample.",
        "- train time: seconds of training per seed (LLM methods: the loop's time until its last validation "
        "began, earlier validations included); trainable params: trained weights (references: the fitted rates "
        "and coefficients).",
        f"- Benchmark wall time: {format_seconds(summary['wall_seconds'])} (runs reused from an earlier "
        "invocation cost nothing here).",
        "",
        "![ROC curves](roc.png)",
        "",
        "![Validation AUC per step](valid_auc.png)",
        "",
        *(_ranking_section(summary) if summary.get("ranking") else []),
    ])


def _ranking_section(summary: dict) -> list[str]:
    """``results.md``'s "Top-k" section (``--ranking``)."""
    ranking = summary["ranking"]
    seconds = sum(sum(m["seconds"]) for m in ranking["methods"])
    return [
        "## Top-k",
        "",
        f"Test users with a liked test item: up to {ranking['max_users']}, drawn with sample seed {ranking['seed']}; the "
        f"catalogue is every item outside the user's train and valid rows; the prompt history and CF fold-in are "
        f"the user's likes before their first test row. The CF model pre-selects its top {ranking['pool']} "
        "items (a method without one: the most popular), which the method re-ranks (as `corarec recommend`). "
        "Each list is at most the pool long; targets outside it count as misses (\"targets in pool\": the "
        "ceiling of the re-ranked recall). Ties count as the mean over their orders; means over users "
        "and over the training seeds.",
        "",
        summary["ranking_table"],
        "",
        f"- Top-k evaluation time: {format_seconds(seconds)} (stored evaluations of reused runs count their "
        "original time).",
        "",
        "![NDCG@k against k](ndcg_at_k.png)",
        "",
    ]


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


def format_metric(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) and value == value else "–"


def warm_count(rows: pd.DataFrame, ds: Dataset) -> int:
    from corarec.evaluation.metrics import warm_mask

    return int(np.asarray(warm_mask(rows, ds.train)).sum())


def llm_name(results: list[dict]) -> str:
    names = {r["llm"] for r in results if r.get("llm")}
    return ", ".join(sorted(names)) if names else "–"


def _with_std(mean: float | None, std: float | None, seeds: int) -> str:
    return format_metric(mean) + (f" ± {std:.4f}" if seeds > 1 and std is not None else "")


def _interval(record: dict) -> str:
    if record["name"] == "mf":
        return "(baseline)"
    vs = record.get("vs_mf")
    if not vs:
        return "–"
    return f"{vs['difference']:+.4f} [{vs['low']:+.4f}, {vs['high']:+.4f}]"


def _sample(info: dict) -> str:
    how = (f"a whole-user sample (at most {info['max_samples']} rows, sample seed {info['seed']})"
           if info["max_samples"] else "all rows")
    return f"{info['rows']} rows of {info['users']} users — {how} of the {info['split']} split"
