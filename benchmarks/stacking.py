"""How much does a plain stacker gain over the CF model, on the rows the stacked LLM methods use?

    python benchmarks/stacking.py --bench runs/bench [--cf mf] [--seeds 0,1,2]

The stacked entries of ``corarec benchmark`` (``cora-stacked-<cf>``, ``tallrec-stacked-<cf>``; train split
``valid-half``) train on half of the validation split's users — rows the CF model never saw, most of them
cold — and validate on the other half. This script fits the simplest model on the same half: a logistic
regression on the CF model's logit, the item's smoothed positive rate in the train split (log-odds) and the
length of the row's history (log 1 + earlier positives), i.e. on what the CF model and the prompt hold, without an LLM. Its
gain over the CF model on the benchmark's test rows is what the LLM methods' gain must be compared with:
if a stacked LLM method gains no more, the LLM adds nothing that three numbers do not.

For every seed of the CF model (its benchmark run ``runs/<cf>/seed-<s>``) it prints the test AUC of the
CF model and of the stacker, the difference with a 95 % interval bootstrapped by user (the benchmark's
bootstrap), warm and cold AUC, and the stacker's AUC on the other half of the validation users. Nothing
is trained but the logistic regression (seconds).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from corarec.benchmarking.samples import draw
from corarec.cf.checkpoint import load_cf
from corarec.cf.references import rate_log_odds
from corarec.cf.train import cf_logits
from corarec.data.sampling import split_users
from corarec.data.schema import read_dataset
from corarec.evaluation.bootstrap import paired_auc_difference
from corarec.evaluation.metrics import auc, warm_mask


def features(train: pd.DataFrame, rows: pd.DataFrame, cf_logit: np.ndarray) -> np.ndarray:
    """``[N, 3]``: the CF logit, the item's smoothed positive rate in ``train`` (log-odds), log(1 + history length).
    Rates from ``train`` only: rates counting half A would hold each fitting row's own label."""
    history = np.array([len(h) for h in rows["history"]], dtype=np.float64)
    return np.stack([cf_logit, rate_log_odds(train, "item_id", rows), np.log1p(history)], 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bench", type=Path, default=Path("runs/bench"))
    parser.add_argument("--cf", default="mf")
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()

    # the benchmark's test rows: drawn again as its runs record them (every run's benchmark.json holds the spec)
    record = json.loads((args.bench / "runs" / args.cf / "seed-0" / "benchmark.json").read_text())
    ds = read_dataset(record["spec"]["data"])
    test_rows = record["rows"]["test"]
    seed = test_rows["seed"]
    test, info = draw(ds.test, "test", test_rows["max_samples"], seed)
    if info["fingerprint"] != test_rows["fingerprint"]:
        raise SystemExit(f"{args.bench}: the test rows drawn here differ from the benchmark's")
    half_a, half_b = split_users(ds.valid, seed)  # the halves of the stacked runs (valid_sample_seed = sample seed)
    warm = np.asarray(warm_mask(test, ds.train))
    y = test["label"].to_numpy()
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; fitted on {len(half_a)} validation rows "
          f"({half_a['user_id'].nunique()} users), checked on the other {len(half_b)} ({half_b['user_id'].nunique()} users); "
          f"{len(test)} test rows ({test['user_id'].nunique()} users, {int(warm.sum())} warm)\n")
    print(f"| {args.cf.upper()} seed | {args.cf.upper()} test AUC | stacker test AUC | stacker − {args.cf.upper()} "
          "[95% CI by user] | warm: CF / stacker | cold: CF / stacker | valid half B: CF / stacker | coefficients |")
    print("|---|---|---|---|---|---|---|---|")
    for s in [int(x) for x in args.seeds.split(",")]:
        model = load_cf(args.bench / "runs" / args.cf / f"seed-{s}", ds)
        parts = {name: (rows, cf_logits(model, rows)) for name, rows in
                 (("a", half_a), ("b", half_b), ("test", test))}
        cf_test = parts["test"][1]
        x = {name: features(ds.train, rows, logit) for name, (rows, logit) in parts.items()}
        stacker = LogisticRegression().fit(x["a"], half_a["label"].to_numpy())
        stacked = {name: stacker.decision_function(x[name]) for name in x}
        d = paired_auc_difference(test["user_id"], y, stacked["test"], cf_test)
        yb = half_b["label"].to_numpy()
        print(f"| {s} | {auc(y, cf_test):.4f} | {auc(y, stacked['test']):.4f} | "
              f"{d['difference']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}] | "
              f"{auc(y[warm], cf_test[warm]):.4f} / {auc(y[warm], stacked['test'][warm]):.4f} | "
              f"{auc(y[~warm], cf_test[~warm]):.4f} / {auc(y[~warm], stacked['test'][~warm]):.4f} | "
              f"{auc(yb, parts['b'][1]):.4f} / {auc(yb, stacked['b']):.4f} | "
              f"{', '.join(f'{c:+.2f}' for c in stacker.coef_[0])} |")


if __name__ == "__main__":
    main()
