"""Bring your own data: a CSV/TSV/parquet interaction log plus an item-title table → :class:`RawData`.

**Interactions** (``--interactions``): one row per (user, item) event with a header. Columns are
found by name, case-insensitively, from these candidates (override with ``columns=``):

- user: ``user_id``, ``user``, ``userid``, ``uid``, ``reviewerid``, ``customer_id``
- item: ``item_id``, ``item``, ``itemid``, ``iid``, ``movie_id``, ``movieid``, ``asin``, ``product_id``, ``book_id``
- rating: ``rating``, ``overall``, ``score``, ``stars`` — used with ``label_threshold``
- label: ``label``, ``click``, ``clicked``, ``target``, ``y`` — 0/1 (or true/false), used without it
- timestamp: ``timestamp``, ``time``, ``ts``, ``unixreviewtime``, ``date``, ``datetime`` — integer
  Unix seconds, or date/time strings (read as UTC)

Label: ``rating >= label_threshold`` (a finite number) when a threshold is given; otherwise the
log's label column (or a rating column that only holds 0/1).

Both files are read by :func:`corarec.data.raw.read_table` (``.csv`` or ``.tsv``, optionally gzipped,
or ``.parquet``), the reader ``corarec predict`` uses too.
Every column holds one value per row (a parquet column of lists is an error), every CSV/TSV line as
many fields as the header, and numeric timestamps lie within what a date can hold (1677–2262).
Errors name the file and the line as an editor shows it (the header is line 1; blank lines and
line breaks inside quoted fields are counted), or the 0-based row of a parquet file.

**Items** (``--items``): columns item (candidates above) and title (``title``, ``name``,
``item_title``, ``movie_title``, ``book_title``). Every item of the log needs a non-empty title;
for a repeated item the first row wins; items that never occur in the log are left out.

**Split** (``--split``), over all rows sorted by time (file order among equal times):

- three fractions ``"0.8,0.1,0.1"``: the first 80 % of rows train, the next 10 % valid, the rest test;
- two cut dates ``"2020-01-01,2020-02-01"`` (UTC): train before the first, valid up to the second, test after.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from corarec.data.raw import (UNIX_SECONDS, UNIX_SECONDS_SPAN, RawData, csv_line_of_row, is_parquet, read_table,
                              table_separator)
from corarec.errors import CorarecError

CANDIDATES: dict[str, tuple[str, ...]] = {
    "user": ("user_id", "user", "userid", "uid", "reviewerid", "customer_id"),
    "item": ("item_id", "item", "itemid", "iid", "movie_id", "movieid", "asin", "product_id", "book_id"),
    "rating": ("rating", "overall", "score", "stars"),
    "label": ("label", "click", "clicked", "target", "y"),
    "timestamp": ("timestamp", "time", "ts", "unixreviewtime", "date", "datetime"),
    "title": ("title", "name", "item_title", "movie_title", "book_title"),
}
_TRUE = {"1", "1.0", "true", "yes"}
_FALSE = {"0", "0.0", "false", "no"}


def load_custom(
    interactions: str | Path | None,
    items: str | Path | None,
    label_threshold: float | None = None,
    split: str = "0.8,0.1,0.1",
    item_noun: str = "item",
    name: str = "custom",
    columns: dict[str, str] | None = None,
) -> RawData:
    """Read a user's log and title table, label and split it (see the module docstring)."""
    if interactions is None:
        raise CorarecError("custom: pass --interactions FILE (CSV, TSV or parquet interaction log)")
    if items is None:
        raise CorarecError("custom: pass --items FILE (CSV, TSV or parquet table with item and title)")
    if label_threshold is not None and (isinstance(label_threshold, bool) or not isinstance(label_threshold, (int, float))
                                        or not math.isfinite(label_threshold)):
        raise CorarecError(f"--label-threshold must be a finite number, got {label_threshold!r}")
    log_path, items_path = Path(interactions), Path(items)
    log = read_table(log_path)
    if log.empty:
        raise CorarecError(f"{log_path}: no rows")
    chosen = columns or {}

    user_col = _column(log, "user", log_path, chosen)
    item_col = _column(log, "item", log_path, chosen)
    time_col = _column(log, "timestamp", log_path, chosen)
    for col in (user_col, item_col, time_col):
        _no_missing(log, col, log_path)
    rows = pd.DataFrame({
        "user_raw": log[user_col].astype(str).str.strip(),
        "item_raw": log[item_col].astype(str).str.strip(),
        "label": _labels(log, log_path, label_threshold, chosen),
        "timestamp": _timestamps(log[time_col], log_path, time_col),
    })

    table = read_table(items_path)
    item_key = _column(table, "item", items_path, chosen)
    title_col = _column(table, "title", items_path, chosen)
    table = table[[item_key, title_col]].dropna()
    table = table.assign(key=table[item_key].astype(str).str.strip(), title=table[title_col].astype(str).str.strip())
    table = table[table["title"] != ""].drop_duplicates("key", keep="first")
    titles = dict(zip(table["key"], table["title"]))
    untitled = ~rows["item_raw"].isin(titles.keys())
    if untitled.any():
        first = int(np.flatnonzero(untitled.to_numpy())[0])
        raise CorarecError(
            f"{_where(log_path, first)}: item {rows['item_raw'].iloc[first]!r} has no title in {items_path} "
            f"({int(rows.loc[untitled, 'item_raw'].nunique())} item(s) without a title)"
        )

    rows["split"], rules, protocol_split = _split(rows["timestamp"].to_numpy(), split)
    return RawData(
        name=name, item_noun=item_noun, rows=rows, titles=titles,
        protocol={
            "dataset": "custom", "label_threshold": label_threshold, "split": protocol_split,
            "columns": {"user": user_col, "item": item_col, "timestamp": time_col, "title": title_col},
        },
        split_rules=rules, source=str(log_path),
    )


def _column(frame: pd.DataFrame, role: str, path: Path, chosen: dict[str, str], required: bool = True) -> str | None:
    if role in chosen:
        if chosen[role] not in frame.columns:
            raise CorarecError(f"{path}: column {chosen[role]!r} (given for {role}) not found; found {', '.join(map(str, frame.columns))}")
        _one_value_per_row(frame, chosen[role], path)
        return chosen[role]
    lower = {str(c).strip().lower(): c for c in frame.columns}
    for candidate in CANDIDATES[role]:
        if candidate in lower:
            _one_value_per_row(frame, lower[candidate], path)
            return lower[candidate]
    if required:
        raise CorarecError(
            f"{path}: no {role} column (looked for {', '.join(CANDIDATES[role])}); found {', '.join(map(str, frame.columns))}"
        )
    return None


def _labels(log: pd.DataFrame, path: Path, threshold: float | None, chosen: dict[str, str]) -> np.ndarray:
    if threshold is not None:
        col = _column(log, "rating", path, chosen)
        return (_numbers(log[col], path, col) >= threshold).astype(np.int8)
    col = _column(log, "label", path, chosen, required=False)
    if col is None:
        rating = _column(log, "rating", path, chosen, required=False)
        if rating is None:
            raise CorarecError(f"{path}: no label column (looked for {', '.join(CANDIDATES['label'])}) and no rating column")
        values = _numbers(log[rating], path, rating)
        if not np.isin(values, (0, 1)).all():
            raise CorarecError(f"{path}: column {rating!r} holds ratings, not 0/1 labels; pass --label-threshold (e.g. 4)")
        return values.astype(np.int8)
    text = log[col].astype(str).str.strip().str.lower()
    bad = ~text.isin(_TRUE | _FALSE)
    if bad.any():
        first = int(np.flatnonzero(bad.to_numpy())[0])
        raise CorarecError(f"{_where(path, first)}: {col} must be 0 or 1, got {log[col].iloc[first]!r}")
    return text.isin(_TRUE).to_numpy().astype(np.int8)


def _numbers(values: pd.Series, path: Path, col: str) -> np.ndarray:
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(numbers)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise CorarecError(f"{_where(path, first)}: {col} must be a number, got {values.iloc[first]!r}")
    return numbers


def _timestamps(values: pd.Series, path: Path, col: str) -> np.ndarray:
    if pd.api.types.is_datetime64_any_dtype(values):  # parquet datetime column (naive = UTC)
        return _seconds(pd.to_datetime(values, utc=True))
    numbers = pd.to_numeric(values, errors="coerce")
    array = numbers.to_numpy(dtype=np.float64)
    for bad, problem in ((np.isinf(array), "must be Unix seconds or a date"),
                         (array > 1e11, "looks like milliseconds; give Unix seconds"),
                         ((array < UNIX_SECONDS[0]) | (array > UNIX_SECONDS[1]), f"is out of range ({UNIX_SECONDS_SPAN})")):
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise CorarecError(f"{_where(path, first)}: {col} {values.iloc[first]!r} {problem}")
    seconds = np.zeros(len(values), dtype=np.int64)
    is_number = numbers.notna().to_numpy()
    seconds[is_number] = np.floor(numbers[is_number].to_numpy(dtype=np.float64)).astype(np.int64)
    if not is_number.all():  # the rest must be dates (ISO 8601 or similar), read as UTC
        text = values[~is_number].astype(str)
        stamps = pd.to_datetime(text, utc=True, errors="coerce", format="mixed")
        if stamps.isna().any():
            first = int(np.flatnonzero(~is_number)[np.flatnonzero(stamps.isna().to_numpy())[0]])
            raise CorarecError(f"{_where(path, first)}: {col} must be Unix seconds or a date, got {values.iloc[first]!r}")
        seconds[~is_number] = _seconds(stamps)
    return seconds


def _seconds(stamps: pd.Series) -> np.ndarray:
    epoch = pd.Timestamp(0, tz="UTC")
    return ((stamps - epoch) // pd.Timedelta(seconds=1)).to_numpy(dtype=np.int64)


def _split(timestamps: np.ndarray, spec: str) -> tuple[np.ndarray, dict[str, str], dict]:
    parts = [p.strip() for p in str(spec).split(",")]
    order = np.argsort(timestamps, kind="stable")
    out = np.empty(len(timestamps), dtype=object)
    if len(parts) == 2 and all(re.match(r"\d{4}-\d{2}-\d{2}", p) for p in parts):
        try:
            cuts = [int(pd.Timestamp(p, tz="UTC").timestamp()) for p in parts]
        except ValueError:
            raise CorarecError(f"--split: cannot read the dates {spec!r} (expected YYYY-MM-DD,YYYY-MM-DD)") from None
        if cuts[0] >= cuts[1]:
            raise CorarecError(f"--split: the first cut date must come before the second, got {spec!r}")
        out[:] = "valid"
        out[timestamps < cuts[0]] = "train"
        out[timestamps >= cuts[1]] = "test"
        rules = {"train": f"rows before {parts[0]}", "valid": f"rows from {parts[0]} to before {parts[1]}",
                 "test": f"rows from {parts[1]} on"}
        return out, rules, {"cut_dates": parts}
    try:
        fractions = [float(p) for p in parts]
    except ValueError:
        fractions = []
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise CorarecError(
            f"--split: expected three fractions summing to 1 ('0.8,0.1,0.1') or two dates ('2020-01-01,2020-02-01'), got {spec!r}"
        )
    n = len(timestamps)
    n_train = int(round(n * fractions[0]))
    n_valid = int(round(n * (fractions[0] + fractions[1]))) - n_train
    out[order[:n_train]] = "train"
    out[order[n_train:n_train + n_valid]] = "valid"
    out[order[n_train + n_valid:]] = "test"
    rules = {name: f"a {f:g} time fraction of {n} rows" for name, f in zip(("train", "valid", "test"), fractions)}
    return out, rules, {"fractions": fractions}


def _no_missing(frame: pd.DataFrame, col: str, path: Path) -> None:
    missing = frame[col].isna() | (frame[col].astype(str).str.strip() == "")
    if missing.any():
        first = int(np.flatnonzero(missing.to_numpy())[0])
        raise CorarecError(f"{_where(path, first)}: {col} is empty")


def _one_value_per_row(frame: pd.DataFrame, col: str, path: Path) -> None:
    """A column of lists (parquet) would turn into one text per list: an error naming the first row."""
    values = frame[col]
    if values.dtype != object:
        return
    nested = values.map(lambda v: isinstance(v, (list, tuple, set, dict, np.ndarray))).to_numpy(dtype=bool)
    if nested.any():
        first = int(np.flatnonzero(nested)[0])
        shown = repr(list(values.iloc[first]) if isinstance(values.iloc[first], np.ndarray) else values.iloc[first])
        raise CorarecError(f"{_where(path, first)}: column {col!r} holds a list ({shown[:40]}), expected one value per row")


def _where(path: Path, row: int) -> str:
    """``file:line`` of data row ``row`` (0-based) for CSV/TSV, as an editor numbers lines (header =
    line 1, blank lines and quoted line breaks counted); ``file: row N`` for parquet (0-based)."""
    if is_parquet(path):
        return f"{path}: row {row}"
    return f"{path}:{csv_line_of_row(path, table_separator(path), row)}"
