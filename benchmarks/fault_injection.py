"""Kill -9 a tiny `corarec train` at random moments, recover as a user would, and check the result.

Builds a tiny world under WORK (a planted dataset, an MF run, a random 2-layer Llama saved with
``save_pretrained`` beside the bundled SmolLM2 tokenizer, a preset), trains it once without
interruption (the reference), then trains the same run again and again into fresh run directories,
each command killed with SIGKILL at a uniformly random moment of a whole run's wall time (the
reference's, then that of the latest run that went through without a kill: the machine's pace). After
each kill it does what a user would: the same command with ``--resume`` when ``RUN/config.json``
exists, else the same command again. A kill is *recovered* when the following commands go on and
finish the run; *unrecoverable* when a command then fails by itself (its last line is reported).
Every finished run's weights (best and last) and validation curve are compared with the reference's.

    python benchmarks/fault_injection.py [--kills 20] [--seed 0] [--work DIR] [--keep]

Exit status 1 when a kill was unrecoverable or a finished run differs from the reference.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

PRESET = """\
train: {max_steps: 12, eval_every: 2, batch_size: 8, eval_batch_size: 32, warmup_steps: 1, lr: 0.01, patience: 100}
cora: {rank: 4, alpha: 8.0, generator: {queries: 2, depth: 1, heads: 2}}
"""
ENV = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
COMPARED = ("model.safetensors", "checkpoint/trainable.safetensors")


@dataclass
class Report:
    """What the kills found."""

    kills: int = 0
    recovered: int = 0
    unrecoverable: int = 0
    runs: int = 0
    equal: int = 0
    errors: list[str] = field(default_factory=list)
    found: dict[str, int] = field(default_factory=dict)
    """What the kills left, counted over kills: no run yet, no checkpoint yet, .checkpoint.old, temporaries."""

    def table(self) -> str:
        rows = [("kills", self.kills), ("recovered", self.recovered), ("unrecoverable", self.unrecoverable),
                ("runs finished", self.runs), ("final weights equal to the uninterrupted run's", f"{self.equal} / {self.runs}")]
        rows += [(f"  kill left: {what}", count) for what, count in sorted(self.found.items())]
        width = max(len(name) for name, _ in rows)
        lines = [f"| {'':{width}} | value |", f"|{'-' * (width + 2)}|-------|"]
        lines += [f"| {name:{width}} | {value} |" for name, value in rows]
        return "\n".join(lines + [f"error: {e}" for e in self.errors])


def build_world(work: Path) -> dict[str, str]:
    """Dataset, MF run, tiny LLM directory and preset under ``work``; returns the train arguments."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    import torch
    from corarec.cf import train_cf
    from corarec.data.history import add_history
    from corarec.data.schema import Dataset, write_dataset
    from corarec.llm.packaged import bundled_model_dir

    rng = np.random.default_rng(0)
    rows: dict[str, list] = {"train": [], "valid": [], "test": []}
    for user in range(12):
        for split, count, offset in (("train", 10, 0), ("valid", 3, 10**8), ("test", 3, 2 * 10**8)):
            for t in range(count):
                item = int(rng.integers(24))
                label = int((item % 2 == user % 2) != (rng.random() < 0.1))  # users like items of their parity
                rows[split].append((user, item, label, 1_000_000 + offset + 100 * t + user))
    splits = {name: pd.DataFrame(r, columns=["user_id", "item_id", "label", "timestamp"]) for name, r in rows.items()}
    items = pd.DataFrame({"item_id": np.arange(24), "title": [f"Film number {i}" for i in range(24)]})
    data = write_dataset(Dataset(name="faults", item_noun="movie", items=items, splits=add_history(splits)),
                         work / "data")
    train_cf(data, "mf", work / "cf", dim=8, epochs=2, batch_size=64, seed=0, progress=False)

    llm = work / "llm"
    tokenizer = AutoTokenizer.from_pretrained(bundled_model_dir(), trust_remote_code=False)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=True)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(llm)
    tokenizer.save_pretrained(llm)
    (work / "preset.yaml").write_text(PRESET)
    return {"--data": str(data), "--cf": str(work / "cf"), "--llm": str(llm), "--preset": str(work / "preset.yaml")}


def command(run: Path, world: dict[str, str]) -> list[str]:
    """What a user runs next: resume when the run directory holds a run, else the first command."""
    train = [sys.executable, "-c", "from corarec.cli import main; main()", "train", "--out", str(run)]
    if (run / "config.json").is_file():
        return train + ["--resume"]  # the run's own settings: settings given beside --resume are refused
    return train + [*[arg for pair in world.items() for arg in pair], "--device", "cpu", "--no-bf16", "--seed", "0"]


def launch(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as sink:
        return subprocess.Popen(args, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, **ENV})


def last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(no output)"


def what_is_left(run: Path) -> list[str]:
    """The state a kill left in ``run``, in words."""
    if not (run / "config.json").is_file():
        return ["no config.json yet"]
    found = []
    if (run / ".checkpoint.old").is_dir():
        found.append(".checkpoint.old" + ("" if (run / "checkpoint").is_dir() else " and no checkpoint/"))
    elif not (run / "checkpoint").is_dir():
        found.append("no checkpoint yet")
    if any(p.name.endswith(".tmp") for p in run.iterdir()):
        found.append("a temporary (.tmp)")
    return found or ["a checkpoint, nothing else"]


def same_result(run: Path, reference: Path) -> bool:
    """Best and last weights bit-identical, and the same validation curve, as the reference."""
    from corarec.utils.io import load_tensors

    for name in COMPARED:
        a, b = load_tensors(reference / name), load_tensors(run / name)
        if a.keys() != b.keys() or not all(bool((a[k] == b[k]).all()) for k in a):
            return False
    curve = [(p["step"], p["valid_auc"]) for p in json.loads((run / "metrics.json").read_text())["valid_curve"]]
    return curve == [(p["step"], p["valid_auc"]) for p in json.loads((reference / "metrics.json").read_text())["valid_curve"]]


def fault_injection(work: Path, kills: int, seed: int = 0, progress=print) -> Report:
    """Kill runs in ``work`` until ``kills`` kills, resuming each; see the module docstring."""
    world = build_world(work)
    reference = work / "reference"
    started = time.perf_counter()
    done = subprocess.run(command(reference, world), capture_output=True, text=True, env={**os.environ, **ENV})
    if done.returncode != 0:
        raise SystemExit(f"the uninterrupted reference run failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
    window = time.perf_counter() - started
    progress(f"reference run: {window:.1f} s; each command is killed at a uniform random time in [0, the last "
             "uninterrupted first command's wall time]")

    rng, report = random.Random(seed), Report()
    for number in range(10**6):
        if report.kills >= kills:
            break
        run, log = work / f"run-{number:03d}", work / f"run-{number:03d}.log"
        pending = 0  # kills of this run not yet followed by a finished run
        while True:
            fresh, started = not (run / "config.json").is_file(), time.perf_counter()
            process = launch(command(run, world), log)
            try:
                status = process.wait(timeout=rng.uniform(0, window) if report.kills < kills else None)
            except subprocess.TimeoutExpired:
                status = None
            finally:
                if process.poll() is None:  # timed out, or this script was interrupted: kill -9 what we started
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
            if status is None:
                report.kills, pending = report.kills + 1, pending + 1
                for what in what_is_left(run):
                    report.found[what] = report.found.get(what, 0) + 1
                continue
            if status != 0 and pending == 0:
                raise SystemExit(f"{run.name} failed without being killed: {last_line(log)}")
            if status != 0:
                report.unrecoverable += pending
                report.errors.append(f"{run.name}: {last_line(log)}")
                break
            if fresh and pending == 0:  # a whole run without a kill: the machine's current pace
                window = time.perf_counter() - started
            report.recovered += pending
            report.runs += 1
            report.equal += same_result(run, reference)
            break
        progress(f"{run.name}: {report.kills} kills so far, {report.unrecoverable} unrecoverable")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20, help="stop after this many kills (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    parser.add_argument("--work", type=Path, default=None, help="working directory (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="corarec-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        report = fault_injection(work, args.kills, args.seed)
    finally:
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(report.table())
    sys.exit(1 if report.unrecoverable or report.equal != report.runs else 0)


if __name__ == "__main__":
    main()
