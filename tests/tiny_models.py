"""Tiny, fast stand-ins for the tests of the baselines and the benchmark (no download).

- :func:`tiny_llm_dir`: a randomly initialised 2-layer Llama with the bundled SmolLM2 tokenizer,
  saved with ``save_pretrained`` so that ``corarec.llm.model.load_llm(path)`` loads it;
- :func:`tiny_dataset_dir`: a prepared dataset with a planted preference (users like items of their
  own parity), warm and cold test users;
- :func:`tiny_cf_dir`: an MF run trained for one epoch on it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch


def tiny_llm_dir(root: Path, hidden: int = 32, layers: int = 2, seed: int = 0, name: str = "tiny-llm") -> Path:
    """A random Llama (``hidden`` wide, ``layers`` deep) and the bundled tokenizer, saved to ``root/name``."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from corarec.llm.model import bundled_model_dir

    out = Path(root) / name
    if (out / "config.json").is_file():
        return out
    tokenizer = AutoTokenizer.from_pretrained(bundled_model_dir())
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True)
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def tiny_dataset_dir(root: Path, n_users: int = 16, n_items: int = 24, seed: int = 0) -> Path:
    from corarec.data.schema import Dataset, write_dataset

    rng = np.random.default_rng(seed)
    rows = {"train": [], "valid": [], "test": []}
    t = 0
    for user in range(n_users):
        cold = user >= n_users - 4  # the last 4 users never occur in train
        for split, count in (("train", 0 if cold else 10), ("valid", 3), ("test", 4)):
            for _ in range(count):
                item = int(rng.integers(n_items))
                label = int((item % 2 == user % 2) != (rng.random() < 0.1))
                t += 1
                rows[split].append((user, item, label, 1_000_000 + 1000 * t + {"train": 0, "valid": 10**8, "test": 2 * 10**8}[split]))
    splits = {name: pd.DataFrame(r, columns=["user_id", "item_id", "label", "timestamp"]) for name, r in rows.items()}
    items = pd.DataFrame({"item_id": np.arange(n_items), "title": [f"Film number {i}" for i in range(n_items)]})
    users = pd.DataFrame({"user_id": np.arange(n_users), "user_raw": [f"u{i}" for i in range(n_users)]})
    from corarec.data.history import add_history

    ds = Dataset(name="tiny", item_noun="movie", items=items, splits=add_history(splits), users=users)
    return write_dataset(ds, Path(root) / "tiny-data")


def tiny_cf_dir(root: Path, data: Path, model: str = "mf", dim: int = 8) -> Path:
    from corarec.cf import train_cf

    out = Path(root) / f"tiny-{model}"
    if not (out / "config.json").is_file():
        train_cf(data, model, out, dim=dim, epochs=2, batch_size=64, seed=0, progress=False)
    return out
