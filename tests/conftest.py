"""Shared fixtures: a tiny random Llama (built from a LlamaConfig, no download) with the bundled
SmolLM2 tokenizer, and a tiny CF model behind the real CF interface."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from corarec.cf.base import CFBatch, CFModel, history_tensor
from corarec.llm.model import LLM, NO, YES, decoder_layers, single_token_id

PROMPTS = [
    '#Question: A user has given high ratings to the following movies: "Heat", "Alien". Leverage the '
    'information to predict whether the user would enjoy the movie titled "Toy Story"? '
    'Answer with "Yes" or "No". \n#Answer:',
    '#Question: A user has given high ratings to the following movies: (none yet). Leverage the '
    'information to predict whether the user would enjoy the movie titled "Fargo"? '
    'Answer with "Yes" or "No". \n#Answer:',
    '#Question: Will the user enjoy "Casablanca"? Answer with "Yes" or "No". \n#Answer:',
]


@pytest.fixture(scope="session")
def tokenizer():
    """The real SmolLM2 tokenizer, from the converted bundled model (built once, offline)."""
    from transformers import AutoTokenizer

    from corarec.llm.model import bundled_model_dir

    tok = AutoTokenizer.from_pretrained(bundled_model_dir())
    tok.padding_side = "left"
    return tok


def make_tiny_llm(tokenizer, seed: int = 0, layers: int = 4) -> LLM:
    """A random 4-layer Llama (d = 64, FFN 96, grouped KV heads), fp32, frozen."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=96, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        initializer_range=0.1, tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval().requires_grad_(False)
    return LLM(
        model=model, tokenizer=tokenizer, name=f"tiny-llama-{seed}",
        yes_id=single_token_id(tokenizer, YES, "tiny"), no_id=single_token_id(tokenizer, NO, "tiny"),
        hidden_size=64, n_layers=len(decoder_layers(model)), autocast_dtype=None,
    )


@pytest.fixture
def tiny_llm(tokenizer) -> LLM:
    return make_tiny_llm(tokenizer)


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
    users = torch.arange(n) % 10
    items = (torch.arange(n) * 3 + 1) % 20
    history = history_tensor([[(u + k) % 20 for k in range(u % 4 + 1)] for u in users.tolist()], 5)
    return CFBatch(users=users, items=items, history=history)


@pytest.fixture
def tiny_cf() -> TinyCF:
    torch.manual_seed(1)
    return TinyCF()
