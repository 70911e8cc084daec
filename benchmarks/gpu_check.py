"""The GPU check: the tests marked ``cuda``, then a short CoRA-MF training and scoring with rows/s.

Meant for a bare GPU machine that has PyTorch with CUDA and corarec's Python dependencies but not the
bundled assets: nothing here reads the SmolLM2 GGUF, the gguf package or the bundled MovieLens-100K.
The model of the speed check is SmolLM2-135M's architecture (its config.json, 30 layers, d = 576),
randomly initialised, with a word-level tokenizer made from the data's words; the data are synthetic
(``--users`` users × ``--per-user`` rows, titles "Film number N", a learnable label rule). corarec runs
from this source tree (``PYTHONPATH=src``); it need not be installed.

Printed, and written to ``$OUT/gpu_check.txt`` when ``$OUT`` is set: the device and library versions,
pytest's summary of ``tests/test_distributed.py -m cuda``, then for CoRA-MF in bf16 (fp16 where bf16 is
missing) with the paper's CoRA settings (rank 16, all layers, generator depth 8): training rows/s over
``--steps`` steps of ``--batch`` rows (the run's ``train_seconds``), scoring rows/s over ``--rows`` test
rows (second of two passes) and the peak GPU memory.

    PYTHONPATH=src python benchmarks/gpu_check.py [--steps 30] [--batch 16] [--rows 2048] [--device cuda]

``--device cpu --quick`` runs the same code on a CPU with a 2-layer model (a check of the script).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))


class Report:
    """Lines printed now and kept for ``$OUT/gpu_check.txt``."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.append(text)

    def save(self) -> None:
        if os.environ.get("OUT"):
            Path(os.environ["OUT"], "gpu_check.txt").write_text("\n".join(self.lines) + "\n")


def synthetic_dataset(users: int, items: int, per_user: int, seed: int = 0):
    """A time-ordered CTR dataset: each user rates ``per_user`` distinct items, liking those of their
    own parity 85 % of the time; the last 10 % of each user's rows are test, the 10 % before valid."""
    from corarec.data.schema import Dataset

    rng = np.random.default_rng(seed)
    item_frame = pd.DataFrame({"item_id": np.arange(items), "item_raw": [f"m{i}" for i in range(items)],
                               "title": [f"Film number {i} ({1950 + i % 70})" for i in range(items)]})
    user_frame = pd.DataFrame({"user_id": np.arange(users), "user_raw": [f"u{u}" for u in range(users)]})
    parts: dict[str, list] = {"train": [], "valid": [], "test": []}
    for u in range(users):
        chosen = rng.choice(items, size=per_user, replace=False)
        agree = rng.random(per_user) < 0.85
        labels = np.where(agree, chosen % 2 == u % 2, chosen % 2 != u % 2).astype(int)
        for t, (i, label) in enumerate(zip(chosen, labels)):
            split = "train" if t < 0.8 * per_user else "valid" if t < 0.9 * per_user else "test"
            parts[split].append((u, int(i), int(label), 1_000_000 + 1000 * t + u))
    splits = {name: pd.DataFrame(rows, columns=["user_id", "item_id", "label", "timestamp"])
              .sort_values(["user_id", "timestamp"]).reset_index(drop=True) for name, rows in parts.items()}
    return Dataset(name="synthetic", item_noun="movie", items=item_frame, splits=splits, users=user_frame)


def environment(report: Report, device: str) -> None:
    import accelerate
    import torch
    import transformers

    report(f"python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, "
           f"accelerate {accelerate.__version__}")
    if device == "cuda":
        report(f"CUDA {torch.version.cuda}: {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}, "
               f"bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no (fp16)'}")


def cuda_tests(report: Report) -> int:
    """``pytest tests/test_distributed.py -m cuda``; its summary lines in the report; its exit status."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "pytest", "tests/test_distributed.py", "-m", "cuda", "-q", "-rs",
                           "-p", "no:cacheprovider"], cwd=ROOT, env=env, capture_output=True, text=True)
    report("pytest tests/test_distributed.py -m cuda:")
    for line in (done.stdout + done.stderr).strip().splitlines()[-25:]:
        report(f"  {line}")
    return done.returncode


def speed_check(report: Report, args: argparse.Namespace, work: Path) -> None:
    """CoRA-MF on the random SmolLM2-sized model: training and scoring rows/s."""
    import torch

    from corarec.cf import train_cf
    from corarec.data.schema import write_dataset
    from corarec.evaluation.evaluate import score_rows
    from corarec.training.loop import train
    from corarec.training.runs import load_run
    from test_distributed import SMOLLM2_135M, TINY_LLAMA, random_llm_dir, word_tokenizer

    dataset = synthetic_dataset(args.users, 400, args.per_user)
    data = write_dataset(dataset, work / "data")
    started = time.perf_counter()
    train_cf(data, "mf", work / "mf", dim=64, epochs=3, batch_size=1024, progress=False, device=args.device)
    report(f"MF ({len(dataset.train):,} training rows, 3 epochs) on {args.device}: {time.perf_counter() - started:.1f} s")
    shape = TINY_LLAMA if args.quick else SMOLLM2_135M
    llm = random_llm_dir(work / "llm", word_tokenizer(dataset), **shape)
    cora = dict(rank=16, alpha=32.0, layers="all", generator_depth=8, generator_queries=4)
    if args.quick:
        cora.update(generator_depth=1, generator_queries=2)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    metrics = train(method="cora", data=data, out=work / "run", cf=work / "mf", llm=str(llm), seed=0,
                    device=args.device, batch_size=args.batch, max_steps=args.steps, eval_every=args.steps,
                    max_eval_samples=256, eval_batch_size=64, warmup_steps=10, **cora)
    loaded = load_run(work / "run", device=args.device)
    rows = loaded.dataset.test.iloc[:args.rows]
    seconds = []
    for _ in range(2):
        started = time.perf_counter()
        score_rows(loaded, rows, batch_size=64, progress=False)
        if args.device == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - started)
    precision = loaded.llm.autocast_dtype or torch.float32
    report(f"CoRA-MF, random {shape['num_hidden_layers']}-layer d={shape['hidden_size']} Llama "
           f"({sum(p.numel() for p in loaded.llm.model.parameters()) / 1e6:.0f} M parameters), {precision}, "
           f"{loaded.method.n_trainable() / 1e6:.1f} M trainable:")
    report(f"  training: {args.steps} steps x {args.batch} rows in {metrics['train_seconds']:.1f} s = "
           f"{args.steps * args.batch / max(metrics['train_seconds'], 1e-9):.1f} rows/s "
           f"(final loss {metrics['valid_curve'][-1]['train_loss']:.4f}, valid AUC {metrics['best_valid_auc']:.4f})")
    report(f"  scoring: {len(rows)} rows in {seconds[-1]:.2f} s = {len(rows) / seconds[-1]:.1f} rows/s "
           f"(first pass {seconds[0]:.2f} s)")
    if args.device == "cuda":
        report(f"  peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    report(json.dumps({"train_rows_per_s": args.steps * args.batch / max(metrics["train_seconds"], 1e-9),
                       "score_rows_per_s": len(rows) / seconds[-1]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--quick", action="store_true", help="a 2-layer model and few rows (a check of the script)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--users", type=int, default=600)
    parser.add_argument("--per-user", type=int, default=40)
    parser.add_argument("--skip-tests", action="store_true", help="only the speed check")
    args = parser.parse_args()
    report = Report()
    status = 0
    try:
        environment(report, args.device)
        if not args.skip_tests:
            status = cuda_tests(report)
        with tempfile.TemporaryDirectory() as tmp:
            speed_check(report, args, Path(tmp))
    finally:
        report.save()
    sys.exit(status)


if __name__ == "__main__":
    main()
