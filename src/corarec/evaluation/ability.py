"""``corarec ability``: does training for recommendation cost the LLM what it knew? Measured, offline.

The paper argues that fine-tuning the LLM (TALLRec, CoLLM) "undermines its inherent world knowledge"
while CoRA leaves the weights alone and only adds a per-sample increment. This module puts a number on
it with three fixed probes (:mod:`corarec.evaluation.probes`): the years of the dataset's own titles
(accuracy and mean log-probability), the perplexity of English prose shipped with Python, and 40 yes/no
questions asked like the recommendation prompt (accuracy and the probability mass on " Yes"/" No").

Each run is scored with its update on, and the base LLM (the same loaded model with the update off):

- **TALLRec / CoLLM**: the LoRA applied (peft's adapter on; base: ``disable_adapter``). CoLLM's CF
  tokens are absent: the probes are plain text.
- **CoRA**: ``pairs`` test rows drawn with ``seed``; each row's ``A_b`` (the generator's output for its
  (user, item) pair, with the CF model's fold-in for a cold user) is applied to *every* probe row (the
  ``[1, d, r]`` factor broadcast over the batch), giving one result per pair, reported as mean, standard
  deviation (over pairs), min and max. The hidden states entering the lowest injected layer do not depend
  on the pair: they are computed once per probe batch and every pair runs from there (exact).

Results: one row per base LLM (per LLM, device, precision and dataset) and one per run, with the
difference of each metric to its base; :func:`format_ability` prints the table, ``out`` gets the JSON.
"""

from __future__ import annotations

import contextlib
import gc
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from corarec.errors import CorarecError
from corarec.evaluation.probes import (PROBES_VERSION, QUESTIONS_FILE, TEXT_WORDS, digest, item_prompt,
                                       load_questions, question_prompt, text_passages, year_items)
from corarec.evaluation.probes.scoring import (ProbeBatch, Tally, continuation_batches, probe_logits,
                                               question_batches)
from corarec.llm.model import LLM
from corarec.llm.layer_split import layer_inputs
from corarec.utils.io import read_json, write_json

METRICS = ("item_year_accuracy", "item_year_logprob", "text_perplexity", "question_accuracy", "question_yes_no_mass")
"""The reported metrics, in table order (:meth:`~corarec.evaluation.probes.scoring.Tally.metrics`)."""
PROBED_METHODS = ("cora", "tallrec", "collm")
"""Methods whose runs change the LLM (a LoRA, or CoRA's per-pair increment)."""
RESULT_KEY = "corarec_ability"
"""Marks a result file (``out`` replaces only such a file)."""

Variant = Callable[[int], contextlib.AbstractContextManager]
"""A way to run the LLM: given the batch size, the context in which the forward pass has that update."""


def ability(run: list[str | Path], out: str | Path | None = None, pairs: int = 200, titles: int = 200,
            text_sequences: int = 200, seed: int = 0, batch_size: int = 16, data: str | Path | None = None,
            device: str | None = None, progress: bool = True) -> dict:
    """Score the probes with the base LLM and each run in ``run``; return (and with ``out`` write) the results.

    ``pairs``: CoRA's test rows (one increment each); ``titles``: dataset titles with a year;
    ``text_sequences``: prose passages; ``seed`` draws all three; ``data`` overrides the runs' dataset.
    """
    from corarec.utils.distributed import one_process_only

    one_process_only("corarec ability")
    from corarec.training.runs import load_run, read_run_config

    for name, value in (("--pairs", pairs), ("--titles", titles), ("--text-sequences", text_sequences),
                        ("--batch-size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise CorarecError(f"{name} must be a positive integer, got {value!r}")
    runs = [Path(r) for r in (run if isinstance(run, (list, tuple)) else [run])]
    if not runs:
        raise CorarecError("ability: pass at least one --run")
    if len({r.resolve() for r in runs}) != len(runs):
        raise CorarecError("ability: the same --run is given twice")
    for path in runs:  # every run checked before the long work starts
        method = read_run_config(path).method
        if method not in PROBED_METHODS:
            raise CorarecError(f"{path}: {method} trains no update of the LLM, nothing to probe (its LLM is the "
                               f"base row); runs of {', '.join(PROBED_METHODS)} are probed")
    if out is not None:
        check_replaceable(Path(out))
    started = time.time()
    passages, questions = text_passages(text_sequences, seed), load_questions()
    bases: dict[tuple, int] = {}
    rows: list[dict] = []
    for path in runs:
        loaded = load_run(path, data=data, device=device)
        method, llm, t0 = loaded.method, loaded.llm, time.time()
        items = year_items(loaded.dataset.titles(), titles, seed)
        batches = probe_batches(llm, items, loaded.dataset.item_noun, passages, questions, batch_size)
        key = (loaded.config.llm, str(loaded.device), str(llm.autocast_dtype), str(loaded.dataset.root), len(items))
        if key not in bases:
            (tally,) = score_variants(llm, batches, [lambda _, m=method: base_context(m)], 0, progress, "base")
            bases[key] = len(rows)
            rows.append({"label": f"base ({loaded.config.llm})", "kind": "base", "llm": loaded.config.llm,
                         "dataset": loaded.dataset.name, "titles": len(items), "seconds": round(time.time() - t0, 1),
                         "metrics": summarise([tally.metrics()])})
            t0 = time.time()
        row = {"label": f"{method.name} ({path})", "kind": method.name, "run": str(path), "llm": loaded.config.llm,
               "base": bases[key], **probe_run(loaded, batches, pairs, seed, progress, str(path))}
        row["seconds"] = round(time.time() - t0, 1)
        base = rows[bases[key]]["metrics"]
        row["diff"] = {m: _minus(row["metrics"][m]["mean"], base[m]["mean"]) for m in METRICS}
        rows.append(row)
        del loaded, method, llm, batches
        gc.collect()
    result = {RESULT_KEY: PROBES_VERSION, "rows": rows, "settings": {
        "pairs": pairs, "titles": titles, "text_sequences": text_sequences, "seed": seed, "batch_size": batch_size},
        "probes": probe_info(passages, questions), "seconds": round(time.time() - started, 1)}
    if out is not None:
        write_json(out, result)
    return result


def probe_run(loaded, batches: list[ProbeBatch], pairs: int, seed: int, progress: bool, what: str) -> dict:
    """A run's probe results with its update on: ``metrics`` (and for CoRA ``pairs`` and ``per_pair``)."""
    method, llm = loaded.method, loaded.llm
    if hasattr(method, "injector"):  # CoRA: one increment per drawn test pair
        test = loaded.dataset.test
        drawn = test.iloc[sorted(np.random.default_rng(seed).choice(len(test), min(pairs, len(test)), replace=False))]
        with torch.no_grad():
            factors = method.factors(loaded.batcher(drawn).to(loaded.device).cf, deterministic=True)  # [P, d, r]
        variants = [pair_variant(method.injector, factors[p:p + 1]) for p in range(len(drawn))]
        tallies = score_variants(llm, batches, variants, method.injector.first_layer, progress, what)
        per_pair = [t.metrics() for t in tallies]
        return {"pairs": pair_names(loaded.dataset, drawn), "per_pair": per_pair, "metrics": summarise(per_pair)}
    if hasattr(method, "peft"):  # TALLRec, CoLLM: the LoRA is on inside llm.model
        (tally,) = score_variants(llm, batches, [lambda _: contextlib.nullcontext()], 0, progress, what)
        return {"metrics": summarise([tally.metrics()])}
    raise CorarecError(f"{what}: {method.name} trains no update of the LLM, nothing to probe (its LLM is the base row)")


def probe_batches(llm: LLM, items, noun: str, passages: list[str], questions: list[tuple[str, bool]],
                  batch_size: int) -> list[ProbeBatch]:
    """The three probe sets tokenised for ``llm`` and cut into batches."""
    vocab = int(llm.model.get_output_embeddings().weight.shape[0])
    tok = llm.tokenizer
    return [*continuation_batches(tok, "item", [item_prompt(item, noun) for item in items], batch_size, vocab),
            *continuation_batches(tok, "text", [("", passage) for passage in passages], batch_size, vocab),
            *question_batches(tok, [question_prompt(q) for q, _ in questions], [a for _, a in questions], batch_size)]


def base_context(method) -> contextlib.AbstractContextManager:
    """The LLM without the method's update: peft's ``disable_adapter`` for a LoRA; for CoRA nothing is
    needed (outside ``injector.use`` the hooks add nothing)."""
    return method.peft.disable_adapter() if hasattr(method, "peft") else contextlib.nullcontext()


def pair_variant(injector, factor: torch.Tensor) -> Variant:
    """One pair's ``A_b [1, d, r]`` applied to every row of a batch of ``B`` (broadcast, not copied)."""
    return lambda rows: injector.use(factor.expand(rows, -1, -1))


def score_variants(llm: LLM, batches: list[ProbeBatch], variants: list[Variant], first_layer: int,
                   progress: bool = False, what: str = "") -> list[Tally]:
    """A :class:`Tally` per variant over all batches. With several variants whose updates all start at
    ``first_layer``, the hidden states entering it are computed once per batch and shared."""
    from tqdm import tqdm

    tallies = [Tally() for _ in variants]
    share = first_layer > 0 and len(variants) > 1
    with tqdm(total=len(batches) * len(variants), desc=f"probing {what}", disable=not progress,
              file=sys.stderr, leave=False) as bar:
        for batch in batches:
            batch = batch.to(llm.device)
            start = (first_layer, layer_inputs(llm, first_layer, batch.input_ids, batch.attention_mask)) if share else None
            for variant, tally in zip(variants, tallies):
                with variant(len(batch)):
                    tally.add(batch, probe_logits(llm, batch, start), llm.yes_id, llm.no_id)
                bar.update(1)
    return tallies


def summarise(per_variant: list[dict[str, float | None]]) -> dict[str, dict]:
    """Each metric's mean, standard deviation (None for one variant), min and max over the variants."""
    summary = {}
    for m in METRICS:
        values = [v[m] for v in per_variant if v[m] is not None]
        summary[m] = {"mean": statistics.fmean(values) if values else None,
                      "std": statistics.stdev(values) if len(values) > 1 else None,
                      "min": min(values) if values else None, "max": max(values) if values else None}
    return summary


def pair_names(dataset, rows) -> list[dict]:
    """The drawn test rows as the user's original ids: ``{"user", "item"}``."""
    users = dataset.users["user_raw"].astype(str).tolist() if dataset.users is not None else None
    items = dataset.items["item_raw"].astype(str).tolist() if "item_raw" in dataset.items else None
    return [{"user": users[u] if users else str(u), "item": items[i] if items else str(i)}
            for u, i in zip(rows["user_id"].tolist(), rows["item_id"].tolist())]


def probe_info(passages: list[str], questions: list[tuple[str, bool]]) -> dict:
    """What identifies the probe sets of a result (versions and digests)."""
    return {"version": PROBES_VERSION,
            "text": {"source": "pydoc_data.topics", "python": platform.python_version(), "passages": len(passages),
                     "words": TEXT_WORDS, "sha256": digest(passages)},
            "questions": {"file": QUESTIONS_FILE.name, "version": read_json(QUESTIONS_FILE).get("version"),
                          "n": len(questions), "sha256": digest([f"{q}|{a}" for q, a in questions])}}


def check_replaceable(out: Path) -> None:
    """``out`` may be written: absent, or an earlier result of this command (anything else stays untouched)."""
    if out.is_dir():
        raise CorarecError(f"--out {out}: is a directory; give a .json file path")
    if out.exists():
        try:
            earlier = read_json(out)
        except CorarecError:
            earlier = None
        if not isinstance(earlier, dict) or RESULT_KEY not in earlier:
            raise CorarecError(f"--out {out}: exists and is not an earlier `corarec ability` result; "
                               "not replacing it (choose another path)")


def _minus(value: float | None, base: float | None) -> float | None:
    return None if value is None or base is None else value - base


COLUMNS = (("item_year_accuracy", "year acc", "{:.3f}"), ("item_year_logprob", "year logP", "{:.2f}"),
           ("text_perplexity", "text ppl", "{:.2f}"), ("question_accuracy", "yes/no acc", "{:.3f}"),
           ("question_yes_no_mass", "P(Yes)+P(No)", "{:.3f}"))


def format_ability(result: dict) -> str:
    """The result as a Markdown table: base rows, then each run as mean ± std over pairs and (Δ to its base)."""
    lines = ["| | pairs | " + " | ".join(title for _, title, _ in COLUMNS) + " |",
             "|---|---|" + "---|" * len(COLUMNS)]
    for row in result["rows"]:
        cells = []
        for metric, _, fmt in COLUMNS:
            stats = row["metrics"][metric]
            if stats["mean"] is None:
                cells.append("–")
                continue
            cell = fmt.format(stats["mean"]) + ("" if stats["std"] is None else " ± " + fmt.format(stats["std"]))
            delta = row.get("diff", {}).get(metric)
            cells.append(cell if delta is None else f"{cell} ({'+' if delta >= 0 else ''}{fmt.format(delta)})")
        pairs = str(len(row["pairs"])) if "pairs" in row else ""
        lines.append(f"| {row['label']} | {pairs} | " + " | ".join(cells) + " |")
    probes = result["probes"]
    lines.append(f"\nprobes v{probes['version']}: {result['rows'][0]['titles']} titles with a year, "
                 f"{probes['text']['passages']} prose passages (Python {probes['text']['python']}), "
                 f"{probes['questions']['n']} yes/no questions; seed {result['settings']['seed']}; "
                 f"{result['seconds']:.0f} s")
    return "\n".join(lines)
