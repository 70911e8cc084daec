"""CoRA's quality on MovieLens-100K with the bundled SmolLM2-135M: does CoRA-MF beat MF, the zero-shot
LLM and the simple rate references? And what does the CPU fast mode (top-8 layers + cached prefix) cost?

    python benchmarks/quality.py [--out runs/quality] [--max-test-samples 4000] [--seeds 0] [--sample-seed 0]
                                 [--no-tune-cf] [--retrain-stale]

Runs ``corarec benchmark`` twice on the same whole-user validation and test samples (drawn with
``--sample-seed``; each trained method once per ``--seeds`` seed, MF tuned on validation unless
``--no-tune-cf``):
1. the ``cpu`` preset: item-rate and logistic-rate references, MF, zero-shot ICL, CoRA-MF in the preset's fast
   mode (injected into the top 8 layers, fed cached layer-22 inputs);
2. the ``cpu`` preset with CoRA injected into all 30 layers (the paper's setting; ``--skip-all-layers`` leaves
   it out).
Finished runs are reused, interrupted ones resume; ``--retrain-stale`` sets aside runs trained with other
settings (an edited preset) and trains them again. Prints one table (AUC, UAUC, the difference to MF with
its by-user interval, warm/cold AUC, train time).
The first part takes about an hour on a 2-core CPU from a cold prefix cache (CoRA-MF trained in 34 minutes of
it); the all-layers run (1,000 steps at ~3 s) about an hour more. Why CoRA-MF scores what it scores:
``benchmarks/diagnose_cora.py --run OUT/cpu/runs/cora-mf``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import yaml

from corarec.benchmarking import benchmark, format_table
from corarec.training.config import load_preset
from corarec.data.prepare import prepare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/quality")
    parser.add_argument("--max-test-samples", type=int, default=4000)
    parser.add_argument("--seeds", default="0", help="training seeds, e.g. 0,1,2")
    parser.add_argument("--sample-seed", type=int, default=0, help="seed of the validation and test samples")
    parser.add_argument("--no-tune-cf", action="store_true", help="MF with the cpu preset's values, not tuned")
    parser.add_argument("--skip-all-layers", action="store_true", help="measure the cpu preset's fast mode only")
    parser.add_argument("--retrain-stale", action="store_true", help="retrain runs trained with other settings")
    args = parser.parse_args()
    out = Path(args.out)
    started = time.perf_counter()

    data = out / "ml-100k"
    if not (data / "dataset.json").is_file():
        prepare("ml-100k", out=data)

    common = dict(seeds=args.seeds, sample_seed=args.sample_seed, max_test_samples=args.max_test_samples,
                  tune_cf=not args.no_tune_cf, retrain_stale=args.retrain_stale)
    fast = benchmark(data, out / "cpu", methods="item-rate,logistic-rate,mf,icl,cora-mf", preset="cpu", **common)
    summary = {"methods": [dict(m, label=f"{m['label']} (top:8 + cached prefix)") if m["name"] == "cora-mf" else m
                           for m in fast["methods"]]}
    if not args.skip_all_layers:
        preset = load_preset("cpu")
        preset["cora"] = {**(preset.get("cora") or {}), "layers": "all", "cache_prefix": False}
        out.mkdir(parents=True, exist_ok=True)
        (out / "cpu-all-layers.yaml").write_text(yaml.safe_dump(preset))
        paper_like = benchmark(data, out / "all-layers", methods="cora-mf", preset=str(out / "cpu-all-layers.yaml"),
                               **common)
        assert paper_like["test_rows"]["fingerprint"] == fast["test_rows"]["fingerprint"], "different test rows"
        summary["methods"].append(dict(paper_like["methods"][0], label="CoRA-MF (all 30 layers)"))
    rows = fast["test_rows"]
    print(f"\nMovieLens-100K test: {rows['rows']} rows, {rows['users']} users (whole users, sample seed "
          f"{args.sample_seed}); {fast['warm_rows']} warm rows; training seeds {args.seeds}; LLM {fast['llm']}; "
          "preset cpu\n")
    print(format_table(summary))
    print("\n".join(fast["notes"]))
    print(f"\nwall time {time.perf_counter() - started:.0f} s (reused runs cost nothing)")


if __name__ == "__main__":
    main()
