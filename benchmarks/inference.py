"""What CoRA costs on top of the frozen LLM, on the bundled SmolLM2 (not a test; prints a table).

Same batch of MovieLens-100K prompts for every variant (10 liked "title (year)" each, ~160 tokens).
Scoring variants run in bf16 autocast (where the CPU supports it) and in fp32:

- the frozen LLM alone (what zero-shot scoring costs without the prefix cache),
- CoRA: the generator, then the batched hooks ``y = W x + (alpha/r) P(A_bᵀ x)`` on q, k, v, o of all layers,
- the naive path the hooks avoid: per sample, build ``W + ΔW_b`` for every targeted module and apply it.

Training variants (bf16 only, the CPU training dtype) against the frozen LLM's own forward + backward
(gradient to the input embeddings: the least any method that trains through the LLM pays):
CoRA on all layers, on the top 8, and on the top 8 fed the cached hidden states of layer 22.

Variants are timed round-robin (load drift from other processes hits all of them alike); the table
shows the median per variant, samples/s and the ratio to the frozen LLM in the same precision.

    python benchmarks/inference.py [--batch 8] [--repeats 5] [--depth 8] [--threads N] [--skip-fp32]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from contextlib import contextmanager

import pandas as pd
import torch
import torch.nn.functional as F

from corarec.utils.assets import ml100k_dir
from corarec.cf.base import CFBatch, CFModel, history_tensor
from corarec.data.prompts import build_prompt, template_id
from corarec.llm.model import LLM, answer_logits, load_llm, score
from corarec.methods.cora import CoRA, CoRAConfig, GeneratorConfig
from corarec.llm.prefix_cache import PrefixCache


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


@contextmanager
def precision(llm: LLM, mixed: torch.dtype | None):
    """Run the block with ``llm``'s autocast dtype set to ``mixed`` (``None``: fp32)."""
    saved, llm.autocast_dtype = llm.autocast_dtype, mixed
    try:
        yield
    finally:
        llm.autocast_dtype = saved


@contextmanager
def naive_weights(cora: CoRA, A: torch.Tensor):
    """Replace every targeted module's output by ``F.linear(x_b, W + ΔW_b)`` built per sample.

    ``A [B, d, r]``; ``ΔW_b`` comes from the library's own :meth:`LowRankDelta.delta_weight`, so this
    path computes the same function as the hooks (the parity test checks it), only the naive way.
    """
    modules = dict(cora.llm.model.named_modules())
    handles = []
    for (layer, suffix), name in cora.injector.module_names.items():
        delta = cora.injector.deltas[str(layer)][suffix]
        linear = modules[name]

        def hook(module, args, output, delta=delta):
            x = args[0]  # [B, T, d_in]
            W = module.weight  # [d_out, d_in]
            ys = [F.linear(x[b], W + delta.delta_weight(A[b], cora.injector.scale)) for b in range(x.shape[0])]
            return torch.stack(ys).to(output.dtype)  # [B, T, d_out]

        handles.append(linear.register_forward_hook(hook))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--depth", type=int, default=8, help="generator blocks (paper: 8; cpu preset: 2)")
    ap.add_argument("--cf-dim", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--skip-fp32", action="store_true", help="time the bf16 variants only")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    llm = load_llm("smollm2-135m")
    bf16 = llm.autocast_dtype
    ids, mask = llm.tokenize(prompts(args.batch))
    cf_batch = CFBatch(torch.arange(args.batch), torch.arange(args.batch), history_tensor([[]] * args.batch, 10))
    labels = (torch.arange(args.batch) % 2).float()
    cf = RandomCF(args.batch, args.cf_dim)

    def build(layers: str) -> tuple[CoRA, torch.optim.Optimizer]:
        cora = CoRA(CoRAConfig(layers=layers, generator=GeneratorConfig(depth=args.depth)), llm, cf)
        with torch.no_grad():
            for p in cora.injector.parameters():
                p.normal_(0, 0.02)  # as after some training: the low-rank path does real work
        return cora, torch.optim.AdamW(cora.trainable_parameters(), lr=1e-4)

    # ---- scoring ----------------------------------------------------------------------------------
    all_layers, opt_all = build("all")
    all_layers.eval()

    def frozen():
        with torch.no_grad():
            score(llm, ids, mask)

    def cora_scoring():
        with torch.no_grad():
            all_layers(ids, mask, cf_batch)

    def naive_scoring():
        with torch.no_grad():
            A = all_layers.factors(cf_batch)  # [B, d, r]
            with naive_weights(all_layers, A):
                answer_logits(llm, ids, mask)

    # ---- training ---------------------------------------------------------------------------------
    embeddings = llm.model.get_input_embeddings()

    def frozen_backward():
        inputs = embeddings(ids).detach().requires_grad_(True)  # [B, T, d]
        logits = answer_logits(llm, None, mask, inputs_embeds=inputs)  # [B, V]
        F.binary_cross_entropy_with_logits(logits[:, llm.yes_id], labels).backward()

    def step(cora: CoRA, opt, prefix: PrefixCache | None = None) -> None:
        cora.train()
        hidden = prefix.hidden_states(ids, mask) if prefix is not None else None  # computes in llm's autocast
        logits = cora(ids, mask, cf_batch, prefix_hidden=hidden)
        loss = F.binary_cross_entropy_with_logits(logits.float(), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()

    top, opt_top = build("top:8")
    cached, opt_cached = build("top:8")
    # Several CoRAs hook the same LLM; a hook whose own factors are not set returns at once
    # (a Python call per hooked module, microseconds), so each variant times only its own CoRA.
    groups: list[tuple[str, torch.dtype | None, dict]] = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = PrefixCache(llm, cached.injector.first_layer, template_id("tallrec"), root=tmp)
        cache.hidden_states(ids, mask)
        cache.flush()
        cache = PrefixCache(llm, cached.injector.first_layer, template_id("tallrec"), root=tmp)  # reads from disk
        scoring = {"frozen LLM forward": frozen, "CoRA scoring, all layers": cora_scoring,
                   "naive per-sample W + ΔW_b, all layers": naive_scoring}
        groups.append(("bf16" if bf16 else "fp32", bf16, scoring))
        if bf16 is not None and not args.skip_fp32:
            groups.append(("fp32", None, scoring))
        groups.append(("bf16 train" if bf16 else "fp32 train", bf16, {
            "frozen LLM forward + backward": frozen_backward,
            "CoRA train step, all layers": lambda: step(all_layers, opt_all),
            "CoRA train step, top:8": lambda: step(top, opt_top),
            "CoRA train step, top:8 + cached prefix": lambda: step(cached, opt_cached, cache),
        }))
        times = {(g, name): [] for g, _, variants in groups for name in variants}
        for r in range(args.repeats + 1):  # round 0 is warm-up
            for g, mixed, variants in groups:
                with precision(llm, mixed):
                    for name, fn in variants.items():
                        t0 = time.perf_counter()
                        fn()
                        if r:
                            times[(g, name)].append(time.perf_counter() - t0)

    print(f"SmolLM2-135M, batch {args.batch}, {ids.shape[1]} tokens (padded), torch threads "
          f"{torch.get_num_threads()}, load avg {os.getloadavg()[0]:.1f}, generator depth {args.depth}, "
          f"CF dim {args.cf_dim}, median of {args.repeats}\n")
    print("| precision | variant | median s | samples/s | vs first row of its precision |")
    print("|---|---|---:|---:|---:|")
    for g, _, variants in groups:
        base = statistics.median(times[(g, next(iter(variants)))])
        for name in variants:
            med = statistics.median(times[(g, name)])
            print(f"| {g} | {name} | {med:.3f} | {args.batch / med:.1f} | {med / base:.2f}× |")
    bf16_fwd = statistics.median(times[(groups[0][0], "frozen LLM forward")])
    if len(groups) == 3:
        fp32_fwd = statistics.median(times[("fp32", "frozen LLM forward")])
        print(f"\nfrozen LLM forward, fp32 / bf16: {fp32_fwd / bf16_fwd:.2f}×")


if __name__ == "__main__":
    main()
