"""The benchmark's plots: ROC curves on the test rows, validation AUC per training step (each method's
first training seed; the table gives the spread over seeds) and, with ``--ranking``, NDCG@k against k."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from corarec.benchmarking.plan import CF_LABELS
from corarec.benchmarking.report import format_metric
from corarec.utils.io import atomic_path


def plot_roc(path: Path, results: list[dict], labels: np.ndarray) -> None:
    """ROC curve of every method (its first seed's scores) on the shared test rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    fig, ax = plt.subplots(figsize=(6, 6))
    for index, result in enumerate(results):
        if len(np.unique(labels)) < 2:
            break
        scores = np.asarray(result["scores"])                                    # [seeds, rows]
        fpr, tpr, _ = roc_curve(labels, scores[0])
        auc = result["auc"]["values"][0]
        ax.plot(fpr, tpr, label=f"{result['label']} ({format_metric(auc)})", linewidth=1.2,
                color=_color(index), linestyle=_style(result))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC on the test rows (AUC; first seed)")
    ax.legend(loc="lower right", fontsize=8)
    _save_figure(fig, path)


def plot_valid_curves(path: Path, results: list[dict]) -> None:
    """Validation AUC per training step of the LLM methods (first seed); CF models and references as
    levels (their valid AUC on the same rows, mean over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for index, result in enumerate(results):
        if result["kind"] == "llm" and result["curve"]:
            steps, aucs = zip(*result["curve"])
            ax.plot(steps, aucs, marker="o", markersize=3, label=result["label"], color=_color(index))
        elif result["valid_auc"]["mean"] is not None:
            ax.axhline(result["valid_auc"]["mean"], linestyle=_style(result) if result["kind"] != "llm" else "-.",
                       linewidth=1, color=_color(index), label=f"{result['label']} (its valid AUC)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="training step (LLM methods)", ylabel="validation AUC",
           title="Validation AUC during training (horizontal: methods without LLM steps)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    _save_figure(fig, path)


def plot_ndcg_at_k(path: Path, ranking: dict) -> None:
    """``benchmark --ranking``: NDCG@k against k (all test users of the top-k evaluation) of every
    method's re-ranked pool (solid), each CF model's pool in its own order (dashed) and popularity
    (dotted), averaged over the seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = ranking["k"]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    methods = ranking["methods"]
    curves = [("popularity", methods[0]["parts"]["all"]["popularity"], ":", "grey")] if methods else []
    shown_cf = set()
    for index, method in enumerate(methods):
        part = method["parts"]["all"]
        if part["cf"] is not None and method["pool_from"] not in shown_cf:
            shown_cf.add(method["pool_from"])
            label = CF_LABELS.get(method["pool_from"], method["pool_from"])
            curves.append((f"{label} (its pool, CF order)", part["cf"], "--", _color(len(methods) + len(shown_cf))))
        curves.append((f"{method['label']} (re-ranked)", part["reranked"], "-", _color(index)))
    for label, metrics, style, color in curves:
        ax.plot(ks, [metrics[f"ndcg@{k}"] for k in ks], marker="o", markersize=3, linestyle=style, color=color,
                label=label)
    ax.set_xticks(ks)
    ax.set(xlabel="k", ylabel="NDCG@k", title=f"Top-k on {methods[0]['parts']['all']['users'] if methods else 0} "
           f"test users (pool {ranking['pool']}; mean over seeds)")
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
