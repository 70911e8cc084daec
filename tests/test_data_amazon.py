"""Amazon-Book (CoLLM protocol) on fixtures in the Amazon 2018 format: (gzipped) JSON lines."""

from __future__ import annotations

import calendar
import gzip
import json
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest

from corarec.data import read_dataset
from corarec.data.prepare import prepare

USERS = [f"U{i:02d}" for i in range(25)]  # 22+ interactions each in 2017: kept
BOOKS = [f"B{j:02d}" for j in range(22)]  # 25+ interactions each: kept


def utc(y, m, d, hh=12, mm=0, ss=0) -> int:
    return calendar.timegm((y, m, d, hh, mm, ss, 0, 0, 0))


def review(user: str, asin: str, rating: float, stamp: int, with_review_time: bool = True) -> str:
    record = {"overall": rating, "verified": True, "reviewerID": user, "asin": asin,
              "reviewerName": "A reader", "reviewText": "Loved it, 2017\" edition", "summary": "ok",
              "unixReviewTime": stamp}
    if with_review_time:
        day = datetime.fromtimestamp(stamp, tz=timezone.utc)
        record["reviewTime"] = f"{day.month:02d} {day.day}, {day.year}"
    return json.dumps(record)


# December reviews of kept users (all other grid cells fall in Jan–Nov). Sorted by time the order is
# U01, U00, then three ties on Dec 10 in *file* order U04, U02, U03, then U05, U06; 7 rows → 3 valid, 4 test.
DECEMBER = {
    ("U00", "B00"): utc(2017, 12, 5),
    ("U01", "B01"): utc(2017, 12, 3),
    ("U04", "B04"): utc(2017, 12, 10),
    ("U02", "B02"): utc(2017, 12, 10),
    ("U03", "B03"): utc(2017, 12, 10),
    ("U05", "B05"): utc(2017, 12, 20),
    ("U06", "B06"): utc(2017, 12, 31, 23, 59, 59),
}


def review_lines() -> list[str]:
    lines = []
    for (user, book), stamp in DECEMBER.items():  # written first so that file order decides ties
        lines.append(review(user, book, 5.0 if user in ("U00", "U04") else 4.0, stamp))
    for i, user in enumerate(USERS):
        for j, book in enumerate(BOOKS):
            if (user, book) in DECEMBER:
                continue
            stamp = utc(2017, 1 + (i + j) % 11, 1 + i % 28, 8 + j % 12)
            lines.append(review(user, book, 5.0 if (i + j) % 3 else 4.0, stamp, with_review_time=(i + j) % 5 != 0))
    for user in USERS[:20]:
        lines.append(review(user, "BY", 5.0, utc(2017, 6, 15)))  # BY: 20 here + UX = 21 → kept (one pass)
        lines.append(review(user, "BZ", 5.0, utc(2017, 6, 16)))  # BZ: exactly 20 → dropped
        lines.append(review(user, "BT", 5.0, utc(2017, 6, 17)))  # BT: no title in metadata → dropped
    for book in BOOKS[:19] + ["BY"]:
        lines.append(review("UX", book, 5.0, utc(2017, 3, 3)))  # UX: exactly 20 → dropped
    for book in BOOKS[:15]:
        lines.append(review("UY", book, 5.0, utc(2017, 4, 4)))  # UY: 15 in 2017 ...
    for book in BOOKS[15:]:
        lines.append(review("UY", book, 5.0, utc(2016, 12, 31, 23, 59, 59)))  # ... + 7 in 2016: dropped
    lines.append(review("U00", "B01", 5.0, utc(2018, 1, 1, 0, 0, 0)))  # 2018: outside the year
    lines.append(review("U00", "B02", 5.0, utc(2018, 1, 1, 0, 0, 0), with_review_time=False))
    return lines


def meta_lines() -> list[str]:
    lines = []
    for j, book in enumerate(BOOKS):
        if j == 1:  # an older dump's Python-literal line, with an HTML entity and a latin-1 letter
            lines.append(repr({"asin": book, "title": "Café &amp; Tea", "categories": [["Books"]]}))
        else:
            lines.append(json.dumps({"asin": book, "title": f"Book {j}", "price": "$1.00", "also_buy": []}))
    lines.append(json.dumps({"asin": "BY", "title": "  The   Y Book "}))
    lines.append(json.dumps({"asin": "BY", "title": "A duplicate record"}))  # first record wins
    lines.append(json.dumps({"asin": "BZ", "title": "The Z Book"}))
    lines.append(json.dumps({"asin": "BT", "title": ""}))
    lines.append(json.dumps({"asin": "NOT-REVIEWED", "title": "Unused"}))
    return lines


def write_amazon(folder: Path, gz: bool, reviews=None, meta=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, lines in (("Books_5.json", reviews or review_lines()), ("meta_Books.json", meta or meta_lines())):
        data = ("\n".join(lines) + "\n").encode("utf-8")
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return folder


@pytest.mark.parametrize("gz", [True, False])
def test_amazon_book_protocol(tmp_path, gz):
    ds = prepare("amazon-book", out=tmp_path / "ds", raw=write_amazon(tmp_path / "raw", gz=gz))
    users = ds.users["user_raw"].tolist()
    items = ds.items["item_raw"].tolist()
    assert users == USERS  # UX (20) and UY (15 in 2017) are filtered out
    assert items == BOOKS + ["BY"]  # BZ (20) and BT (no title) are filtered out; BY keeps 20 rows
    assert ds.item_noun == "book"
    titles = dict(zip(items, ds.items["title"]))
    assert titles["B01"] == "Café & Tea" and titles["BY"] == "The Y Book"

    assert len(ds.train) == 25 * 22 - 7 + 20
    assert (ds.train["item_id"] == items.index("BY")).sum() == 20
    train_months = pd.to_datetime(ds.train["timestamp"], unit="s", utc=True).dt.month
    assert train_months.max() <= 11

    def pairs(split):
        frame = ds.splits[split].sort_values("timestamp", kind="stable")
        return sorted((users[u], items[i]) for u, i in zip(frame["user_id"], frame["item_id"]))

    assert pairs("valid") == sorted([("U01", "B01"), ("U00", "B00"), ("U04", "B04")])
    assert pairs("test") == sorted([("U02", "B02"), ("U03", "B03"), ("U05", "B05"), ("U06", "B06")])
    label = dict(((users[u], items[i]), int(lab)) for u, i, lab in zip(ds.valid["user_id"], ds.valid["item_id"], ds.valid["label"]))
    assert label == {("U01", "B01"): 0, ("U00", "B00"): 1, ("U04", "B04"): 1}  # label = rating is 5

    stats = ds.info["stats"]["splits"]
    assert [stats[s]["rows"] for s in ("train", "valid", "test")] == [563, 3, 4]
    assert stats["test"]["warm_share"] == 1.0


def test_amazon_history_is_earlier_positives(tmp_path):
    ds = prepare("amazon-book", out=tmp_path / "ds", raw=write_amazon(tmp_path / "raw", gz=True))
    back = read_dataset(tmp_path / "ds")
    rows = pd.concat([back.splits[s].assign(split=k) for k, s in enumerate(("train", "valid", "test"))])
    for user, mine in rows.groupby("user_id"):
        mine = mine.sort_values(["timestamp", "split"], kind="stable")
        positives: list[int] = []
        for item, lab, hist in zip(mine["item_id"], mine["label"], mine["history"]):
            assert list(hist) == positives, user
            if lab == 1:
                positives.append(int(item))
    # U00's December (valid) row sees all of U00's positive train rows
    u00 = ds.users["user_raw"].tolist().index("U00")
    valid_row = ds.valid[ds.valid["user_id"] == u00].iloc[0]
    train_pos = ds.train[(ds.train["user_id"] == u00) & (ds.train["label"] == 1)].sort_values("timestamp", kind="stable")
    assert list(valid_row["history"]) == train_pos["item_id"].tolist()
