"""Throughput of every stage against this machine's matmul peak, plain and fast CoRA paths side by side.

One run on the bundled SmolLM2-135M (``--llm``: another alias or model directory) in the precision the
library runs it in (bf16 autocast where the CPU has native bf16, AVX-512-BF16 or AMX; fp32 elsewhere, where
bf16 is emulated), real MovieLens-100K prompts (``--data``: a prepared dataset; default ``runs/ml-100k``
when present, else the bundled ML-100K prepared into a temporary directory). Rows (each over the same
``--rows`` rows in batches of ``--batch``):

- prefix-cache build: the frozen layers below the fast mode's lowest layer, into an empty cache;
- frozen forward: the LLM alone, all layers (what zero-shot scoring costs without the prefix cache);
- CoRA scoring, all layers, and fast mode (``cache_prefix`` + ``--layers``, warm cache);
- CoRA training step (forward, backward, AdamW), all layers, fast mode warm, fast mode cold cache.

The frozen forward and every CoRA row run on two paths: ``plain`` computes the whole last decoder layer for
every token (``corarec.llm.last_position.ENABLED = False``: the library before that change), ``last position``
runs the last layer's ``o`` and feed-forward maps for the answer slot only (the default; llm/last_position.py).
``--shared`` adds ``shared``: ``last position`` plus ``x A_b`` computed once per layer for q/k/v
(``CollaborativeInjector.share_inputs``, off by default; methods/cora/injection.py). The "vs plain" column is a
path's ratio to ``plain`` from this one run. A stage's paths are timed back to back, in alternating order, round
after round, so load drift and the preceding stage's effects hit all of them alike.
``--eager`` adds an ``eager`` path for the frozen forward and the fast CoRA rows: the same computation
with transformers' eager attention (matmuls and a softmax) instead of PyTorch's SDPA kernel, which the
LLM loads with; "vs plain" is then SDPA's time / eager's.

Model FLOPs (what "GFLOP/s" and "% of peak" count): 2 FLOPs per non-embedding weight of a decoder
layer per real (unpadded) token, over the layers the row runs; attention scores (T² terms), the
answer-slot head, CoRA's generator and low-rank paths are not counted (they are the overhead the
rate reveals), and they count the whole last layer on every path (a path that skips work shows a higher rate).
A training step counts 3× the forward of the layers that need a backward (forward,
gradient w.r.t. the activations, gradient w.r.t. the weights: the usual "6 N" convention); the LLM's
weights are frozen, so PyTorch skips their weight gradients and the executed work is closer to 2×:
read a training row's share of peak as an upper bound. The peak is the best ``torch.matmul`` rate in
that precision on all threads over 2048³, 4096³ (``--peak-sizes``) and the model's two FFN projections at this
batch's size.

    python benchmarks/throughput.py [--quick] [--batch 8] [--rows 32] [--repeats 3] [--layers top:8]
                                    [--eval-batch-sizes 16,32,64] [--threads N] [--data DIR] [--llm NAME]
                                    [--peak-sizes 2048,4096] [--shared] [--eager]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
import torch.nn.functional as F

from corarec.data.prepare import prepare
from corarec.data.schema import read_dataset
from corarec.llm import last_position
from corarec.llm.model import decoder_layers, load_llm, score
from corarec.llm.prefix_cache import PrefixCache
from corarec.methods.batches import Batch, PromptBatcher
from corarec.methods.cora import CoRA, CoRAConfig, GeneratorConfig

from inference import RandomCF  # the same random frozen CF model as benchmarks/inference.py

DEFAULT_DATA = Path(__file__).resolve().parent.parent / "runs" / "ml-100k"
LLM_NAMES = {"smollm2-135m": "SmolLM2-135M", "gemma3-270m": "Gemma 3 270M"}
DATA_NAMES = {"ml-100k": "ML-100K"}
PATHS = {"plain": (False, False), "last position": (True, False), "shared": (True, True)}
"""path → (last layer's position-wise maps for the answer slot only, shared input product)."""


def use_path(path: str, cora: CoRA | None = None) -> None:
    """Switch the library to ``path``'s computation (module docstring)."""
    last_position.ENABLED, share = PATHS[path]
    if cora is not None:
        cora.injector.share_inputs = share


def load_rows(data: str | None, split: str, n: int, tmp: str):
    """The first ``n`` rows of ``split`` of a prepared dataset (read only), and the dataset."""
    path = Path(data) if data else DEFAULT_DATA
    if data is None and not (path / "dataset.json").is_file():
        path = Path(tmp) / "ml-100k"
        prepare("ml-100k", path)
    dataset = read_dataset(path)
    return dataset, dataset.splits[split].iloc[:n]


def matmul_peak(shapes: list[tuple[int, int, int]], repeats: int, dtype: torch.dtype) -> dict[tuple[int, int, int], float]:
    """Best ``torch.matmul`` GFLOP/s in ``dtype`` of ``[m, k] @ [k, n]`` for each ``(m, k, n)``, on all threads."""
    rates = {}
    for m, k, n in shapes:
        a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
        torch.matmul(a, b)  # warm-up (kernel selection, page faults)
        best = min(timed(lambda: torch.matmul(a, b)) for _ in range(repeats))
        rates[(m, k, n)] = 2 * m * k * n / best / 1e9
        progress(f"{precision(dtype)} matmul {m}×{k}×{n}: {rates[(m, k, n)]:.0f} GFLOP/s")
    return rates


def precision(dtype: torch.dtype) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}.get(dtype, str(dtype))


def progress(line: str) -> None:
    """One line of progress on stderr (the table goes to stdout)."""
    load = os.getloadavg()[0]
    print(f"[{time.strftime('%H:%M:%S')} load {load:.1f}] {line}", file=sys.stderr, flush=True)


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def weights_per_layer(llm) -> int:
    """Non-embedding weights of one decoder layer (projections and norms; all layers are alike)."""
    return sum(p.numel() for p in decoder_layers(llm.model)[0].parameters())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="defaults 16 rows, 2 repeats, sweep on 64 rows (5 min 40 s alone on a 2-core fp32 CPU)")
    ap.add_argument("--batch", type=int, default=8, help="rows per batch (training and scoring)")
    ap.add_argument("--rows", type=int, default=None, help="rows per measurement, whole batches (default 32)")
    ap.add_argument("--repeats", type=int, default=None, help="timed rounds after one warm-up round (default 3)")
    ap.add_argument("--layers", default="top:8", help="fast mode's injected layers (cache_prefix below them)")
    ap.add_argument("--depth", type=int, default=2, help="generator blocks (cpu preset: 2; paper: 8)")
    ap.add_argument("--cf-dim", type=int, default=64)
    ap.add_argument("--eval-batch-sizes", default="16,32,64", help="scoring batch sizes to compare ('' to skip)")
    ap.add_argument("--sweep-rows", type=int, default=None, help="rows scored at each of --eval-batch-sizes (default 128)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--data", default=None, help="prepared dataset (default runs/ml-100k, else prepared to a temp dir)")
    ap.add_argument("--split", default="valid")
    ap.add_argument("--eager", action="store_true", help="also time eager attention beside SDPA (the 'eager' path)")
    ap.add_argument("--shared", action="store_true", help="also time the shared input product (the 'shared' path)")
    ap.add_argument("--peak-sizes", default="2048,4096", help="square matmul sizes n (n×n×n) tried for the peak, "
                    "beside the model's FFN shapes")
    ap.add_argument("--llm", default="smollm2-135m",
                    help="LLM alias or local model directory (as `corarec train --llm`)")
    args = ap.parse_args(argv)
    for option, full, quick in (("rows", 32, 16), ("repeats", 3, 2), ("sweep_rows", 128, 64)):
        if getattr(args, option) is None:  # an explicit value wins over --quick's
            setattr(args, option, quick if args.quick else full)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sweep = [int(s) for s in args.eval_batch_sizes.split(",") if s.strip()]

    with tempfile.TemporaryDirectory() as tmp:
        llm = load_llm(args.llm)
        dtype = llm.autocast_dtype or torch.float32  # what every command runs here (None: no autocast, fp32)
        dataset, rows = load_rows(args.data, args.split, max(args.rows, args.sweep_rows if sweep else 0), tmp)
        batcher = PromptBatcher(dataset, llm.tokenizer)
        cf = RandomCF(max(dataset.n_users, dataset.n_items), args.cf_dim)
        main_rows = rows.iloc[:args.rows]
        batches = [batcher(main_rows.iloc[s:s + args.batch]) for s in range(0, len(main_rows), args.batch)]
        tokens = sum(int(b.attention_mask.sum()) for b in batches)
        padded = sum(b.attention_mask.numel() for b in batches)

        def build(layers: str, cache_prefix: bool) -> tuple[CoRA, torch.optim.Optimizer]:
            cfg = CoRAConfig(layers=layers, cache_prefix=cache_prefix, prefix_cache_dir=f"{tmp}/warm",
                             generator=GeneratorConfig(depth=args.depth))
            cora = CoRA(cfg, llm, cf)
            with torch.no_grad():
                for p in cora.injector.parameters():
                    p.normal_(0, 0.02)  # as after some training: the low-rank path does real work
            return cora, torch.optim.AdamW(cora.trainable_parameters(), lr=1e-4)

        every, opt_every = build("all", cache_prefix=False)
        fast, opt_fast = build(args.layers, cache_prefix=True)
        first = fast.injector.first_layer
        n_layers, n_fast = llm.n_layers, n_layers_of(fast)

        def fresh_cache() -> PrefixCache:
            cache = PrefixCache(llm, first, fast.prefix_cache.key["template"], root=tempfile.mkdtemp(dir=tmp))
            cache._verified = True  # checked once per cache in real runs; the warm cache is checked below
            return cache

        def frozen(path: str, batch: Batch) -> None:
            use_path(path)
            score(llm, batch.input_ids, batch.attention_mask)

        def scoring(cora: CoRA, path: str, batch: Batch) -> None:
            use_path(path, cora)
            cora.eval()
            with torch.no_grad(), llm.autocast():
                cora.score(batch)

        def step(cora: CoRA, opt, path: str, batch: Batch) -> None:
            use_path(path, cora)
            cora.train()
            with llm.autocast():
                logits = cora.score(batch)
            loss = F.binary_cross_entropy_with_logits(logits.float(), batch.labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        def cold_step(path: str, batch: Batch) -> None:
            warm, fast.prefix_cache = fast.prefix_cache, cold_cache[0]
            try:
                step(fast, opt_fast, path, batch)
            finally:
                fast.prefix_cache = warm

        cold_cache = [fresh_cache()]
        # name → (run one batch, model-FLOP layer-passes per token, path)
        variants: dict[str, tuple[Callable[[Batch], None], int, str]] = {
            f"prefix-cache build (layers 0–{first - 1})": (lambda b: cold_cache[0].hidden_states(b.input_ids, b.attention_mask), first, ""),
        }
        for path in ["plain", "last position"] + (["shared"] if args.shared else []):
            variants |= {
                f"frozen forward ({n_layers} layers)|{path}": (lambda b, p=path: frozen(p, b), n_layers, path),
                f"CoRA scoring, all layers|{path}": (lambda b, p=path: scoring(every, p, b), n_layers, path),
                f"CoRA scoring, fast ({args.layers}, warm cache)|{path}": (lambda b, p=path: scoring(fast, p, b), n_fast, path),
                f"CoRA train step, all layers|{path}": (lambda b, p=path: step(every, opt_every, p, b), 3 * n_layers, path),
                f"CoRA train step, fast, warm cache|{path}": (lambda b, p=path: step(fast, opt_fast, p, b), 3 * n_fast, path),
                f"CoRA train step, fast, cold cache|{path}": (lambda b, p=path: cold_step(p, b), first + 3 * n_fast, path),
            }

        if args.eager:
            attention = llm.model.config._attn_implementation  # what load_llm chose (sdpa)

            def eager(fn: Callable[[Batch], None]) -> Callable[[Batch], None]:
                def run(b: Batch) -> None:
                    llm.model.set_attn_implementation("eager")
                    try:
                        fn(b)
                    finally:
                        llm.model.set_attn_implementation(attention)
                return run

            for name in (f"frozen forward ({n_layers} layers)|plain", f"CoRA scoring, fast ({args.layers}, warm cache)|plain",
                         "CoRA train step, fast, warm cache|plain", "CoRA train step, fast, cold cache|plain"):
                fn, passes, _ = variants[name]
                variants[name.split("|")[0] + "|eager"] = (eager(fn), passes, "eager")

        for b in batches:  # fill the warm cache (verified on its first batch) before any timing
            fast.prefix_cache.hidden_states(b.input_ids, b.attention_mask)
        try:
            times = time_variants(variants, batches, args.repeats, cold_cache, fresh_cache)
            sweep_rows = rows.iloc[:args.sweep_rows]
            sweep_times = eval_batch_sweep(sweep, sweep_rows, batcher, fast, scoring, args.repeats) if sweep else {}
        finally:
            use_path("last position", fast)  # the library's default, for whatever runs next in this process
        B, T = batches[0].input_ids.shape
        squares = [(n, n, n) for n in (int(size) for size in args.peak_sizes.split(",") if size.strip())]
        peak_shapes = [*squares, (B * T, llm.hidden_size, ffn(llm)), (B * T, ffn(llm), llm.hidden_size)]
        peaks = matmul_peak(peak_shapes, repeats=max(2, args.repeats), dtype=dtype)  # the peak: at least 2 rounds

    peak = max(peaks.values())
    per_layer = weights_per_layer(llm)
    load = os.getloadavg()
    mode = f"{precision(dtype)} autocast" if llm.autocast_dtype else "fp32 (no native bf16 on this CPU)"
    llm_name, data_name = LLM_NAMES.get(args.llm, args.llm), DATA_NAMES.get(dataset.name, dataset.name)
    print(f"\n{llm_name} ({per_layer / 1e6:.2f} M non-embedding weights per layer × {n_layers}), {mode}, "
          f"batch {args.batch}, {len(main_rows)} rows of {data_name} {args.split}: {tokens / len(main_rows):.0f} real "
          f"tokens a row, {padded / len(main_rows):.0f} with padding; torch threads {torch.get_num_threads()}; generator depth "
          f"{args.depth}; median of {args.repeats}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n")
    print(f"{precision(dtype)} matmul peak: " + ", ".join(f"{m}×{k}×{n} {g:.0f}" for (m, k, n), g in peaks.items())
          + f" GFLOP/s → peak {peak:.0f} GFLOP/s\n")
    print("| stage | path | s / batch | rows/s | model GFLOP/s | % of peak | vs plain |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, (_, layer_passes, path) in variants.items():
        med = statistics.median(times[name])
        label = name.split("|")[0]
        gflops = 2 * per_layer * layer_passes * tokens / med / 1e9
        ratio = ""
        if path not in ("", "plain"):
            ratio = f"{statistics.median(times[label + '|plain']) / med:.2f}×"
        print(f"| {label} | {path or '—'} | {med / len(batches):.3f} | {len(main_rows) / med:.1f} | "
              f"{gflops:.0f} | {100 * gflops / peak:.0f}% | {ratio} |")
    if sweep_times:
        n = len(sweep_rows) // max(sweep) * max(sweep)
        print(f"\nCoRA scoring, fast ({args.layers}, warm cache), last-position path, by scoring batch size (eval_batch_size); "
              f"the same {n} rows, median of {args.repeats}:\n")
        print("| eval_batch_size | rows/s | vs " + str(sweep[0]) + " |\n|---:|---:|---:|")
        for size in sweep:
            print(f"| {size} | {sweep_times[size]:.1f} | {sweep_times[size] / sweep_times[sweep[0]]:.2f}× |")


def time_variants(variants: dict, batches: list[Batch], repeats: int, cold_cache: list, fresh_cache: Callable
                  ) -> dict[str, list[float]]:
    """Seconds of every variant over ``batches``, ``repeats`` rounds after a warm-up round. A stage's paths run
    back to back, in turns (plain first in even rounds, last in odd ones): a ratio compares runs made moments
    apart, after the same preceding work, rather than minutes apart after other stages."""
    stages: dict[str, list[str]] = {}
    for name in variants:
        stages.setdefault(name.split("|")[0], []).append(name)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(repeats + 1):  # round 0 is warm-up
        for name in (n for names in stages.values() for n in (names if r % 2 == 0 else names[::-1])):
            fn = variants[name][0]
            if name.startswith(("prefix-cache build", "CoRA train step, fast, cold")):
                cold_cache[0] = fresh_cache()  # empty again
            elapsed = sum(timed(lambda: fn(b)) for b in batches)
            progress(f"round {r}/{repeats} {name.replace('|', ', ')}: {elapsed / len(batches):.2f} s/batch")
            if r:
                times[name].append(elapsed)
    return times


def n_layers_of(cora: CoRA) -> int:
    return len(cora.injector.layers)


def ffn(llm) -> int:
    return int(llm.model.config.intermediate_size)


def eval_batch_sweep(sizes: list[int], rows: pd.DataFrame, batcher, fast: CoRA, scoring: Callable,
                     repeats: int) -> dict[int, float]:
    """rows/s of fast-mode CoRA scoring (last-position path, warm cache) at each batch size over the same rows."""
    n = len(rows) // max(sizes) * max(sizes)  # whole batches at every size
    if n == 0:
        raise SystemExit(f"--sweep-rows {len(rows)}: fewer rows than the largest batch size {max(sizes)}")
    chunks = {s: [batcher(rows.iloc[i:i + s]) for i in range(0, n, s)] for s in sizes}
    for b in chunks[min(sizes)]:
        fast.prefix_cache.hidden_states(b.input_ids, b.attention_mask)  # warm for every size (same rows)
    rates: dict[int, list[float]] = {s: [] for s in sizes}
    for r in range(repeats + 1):  # round 0 is warm-up
        for size in sizes:
            elapsed = sum(timed(lambda: scoring(fast, "last position", b)) for b in chunks[size])
            progress(f"round {r}/{repeats} eval_batch_size {size}: {n / elapsed:.1f} rows/s")
            if r:
                rates[size].append(n / elapsed)
    return {s: statistics.median(v) for s, v in rates.items()}


if __name__ == "__main__":
    main()
