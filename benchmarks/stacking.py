"""How much does a plain stacker gain over the CF model, on the rows the stacked LLM methods use?

    python benchmarks/stacking.py --bench runs/bench [--cf mf] [--seeds 0,1,2] [--content] [--learner boosting]

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

``--content`` (MovieLens-100K only) adds what an LLM that knows the films could bring and MF does not read:
the cosine between the genres of the row's item and the mean genre vector of its history, the item's release
year, and its distance to the history's mean year (genres and years from the bundled RecBole ``ml-100k.item``).
Each configuration is fitted once without and once with them, so the table shows what the content adds on top.
``--learner boosting`` fits sklearn's histogram gradient boosting (200 trees of 15 leaves, lr 0.05, seed 0)
instead of the logistic regression, with the item's genre flags as further inputs under ``--content``: a
nonlinear stacker, for whether the linear one misses an interaction.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

from corarec.benchmarking.samples import draw
from corarec.cf.checkpoint import load_cf
from corarec.cf.references import rate_log_odds
from corarec.cf.train import cf_logits
from corarec.data.sampling import split_users
from corarec.data.movielens import ml100k_dir
from corarec.data.schema import read_dataset
from corarec.evaluation.bootstrap import paired_auc_difference
from corarec.evaluation.metrics import auc, warm_mask


def features(train: pd.DataFrame, rows: pd.DataFrame, cf_logit: np.ndarray) -> np.ndarray:
    """``[N, 3]``: the CF logit, the item's smoothed positive rate in ``train`` (log-odds), log(1 + history length).
    Rates from ``train`` only: rates counting half A would hold each fitting row's own label."""
    history = np.array([len(h) for h in rows["history"]], dtype=np.float64)
    return np.stack([cf_logit, rate_log_odds(train, "item_id", rows), np.log1p(history)], 1)


def item_content(ds) -> tuple[np.ndarray, np.ndarray]:
    """Genre flags ``[n_items, n_genres]`` and release years ``[n_items]`` (missing: the mean) of a
    MovieLens-100K dataset's items, by their raw ids, from the bundled RecBole ``ml-100k.item``."""
    if ds.name != "ml-100k" or "item_raw" not in ds.items:
        raise SystemExit(f"--content: genres and years are known for MovieLens-100K only, not {ds.name}")
    raw = pd.read_csv(ml100k_dir() / "ml-100k.item", sep="\t", dtype=str).fillna("")
    raw.columns = ["raw", "title", "year", "genres"]
    names = sorted({g for value in raw["genres"] for g in value.split()})
    flags = {r: np.array([g in value.split() for g in names], float) for r, value in zip(raw["raw"], raw["genres"])}
    years = dict(zip(raw["raw"], pd.to_numeric(raw["year"], errors="coerce")))
    items = [str(r) for r in ds.items["item_raw"]]
    genre = np.stack([flags.get(r, np.zeros(len(names))) for r in items])
    year = np.array([years.get(r, np.nan) for r in items], float)
    return genre, np.where(np.isnan(year), np.nanmean(year), year)


def content_features(genre: np.ndarray, year: np.ndarray, rows: pd.DataFrame) -> np.ndarray:
    """``[N, 3]``: cosine of the item's genres with the history's mean genres, (year − 1990) / 10 and
    |year − the history's mean year| / 10 (0 and 0 for an empty history)."""
    out = np.zeros((len(rows), 3))
    for n, (history, item) in enumerate(zip(rows["history"], rows["item_id"])):
        h = np.asarray(history, dtype=np.int64)
        out[n, 1] = (year[item] - 1990) / 10
        if len(h):
            profile = genre[h].mean(0)
            norm = np.linalg.norm(profile) * np.linalg.norm(genre[item])
            out[n, 0] = profile @ genre[item] / norm if norm > 0 else 0.0
            out[n, 2] = abs(year[item] - year[h].mean()) / 10
    return out


def fit_score(learner: str, x: dict[str, np.ndarray], y: np.ndarray) -> tuple[dict[str, np.ndarray], str]:
    """Fit the stacker on ``x['a']``; its scores of every part and its coefficients (logistic only)."""
    if learner == "logistic":
        model = LogisticRegression(max_iter=1000).fit(x["a"], y)
        return {n: model.decision_function(v) for n, v in x.items()}, ", ".join(f"{c:+.2f}" for c in model.coef_[0])
    model = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, max_leaf_nodes=15, random_state=0)
    model.fit(x["a"], y)
    return {n: model.predict_proba(v)[:, 1] for n, v in x.items()}, "–"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bench", type=Path, default=Path("runs/bench"))
    parser.add_argument("--cf", default="mf")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--content", action="store_true", help="also fit with genre and year features (ML-100K)")
    parser.add_argument("--learner", choices=("logistic", "boosting"), default="logistic")
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
    content = {}
    if args.content:
        genre, year = item_content(ds)
        content = {name: content_features(genre, year, rows) for name, rows in
                   (("a", half_a), ("b", half_b), ("test", test))}
        if args.learner == "boosting":  # the item's own genres too: a tree can use them without a profile
            content = {name: np.hstack([c, genre[rows["item_id"].to_numpy()]]) for (name, c), rows in
                       zip(content.items(), (half_a, half_b, test))}
    y = test["label"].to_numpy()
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; fitted on {len(half_a)} validation rows "
          f"({half_a['user_id'].nunique()} users), checked on the other {len(half_b)} ({half_b['user_id'].nunique()} users); "
          f"{len(test)} test rows ({test['user_id'].nunique()} users, {int(warm.sum())} warm); "
          f"stacker: {args.learner}\n")
    print(f"| {args.cf.upper()} seed | features | {args.cf.upper()} test AUC | stacker test AUC | stacker − {args.cf.upper()} "
          "[95% CI by user] | warm: CF / stacker | cold: CF / stacker | valid half B: CF / stacker | coefficients |")
    print("|---|---|---|---|---|---|---|---|---|")
    for s in [int(x) for x in args.seeds.split(",")]:
        model = load_cf(args.bench / "runs" / args.cf / f"seed-{s}", ds)
        parts = {name: (rows, cf_logits(model, rows)) for name, rows in
                 (("a", half_a), ("b", half_b), ("test", test))}
        cf_test = parts["test"][1]
        x = {name: features(ds.train, rows, logit) for name, (rows, logit) in parts.items()}
        variants = [("CF, rate, length", x)]
        if content:
            variants.append(("+ genres, years", {name: np.hstack([x[name], content[name]]) for name in x}))
        yb = half_b["label"].to_numpy()
        for label, inputs in variants:
            stacked, coefficients = fit_score(args.learner, inputs, half_a["label"].to_numpy())
            d = paired_auc_difference(test["user_id"], y, stacked["test"], cf_test)
            print(f"| {s} | {label} | {auc(y, cf_test):.4f} | {auc(y, stacked['test']):.4f} | "
                  f"{d['difference']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}] | "
                  f"{auc(y[warm], cf_test[warm]):.4f} / {auc(y[warm], stacked['test'][warm]):.4f} | "
                  f"{auc(y[~warm], cf_test[~warm]):.4f} / {auc(y[~warm], stacked['test'][~warm]):.4f} | "
                  f"{auc(yb, parts['b'][1]):.4f} / {auc(yb, stacked['b']):.4f} | {coefficients} |")


if __name__ == "__main__":
    main()
