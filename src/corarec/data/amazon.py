"""Amazon-Book (Amazon 2018 "Books" 5-core reviews + metadata) → :class:`~corarec.data.raw.RawData`.

The CoLLM protocol used by CoRA:

1. keep reviews of 2017 (UTC date of ``unixReviewTime``) whose book has a title in the metadata;
2. keep users and items with more than 20 interactions among those rows — counted once, a single
   pass (an item may fall to ≤ 20 after users are removed; it stays);
3. label = 1 when the rating (``overall``) is 5;
4. train = January–November; December sorted by time (file order among equal times) and cut in
   half: the first ``n // 2`` rows are valid, the rest test.

Files, in ``--raw`` (gzipped or not): reviews ``Books_5.json[.gz]`` (or ``reviews_Books_5.json[.gz]``),
one JSON object per line with ``reviewerID``, ``asin``, ``overall``, ``unixReviewTime``; metadata
``meta_Books.json[.gz]``, one object per line with ``asin`` and ``title`` — strict JSON (2018) or a
Python dict literal (older dumps), read with :func:`json.loads` / :func:`ast.literal_eval`, never ``eval``.
"""

from __future__ import annotations

import ast
import html
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from corarec.data.raw import RawData, fixed_protocol_data, numbered_lines
from corarec.errors import CorarecError

REVIEW_FILES = ("Books_5.json.gz", "Books_5.json", "reviews_Books_5.json.gz", "reviews_Books_5.json")
META_FILES = ("meta_Books.json.gz", "meta_Books.json")
_ASIN = re.compile(r"""["']asin["']\s*:\s*["']([^"']+)["']""")


@dataclass(frozen=True)
class AmazonBookProtocol:
    """How Amazon-Book is filtered, labelled and split (defaults: the CoLLM protocol)."""

    year: int = 2017
    """Calendar year (UTC) of the reviews that are kept."""
    min_interactions: int = 20
    """Users and items need strictly more interactions than this in the kept year (one pass)."""
    positive_rating: float = 5.0
    """Label = 1 when the rating equals this."""
    last_train_month: int = 11
    """Months 1..this of the year are train; the next month is halved into valid and test."""


def load_amazon_book(raw: Path | None, protocol: AmazonBookProtocol = AmazonBookProtocol()) -> RawData:
    """Read the reviews and metadata in the folder ``raw`` and apply the protocol."""
    if raw is None:
        raise CorarecError("amazon-book: pass --raw DIR, the folder holding Books_5.json.gz and meta_Books.json.gz")
    folder = Path(raw)
    if not folder.is_dir():
        raise CorarecError(f"{folder}: Amazon-Book directory not found")
    reviews_path = _find(folder, REVIEW_FILES, "reviews")
    meta_path = _find(folder, META_FILES, "metadata")

    rows = read_reviews(reviews_path, protocol.year)
    if rows.empty:
        raise CorarecError(f"{reviews_path}: no reviews from {protocol.year}")
    titles = read_titles(meta_path, set(rows["item_raw"]))
    rows = rows[rows["item_raw"].isin(titles.keys())]

    users = rows["user_raw"].value_counts()
    items = rows["item_raw"].value_counts()
    keep = rows["user_raw"].map(users).gt(protocol.min_interactions) & rows["item_raw"].map(items).gt(protocol.min_interactions)
    rows = rows[keep].reset_index(drop=True)

    rows["label"] = (rows.pop("rating") == protocol.positive_rating).astype(np.int8)
    month = pd.to_datetime(rows["timestamp"], unit="s", utc=True).dt.month.to_numpy()
    split = np.full(len(rows), None, dtype=object)
    split[month <= protocol.last_train_month] = "train"
    halved = np.flatnonzero(month == protocol.last_train_month + 1)
    halved = halved[np.argsort(rows["timestamp"].to_numpy()[halved], kind="stable")]
    split[halved[: len(halved) // 2]] = "valid"
    split[halved[len(halved) // 2:]] = "test"

    last = protocol.last_train_month
    rules = {
        "train": f"months 1–{last} of {protocol.year} after the >{protocol.min_interactions} filter",
        "valid": f"the first half of month {last + 1} of {protocol.year}",
        "test": f"the second half of month {last + 1} of {protocol.year}",
    }
    return fixed_protocol_data("amazon-book", "book", rows, split, titles, protocol, rules, str(reviews_path))


def read_reviews(path: Path, year: int) -> pd.DataFrame:
    """``user_raw``, ``item_raw``, ``rating``, ``timestamp`` of the reviews dated in ``year`` (UTC)."""
    start = int(pd.Timestamp(f"{year}-01-01", tz="UTC").timestamp())
    end = int(pd.Timestamp(f"{year + 1}-01-01", tz="UTC").timestamp())
    # Cheap pre-filter: a line whose reviewTime string names none of year-1..year+1 cannot be in
    # the year; every other line is parsed and tested on unixReviewTime.
    years = tuple(f", {y}\"" for y in (year - 1, year, year + 1))
    users, items, ratings, stamps = [], [], [], []
    for number, line in tqdm(numbered_lines(path), desc=f"reading {path.name}", unit=" lines", disable=None):
        if '"reviewTime"' in line and not any(y in line for y in years):
            continue
        record = _parse_json(line, path, number)
        try:
            stamp, rating = record["unixReviewTime"], record["overall"]
            user, item = record["reviewerID"], record["asin"]
        except KeyError as e:
            raise CorarecError(f"{path}:{number}: missing field {e.args[0]!r}") from None
        stamp = _number(stamp, path, number, "unixReviewTime", integer=True)
        if not start <= stamp < end:
            continue
        users.append(str(user))
        items.append(str(item))
        ratings.append(_number(rating, path, number, "overall", integer=False))
        stamps.append(stamp)
    return pd.DataFrame({
        "user_raw": users, "item_raw": items,
        "rating": np.asarray(ratings, dtype=np.float64), "timestamp": np.asarray(stamps, dtype=np.int64),
    })


def read_titles(path: Path, wanted: set[str]) -> dict[str, str]:
    """ASIN → title for the ASINs in ``wanted`` that have a non-empty title (first record wins)."""
    titles: dict[str, str] = {}
    for number, line in tqdm(numbered_lines(path), desc=f"reading {path.name}", unit=" lines", disable=None):
        match = _ASIN.search(line)
        if match and match.group(1) not in wanted:
            continue
        record = _parse_json(line, path, number, allow_python_literal=True)
        asin = str(record.get("asin", ""))
        if asin not in wanted or asin in titles:
            continue
        title = " ".join(html.unescape(str(record.get("title") or "")).split())
        if title:
            titles[asin] = title
    return titles


def _parse_json(line: str, path: Path, number: int, allow_python_literal: bool = False) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        if not allow_python_literal:
            raise CorarecError(f"{path}:{number}: malformed JSON ({e.msg} at column {e.colno})") from None
        try:
            record = ast.literal_eval(line)  # older dumps: Python dict literals (never eval)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise CorarecError(f"{path}:{number}: malformed line (neither JSON nor a Python dict literal)") from None
    if not isinstance(record, dict):
        raise CorarecError(f"{path}:{number}: expected an object, got {type(record).__name__}")
    return record


def _number(value: object, path: Path, number: int, field: str, integer: bool) -> float | int:
    try:
        result = float(value)  # accepts numbers and numeric strings
    except (TypeError, ValueError):
        result = float("nan")
    if not np.isfinite(result) or (integer and result != round(result)):
        kind = "an integer" if integer else "a number"
        raise CorarecError(f"{path}:{number}: {field} must be {kind}, got {value!r}")
    return int(result) if integer else result


def _find(folder: Path, names: tuple[str, ...], what: str) -> Path:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise CorarecError(f"{folder}: {what} file not found (looked for {', '.join(names)})")
