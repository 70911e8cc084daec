"""Golden scores: a tiny trained run of every method, scored through the public entry points.

Refactors must leave behaviour unchanged. This module trains each CF model and each LLM method for
a few steps on the tiny dataset of :mod:`tiny` (CPU, fp32, fixed seeds) and scores its test
split: the CF models through ``corarec.cf.cf_logits``, the LLM methods through
``corarec.evaluation.evaluate`` (the same path as ``corarec evaluate``) and, for CoRA, also through
``corarec.load(...).score`` (the serving path).

- ``tests/test_golden.py`` compares the scores with ``tests/golden/scores.json`` within a tolerance
  derived from the arithmetic (other machines sum in other orders);
- ``python tests/golden.py --write`` regenerates that file (only after a change that is *meant* to
  change scores), and ``python tests/golden.py --compare FILE`` checks bit-identity against scores
  written by another checkout on the same machine (the proof a refactor asks for).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tiny import tiny_dataset, tiny_llm_dir  # noqa: E402

GOLDEN = Path(__file__).resolve().parent / "golden" / "scores.json"

TRAIN = dict(max_steps=3, eval_every=3, batch_size=8, eval_batch_size=16, warmup_steps=1)
CF_TRAIN = dict(dim=16, epochs=3, batch_size=32)
CORA = dict(rank=4, alpha=8.0, generator_queries=2, generator_depth=1, generator_heads=2)


def golden_scores(root: Path) -> dict[str, list[float]]:
    """Build every tiny run under ``root`` and return ``{name: test-split scores}``."""
    import corarec
    import pandas as pd
    from corarec.cf import cf_logits, load_cf, train_cf
    from corarec.data.schema import read_dataset, write_dataset
    from corarec.evaluation.evaluate import evaluate
    from corarec.training.loop import train

    data = write_dataset(tiny_dataset(), root / "data")
    ds = read_dataset(data)
    llm = str(tiny_llm_dir(root, hidden=64, name="llm"))
    scores: dict[str, list[float]] = {}
    for model in ("mf", "lightgcn", "sasrec"):
        train_cf(data, model, root / model, progress=False, **CF_TRAIN)
        scores[model] = cf_logits(load_cf(root / model, ds), ds.test).tolist()

    common = dict(data=data, llm=llm, seed=0, device="cpu", bf16=False)
    runs = {
        "cora-mf": dict(method="cora", cf=root / "mf", **CORA),
        "cora-lightgcn": dict(method="cora", cf=root / "lightgcn", **CORA),
        "cora-sasrec": dict(method="cora", cf=root / "sasrec", **CORA),
        "tallrec": dict(method="tallrec"),
        "collm-mf": dict(method="collm", cf=root / "mf", init=root / "tallrec"),
        "icl": dict(method="icl"),
    }
    for name, spec in runs.items():
        train(out=root / name, **TRAIN, **common, **spec)
        predictions = root / f"{name}.csv"
        evaluate(root / name, split="test", predictions=predictions)
        scores[name] = pd.read_csv(predictions)["logit"].astype(float).tolist()
    served = corarec.load(root / "cora-mf").score(_pairs(ds))
    scores["cora-mf served"] = served["logit"].astype(float).tolist()
    return scores


def _pairs(ds) -> list[dict]:
    """The test split as raw-id pairs, as a user of the serving API sends them."""
    users = ds.users.set_index("user_id")["user_raw"] if ds.users is not None else None
    items = ds.items.set_index("item_id")["item_raw"] if "item_raw" in ds.items else None
    return [{"user": users[u] if users is not None else u, "item": items[i] if items is not None else i}
            for u, i in zip(ds.test["user_id"], ds.test["item_id"])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help=f"write {GOLDEN}")
    parser.add_argument("--out", type=Path, help="write the scores to this JSON file")
    parser.add_argument("--compare", type=Path, help="check bit-identity against this JSON file")
    args = parser.parse_args()
    import tempfile

    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        scores = golden_scores(Path(tmp))
    for path in [p for p in (GOLDEN if args.write else None, args.out) if p]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(scores, indent=1) + "\n")
        print(f"wrote {path}")
    if args.compare:
        expected = json.loads(args.compare.read_text())
        for name in sorted(set(expected) | set(scores)):
            a, b = np.asarray(expected.get(name, [])), np.asarray(scores.get(name, []))
            same = a.shape == b.shape and np.array_equal(a, b)
            diff = np.abs(a - b).max() if a.shape == b.shape and a.size else float("nan")
            print(f"{name:16s} {'bit-identical' if same else f'DIFFERS (max |diff| {diff:.3g})'}")


if __name__ == "__main__":
    main()
