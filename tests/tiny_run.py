"""A tiny trained CoRA run for tests: a small dataset with raw ids, an MF run, a random Llama.

Built from real pieces end to end — ``write_dataset``, ``train_cf``, a randomly initialised Llama
saved with ``save_pretrained`` next to the bundled SmolLM2 tokenizer (``tiny_models.tiny_llm_dir``),
and ``corarec.training.loop.train`` for two steps — in a few seconds on the CPU. Use :func:`build_tiny_run` from a session-scoped
fixture (``tests/conftest_run.py``).

The dataset has a user who appears only in test (a cold user), an item that appears only in test
(a cold item), and raw ids that are not the internal ones (``u07``, ``m1003``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tiny_models import tiny_llm_dir

N_USERS = 12
N_ITEMS = 30
COLD_USER = "u11"
"""Occurs only in the test split."""
COLD_ITEM = "m1029"
"""Occurs only in the test split."""


@dataclass
class TinyRun:
    run: Path
    data: Path
    cf: Path
    llm: Path


def user_raw(u: int) -> str:
    return f"u{u:02d}"


def item_raw(i: int) -> str:
    return f"m{1000 + i}"


def tiny_dataset():
    """A Dataset with 12 users × ~14 rows each, time-ordered splits, raw ids and titles."""
    from corarec.data.schema import Dataset

    rng = np.random.default_rng(0)
    items = pd.DataFrame({"item_id": np.arange(N_ITEMS), "item_raw": [item_raw(i) for i in range(N_ITEMS)],
                          "title": [f"Film number {i} ({1980 + i})" for i in range(N_ITEMS)]})
    users = pd.DataFrame({"user_id": np.arange(N_USERS), "user_raw": [user_raw(u) for u in range(N_USERS)]})
    rows = []
    for u in range(N_USERS):
        chosen = rng.choice(N_ITEMS - 1, size=14, replace=False)  # the last item is held for test only
        for t, i in enumerate(chosen):
            # a learnable signal: users like items with the same parity as themselves
            label = int((i % 2 == u % 2) if rng.random() < 0.85 else (i % 2 != u % 2))
            rows.append((u, int(i), label, 1_000_000 + 1000 * t + u))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "label", "timestamp"])
    t = frame["timestamp"] - 1_000_000
    train = frame[(t < 10_000) & (frame["user_id"] != N_USERS - 1)]
    valid = frame[(t >= 10_000) & (t < 12_000) & (frame["user_id"] != N_USERS - 1)]
    test = pd.concat([frame[(t >= 12_000) | (frame["user_id"] == N_USERS - 1)],
                      pd.DataFrame([(0, N_ITEMS - 1, 1, 1_020_000), (1, N_ITEMS - 1, 0, 1_020_001)],
                                   columns=frame.columns)])
    splits = {name: part.sort_values(["user_id", "timestamp"]).reset_index(drop=True)
              for name, part in (("train", train), ("valid", valid), ("test", test))}
    return Dataset(name="tiny", item_noun="movie", items=items, splits=splits, users=users)


def build_tiny_run(root: Path) -> TinyRun:
    """Dataset, MF run, tiny LLM and a CoRA run trained for two steps, all under ``root``."""
    from corarec.cf import train_cf
    from corarec.data.schema import write_dataset
    from corarec.training.loop import train

    data = write_dataset(tiny_dataset(), root / "data")
    cf = root / "cf"
    train_cf(data, "mf", cf, dim=16, epochs=3, batch_size=32, progress=False)
    llm = tiny_llm_dir(root, hidden=64, name="llm")
    run = root / "run"
    train(method="cora", data=data, out=run, cf=cf, llm=str(llm), seed=0, device="cpu", bf16=False,
          method_settings=dict(rank=4, alpha=8.0, queries=2, depth=1, heads=2),
          train_settings=dict(max_steps=2, eval_every=2, batch_size=8, eval_batch_size=16, warmup_steps=1))
    return TinyRun(run=run, data=data, cf=cf, llm=llm)
