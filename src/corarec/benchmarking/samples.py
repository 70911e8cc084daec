"""The rows every method is judged on: a validation sample and a test sample, both of whole users.

Both are drawn with the benchmark's *sample seed*, never with a training seed, so that every method
and every training seed is scored on the very same rows. Whole users keep UAUC meaningful and let
the confidence intervals resample users (:mod:`corarec.evaluation.bootstrap`).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from corarec.data.sampling import subsample_users
from corarec.errors import CorarecError

DEFAULT_MAX_SAMPLES = 4000
"""Rows of each sample when neither the option nor the preset's ``benchmark`` section says
(MovieLens-100K: 4,000 validation rows are 76 users, 4,000 test rows 54 users at sample seed 0)."""


def sample_size(given: int | None, sections: dict, key: str) -> int | None:
    """``--max-test-samples`` / ``--max-valid-samples``: the option, else the preset's
    ``benchmark.<key>``, else :data:`DEFAULT_MAX_SAMPLES`; 0 (or null in the preset) means the
    whole split (None)."""
    value = given if given is not None else (sections.get("benchmark") or {}).get(key, DEFAULT_MAX_SAMPLES)
    if value is None:  # `max_test_samples: null` in a preset
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CorarecError(f"{key}: expected a whole number of rows >= 0 (0: the whole split), got {value!r}")
    return value or None


def draw(split: pd.DataFrame, name: str, max_samples: int | None, seed: int) -> tuple[pd.DataFrame, dict]:
    """The whole-user sample of ``split`` and its description (what reuse compares and results record)."""
    rows = subsample_users(split, max_samples, seed)
    if rows["label"].nunique() < 2:
        raise CorarecError(f"the {name} sample ({len(rows)} rows, sample seed {seed}) holds one label only; "
                           f"AUC is undefined: raise --max-{name}-samples or pick another --sample-seed")
    info = {"split": name, "max_samples": max_samples, "seed": seed, "rows": len(rows),
            "users": int(rows["user_id"].nunique()), "fingerprint": fingerprint(rows)}
    return rows, info


def fingerprint(rows: pd.DataFrame) -> str:
    """A short digest of the rows' users, items, times and labels: equal digests, equal rows."""
    digest = hashlib.sha256()
    for column in ("user_id", "item_id", "timestamp", "label"):
        digest.update(np.ascontiguousarray(rows[column].to_numpy(dtype=np.int64)).tobytes())
    return digest.hexdigest()[:16]
