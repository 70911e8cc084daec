"""What each pipeline stage costs as the data grows: synthetic logs of 1×, 10× and 100× MovieLens-100K.

For each size k the script generates an interaction log shaped like MovieLens-100K (fixed seed) with
943·k users, 1,682·k items and 100,000·k rows, then runs, each stage in its own process:

- ``corarec prepare custom`` on it (CSV, ``--label-threshold 4``, time split 0.8/0.1/0.1);
- ``corarec train-cf --model mf --epochs 1`` (one epoch of MF, its valid and test scoring included);
- CoRA scoring of a fixed number of test rows (``--rows``, default 256) through the library
  (:func:`corarec.training.runs.build_run`, :func:`corarec.evaluation.evaluate.score_rows`): an
  untrained CoRA with the ``cpu`` preset's settings (top 8 layers, prefix cache, generator depth 2)
  on the bundled SmolLM2 and the MF run — scoring costs the same whatever the weights' values. It
  scores the rows twice: cold (empty prefix cache in the work folder: the frozen layers 0–21 run and
  are stored) and warm (read back). The user's own prefix cache is never touched.

Shape of the log: each MovieLens-100K user's row count is repeated k times (so the per-user
distribution, and the CoLLM histories that grow with it, are MovieLens-100K's); items are drawn with
MovieLens-100K's item popularity repeated k times (a user may meet an item twice); ratings come from
user and item effects plus noise, ~55 % of them ≥ 4; timestamps are uniform over MovieLens-100K's
seven months; titles are MovieLens-100K's with a copy number (``Toy Story (1995) #3``).

Reported per stage: wall time in seconds (of the whole process for the CLI stages: interpreter and
imports included, as a user running the command sees it; inside the process for the scoring steps),
peak memory = the peak resident set size of the stage's process (``ru_maxrss`` from ``os.wait4``,
imports included; the ``imports`` row gives that floor), and the disk its output takes. The load
average is printed with the table: on a busy machine the times are not the machine's.

    python benchmarks/scaling_data.py [--sizes 1,10,100] [--rows 256] [--quick] [--workdir DIR] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

SEED = 0
SPAN = (874_724_710, 893_286_638)  # MovieLens-100K's first and last timestamps (1997-09-20 … 1998-04-22)


# ---- the synthetic log -------------------------------------------------------------------------------

def generate(k: int, folder: Path, seed: int = SEED) -> dict:
    """Write ``interactions.csv`` and ``items.csv`` of k× MovieLens-100K into ``folder``; returns counts."""
    from corarec.data.movielens import load_ml100k

    ml = load_ml100k()  # the bundled copy: per-user counts, item popularity and titles to copy
    user_counts = ml.rows["user_raw"].value_counts().to_numpy()  # [943]
    item_counts = ml.rows["item_raw"].value_counts()  # [1682]
    titles = [ml.titles[i] for i in item_counts.index]
    rng = np.random.default_rng(seed + k)
    n_users, n_items = len(user_counts) * k, len(item_counts) * k
    per_user = rng.permutation(np.tile(user_counts, k))  # [U]
    users = np.repeat(np.arange(n_users), per_user)  # [N]
    popularity = np.tile(item_counts.to_numpy(dtype=np.float64), k)  # [I]
    items = rng.choice(n_items, size=len(users), p=popularity / popularity.sum())  # [N]
    user_effect, item_effect = rng.normal(0, 0.45, n_users), rng.normal(0, 0.5, n_items)
    ratings = np.clip(np.rint(3.6 + user_effect[users] + item_effect[items] + rng.normal(0, 0.9, len(users))), 1, 5)
    timestamps = rng.integers(SPAN[0], SPAN[1], size=len(users))
    folder.mkdir(parents=True, exist_ok=True)
    log = pd.DataFrame({"user_id": np.char.add("u", users.astype(str)), "item_id": np.char.add("m", items.astype(str)),
                        "rating": ratings.astype(np.int8), "timestamp": timestamps})
    log.to_csv(folder / "interactions.csv", index=False)
    copies = [titles[j % len(titles)] + (f" #{j // len(titles) + 1}" if j >= len(titles) else "")
              for j in range(n_items)]
    pd.DataFrame({"item_id": [f"m{j}" for j in range(n_items)], "title": copies}).to_csv(folder / "items.csv",
                                                                                          index=False)
    return {"users": n_users, "items": n_items, "rows": len(users)}


# ---- running a stage in its own process ----------------------------------------------------------------

def run_stage(command: list[str], log: Path) -> dict:
    """Run ``command`` (output to ``log``); its wall time, peak RSS in MB and exit status."""
    with open(log, "w") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return {"wall": wall, "rss_mb": usage.ru_maxrss * scale / 2**20, "rc": proc.returncode}


def disk_mb(path: Path) -> float:
    """Bytes of the files under ``path`` (or of the file), in MB."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 1e6


def failure(log: Path, rc: int) -> str:
    why = "killed (out of memory?)" if rc == -9 else f"exit {rc}"
    tail = [line for line in log.read_text(errors="replace").splitlines() if line.strip()][-1:]
    return f"failed, {why}: {tail[0][:120] if tail else ''} (log {log})"


def progress(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.1f}] {line}", file=sys.stderr, flush=True)


# ---- the CoRA scoring stage (run by this script in a child process) ------------------------------------

def score_child(data: str, cf: str, work: str, n_rows: int, device: str, result: str) -> None:
    """Build an untrained CoRA (``cpu`` preset) on ``data`` and ``cf``; score ``n_rows`` test rows cold, then warm."""
    import torch

    from corarec.evaluation.evaluate import score_rows
    from corarec.training.config import resolve_config
    from corarec.training.runs import build_run

    t0 = time.perf_counter()
    config = resolve_config("cora", data=data, out=os.path.join(work, "cora"), cf=cf, preset="cpu", device=device,
                            prefix_cache_dir=os.path.join(work, "prefix"))
    loaded = build_run(config)
    test = loaded.dataset.splits["test"]
    rows = test.iloc[np.sort(np.random.default_rng(SEED).choice(len(test), size=min(n_rows, len(test)), replace=False))]
    times = {"load": time.perf_counter() - t0}
    for name in ("cold", "warm"):
        t0 = time.perf_counter()
        score_rows(loaded, rows, progress=False)
        loaded.method.prefix_cache.flush()  # on disk before the warm pass: it reads the shard back
        times[name] = time.perf_counter() - t0
    tokens = float(loaded.batcher.token_lengths(rows).mean())
    times.update(rows=len(rows), threads=torch.get_num_threads(), tokens=tokens)
    Path(result).write_text(json.dumps(times))


# ---- one size, and the table -----------------------------------------------------------------------------

def run_size(k: int, root: Path, n_rows: int, device: str) -> list[dict]:
    """Every stage for k× MovieLens-100K under ``root/k``; one table row per stage."""
    folder, cli = root / f"x{k}", [sys.executable, "-m", "corarec.cli"]
    raw = folder / "raw"
    out: list[dict] = []
    progress(f"{k}×: generating the log")
    t0 = time.perf_counter()
    counts = generate(k, raw)
    out.append({"stage": "generate the log (in this process)", "wall": time.perf_counter() - t0, "rss_mb": None,
                "disk": disk_mb(raw)})
    stages = [
        ("prepare custom", cli + ["prepare", "custom", "--interactions", str(raw / "interactions.csv"), "--items",
                                  str(raw / "items.csv"), "--label-threshold", "4", "--item-noun", "movie",
                                  "--out", str(folder / "data")], folder / "data"),
        ("train-cf mf, 1 epoch", cli + ["train-cf", "--data", str(folder / "data"), "--model", "mf", "--epochs", "1",
                                        "--device", device, "--out", str(folder / "mf")], folder / "mf"),
        (f"CoRA scoring, {n_rows} test rows", [sys.executable, __file__, "--child-score", str(folder / "data"),
                                               str(folder / "mf"), str(folder), str(n_rows), device,
                                               str(folder / "score.json")], folder / "prefix"),
    ]
    for name, command, output in stages:
        progress(f"{k}×: {name}")
        log = folder / f"{name.split(',')[0].replace(' ', '-')}.log"
        stage = run_stage(command, log)
        if stage["rc"] != 0:
            out.append({"stage": name, "error": failure(log, stage["rc"]), **stage})
            break
        stage["disk"] = disk_mb(output) if output.exists() else None
        if name.startswith("CoRA"):
            times = json.loads((folder / "score.json").read_text())
            stage["stage"] = f"{name} (process; {times['tokens']:.0f} tokens a row)"
            out.append(stage)
            for step, what in (("load", "  load LLM, data, MF; build CoRA"), ("cold", "  score, cold prefix cache"),
                               ("warm", "  score, warm prefix cache")):
                rate = f" ({times['rows'] / times[step]:.1f} rows/s)" if step != "load" else ""
                out.append({"stage": what + rate, "wall": times[step], "rss_mb": None, "disk": None})
        else:
            out.append({"stage": name, **stage})
    return [{"size": f"{k}×", **counts, **row} for row in out]


def cell(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def table(rows: list[dict]) -> str:
    """The markdown table: one line per stage (a failed stage says why and ends its size)."""
    lines = ["| size | users | items | rows | stage | wall s | peak RSS MB | disk MB |",
             "|---|---:|---:|---:|---|---:|---:|---:|"]
    for r in rows:
        stage = f"{r['stage']}: {r['error']}" if "error" in r else r["stage"]
        lines.append(f"| {r['size']} | {r['users']:,} | {r['items']:,} | {r['rows']:,} | {stage} | "
                     f"{r['wall']:.1f} | {cell(r['rss_mb'], '.0f')} | {cell(r.get('disk'), ',.1f')} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default=None, help="multiples of MovieLens-100K, comma-separated (default 1,10,100)")
    ap.add_argument("--rows", type=int, default=None, help="test rows CoRA scores (default 256)")
    ap.add_argument("--quick", action="store_true", help="defaults: size 1 only, 32 rows scored (a few minutes)")
    ap.add_argument("--workdir", default=None,
                    help="keep the logs, datasets and runs here (default: a temporary folder)")
    ap.add_argument("--device", default="cpu", help="device of train-cf and CoRA scoring (auto, cpu, cuda)")
    ap.add_argument("--child-score", nargs=6, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_score:
        data, cf, work, n_rows, device, result = args.child_score
        score_child(data, cf, work, int(n_rows), device, result)
        return
    sizes = [int(s) for s in (args.sizes or ("1" if args.quick else "1,10,100")).split(",") if s.strip()]
    n_rows = args.rows or (32 if args.quick else 256)
    with tempfile.TemporaryDirectory(prefix="corarec-scaling-") as tmp:
        root = Path(args.workdir) if args.workdir else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        floor = run_stage([sys.executable, "-c", "import torch, transformers, corarec.cli"], root / "imports.log")
        rows = []
        for k in sizes:
            rows += run_size(k, root, n_rows, args.device)
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"Synthetic logs shaped like MovieLens-100K (seed {SEED}); {os.cpu_count()} CPUs; device {args.device}; "
              f"load average {load}. Peak RSS: ru_maxrss of the stage's process; importing torch, transformers and "
              f"corarec alone peaks at {floor['rss_mb']:.0f} MB ({floor['wall']:.1f} s).\n")
        print(table(rows))


if __name__ == "__main__":
    main()
