"""CoLLM: CF embeddings mapped into the token-embedding space and spliced into the prompt.

CoLLM's prompt (:data:`corarec.data.prompts.TEMPLATES` ``"collm"``) holds two placeholders,
``<UserID>`` and ``<TargetItemID>``. A two-layer MLP (Linear → ReLU → Linear, hidden size
``hidden_factor`` × CF dim, shared by users and items) maps the frozen CF model's user and target-item
embeddings to vectors of the LLM's hidden size, which replace the input embeddings at those two
positions. A peft LoRA on the LLM (the same as TALLRec's) reads the result.

How the placeholders are found: they are added to the tokenizer as special tokens, so the tokenizer
never splits or merges them with their neighbours — each is exactly one token, whatever the
surrounding text. Their ids lie past the LLM's embedding table (the table is *not* resized: the LLM
stays untouched); the rows are looked up with the pad id there and then overwritten. A row that does
not hold exactly one of each placeholder is an error.

Training follows CoLLM's two steps: stage 1 is a TALLRec run; stage 2 is ``corarec train --method
collm --init TALLREC_RUN --cf CF_RUN``, which copies the LoRA from stage 1 and trains the mapping
together with the LoRA (``train_lora``; ``false`` keeps the stage-1 LoRA frozen, as in CoLLM's own
two-step tuning). Without ``--init`` the LoRA starts at zero and is learned jointly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from corarec.data.prompts import ITEM_TOKEN, USER_TOKEN
from corarec.errors import CorarecError
from corarec.llm.model import answer_logits
from corarec.methods.base import Method
from corarec.methods.peft_lora import attach_lora, save_adapter
from corarec.methods.tallrec import LoRASettings
from corarec.utils.settings import setting


@dataclass
class CoLLMConfig(LoRASettings):
    """Settings of CoLLM (defaults: the CoLLM paper). The LoRA fields are TALLRec's, inherited, so that
    stage 2 can start from a TALLRec run (``--init``) with the very same LoRA."""

    hidden_factor: int = setting(10, at_least=1, doc="""
        Hidden width of the mapping MLP, in multiples of the CF embedding size.""")
    train_lora: bool = setting(True, doc="""
        Stage 2 trains the LoRA with the mapping (on) or keeps the stage-1 LoRA frozen (off).""")
    fold_in_fraction: float = setting(0.0, at_least=0, at_most=1, doc="""
        Share of training rows whose user embedding is the CF model's fold-in (cold-start) embedding, so that
        training also sees the kind of embedding test-time cold users get.""")

class CoLLM(Method):
    """Frozen LLM + LoRA, with mapped CF embeddings at the placeholder tokens of the CoLLM prompt."""

    name = "collm"
    template = "collm"
    uses_cf = True

    def __init__(self, cfg: CoLLMConfig, llm, cf=None):
        if cfg.cache_prefix:
            raise CorarecError("collm cannot use cache_prefix: its CF tokens change the input of every layer")
        super().__init__(cfg, llm, cf)  # holds the frozen LLM and CF model (not registered)
        self.peft = attach_lora(llm, cfg.rank, cfg.alpha, cfg.dropout, cfg.targets, cfg.layers)
        if not cfg.train_lora:
            for name, param in self.peft.named_parameters():
                if "lora_" in name:
                    param.requires_grad_(False)
        c, e, d = cf.dim, cf.embed_dim, llm.hidden_size   # e = c + the CF model's bias coordinates
        self.mapping = nn.Sequential(                      # CoLLM's "CIE" mapping, shared by users and items
            nn.Linear(e, cfg.hidden_factor * c),           # [.., e] → [.., 10c]
            nn.ReLU(),
            nn.Linear(cfg.hidden_factor * c, d),           # [.., 10c] → [.., d]
        )
        self.mapping.to(llm.device)

        tokenizer = llm.tokenizer
        new = [t for t in (USER_TOKEN, ITEM_TOKEN) if t not in tokenizer.get_vocab()]
        if new:
            tokenizer.add_tokens(new, special_tokens=True)
        self.user_token_id = int(tokenizer.convert_tokens_to_ids(USER_TOKEN))
        self.item_token_id = int(tokenizer.convert_tokens_to_ids(ITEM_TOKEN))
        self.pad_id = int(tokenizer.pad_token_id)

    def cf_embeddings(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen CF user and item embeddings ``[B, c']`` (c' = c + bias coordinates) (some users folded in while training)."""
        fold_in = self.fold_in_rows(batch, self.cfg.fold_in_fraction)  # [B] or None
        with torch.no_grad():
            e_u, e_i = self.cf.embed(batch.cf, fold_in=fold_in)  # [B, c'] each
        return e_u.float(), e_i.float()

    def placeholder_positions(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Boolean masks ``[B, T]`` of the ``<UserID>`` and ``<TargetItemID>`` tokens (one each per row)."""
        user_pos = input_ids == self.user_token_id   # [B, T]
        item_pos = input_ids == self.item_token_id   # [B, T]
        for what, pos in ((USER_TOKEN, user_pos), (ITEM_TOKEN, item_pos)):
            counts = pos.sum(1)
            if bool((counts != 1).any()):
                row = int((counts != 1).nonzero()[0])
                raise CorarecError(f"collm: prompt row {row} holds {int(counts[row])} {what} tokens, expected 1 "
                                   "(is the batch built with the 'collm' template?)")
        return user_pos, item_pos

    def input_embeddings(self, batch) -> torch.Tensor:
        """The prompt's input embeddings ``[B, T, d]`` with the mapped CF embeddings spliced in."""
        ids = batch.input_ids                                                        # [B, T]
        user_pos, item_pos = self.placeholder_positions(ids)
        table = self.llm.model.get_input_embeddings()
        embeds = table(ids.masked_fill(user_pos | item_pos, self.pad_id))           # [B, T, d]
        e_u, e_i = self.cf_embeddings(batch)                                         # [B, c'] each
        m_u = self.mapping(e_u).to(embeds.dtype)                                     # [B, d]
        m_i = self.mapping(e_i).to(embeds.dtype)                                     # [B, d]
        embeds = torch.where(user_pos.unsqueeze(-1), m_u.unsqueeze(1), embeds)       # [B, T, d]
        return torch.where(item_pos.unsqueeze(-1), m_i.unsqueeze(1), embeds)         # [B, T, d]

    def score(self, batch) -> torch.Tensor:
        embeds = self.input_embeddings(batch)                                        # [B, T, d]
        logits = answer_logits(self.llm, None, batch.attention_mask, inputs_embeds=embeds)  # [B, V]
        return self.answer(logits)  # [B]

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The mapping and the LoRA (the LoRA is saved even when ``train_lora`` keeps it frozen)."""
        return {k: v.detach().clone() for k, v in self.named_parameters()
                if k.startswith("mapping.") or "lora_" in k}

    def save_extra(self, run_dir: str | Path) -> None:
        """Also write the LoRA in peft's format to ``run_dir/adapter``."""
        save_adapter(self.peft, run_dir)
