"""Collaborative-filtering models (MF, LightGCN, SASRec) behind one interface, and their training."""

from corarec.cf.base import HISTORY_PAD, CFBatch, CFModel, history_tensor
from corarec.cf.checkpoint import build_model, load_cf, save_cf
from corarec.cf.config import CF_MODELS, CFConfig, make_config
from corarec.cf.train import cf_logits, evaluate_cf, fit_cf, rows_tensors, train_cf

__all__ = [
    "CF_MODELS",
    "HISTORY_PAD",
    "CFBatch",
    "CFConfig",
    "CFModel",
    "build_model",
    "cf_logits",
    "evaluate_cf",
    "fit_cf",
    "history_tensor",
    "load_cf",
    "make_config",
    "rows_tensors",
    "save_cf",
    "train_cf",
]
