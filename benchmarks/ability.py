"""General knowledge after training: the ability probes on the LLM runs of a ``corarec benchmark`` folder.

Reads the runs ``BENCH/runs/<method>/seed-<seed>`` that ``corarec benchmark --out BENCH`` trained (default:
TALLRec, CoLLM-MF and CoRA-MF; the base LLM comes with them), scores the three probes of ``corarec
ability`` (item years, prose perplexity, yes/no questions; :mod:`corarec.evaluation.ability`) and writes
``BENCH/ability.json`` and ``BENCH/ability.md`` (the printed table). Not part of the test suite.

    python benchmarks/ability.py --bench runs/bench [--methods tallrec,collm-mf,cora-mf] [--seed 0]
        [--pairs 200] [--titles 200] [--text-sequences 200] [--threads N]

Cost on a quiet 2-core CPU with SmolLM2 and the defaults: about 23 s per LLM pass over the probes (base,
TALLRec, CoLLM) and 11 s per CoRA pair — the 200 pairs dominate, ~36 min (docs/ability.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from corarec.errors import CorarecError
from corarec.evaluation.ability import ability, format_ability
from corarec.utils.io import atomic_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, required=True, help="the --out folder of `corarec benchmark`")
    parser.add_argument("--methods", default="tallrec,collm-mf,cora-mf", help="benchmark method names, comma-separated")
    parser.add_argument("--seed", type=int, default=0, help="training seed of the runs (runs/<method>/seed-N)")
    parser.add_argument("--pairs", type=int, default=200, help="CoRA: test rows whose pair increments are probed")
    parser.add_argument("--titles", type=int, default=200)
    parser.add_argument("--text-sequences", type=int, default=200)
    parser.add_argument("--sample-seed", type=int, default=0, help="seed of the drawn pairs, titles and passages")
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    runs = [args.bench / "runs" / method / f"seed-{args.seed}" for method in args.methods.split(",") if method]
    missing = [str(r) for r in runs if not (r / "config.json").is_file()]
    if missing:
        raise SystemExit(f"error: no trained run at {', '.join(missing)} (train them with `corarec benchmark`)")
    try:
        result = ability(runs, out=args.bench / "ability.json", pairs=args.pairs, titles=args.titles,
                         text_sequences=args.text_sequences, seed=args.sample_seed, device=args.device)
    except CorarecError as e:
        raise SystemExit(f"error: {e}") from None
    table = format_ability(result)
    with atomic_path(args.bench / "ability.md") as tmp:
        tmp.write_text(table + "\n")
    print(table)
    print(f"wrote {args.bench / 'ability.json'} and {args.bench / 'ability.md'}")


if __name__ == "__main__":
    main()
