"""Configuration of a CF model and its training, with per-model presets for the CPU.

The presets train each model on MovieLens-100K in about a minute or less on two CPU cores and were
chosen on the ML-100K *valid* split (never on test); ``--grid`` searches lr × weight decay around
them. The embedding size is the paper's 256 (the CoRA generator's input is two of them) for MF and
LightGCN, and :data:`SASREC_DIM` for SASRec on the CPU.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from corarec.errors import CorarecError

CF_MODELS = ("mf", "lightgcn", "sasrec")

SASREC_DIM = 32
"""SASRec's CPU default size: its transformer runs over 25 positions of every row, so at 256 one
ML-100K epoch takes minutes on two cores; 32 trains in about a minute and scored as well as 64 on
valid. Pass ``dim=256`` (``--dim 256``) for the paper's size."""


@dataclass
class CFConfig:
    """Everything needed to rebuild and retrain a CF model (saved in the run's ``config.json``)."""

    model: str = "mf"
    """Which model: ``mf``, ``lightgcn`` or ``sasrec``."""
    dim: int = 256
    """Embedding size of users and items (paper: 256)."""
    lr: float = 1e-3
    """Adam learning rate."""
    weight_decay: float = 0.0
    """Adam weight decay (L2 on all parameters, applied every step)."""
    epochs: int = 30
    """Maximum number of passes over the train rows."""
    batch_size: int = 1024
    """Train rows per Adam step."""
    patience: int = 3
    """Stop after this many epochs without a better valid AUC; the best epoch's weights are kept."""
    seed: int = 0
    """Seed of parameter initialisation, shuffling and dropout."""
    bias: bool = True
    """MF/LightGCN: add user, item and global biases to the dot product (off = the paper's plain form)."""
    layers: int = 2
    """LightGCN: propagation layers; SASRec: self-attention blocks."""
    heads: int = 1
    """SASRec: attention heads."""
    dropout: float = 0.2
    """SASRec: dropout on embeddings, attention and feed-forward outputs."""
    max_len: int = 25
    """Most recent history items read by SASRec and by the fold-in of new users."""
    fold_in: str = "learned"
    """MF/LightGCN: how a user unseen in train is embedded from its history: ``learned`` or ``mean``
    (see :mod:`corarec.cf.fold_in`)."""

    def __post_init__(self) -> None:
        if self.model not in CF_MODELS:
            raise CorarecError(f"unknown CF model '{self.model}'; choose one of {', '.join(CF_MODELS)}")
        for name in ("dim", "epochs", "batch_size", "max_len", "heads"):
            if getattr(self, name) < 1:
                raise CorarecError(f"CF config: {name} must be at least 1, got {getattr(self, name)}")
        if self.patience < 0 or self.layers < 0:
            raise CorarecError("CF config: patience and layers must be non-negative")
        if self.dim % self.heads:
            raise CorarecError(f"CF config: dim {self.dim} is not divisible by heads {self.heads}")
        if self.fold_in not in ("learned", "mean"):
            raise CorarecError(f"CF config: fold_in must be 'learned' or 'mean', got '{self.fold_in}'")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "config") -> "CFConfig":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise CorarecError(f"{where}: unknown CF config key(s) {', '.join(unknown)}")
        return cls(**data)


PRESETS: dict[str, dict[str, Any]] = {
    "mf": dict(lr=1e-3, weight_decay=3e-5),
    "lightgcn": dict(lr=3e-3, weight_decay=1e-5),
    "sasrec": dict(dim=SASREC_DIM, lr=1e-3, weight_decay=0.0),
}
"""Per-model defaults that differ from the dataclass defaults (chosen on the ML-100K valid split)."""

GRID: dict[str, dict[str, list[float]]] = {
    model: dict(lr=[3e-4, 1e-3, 3e-3], weight_decay=[0.0, 1e-5, 3e-5]) for model in CF_MODELS
}
"""The ``--grid`` search: every lr × weight_decay pair (9 runs), best valid AUC kept."""


def make_config(model: str, **overrides: Any) -> CFConfig:
    """The preset of ``model`` with the given fields replaced (``None`` values are ignored)."""
    if model not in CF_MODELS:
        raise CorarecError(f"unknown CF model '{model}'; choose one of {', '.join(CF_MODELS)}")
    values = dict(PRESETS[model])
    values.update({k: v for k, v in overrides.items() if v is not None})
    return CFConfig(model=model, **values)
