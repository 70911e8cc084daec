"""Does an LLM method know anything its CF model does not? Post-hoc checks on a benchmark directory.

    python benchmarks/fusion_check.py --bench runs/bench --methods cora-mf,cora-anchored-mf [--cf mf]

For every method and training seed, on the benchmark's own validation and test rows (drawn again here
with its sample seed and sizes, and checked against the rows the benchmark recorded):

1. **Copy or complement.** Pearson correlation of the method's test scores with its CF model's (same seed).
2. **Fusion chosen on validation.** ``z(CF) + w · z(method)`` (each score standardised with its
   validation mean and std) for ``w`` in a grid. ``w`` is picked on half A of the validation users and
   confirmed on half B (users split by a seeded permutation), then reported on test beside CF alone,
   with a 95 % interval of the difference bootstrapped by user. If no ``w`` > 0 helps on both halves,
   the method carries nothing the CF model lacks that validation can see.
3. **Warm and cold.** Test AUC of the method and of CF on warm rows (user and item in train) and cold rows.

The LLM runs' validation scores are computed here (one scoring pass of the validation sample per run;
about 3 minutes per run with a warm prefix cache on a 2-core CPU); nothing is trained.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from corarec.benchmarking.samples import draw
from corarec.cf.checkpoint import load_cf
from corarec.cf.train import cf_logits
from corarec.data.schema import read_dataset
from corarec.evaluation.bootstrap import paired_auc_difference
from corarec.evaluation.evaluate import score_rows
from corarec.evaluation.metrics import auc, warm_mask
from corarec.training.runs import load_run

WEIGHTS = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0)
"""Fusion weights ``w`` of the method's standardised score beside the CF model's."""


def halves(users: np.ndarray, seed: int) -> np.ndarray:
    """``[N]`` True for rows of half A of the users (a seeded permutation of the distinct users)."""
    distinct = np.unique(users)
    half_a = np.random.default_rng(seed).permutation(distinct)[: len(distinct) // 2]
    return np.isin(users, half_a)


def standardise(scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
    return (scores - reference.mean()) / (reference.std() + 1e-12)


def check_seed(bench: Path, method: str, cf: str, seed: int, valid: pd.DataFrame, test: pd.DataFrame,
               warm: np.ndarray, split_seed: int) -> dict:
    run_dir, cf_dir = bench / "runs" / method / f"seed-{seed}", bench / "runs" / cf / f"seed-{seed}"
    recorded = pd.read_csv(run_dir / "test_scores.csv")
    if not (np.array_equal(recorded["user_id"], test["user_id"]) and np.array_equal(recorded["item_id"], test["item_id"])):
        raise SystemExit(f"{run_dir}: its test rows are not the rows drawn here (another sample seed or size?)")
    llm_test = recorded["score"].to_numpy()
    cf_test = pd.read_csv(cf_dir / "test_scores.csv")["score"].to_numpy()
    run = load_run(run_dir)
    llm_valid = score_rows(run, valid, desc=f"valid {method} seed {seed}")
    cf_valid = cf_logits(load_cf(cf_dir, run.dataset), valid)

    y_valid, y_test = valid["label"].to_numpy(), test["label"].to_numpy()
    in_a = halves(valid["user_id"].to_numpy(), split_seed)
    fused = {w: (standardise(cf_valid, cf_valid) + w * standardise(llm_valid, llm_valid),
                 standardise(cf_test, cf_valid) + w * standardise(llm_test, llm_valid)) for w in WEIGHTS}
    per_w = {w: {"valid_a": auc(y_valid[in_a], v[in_a]), "valid_b": auc(y_valid[~in_a], v[~in_a]),
                 "test": auc(y_test, t)} for w, (v, t) in fused.items()}
    picked = max(WEIGHTS, key=lambda w: per_w[w]["valid_a"])
    interval = paired_auc_difference(test["user_id"], y_test, fused[picked][1], cf_test)
    return {
        "seed": seed, "corr_test": float(np.corrcoef(llm_test, cf_test)[0, 1]),
        "auc": {"method": auc(y_test, llm_test), "cf": auc(y_test, cf_test),
                "method_warm": auc(y_test[warm], llm_test[warm]), "cf_warm": auc(y_test[warm], cf_test[warm]),
                "method_cold": auc(y_test[~warm], llm_test[~warm]), "cf_cold": auc(y_test[~warm], cf_test[~warm]),
                "method_valid": auc(y_valid, llm_valid), "cf_valid": auc(y_valid, cf_valid)},
        "fusion": {"weights": {str(w): v for w, v in per_w.items()}, "picked_on_a": picked,
                   "confirmed_on_b": per_w[picked]["valid_b"] > per_w[0.0]["valid_b"],
                   "test_minus_cf": interval},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bench", type=Path, default=Path("runs/bench"))
    parser.add_argument("--methods", default="cora-mf,cora-anchored-mf")
    parser.add_argument("--cf", default="mf")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the halves of the validation users")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here too")
    args = parser.parse_args()

    summary = json.loads((args.bench / "results.json").read_text())
    ds = read_dataset(summary["data"])
    valid, valid_info = draw(ds.valid, "valid", summary["valid_rows"]["max_samples"], summary["sample_seed"])
    test, test_info = draw(ds.test, "test", summary["test_rows"]["max_samples"], summary["sample_seed"])
    for info, name in ((valid_info, "valid_rows"), (test_info, "test_rows")):
        if info["fingerprint"] != summary[name]["fingerprint"]:
            raise SystemExit(f"{args.bench}: the {name} drawn here differ from the benchmark's")
    warm = np.asarray(warm_mask(test, ds.train))
    results = {}
    for method in args.methods.split(","):
        seeds = sorted(int(p.name.split("-")[1]) for p in (args.bench / "runs" / method).glob("seed-*")
                       if (p / "test_scores.csv").is_file())
        results[method] = [check_seed(args.bench, method, args.cf, s, valid, test, warm, args.split_seed) for s in seeds]

    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {len(valid)} valid rows "
          f"({valid['user_id'].nunique()} users, halves A/B by seed {args.split_seed}), {len(test)} test rows "
          f"({test['user_id'].nunique()} users, {int(warm.sum())} warm)\n")
    print("| method | seed | AUC | CF AUC | corr with CF | warm AUC (CF) | cold AUC (CF) | w picked on A | "
          "B confirms | fused test AUC − CF [95% CI by user] |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for method, rows in results.items():
        for r in rows:
            a, f = r["auc"], r["fusion"]
            d = f["test_minus_cf"]
            print(f"| {method} | {r['seed']} | {a['method']:.4f} | {a['cf']:.4f} | {r['corr_test']:.2f} | "
                  f"{a['method_warm']:.4f} ({a['cf_warm']:.4f}) | {a['method_cold']:.4f} ({a['cf_cold']:.4f}) | "
                  f"{f['picked_on_a']} | {'yes' if f['confirmed_on_b'] else 'no'} | "
                  f"{d['difference']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}] |")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
