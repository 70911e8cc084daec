"""MovieLens-100K and MovieLens-1M → :class:`~corarec.data.raw.RawData`, split by calendar month (UTC).

- **ML-100K** (bundled with the ``recbole`` package, or the user's copy): label = rating ≥ 4;
  train 1997-09 … 1998-01, valid 1998-02, test 1998-03 … 1998-04 (66,994 / 10,991 / 22,015 rows).
  Titles are rebuilt as "Title (Year)" (just "Title" when the year is not four digits).
- **ML-1M** (GroupLens ``ratings.dat`` / ``movies.dat``, ``::``-separated, latin-1), the CoLLM
  protocol: month index counted from the first month of the data (0 = 2000-04), keep months 14–33,
  train 14–23, valid 24–28, test 29–33, label = rating ≥ 4.

Months are calendar months of the Unix timestamp in UTC. A row whose month is in no split is dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from corarec.utils.assets import ml100k_dir
from corarec.data.raw import (UNIX_SECONDS, UNIX_SECONDS_SPAN, RawData, fixed_protocol_data, parse_numbers,
                              read_delimited)
from corarec.errors import CorarecError


@dataclass(frozen=True)
class ML100KProtocol:
    """How ML-100K is labelled and split (defaults: the project's protocol)."""

    label_threshold: float = 4.0
    """Label = 1 when rating ≥ this."""
    train_months: tuple[str, str] = ("1997-09", "1998-01")
    """First and last calendar month (UTC, inclusive) of the train split."""
    valid_months: tuple[str, str] = ("1998-02", "1998-02")
    """First and last calendar month of the valid split."""
    test_months: tuple[str, str] = ("1998-03", "1998-04")
    """First and last calendar month of the test split."""


@dataclass(frozen=True)
class ML1MProtocol:
    """How ML-1M is labelled and split (defaults: the CoLLM protocol used by CoRA)."""

    label_threshold: float = 4.0
    """Label = 1 when rating ≥ this."""
    first_month: str | None = None
    """Calendar month that gets index 0, ``YYYY-MM``; None = the first month in ``ratings.dat`` (2000-04)."""
    train_slots: tuple[int, int] = (14, 23)
    """First and last month index (inclusive) of the train split."""
    valid_slots: tuple[int, int] = (24, 28)
    """First and last month index of the valid split."""
    test_slots: tuple[int, int] = (29, 33)
    """First and last month index of the test split; months after it (and before train) are dropped."""


def load_ml100k(raw: Path | None = None, protocol: ML100KProtocol = ML100KProtocol()) -> RawData:
    """Read ML-100K from ``raw`` (RecBole ``ml-100k.inter``/``.item`` or GroupLens ``u.data``/``u.item``), default: the bundled copy."""
    folder = Path(raw) if raw is not None else ml100k_dir()
    if not folder.is_dir():
        raise CorarecError(f"{folder}: ML-100K directory not found")
    if (folder / "ml-100k.inter").exists():
        rows, titles, source = _read_recbole_100k(folder)
    elif (folder / "u.data").exists():
        rows, titles, source = _read_grouplens_100k(folder)
    else:
        raise CorarecError(f"{folder}: neither ml-100k.inter/ml-100k.item (RecBole) nor u.data/u.item (GroupLens) found")

    rows["label"] = (rows.pop("rating") >= protocol.label_threshold).astype(np.int8)
    months = {"train": protocol.train_months, "valid": protocol.valid_months, "test": protocol.test_months}
    ranges = {name: tuple(_parse_month(m, f"{name}_months") for m in pair) for name, pair in months.items()}
    split = assign_splits(month_index(rows["timestamp"].to_numpy()), ranges)
    rules = {name: f"months {first} … {last}" for name, (first, last) in months.items()}
    return fixed_protocol_data("ml-100k", "movie", rows, split, titles, protocol, rules, source)


def load_ml1m(raw: Path | None, protocol: ML1MProtocol = ML1MProtocol()) -> RawData:
    """Read GroupLens ML-1M (``ratings.dat``, ``movies.dat``) from the directory ``raw``."""
    if raw is None:
        raise CorarecError("ml-1m: pass --raw DIR, the folder holding GroupLens ratings.dat and movies.dat")
    folder = Path(raw)
    if folder.is_dir() and not (folder / "ratings.dat").exists() and (folder / "ml-1m" / "ratings.dat").exists():
        folder = folder / "ml-1m"
    if not folder.is_dir():
        raise CorarecError(f"{folder}: ML-1M directory not found")
    ratings_path, movies_path = folder / "ratings.dat", folder / "movies.dat"

    _, fields, lines = read_delimited(ratings_path, "::", 4, encoding="latin-1")
    if not fields:
        raise CorarecError(f"{ratings_path}: no ratings")
    rows = _rating_rows(ratings_path, lines, *zip(*fields))
    _, movie_fields, _ = read_delimited(movies_path, "::", 3, encoding="latin-1")
    titles = {m[0].strip(): m[1].strip() for m in movie_fields}

    rows["label"] = (rows.pop("rating") >= protocol.label_threshold).astype(np.int8)
    month = month_index(rows["timestamp"].to_numpy())
    origin = _parse_month(protocol.first_month, "first_month") if protocol.first_month else int(month.min())
    slots = month - origin
    ranges = {"train": protocol.train_slots, "valid": protocol.valid_slots, "test": protocol.test_slots}
    first = _month_name(origin)
    rules = {name: f"months {lo}–{hi} counted from {first}" for name, (lo, hi) in ranges.items()}
    return fixed_protocol_data("ml-1m", "movie", rows, assign_splits(slots, ranges), titles, protocol, rules,
                               str(ratings_path), month_0=first)


def month_index(timestamps: np.ndarray) -> np.ndarray:
    """Calendar month of each Unix timestamp in UTC as ``year * 12 + month - 1``."""
    stamps = pd.to_datetime(pd.Series(timestamps, dtype=np.int64), unit="s", utc=True)
    return (stamps.dt.year * 12 + stamps.dt.month - 1).to_numpy(dtype=np.int64)


def assign_splits(index: np.ndarray, ranges: dict[str, tuple[int, int]]) -> np.ndarray:
    """Split name of each row whose ``index`` lies in a split's inclusive range, else None."""
    out = np.full(len(index), None, dtype=object)
    for name, (lo, hi) in ranges.items():
        out[(index >= lo) & (index <= hi)] = name
    return out


def _read_recbole_100k(folder: Path) -> tuple[pd.DataFrame, dict[str, str], str]:
    inter_path, item_path = folder / "ml-100k.inter", folder / "ml-100k.item"
    head, fields, lines = read_delimited(inter_path, "\t", 4, header=True)
    names = _field_names(head, inter_path, ("user_id", "item_id", "rating", "timestamp"))
    columns = list(zip(*fields)) if fields else [()] * 4
    rows = _rating_rows(inter_path, lines, *(columns[names[n]] for n in ("user_id", "item_id", "rating", "timestamp")))
    head, item_fields, _ = read_delimited(item_path, "\t", 4, header=True)
    names = _field_names(head, item_path, ("item_id", "movie_title", "release_year"))
    titles = {
        f[names["item_id"]].strip(): _title_with_year(f[names["movie_title"]], f[names["release_year"]])
        for f in item_fields
    }
    return rows, titles, str(inter_path)


def _read_grouplens_100k(folder: Path) -> tuple[pd.DataFrame, dict[str, str], str]:
    data_path, item_path = folder / "u.data", folder / "u.item"
    _, fields, lines = read_delimited(data_path, "\t", 4)
    rows = _rating_rows(data_path, lines, *(zip(*fields) if fields else [()] * 4))
    _, item_fields, _ = read_delimited(item_path, "|", 24, encoding="latin-1")
    titles = {f[0].strip(): f[1].strip() for f in item_fields}  # GroupLens titles already hold "(Year)"
    return rows, titles, str(data_path)


def _rating_rows(path: Path, lines: list[int], users: Sequence[str], items: Sequence[str], ratings: Sequence[str],
                 timestamps: Sequence[str]) -> pd.DataFrame:
    """``user_raw``, ``item_raw``, ``rating``, ``timestamp`` from the text fields of a ratings file (``lines``: the
    line of each row, for errors)."""
    return pd.DataFrame({
        "user_raw": [v.strip() for v in users],
        "item_raw": [v.strip() for v in items],
        "rating": parse_numbers(ratings, path, lines, "rating", integer=False),
        "timestamp": parse_numbers(timestamps, path, lines, "timestamp", integer=True,
                                   limits=UNIX_SECONDS, span=UNIX_SECONDS_SPAN),
    })


def _field_names(head: list[str] | None, path: Path, wanted: tuple[str, ...]) -> dict[str, int]:
    """Column positions by RecBole header name (``user_id:token`` → ``user_id``)."""
    names = [h.split(":", 1)[0].strip() for h in head or []]
    missing = [w for w in wanted if w not in names]
    if missing:
        raise CorarecError(f"{path}:1: missing column(s) {', '.join(missing)} in header {' '.join(head or [])!r}")
    return {w: names.index(w) for w in wanted}


def _title_with_year(title: str, year: str) -> str:
    title, year = title.strip(), year.strip()
    return f"{title} ({year})" if re.fullmatch(r"\d{4}", year) else title


def _parse_month(text: str, option: str) -> int:
    match = re.fullmatch(r"(\d{4})-(\d{2})", str(text).strip())
    if not match or not 1 <= int(match.group(2)) <= 12:
        raise CorarecError(f"{option}: expected a month as YYYY-MM, got {text!r}")
    return int(match.group(1)) * 12 + int(match.group(2)) - 1


def _month_name(index: int) -> str:
    return f"{index // 12:04d}-{index % 12 + 1:02d}"
