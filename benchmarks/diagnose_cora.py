"""Why does a trained CoRA run score what it scores? Diagnostics on one run directory (prints tables).

    python benchmarks/diagnose_cora.py --run RUN [--rows 400] [--seed 0]

1. **Fit.** On rows of the run's own training sample (drawn exactly as training drew them) and of its
   validation sample: the AUC of the frozen CF model's score ``<e_u, e_i>`` (with the learned user
   embedding and with the fold-in one), CoRA's AUC, and how closely CoRA's scores follow the CF model's
   (Pearson correlation). A CF model fits its own training rows far better than new ones; CoRA, reading
   the same embeddings, can at best pass that signal on: a CoRA training AUC far below the CF model's
   means the generator and ``P`` have not learned to carry it (under-fitting), not that it is missing.
2. **Signal.** How much the per-sample factor ``A_b`` varies across samples, next to bf16's rounding of
   it (the injection runs under bf16 autocast), and the size the ``P`` matrices reached.

No training; the LLM scores ``2 × rows`` prompts (about a minute per 400 rows on a 2-core CPU, less with
a warm prefix cache).
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import torch

from corarec.errors import CorarecError
from corarec.evaluation.evaluate import score_rows
from corarec.methods.cora.injection import LowRankDelta
from corarec.evaluation.metrics import auc
from corarec.training.runs import LoadedRun, load_run
from corarec.training.rows import training_rows


@torch.no_grad()
def cf_dot(run: LoadedRun, rows: pd.DataFrame, fold_in: bool, batch_size: int = 256) -> np.ndarray:
    """``<e_u, e_i>`` of the run's frozen CF model for ``rows`` [N] (the CF logit minus its global bias)."""
    out = []
    for start in range(0, len(rows), batch_size):
        cf = run.batcher(rows.iloc[start:start + batch_size]).cf.to(run.device)
        flags = torch.full((len(cf.users),), fold_in, dtype=torch.bool, device=run.device)  # [b]
        e_u, e_i = run.method.cf.embed(cf, fold_in=flags)  # [b, c'] each
        out.append((e_u.float() * e_i.float()).sum(-1).cpu())
    return torch.cat(out).numpy()


def fit_table(run: LoadedRun, samples: dict[str, pd.DataFrame]) -> list[dict]:
    """Section 1: one row per sample."""
    table = []
    for name, rows in samples.items():
        labels = rows["label"].to_numpy()
        learned, fold = cf_dot(run, rows, False), cf_dot(run, rows, True)
        cora = score_rows(run, rows, desc=f"CoRA on {name}")
        table.append({"rows": name, "n": len(rows), "cf_learned": auc(labels, learned), "cf_fold_in": auc(labels, fold),
                      "cora": auc(labels, cora), "corr": float(np.corrcoef(cora, learned)[0, 1])})
    return table


@torch.no_grad()
def signal_stats(run: LoadedRun, rows: pd.DataFrame) -> dict:
    """Section 2: spread of ``A_b`` over ``rows`` against bf16 rounding; size of the ``P`` matrices."""
    cf = run.batcher(rows).cf.to(run.device)
    A = run.method.factors(cf, deterministic=True).flatten(1).float()  # [B, d·r], unit norm per row
    mean = A.mean(0, keepdim=True)  # [1, d·r]
    spread = ((A - mean).norm(dim=1) / A.norm(dim=1)).median().item()
    rounding = ((A.bfloat16().float() - A).norm(dim=1) / A.norm(dim=1)).median().item()
    cosine = torch.nn.functional.cosine_similarity(A, mean).median().item()
    P = [m.P.detach().float().abs() for m in run.method.modules() if isinstance(m, LowRankDelta)]
    return {"samples": len(rows), "spread": spread, "bf16_rounding": rounding, "cosine_to_mean": cosine,
            "modules": len(P), "p_mean_abs": float(torch.stack([p.mean() for p in P]).mean()),
            "p_max_abs": float(max(p.max() for p in P))}


def diagnose(run_dir: str, rows: int = 400, seed: int = 0) -> tuple[list[dict], dict]:
    run = load_run(run_dir)
    if run.config.method != "cora":
        raise CorarecError(f"{run_dir}: a {run.config.method} run; diagnose_cora.py reads CoRA runs only")
    train, valid = training_rows(run.dataset, run.config)
    rng = np.random.default_rng(seed)
    pick = lambda frame: frame.iloc[np.sort(rng.choice(len(frame), min(rows, len(frame)), replace=False))]
    samples = {"train (the run's training sample)": pick(train), "valid (the run's validation sample)": pick(valid)}
    run.method.eval()
    return fit_table(run, samples), signal_stats(run, samples["valid (the run's validation sample)"].iloc[:256])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a trained CoRA run directory")
    parser.add_argument("--rows", type=int, default=400, help="rows drawn from each sample (seeded)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    table, signal = diagnose(args.run, args.rows, args.seed)
    print(f"\nCoRA run {args.run}\n")
    print("| rows | n | CF AUC (learned users) | CF AUC (fold-in users) | CoRA AUC | corr(CoRA, CF) |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in table:
        print(f"| {r['rows']} | {r['n']} | {r['cf_learned']:.4f} | {r['cf_fold_in']:.4f} | {r['cora']:.4f} | {r['corr']:.3f} |")
    print(f"\nA_b over {signal['samples']} validation rows: median ||A_b - mean|| / ||A_b|| = {signal['spread']:.4f} "
          f"(bf16 rounding {signal['bf16_rounding']:.5f}, {signal['spread'] / max(signal['bf16_rounding'], 1e-12):.0f}×); "
          f"median cosine to the mean {signal['cosine_to_mean']:.4f}")
    print(f"P over {signal['modules']} modules: mean |P| {signal['p_mean_abs']:.5f}, max |P| {signal['p_max_abs']:.4f}")


if __name__ == "__main__":
    main()
