"""Tiny, fast stand-ins for the tests, built from real pieces, offline, in seconds on the CPU.

The fixtures in ``tests/conftest.py`` build on these; ``tests/golden.py`` imports them directly.

- The tiny Llama: :func:`tiny_llama` is the one builder (a randomly initialised Llama sized to the
  bundled SmolLM2 tokenizer). :func:`make_tiny_llm` wraps it in memory as an :class:`~corarec.llm.model.LLM`
  (d = 64, 4 layers); :func:`tiny_llm_dir` saves it with ``save_pretrained`` next to the tokenizer so
  that ``load_llm(path)`` loads it (d = 32 unless asked, 2 layers).
- The tiny dataset: :func:`tiny_dataset` (12 users, 30 items, time-ordered splits) with a cold user
  (:data:`COLD_USER`, only in test), a cold item (:data:`COLD_ITEM`, only in test), raw ids that are
  not the internal ones (``u07``, ``m1003``) and a learnable signal (users like items of their own
  parity 85 % of the time); :func:`tiny_dataset_dir` writes it.
- A tiny CF side: :func:`tiny_cf_dir` (an MF run trained on it), :class:`TinyCF` / :func:`make_cf_batch`
  (an in-memory CF model behind the real interface) and :data:`PROMPTS`.
- :func:`build_tiny_run`: dataset, MF run, tiny LLM directory and a CoRA run trained for two steps;
  :func:`assert_same_weights` compares two runs' weights and last checkpoints bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from corarec.cf.base import CFBatch, CFModel, history_tensor
from corarec.llm.model import LLM, NO, YES, decoder_layers, single_token_id

# ---- the tiny Llama -------------------------------------------------------------------------------


def bundled_tokenizer():
    """The real SmolLM2 tokenizer of the converted bundled model (built once, offline; no custom code)."""
    from transformers import AutoTokenizer

    from corarec.llm.packaged import bundled_model_dir

    return AutoTokenizer.from_pretrained(bundled_model_dir(), trust_remote_code=False)


def tiny_llama(tokenizer, hidden: int, layers: int, ffn: int, max_positions: int, init_range: float = 0.02,
               zero_pad_row: bool = False, seed: int = 0):
    """A random fp32 Llama: ``hidden`` wide (4 query heads, 2 KV heads), ``layers`` deep, FFN ``ffn``,
    tied embeddings sized to ``tokenizer``, weights drawn after ``torch.manual_seed(seed)`` with standard
    deviation ``init_range``. ``zero_pad_row`` declares the pad token, whose embedding row is then zero."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=ffn, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions,
        initializer_range=init_range, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id if zero_pad_row else None,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def make_tiny_llm(tokenizer, seed: int = 0, layers: int = 4) -> LLM:
    """A random Llama in memory (d = 64, FFN 96, 256 positions, init std 0.1), frozen, as an :class:`LLM`."""
    model = tiny_llama(tokenizer, hidden=64, layers=layers, ffn=96, max_positions=256, init_range=0.1,
                       zero_pad_row=True, seed=seed).eval().requires_grad_(False)
    return LLM(
        model=model, tokenizer=tokenizer, name=f"tiny-llama-{seed}",
        yes_id=single_token_id(tokenizer, YES, "tiny"), no_id=single_token_id(tokenizer, NO, "tiny"),
        hidden_size=model.config.hidden_size, n_layers=len(decoder_layers(model)), autocast_dtype=None,
    )


def tiny_llm_dir(root: Path, hidden: int = 32, layers: int = 2, seed: int = 0, name: str = "tiny-llm") -> Path:
    """A random Llama (``hidden`` wide, FFN 2·hidden, 512 positions) and the bundled tokenizer, saved to
    ``root/name`` (kept if already there)."""
    out = Path(root) / name
    if (out / "config.json").is_file():
        return out
    tokenizer = bundled_tokenizer()
    tiny_llama(tokenizer, hidden=hidden, layers=layers, ffn=2 * hidden, max_positions=512, seed=seed).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


PROMPTS = [
    '#Question: A user has given high ratings to the following movies: "Heat", "Alien". Leverage the '
    'information to predict whether the user would enjoy the movie titled "Toy Story"? '
    'Answer with "Yes" or "No". \n#Answer:',
    '#Question: A user has given high ratings to the following movies: (none yet). Leverage the '
    'information to predict whether the user would enjoy the movie titled "Fargo"? '
    'Answer with "Yes" or "No". \n#Answer:',
    '#Question: Will the user enjoy "Casablanca"? Answer with "Yes" or "No". \n#Answer:',
]

# ---- the tiny dataset -----------------------------------------------------------------------------

N_USERS = 12
N_ITEMS = 30
COLD_USER = "u11"
"""Occurs only in the test split."""
COLD_ITEM = "m1029"
"""Occurs only in the test split."""


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


def tiny_dataset_dir(root: Path) -> Path:
    """:func:`tiny_dataset` written as a prepared dataset directory ``root/tiny-data``."""
    from corarec.data.schema import write_dataset

    return write_dataset(tiny_dataset(), Path(root) / "tiny-data")


# ---- the tiny CF side -----------------------------------------------------------------------------


def tiny_cf_dir(root: Path, data: Path, model: str = "mf", dim: int = 8) -> Path:
    """A ``model`` CF run trained for two epochs on ``data``, saved to ``root/tiny-<model>`` (kept if there)."""
    from corarec.cf import train_cf

    out = Path(root) / f"tiny-{model}"
    if not (out / "config.json").is_file():
        train_cf(data, model, out, dim=dim, epochs=2, batch_size=64, seed=0, progress=False)
    return out


class TinyCF(CFModel):
    """Embedding tables; a cold (or forced fold-in) user is the mean of its history's items."""

    kind = "tiny"

    def __init__(self, n_users: int = 10, n_items: int = 20, dim: int = 8) -> None:
        super().__init__(n_users, n_items, dim, max_len=5)
        self.user_emb = nn.Embedding(n_users, dim)  # [n_users, dim]
        self.item_emb = nn.Embedding(n_items, dim)  # [n_items, dim]
        self.user_seen.fill_(True)
        self.item_seen.fill_(True)

    def embed(self, batch: CFBatch, fold_in: torch.BoolTensor | None = None) -> tuple[Tensor, Tensor]:
        own = self.user_emb(batch.users.clamp(min=0))  # [B, dim]
        valid = (batch.history >= 0).unsqueeze(-1).float()  # [B, L, 1]
        hist = self.item_emb(batch.history.clamp(min=0)) * valid  # [B, L, dim]
        fold = hist.sum(1) / valid.sum(1).clamp(min=1)  # [B, dim]
        cold = ~self.warm_users(batch.users)
        if fold_in is not None:
            cold = cold | fold_in.bool()
        return torch.where(cold.unsqueeze(-1), fold, own), self.item_emb(batch.items)

    def forward(self, batch: CFBatch) -> Tensor:
        u, i = self.embed(batch)
        return (u * i).sum(-1)

    def loss(self, batch: CFBatch, labels: Tensor) -> Tensor:
        return self.bce(self.forward(batch), labels)


def make_cf_batch(n: int) -> CFBatch:
    """``n`` rows for :class:`TinyCF`: users 0..9, items 3k+1 mod 20, 1–4 history items each."""
    users = torch.arange(n) % 10
    items = (torch.arange(n) * 3 + 1) % 20
    history = history_tensor([[(u + k) % 20 for k in range(u % 4 + 1)] for u in users.tolist()], 5)
    return CFBatch(users=users, items=items, history=history)


# ---- a tiny trained CoRA run ----------------------------------------------------------------------


@dataclass
class TinyRun:
    run: Path
    data: Path
    cf: Path
    llm: Path


def build_tiny_run(root: Path) -> TinyRun:
    """Dataset, MF run, tiny LLM (d = 64) and a CoRA run trained for two steps, all under ``root``."""
    from corarec.cf import train_cf
    from corarec.data.schema import write_dataset
    from corarec.training.loop import train

    data = write_dataset(tiny_dataset(), root / "data")
    cf = root / "cf"
    train_cf(data, "mf", cf, dim=16, epochs=3, batch_size=32, progress=False)
    llm = tiny_llm_dir(root, hidden=64, name="llm")
    run = root / "run"
    train(method="cora", data=data, out=run, cf=cf, llm=str(llm), seed=0, device="cpu", bf16=False,
          rank=4, alpha=8.0, generator_queries=2, generator_depth=1, generator_heads=2,
          max_steps=2, eval_every=2, batch_size=8, eval_batch_size=16, warmup_steps=1)
    return TinyRun(run=run, data=data, cf=cf, llm=llm)


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], what: str = "") -> None:
    """The same tensor names, and every tensor bit-identical."""
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), what


def assert_same_weights(run: Path, straight: Path) -> None:
    """``run``'s best weights and last checkpoint are bit-identical to ``straight``'s."""
    from corarec.utils.io import load_tensors

    for name in ("checkpoint/trainable.safetensors", "model.safetensors"):
        assert_same_tensors(load_tensors(straight / name), load_tensors(run / name), name)


# ---- a scoring pass cut off -----------------------------------------------------------------------


class CutOff:
    """Wraps a ``score`` function: counts the batches it scores and stops the pass (Ctrl-C) at batch ``stop_at``."""

    def __init__(self, score, stop_at: int | None = None):
        self.score, self.stop_at, self.calls, self.scored = score, stop_at, 0, []

    def __call__(self, *args):
        self.calls += 1
        if self.calls == self.stop_at:
            raise KeyboardInterrupt
        logits = self.score(*args)
        self.scored.append(logits.detach().float().numpy().copy())
        return logits
