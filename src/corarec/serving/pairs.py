"""What a user sends in: raw ids, (user, item) pairs and candidate lists, checked into plain values.

Used by :class:`~corarec.serving.recommender.Recommender`, ``corarec predict`` and the HTTP service.
A raw id is the dataset's own id as a string (:func:`normalise_id`: ``7``, ``7.0`` and ``"7"``
agree); every error is one :class:`~corarec.errors.CorarecError` line naming the row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from corarec.data.raw import read_table
from corarec.errors import CorarecError

PAIR_COLUMNS = ("user", "item")
"""Required columns of a pairs table (raw ids)."""


def pair_records(pairs: Any, where: str = "pairs") -> list[dict[str, Any]]:
    """Validate pairs (a DataFrame, or a list of ``(user, item[, history])`` tuples or dicts) into
    dicts with ``user``, ``item`` as the dataset's string keys, plus ``label`` (0/1), ``history``
    (list of raw ids, or None) and ``title`` (the text of an item the dataset does not know, or
    None) when the input has them. Errors name the 1-based row."""
    if isinstance(pairs, pd.DataFrame):
        missing = [c for c in PAIR_COLUMNS if c not in pairs.columns]
        if missing:
            raise CorarecError(f"{where}: missing column(s) {', '.join(missing)}; "
                               f"found {', '.join(map(str, pairs.columns))}")
        keep = [c for c in ("user", "item", "label", "history", "title") if c in pairs.columns]
        pairs = pairs[keep].to_dict("records")
    out = []
    for n, pair in enumerate(pairs, start=1):
        if isinstance(pair, (tuple, list)) and len(pair) in (2, 3):
            pair = dict(zip(("user", "item", "history"), pair))
        elif not isinstance(pair, dict):
            raise CorarecError(f"{where}: row {n}: expected (user, item) or {{'user': .., 'item': ..}}, got {pair!r}")
        record: dict[str, Any] = {}
        for column in PAIR_COLUMNS:
            if column not in pair:
                raise CorarecError(f"{where}: row {n}: missing '{column}'")
            record[column] = normalise_id(pair[column])
            if record[column] is None:
                raise CorarecError(f"{where}: row {n}: {column} is empty")
        if "label" in pair:
            record["label"] = _label(pair["label"], f"{where}: row {n}")
        if "history" in pair:
            record["history"] = _history(pair["history"], f"{where}: row {n}")
        if "title" in pair:
            record["title"] = item_title(pair["title"], f"{where}: row {n}")
        out.append(record)
    if not out:
        raise CorarecError(f"{where}: no pairs to score")
    if "label" in out[0] and any("label" not in r for r in out):
        raise CorarecError(f"{where}: some pairs have a label and some do not")
    return out


def normalise_id(value: Any) -> str | None:
    """A raw id as the dataset's string key (``7``, ``7.0`` and ``"7"`` agree); None when empty."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, (bool, np.bool_)):
        return str(value)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    text = str(value).strip()
    return text or None


def candidate_records(candidates: Any, where: str = "candidates") -> list[dict[str, Any]]:
    """Candidates (raw ids, or ``{"item": id, "title": text}`` dicts for items the dataset may not
    know) → ``{"item": key, "title": text or None}`` dicts. Errors name the 1-based position."""
    out = []
    for n, candidate in enumerate(candidates, start=1):
        if isinstance(candidate, dict):
            unknown = set(candidate) - {"item", "title"}
            if "item" not in candidate or unknown:
                raise CorarecError(f"{where}: item {n}: expected an id or {{'item': .., 'title': ..}}, got {candidate!r}")
            key, title = normalise_id(candidate["item"]), item_title(candidate.get("title"), f"{where}: item {n}")
        else:
            key, title = normalise_id(candidate), None
        if key is None:
            raise CorarecError(f"{where}: item {n} is empty")
        out.append({"item": key, "title": title})
    return out


def item_title(value: Any, where: str) -> str | None:
    """An item's title as given by a user: text (surrounding spaces removed), or None when empty."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if not isinstance(value, str):
        raise CorarecError(f"{where}: title must be text, got {value!r}")
    return value.strip() or None


def read_candidates(path: str | Path) -> list[Any]:
    """Raw item ids from a ``.txt`` (one per line), ``.csv`` or ``.parquet`` (``item`` column). A table
    with a ``title`` column gives ``{"item", "title"}`` dicts instead (titles name new items)."""
    path = Path(path)
    if not path.is_file():
        raise CorarecError(f"{path}: candidates file not found")
    if path.suffix in (".csv", ".parquet"):
        frame = read_table(path)
        if "item" not in frame:
            raise CorarecError(f"{path}: needs an 'item' column; found {', '.join(map(str, frame.columns))}")
        raw = frame["item"].tolist()
        if "title" in frame:
            titles = frame["title"].astype(object).where(frame["title"].notna(), None).tolist()
            records = [{"item": item, "title": title} for item, title in zip(raw, titles)]
            if not records:
                raise CorarecError(f"{path}: no candidate items")
            return candidate_records(records, str(path))
    else:
        raw = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    ids = []
    for row, value in enumerate(raw, start=1):
        key = normalise_id(value)
        if key is None:
            raise CorarecError(f"{path}: row {row}: item is empty")
        ids.append(key)
    if not ids:
        raise CorarecError(f"{path}: no candidate items")
    return ids


def check_k_pool(k: int, pool: int, has_candidates: bool) -> None:
    """``k`` ≥ 1, and without candidates a CF pool of at least ``k`` items."""
    if k < 1:
        raise CorarecError(f"k must be at least 1, got {k}")
    if not has_candidates and pool < k:
        raise CorarecError(f"pool ({pool}) must be at least k ({k})")


def _label(value: Any, where: str) -> int:
    text = normalise_id(value)
    if text not in ("0", "1"):
        raise CorarecError(f"{where}: label must be 0 or 1, got {value!r}")
    return int(text)


def _history(value: Any, where: str) -> list[str] | None:
    """A history cell: list-like of raw ids, a space/comma/``|``-separated string, or empty."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, str):
        parts = value.replace(",", " ").replace("|", " ").split()
    elif isinstance(value, (list, tuple, np.ndarray)):
        parts = list(value)
    else:
        raise CorarecError(f"{where}: history must be a list of item ids, got {value!r}")
    ids = [normalise_id(p) for p in parts]
    if any(i is None for i in ids):
        raise CorarecError(f"{where}: history holds an empty item id")
    return ids
