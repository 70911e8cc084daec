"""Rows per second of CoRA training and scoring in one and in two processes (DDP), on CPUs or GPUs.

Each configuration runs in its own process(es), on the same inputs, and trains the same run settings:

- CPU: 1 process × 1 thread (batch 2b) · 1 process × 2 threads (batch 2b) · 2 processes × 1 thread
  (batch b each, ``torchrun --standalone --nproc_per_node 2``, gloo): the effective batch is 2b in all three;
- ``--device cuda``: 1 process on 1 GPU (batch 2b), and N processes on N GPUs (batch 2b/N each, NCCL)
  when N > 1 GPUs are visible.

Training rows/s = steps × effective batch / the run's ``train_seconds`` (the steps; the one validation at
the end is not counted). Scoring rows/s = ``--rows`` test rows / seconds of ``score_rows`` over them, the
second of two passes (the first warms up), all processes together. CoRA-MF with the ``cpu`` preset's
settings, the prefix cache off (every step runs the frozen layers: what DDP has to scale).

Inputs: the bundled SmolLM2-135M and MovieLens-100K (prepared into the work folder) with an MF run of one
epoch. ``--quick``: a random 2-layer Llama with a word-level tokenizer and the tests' tiny dataset, 3 steps,
to check that the script runs (under a minute), not to measure. Timings are those of this machine at this
moment: the load average is printed with the table.

    python benchmarks/scaling.py [--quick] [--device cpu|cuda] [--steps 20] [--batch 8] [--rows 256] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the GGUF-free tokenizer and random models of the tests


def prepare_inputs(work: Path, quick: bool, device: str) -> dict:
    """The dataset, MF run and LLM every configuration reads (built once in ``work``)."""
    from corarec.cf import train_cf
    from corarec.data.schema import write_dataset

    if quick:
        from test_distributed import TINY_LLAMA, random_llm_dir, word_tokenizer
        from tiny import tiny_dataset

        data = write_dataset(tiny_dataset(), work / "data")
        llm = str(random_llm_dir(work / "llm", word_tokenizer(tiny_dataset()), **TINY_LLAMA))
        train_cf(data, "mf", work / "mf", dim=16, epochs=2, batch_size=32, progress=False, device=device)
        return dict(data=str(data), cf=str(work / "mf"), llm=llm)
    from corarec.data.prepare import prepare

    data = work / "ml-100k"
    if not (data / "dataset.json").is_file():
        prepare("ml-100k", out=data)
    if not (work / "mf" / "config.json").is_file():
        train_cf(data, "mf", work / "mf", preset="cpu", epochs=1, progress=False, device=device)
    return dict(data=str(data), cf=str(work / "mf"), llm="smollm2-135m")


def configurations(device: str, batch: int) -> list[dict]:
    """The configurations to time: name, processes, threads per process, per-process batch."""
    if device == "cpu":
        return [dict(name="1 process x 1 thread", processes=1, threads=1, batch=2 * batch),
                dict(name="1 process x 2 threads", processes=1, threads=2, batch=2 * batch),
                dict(name="2 processes x 1 thread", processes=2, threads=1, batch=batch)]
    import torch

    gpus = torch.cuda.device_count()
    found = [dict(name="1 process, 1 GPU", processes=1, threads=1, batch=2 * batch)]
    if gpus > 1 and (2 * batch) % gpus == 0:
        found.append(dict(name=f"{gpus} processes, {gpus} GPUs", processes=gpus, threads=1, batch=2 * batch // gpus))
    return found


def worker(spec: dict) -> None:
    """One process of a configuration: train, then score twice; the main process writes the result."""
    import time

    import torch

    from corarec.evaluation.evaluate import score_rows
    from corarec.training.loop import train
    from corarec.training.runs import load_run
    from corarec.utils import distributed

    torch.set_num_threads(spec["threads"])
    run = Path(spec["run"])
    settings = dict(preset="cpu", cache_prefix=False, max_steps=spec["steps"], eval_every=spec["steps"],
                    max_eval_samples=spec["eval_rows"], batch_size=spec["batch"], seed=0)
    if spec["quick"]:
        settings.update(generator_queries=2, generator_depth=1, generator_heads=2, layers="all")
    metrics = train(method="cora", data=spec["data"], out=run, cf=spec["cf"], llm=spec["llm"], device=spec["device"],
                    **settings)
    loaded = load_run(run, device=spec["device"])
    rows = loaded.dataset.test.iloc[:spec["rows"]]
    seconds = []
    for _ in range(2):
        distributed.barrier()
        started = time.perf_counter()
        score_rows(loaded, rows, progress=False)
        if loaded.device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - started)
    if distributed.is_main():
        effective = spec["batch"] * spec["processes"]
        result = {"train_rows_per_s": spec["steps"] * effective / max(metrics["train_seconds"], 1e-9),
                  "score_rows_per_s": len(rows) / max(seconds[-1], 1e-9), "train_seconds": metrics["train_seconds"]}
        Path(spec["result"]).write_text(json.dumps(result))


def launch(spec: dict) -> dict:
    """Run one configuration in fresh process(es) and return its result."""
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"]), "MKL_NUM_THREADS": str(spec["threads"]),
           "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")])}
    script = [str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    if spec["processes"] > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                   str(spec["processes"]), *script]
    else:
        command = [sys.executable, *script]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{spec['name']} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return json.loads(Path(spec["result"]).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny random model and data, 3 steps: checks the script")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--steps", type=int, default=None, help="training steps per configuration (default 20; quick 3)")
    parser.add_argument("--batch", type=int, default=8, help="b: rows per process in the 2-process configuration")
    parser.add_argument("--rows", type=int, default=None, help="test rows scored (default 256; quick 64)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep inputs and runs here (default: a temporary folder)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(json.loads(args.worker))
    steps = args.steps or (3 if args.quick else 20)
    rows = args.rows or (64 if args.quick else 256)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        inputs = prepare_inputs(work, args.quick, args.device)
        results = []
        for index, config in enumerate(configurations(args.device, args.batch)):
            spec = {**inputs, **config, "device": args.device, "steps": steps, "rows": rows, "quick": args.quick,
                    "eval_rows": 16 if args.quick else 64, "run": str(work / "runs" / f"config-{index}"),
                    "result": str(work / f"result-{index}.json")}
            if Path(spec["run"]).exists():
                raise SystemExit(f"{spec['run']} exists: use a new --workdir")
            results.append({**config, **launch(spec)})
    base = results[0]
    print(f"\nCoRA-MF, {args.device}, {steps} steps of effective batch {2 * args.batch}, {rows} rows scored"
          f"{' (quick: a check of the script, not a measurement)' if args.quick else ''}; "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    print(f"| {'configuration':<24} | train rows/s | speed-up | score rows/s | speed-up |")
    print(f"|{'-' * 26}|-------------:|---------:|-------------:|---------:|")
    for r in results:
        print(f"| {r['name']:<24} | {r['train_rows_per_s']:12.1f} | {r['train_rows_per_s'] / base['train_rows_per_s']:7.2f}x "
              f"| {r['score_rows_per_s']:12.1f} | {r['score_rows_per_s'] / base['score_rows_per_s']:7.2f}x |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
