"""Configuration of a CF model and its training, with per-model presets for the CPU.

The presets train each model on MovieLens-100K in about a minute or less on two CPU cores and were
chosen on the ML-100K *valid* split (never on test); ``--grid`` searches lr × weight decay × dim around
them. The embedding size is the paper's 256 (the CoRA generator's input is two of them) for MF and
LightGCN, and :data:`SASREC_DIM` for SASRec on the CPU.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import Any

from corarec.training.config import SEED_MAX
from corarec.errors import CorarecError
from corarec.utils.settings import Settings, SettingError, config_from_dict, setting

CF_MODELS = ("mf", "lightgcn", "sasrec")

SASREC_DIM = 32
"""SASRec's CPU default size: its transformer runs over 25 positions of every row, so at 256 one
ML-100K epoch takes minutes on two cores; 32 trains in about a minute and scored as well as 64 on
valid. Pass ``dim=256`` (``--dim 256``) for the paper's size."""


@dataclass
class CFConfig(Settings):
    """Everything needed to rebuild and retrain a CF model (saved in the run's ``config.json``);
    every field is checked by its type and the rule beside it (:mod:`corarec.utils.settings`)."""

    model: str = setting("mf", choices=CF_MODELS)
    """Which model: ``mf``, ``lightgcn`` or ``sasrec``."""
    dim: int = setting(256, at_least=1)
    """Embedding size of users and items (paper: 256)."""
    lr: float = setting(1e-3, above=0)
    """Adam learning rate."""
    weight_decay: float = setting(0.0, at_least=0)
    """Adam weight decay (L2 on all parameters, applied every step)."""
    epochs: int = setting(30, at_least=1)
    """Maximum number of passes over the train rows."""
    batch_size: int = setting(1024, at_least=1)
    """Train rows per Adam step."""
    patience: int = setting(3, at_least=0)
    """Stop after this many epochs without a better valid AUC; the best epoch's weights are kept."""
    seed: int = setting(0, at_least=0, at_most=SEED_MAX)
    """Seed of parameter initialisation, shuffling and dropout."""
    bias: bool = True
    """MF/LightGCN: add user, item and global biases to the dot product (off = the paper's plain form)."""
    layers: int = setting(2, at_least=0)
    """LightGCN: propagation layers; SASRec: self-attention blocks."""
    heads: int = setting(1, at_least=1)
    """SASRec: attention heads."""
    dropout: float = setting(0.2, at_least=0, below=1)
    """SASRec: dropout on embeddings, attention and feed-forward outputs."""
    max_len: int = setting(25, at_least=1)
    """Most recent history items read by SASRec and by the fold-in of new users."""
    fold_in: str = setting("learned", choices=("learned", "mean"))
    """MF/LightGCN: how a user unseen in train is embedded from its history: ``learned`` or ``mean``
    (see :mod:`corarec.cf.fold_in`)."""

    def __post_init__(self) -> None:
        super().__post_init__()  # every field's type and range
        if self.dim % self.heads:
            raise SettingError(f"dim {self.dim} is not divisible by heads {self.heads}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "config") -> "CFConfig":
        """Rebuild from a mapping (``config.json``); unknown keys and bad values name ``where``."""
        return config_from_dict(cls, data, where)


PRESETS: dict[str, dict[str, Any]] = {
    "mf": dict(lr=1e-3, weight_decay=3e-5),
    "lightgcn": dict(lr=3e-3, weight_decay=1e-5),
    "sasrec": dict(dim=SASREC_DIM, lr=1e-3, weight_decay=0.0),
}
"""Per-model defaults that differ from the dataclass defaults (chosen on the ML-100K valid split)."""

GRID: dict[str, dict[str, list[float]]] = {
    "mf": dict(lr=[1e-3, 3e-3], weight_decay=[0.0, 1e-5, 1e-4], dim=[64, 256]),
    "lightgcn": dict(lr=[1e-3, 3e-3], weight_decay=[0.0, 1e-5, 1e-4], dim=[64, 256]),
    "sasrec": dict(lr=[1e-3, 3e-3], weight_decay=[0.0, 1e-4], dim=[SASREC_DIM, 2 * SASREC_DIM]),
}
"""The ``--grid`` search: every lr × weight_decay × dim combination (12 runs for MF and LightGCN, 8 for
SASRec, whose transformer is slow above 64), best valid AUC kept. Weight decay reaches 1e-4 because the
presets' values over-fit on other splits (validation falling from the first epoch on)."""
GRID_KEYS = ("lr", "weight_decay", "dim")
"""The settings a grid may search."""


def grid_candidates(base: CFConfig, space: dict[str, list]) -> list[CFConfig]:
    """``base`` with every combination of the values in ``space`` (keys of :data:`GRID_KEYS`; a key
    left out keeps ``base``'s value), in a fixed order: lr, then weight decay, then dim."""
    unknown = sorted(set(space) - set(GRID_KEYS))
    if unknown:
        raise CorarecError(f"CF grid: unknown setting(s) {', '.join(unknown)}; a grid searches {', '.join(GRID_KEYS)}")
    keys = [key for key in GRID_KEYS if key in space]
    for key in keys:
        if not isinstance(space[key], (list, tuple)) or not space[key]:
            raise CorarecError(f"CF grid: {key} must be a non-empty list of values, got {space[key]!r}")
    return [CFConfig(**{**base.to_dict(), **dict(zip(keys, values))})
            for values in itertools.product(*(space[key] for key in keys))]


def make_config(model: str, **overrides: Any) -> CFConfig:
    """The preset of ``model`` with the given fields replaced (``None`` values are ignored)."""
    if model not in CF_MODELS:
        raise CorarecError(f"unknown CF model '{model}'; choose one of {', '.join(CF_MODELS)}")
    values = dict(PRESETS[model])
    values.update({k: v for k, v in overrides.items() if v is not None})
    return config_from_dict(CFConfig, {"model": model, **values}, "CF settings")
