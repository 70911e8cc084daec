"""The benchmark's plots: ROC curves on the test rows, validation AUC per training step (each method's
first training seed; the table gives the spread over seeds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from corarec.benchmark.report import format_metric
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
