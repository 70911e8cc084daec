"""ML-1M (CoLLM protocol) on a fixture in the exact GroupLens format: ``::``, latin-1 titles."""

from __future__ import annotations

import calendar
import json
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from corarec.data import read_dataset
from corarec.data.prepare import prepare


def utc(text: str) -> int:
    """Unix seconds of a UTC time 'YYYY-MM-DD HH:MM:SS'."""
    return calendar.timegm(datetime.strptime(text, "%Y-%m-%d %H:%M:%S").timetuple())


# (user, movie, rating, UTC time) in file order. Month 0 = 2000-04 (the first month in the file).
RATINGS = [
    (10, 30, 3, "2001-08-01 12:00:00"),  # train (month 16), negative
    (1, 10, 5, "2000-04-15 10:00:00"),  # month 0: dropped
    (1, 20, 5, "2001-05-31 23:59:59"),  # month 13: dropped, so never in a history
    (1, 30, 4, "2001-06-01 00:00:00"),  # month 14: first train month
    (1, 40, 4, "2001-07-10 08:00:00"),  # train; tie with the next row (file order decides)
    (1, 50, 5, "2001-07-10 08:00:00"),  # train
    (1, 60, 2, "2002-03-31 23:59:59"),  # month 23: last train second
    (1, 70, 4, "2002-04-01 00:00:00"),  # month 24: first valid second
    (2, 30, 4, "2002-08-31 23:59:59"),  # month 28: last valid second
    (1, 80, 1, "2002-09-01 00:00:00"),  # month 29: first test second
    (2, 40, 5, "2003-01-31 23:59:59"),  # month 33: last test second
    (2, 50, 5, "2003-02-01 00:00:00"),  # month 34: dropped
    (10, 40, 5, "2002-10-05 09:30:00"),  # test, warm (user 10 and movie 40 are in train)
]
MOVIES = [
    (10, "Toy Story (1995)", "Animation|Children's|Comedy"),
    (20, "Jumanji (1995)", "Adventure"),
    (30, "Misérables, Les (1995)", "Drama|Musical"),
    (40, "Cité des enfants perdus, La (1995)", "Adventure|Sci-Fi"),
    (50, "Heat (1995)", "Action|Crime|Thriller"),
    (60, "Sabrina (1995)", "Comedy|Romance"),
    (70, "Tom and Huck (1995)", "Adventure|Children's"),
    (80, "Sudden Death (1995)", "Action"),
    (90, "Never Rated (1999)", "Drama"),
]


def write_ml1m(folder: Path, ratings=RATINGS, movies=MOVIES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"{u}::{m}::{r}::{t if isinstance(t, int) else utc(t)}" for u, m, r, t in ratings]
    (folder / "ratings.dat").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    movie_lines = [f"{m}::{title}::{genres}" for m, title, genres in movies]
    (folder / "movies.dat").write_bytes(("\n".join(movie_lines) + "\n").encode("latin-1"))
    return folder


@pytest.fixture
def prepared(tmp_path):
    raw = write_ml1m(tmp_path / "ml-1m")
    ds = prepare("ml-1m", out=tmp_path / "ds", raw=raw)
    return ds, tmp_path / "ds"


def raw_rows(ds, split):
    """Rows of a split with original ids, as tuples (user, movie, label, history of movies)."""
    users = ds.users["user_raw"].tolist()
    items = ds.items["item_raw"].tolist()
    frame = ds.splits[split]
    return [
        (users[u], items[i], int(lab), [items[h] for h in hist])
        for u, i, lab, hist in zip(frame["user_id"], frame["item_id"], frame["label"], frame["history"])
    ]


def test_month_slots_labels_and_histories(prepared):
    ds, _ = prepared
    assert raw_rows(ds, "train") == [
        ("1", "30", 1, []),
        ("1", "40", 1, ["30"]),
        ("1", "50", 1, ["30", "40"]),  # tie with movie 40: file order
        ("1", "60", 0, ["30", "40", "50"]),
        ("10", "30", 0, []),
    ]
    assert raw_rows(ds, "valid") == [("1", "70", 1, ["30", "40", "50"]), ("2", "30", 1, [])]
    assert raw_rows(ds, "test") == [
        ("1", "80", 0, ["30", "40", "50", "70"]),  # history crosses splits
        ("2", "40", 1, ["30"]),
        ("10", "40", 1, []),
    ]


def test_ids_titles_and_stats(prepared):
    ds, out = prepared
    back = read_dataset(out)
    assert back.users["user_raw"].tolist() == ["1", "2", "10"]  # numeric order, contiguous ids
    assert back.items["item_raw"].tolist() == ["30", "40", "50", "60", "70", "80"]  # only kept items
    assert back.items["title"].tolist()[:2] == ["Misérables, Les (1995)", "Cité des enfants perdus, La (1995)"]
    info = json.loads((out / "dataset.json").read_text())
    assert info["name"] == "ml-1m" and info["item_noun"] == "movie"
    assert info["protocol"]["month_0"] == "2000-04"
    splits = info["stats"]["splits"]
    assert [splits[s]["rows"] for s in ("train", "valid", "test")] == [5, 2, 3]
    assert splits["test"]["warm_share"] == pytest.approx(1 / 3, abs=1e-4)
    assert splits["valid"]["positive_rate"] == 1.0
    for split in ("train", "valid", "test"):
        pd.testing.assert_frame_equal(back.splits[split], ds.splits[split], check_dtype=False)


def test_raw_may_be_the_parent_folder(tmp_path):
    write_ml1m(tmp_path / "download" / "ml-1m")
    ds = prepare("ml-1m", out=tmp_path / "ds", raw=tmp_path / "download")
    assert len(ds.train) == 5
