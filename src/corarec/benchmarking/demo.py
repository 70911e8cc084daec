"""``make demo`` / ``corarec demo``: the whole pipeline on the bundled MovieLens-100K and SmolLM2.

prepare ml-100k → train MF (with the ``cf`` values fixed in the ``cpu`` preset: the demo does not tune) →
train CoRA-MF (the ``demo`` preset: the ``cpu`` preset on 2,000 training rows read twice) → score the same
whole-user validation and test samples with the rate references, MF, the zero-shot LLM and CoRA-MF → print
the table. Every stage writes its files under ``out`` and is reused (or resumed) when the demo runs again;
a stage trained with other settings (an edited preset) is renamed to ``<dir>.stale-N`` and trained again.
"""

from __future__ import annotations

import time
from pathlib import Path

from corarec.benchmarking import benchmark
from corarec.data.prepare import prepare
from corarec.data.schema import read_dataset
from corarec.data.stats import format_stats

DEMO_METHODS = ("item-rate", "logistic-rate", "mf", "icl", "cora-mf")
"""The rows of the demo's table."""


def demo(out: str | Path = "runs/demo", preset: str = "demo", max_test_samples: int | None = None, seed: int = 0) -> str:
    """Run the demo pipeline under ``out`` and return the printable report (statistics + table).

    ``max_test_samples``: test rows scored (whole users); ``None`` takes the preset's (``demo``: 2,000).
    """
    started = time.perf_counter()
    out = Path(out)
    data = out / "ml-100k"
    if (data / "dataset.json").is_file():
        ds = read_dataset(data)
    else:
        ds = prepare("ml-100k", out=data)
    print(format_stats(ds.info["stats"]), flush=True)
    # a run left by an older preset (or another seed) is set aside as <dir>.stale-N and trained again.
    # The demo does not tune the CF model: it trains with the values fixed in the preset's cf section.
    summary = benchmark(data, out / "benchmark", methods=list(DEMO_METHODS), preset=preset, seeds=seed,
                        sample_seed=seed, max_test_samples=max_test_samples, tune_cf=False, retrain_stale=True)
    notes = "".join(f"\n{note}" for note in summary["notes"])
    return (f"\nMovieLens-100K, {summary['test_rows']['rows']} test rows of {summary['test_rows']['users']} users "
            f"(whole users, seed {seed}); LLM {summary['llm']}; preset {preset}\n\n{summary['table']}\n{notes}\n"
            f"wall time {time.perf_counter() - started:.0f} s (the benchmark {summary['wall_seconds']:.0f} s); "
            f"tables and plots in {out / 'benchmark'}")
