"""Micro-measurement of CoRA's cost on the bundled SmolLM2 (not a test; prints a table).

Batch of 8 MovieLens-100K prompts with 10 liked "title (year)" each (~160 tokens), bf16 autocast where the
CPU supports it. Variants are timed round-robin (so load drift from other processes hits all of
them alike) and the median per variant is reported, with ratios against the plain forward.

    python benchmarks/cora_micro.py [--repeats 5] [--depth 8] [--cf-dim 64]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import pandas as pd
import torch
import torch.nn.functional as F

from corarec.assets import ml100k_dir
from corarec.cf.base import CFBatch, CFModel, history_tensor
from corarec.data.prompts import build_prompt, template_id
from corarec.llm import load_llm, score
from corarec.methods.cora import CoRA, CoRAConfig
from corarec.prefix_cache import PrefixCache


class RandomCF(CFModel):
    """Random frozen embeddings: timing does not depend on what the CF model learned."""

    def __init__(self, n: int, dim: int):
        super().__init__(n, n, dim, max_len=10)
        self.u, self.i = torch.nn.Embedding(n, dim), torch.nn.Embedding(n, dim)

    def embed(self, batch, fold_in=None):
        return self.u(batch.users), self.i(batch.items)

    def forward(self, batch):
        return (self.u(batch.users) * self.i(batch.items)).sum(-1)

    def loss(self, batch, labels):
        return self.bce(self.forward(batch), labels)


def prompts(n: int) -> list[str]:
    items = pd.read_csv(ml100k_dir() / "ml-100k.item", sep="\t", encoding="latin-1")
    # "Title (year)" as in ML-1M's titles, which makes the prompts ~160 tokens long
    titles = [f"{t} ({y})" for t, y in zip(items.iloc[:, 1].astype(str), items.iloc[:, 2].astype(str))]
    return [build_prompt(titles[10 * b + 1 : 10 * b + 11], titles[500 + b], "movie") for b in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--depth", type=int, default=8, help="generator blocks (paper: 8)")
    ap.add_argument("--cf-dim", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--only", default=None, help="comma-separated variant numbers to time (1-5)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    llm = load_llm("smollm2-135m")
    ids, mask = llm.tokenize(prompts(args.batch))
    cf_batch = CFBatch(torch.arange(args.batch), torch.arange(args.batch), history_tensor([[]] * args.batch, 10))
    labels = (torch.arange(args.batch) % 2).float()
    cf = RandomCF(args.batch, args.cf_dim)

    def build(layers: str) -> tuple[CoRA, torch.optim.Optimizer]:
        cora = CoRA(CoRAConfig(layers=layers, depth=args.depth), llm, cf)
        with torch.no_grad():
            for p in cora.injector.parameters():
                p.normal_(0, 0.02)  # as after some training: the low-rank path does real work
        return cora, torch.optim.AdamW(cora.trainable_parameters(), lr=1e-4)

    def step(cora: CoRA, opt, prefix: PrefixCache | None = None) -> None:
        cora.train()
        with llm.autocast():
            hidden = prefix.hidden_states(ids, mask) if prefix is not None else None
            logits = cora(ids, mask, cf_batch, prefix_hidden=hidden)
        loss = F.binary_cross_entropy_with_logits(logits.float(), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()

    all_layers, opt_all = build("all")
    all_layers.eval()

    def plain():
        with torch.no_grad():
            score(llm, ids, mask)

    def cora_forward():
        with torch.no_grad(), llm.autocast():
            all_layers(ids, mask, cf_batch)

    top, opt_top = build("top:8")
    cached, opt_cached = build("top:8")
    # Several CoRAs hook the same LLM; a hook whose own factors are not set returns at once
    # (a Python call per hooked module, microseconds), so each variant times only its own CoRA.
    with tempfile.TemporaryDirectory() as tmp:
        cache = PrefixCache(llm, cached.injector.first_layer, template_id("tallrec"), root=tmp)
        with llm.autocast():
            cache.hidden_states(ids, mask)
        cache.flush()
        cache = PrefixCache(llm, cached.injector.first_layer, template_id("tallrec"), root=tmp)  # reads from disk
        variants = {
            "plain forward (frozen LLM)": plain,
            "CoRA forward, all layers": cora_forward,
            "CoRA train step, all 30 layers": lambda: step(all_layers, opt_all),
            "CoRA train step, top:8": lambda: step(top, opt_top),
            "CoRA train step, top:8 + cached prefix": lambda: step(cached, opt_cached, cache),
        }
        if args.only:
            keep = {int(x) for x in args.only.split(",")}
            variants = {k: v for n, (k, v) in enumerate(variants.items(), 1) if n in keep or n == 1}
        times: dict[str, list[float]] = {k: [] for k in variants}
        for r in range(args.repeats + 1):  # round 0 is warm-up
            for name, fn in variants.items():
                t0 = time.perf_counter()
                fn()
                if r:
                    times[name].append(time.perf_counter() - t0)
    print(f"SmolLM2-135M, batch {args.batch}, {ids.shape[1]} tokens (padded), autocast {llm.autocast_dtype}, "
          f"torch threads {torch.get_num_threads()}, load avg {os.getloadavg()[0]:.1f}, "
          f"generator depth {args.depth}, CF dim {args.cf_dim}, median of {args.repeats}")
    base = statistics.median(times["plain forward (frozen LLM)"])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:42s} {med:6.3f} s   x{med / base:4.2f}   (min {min(ts):.3f}, max {max(ts):.3f})")


if __name__ == "__main__":
    main()
