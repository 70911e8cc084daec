"""CoRA's quality on MovieLens-100K with the bundled SmolLM2-135M: does CoRA-MF beat MF, the zero-shot
LLM and the simple rate references? And what does the CPU fast mode (top-8 layers + cached prefix) cost?

    python benchmarks/quality.py [--out runs/quality] [--max-test-samples 4000] [--seed 0]

Runs ``corarec benchmark`` twice on the same whole-user test sample:
1. the ``cpu`` preset: item-rate and logistic-rate references, MF, zero-shot ICL, CoRA-MF (all layers);
2. the ``cpu`` preset with CoRA injected into the top 8 layers only, fed cached layer-22 inputs.
Finished runs are reused, interrupted ones resume. Prints one table (AUC, UAUC, warm/cold AUC, train time).
Takes about 1.5 hours on a 2-core CPU (the first benchmark alone took 51 minutes here).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import yaml

from corarec.benchmark import benchmark, format_table
from corarec.config import load_preset
from corarec.data.prepare import prepare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/quality")
    parser.add_argument("--max-test-samples", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fast-layers", default="top:8")
    args = parser.parse_args()
    out = Path(args.out)
    started = time.perf_counter()

    data = out / "ml-100k"
    if not (data / "dataset.json").is_file():
        prepare("ml-100k", out=data)

    paper_like = benchmark(data, out / "all-layers", methods="item-rate,logistic-rate,mf,icl,cora-mf",
                           preset="cpu", seed=args.seed, max_test_samples=args.max_test_samples)

    fast_preset = load_preset("cpu")
    fast_preset["cora"] = {**(fast_preset.get("cora") or {}), "layers": args.fast_layers, "cache_prefix": True}
    out.mkdir(parents=True, exist_ok=True)
    (out / "cpu-fast.yaml").write_text(yaml.safe_dump(fast_preset))
    fast = benchmark(data, out / "fast", methods="cora-mf", preset=str(out / "cpu-fast.yaml"), seed=args.seed,
                     max_test_samples=args.max_test_samples)
    assert fast["test_rows"]["fingerprint"] == paper_like["test_rows"]["fingerprint"], "different test rows"

    fast_row = dict(fast["methods"][0], label=f"CoRA-MF fast ({args.fast_layers} + cached prefix)")
    summary = {"methods": paper_like["methods"] + [fast_row]}
    rows = paper_like["test_rows"]
    print(f"\nMovieLens-100K test: {rows['rows']} rows, {rows['users']} users (whole users, seed {args.seed}); "
          f"{paper_like['warm_rows']} warm rows; LLM {paper_like['llm']}; preset cpu\n")
    print(format_table(summary))
    print(f"\nwall time {time.perf_counter() - started:.0f} s (reused runs cost nothing)")


if __name__ == "__main__":
    main()
