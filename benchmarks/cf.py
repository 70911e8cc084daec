"""CF models alone on MovieLens-100K: MF, LightGCN and SASRec against two simple references.

Prepares the bundled MovieLens-100K (unless ``--data`` is given), trains each CF model with its
preset (or ``--grid``), and prints one table of test metrics: AUC, UAUC, warm AUC, cold AUC, the
valid AUC the model was selected on, and the training seconds. Not part of the test suite.

    python benchmarks/cf.py [--out runs/bench-cf] [--data DIR] [--models mf,lightgcn,sasrec] [--grid] [--threads N]

The references are computed from train only (the logistic regression is fitted on valid); every
model choice is made on valid, never on test.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from corarec.cf import train_cf
from corarec.cf.references import REFERENCES
from corarec.data import read_dataset
from corarec.evaluation.metrics import metric_report, warm_mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench-cf"), help="directory for the dataset and the runs")
    parser.add_argument("--data", type=Path, default=None, help="a prepared dataset (default: prepare ml-100k into OUT/ml-100k)")
    parser.add_argument("--models", default="mf,lightgcn,sasrec")
    parser.add_argument("--grid", action="store_true", help="lr x weight-decay x dim grid per model (best on valid)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    data = args.data
    if data is None:
        from corarec.data.prepare import prepare

        data = args.out / "ml-100k"
        if not (data / "dataset.json").is_file():
            prepare("ml-100k", out=data)
    ds = read_dataset(data)

    rows = []
    for name, scores_of in REFERENCES.items():
        start = time.perf_counter()
        test_scores, valid_scores = scores_of(ds, "test"), scores_of(ds, "valid")
        seconds = time.perf_counter() - start
        test = metric_report(ds.test["user_id"], ds.test["label"], test_scores, warm_mask(ds.test, ds.train))
        valid = metric_report(ds.valid["user_id"], ds.valid["label"], valid_scores)
        rows.append((name, test, valid["all"]["auc"], seconds, ""))
    for model in args.models.split(","):
        metrics = train_cf(data, model, args.out / model, grid=args.grid, seed=args.seed, overwrite=True)  # retrained on every run
        rows.append((model, metrics["test"], metrics["valid"]["all"]["auc"], metrics["train_seconds"], f"epoch {metrics['best_epoch']}"))

    test = ds.test
    warm = warm_mask(test, ds.train)
    print(f"\n{ds.name}: test {len(test)} rows ({warm.mean():.0%} warm: user and item in train), "
          f"{test['user_id'].nunique()} users; torch threads {torch.get_num_threads()}\n")
    print("| model | AUC | UAUC | warm AUC | cold AUC | valid AUC | train s | best |")
    print("|---|---|---|---|---|---|---|---|")
    for name, report, valid_auc, seconds, best in rows:
        print(f"| {name} | {report['all']['auc']:.4f} | {report['all']['uauc']:.4f} | {report['warm']['auc']:.4f} | "
              f"{report['cold']['auc']:.4f} | {valid_auc:.4f} | {seconds:.1f} | {best} |")


if __name__ == "__main__":
    main()
