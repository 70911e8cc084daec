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
    """``results.csv``: the table's rows, unformatted, plus GAUC, the test-row count and the runs."""
    frame = pd.DataFrame([{**result_row(r), "name": r["name"], "gauc": r["gauc"], "test_rows": r["test_rows"],
                           "run": ";".join(str(run) for run in r["runs"] if run)} for r in summary["methods"]])
    metrics = [c for c in frame.columns if "auc" in c]
    frame[metrics] = frame[metrics].astype(float).round(4)
    write_table(path, frame)


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
        "AUC is in-sample). \"whole test\" / \"whole split\": CF models and references scored on every row "
        "of the test / valid split, beside their figure on the sample.",
        "- train time: seconds of training per seed (LLM methods: the loop's time, validations included); "
        "trainable params: trained weights (references: the fitted rates and coefficients).",
        f"- Benchmark wall time: {format_seconds(summary['wall_seconds'])} (runs reused from an earlier "
        "invocation cost nothing here).",
        "",
        "![ROC curves](roc.png)",
        "",
        "![Validation AUC per step](valid_auc.png)",
        "",
    ])


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
