"""Bring-your-own-data: CSV/TSV/parquet logs, forgiving column names, label threshold, both splits."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from corarec.data import read_dataset
from corarec.data.prepare import prepare

LOG = """UserID,MovieID,Rating,Time
u1,m1,5,100
u1,m2,2,200
u2,m1,4,300
u2,m3,5,400
u1,m3,4,500
u3,m2,1,600
u1,m4,5,700
u2,m4,3,800
u3,m4,4,900
u1,m5,5,1000
"""
ITEMS = """movieId,Title,genre
m1,First Film,drama
m2,Second Film,comedy
m3,Third Film,drama
m4,Fourth Film,
m5,Fifth Film,
m9,Never Seen,
"""


@pytest.fixture
def files(tmp_path):
    (tmp_path / "log.csv").write_text(LOG)
    (tmp_path / "items.csv").write_text(ITEMS)
    return tmp_path / "log.csv", tmp_path / "items.csv"


def test_fraction_split_and_threshold(files, tmp_path):
    log, items = files
    ds = prepare("custom", out=tmp_path / "ds", interactions=log, items=items, label_threshold=4,
                 split="0.6,0.2,0.2", item_noun="movie")
    assert [len(ds.splits[s]) for s in ("train", "valid", "test")] == [6, 2, 2]
    assert ds.valid["timestamp"].tolist() == [700, 800]  # rows sorted by time, then cut
    assert ds.test["timestamp"].tolist() == [1000, 900]  # ordered by (user, timestamp): u1 then u3
    assert ds.items["item_raw"].tolist() == ["m1", "m2", "m3", "m4", "m5"]  # m9 never occurs
    assert ds.items["title"].tolist()[0] == "First Film"
    assert ds.train["label"].tolist() == [1, 0, 1, 1, 1, 0]  # u1: m1 5, m2 2, m3 4; u2: m1 4, m3 5; u3: m2 1
    # u1's test row (m5) sees u1's earlier positives m1, m3, m4 (valid) in time order
    m = dict(zip(ds.items["item_raw"], ds.items["item_id"]))
    assert ds.test["history"].iloc[0] == [m["m1"], m["m3"], m["m4"]]
    info = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert info["item_noun"] == "movie" and info["protocol"]["split"] == {"fractions": [0.6, 0.2, 0.2]}
    assert info["protocol"]["columns"] == {"user": "UserID", "item": "MovieID", "timestamp": "Time", "title": "Title"}
    read_dataset(tmp_path / "ds")


def test_date_split_label_column_and_parquet(tmp_path):
    log = pd.DataFrame({
        "user_id": [7, 7, 8, 8, 7, 8],
        "item_id": [1, 2, 1, 3, 3, 2],
        "click": [True, False, True, False, True, True],
        "timestamp": pd.to_datetime(["2020-01-05", "2020-01-31 23:59:59", "2020-02-01", "2020-02-20",
                                     "2020-03-01", "2020-03-02"], format="ISO8601"),
    })
    log.to_parquet(tmp_path / "log.parquet")
    pd.DataFrame({"item_id": [1, 2, 3], "name": ["A", "B", "C"]}).to_csv(tmp_path / "items.tsv", sep="\t", index=False)
    ds = prepare("custom", out=tmp_path / "ds", interactions=tmp_path / "log.parquet",
                 items=tmp_path / "items.tsv", split="2020-02-01,2020-03-01")
    assert [len(ds.splits[s]) for s in ("train", "valid", "test")] == [2, 2, 2]
    assert ds.train["timestamp"].max() == 1580515199  # 2020-01-31 23:59:59 UTC
    assert ds.valid["timestamp"].min() == 1580515200  # the cut date itself goes to valid
    assert ds.users["user_raw"].tolist() == ["7", "8"]
    assert ds.valid["label"].tolist() == [1, 0]


def test_date_strings_in_csv(tmp_path):
    (tmp_path / "log.csv").write_text(
        "user,item,label,date\na,x,1,2021-05-01\na,y,0,2021-05-02T10:00:00Z\nb,x,1,2021-06-01\nb,y,1,2021-07-01\n"
    )
    (tmp_path / "items.csv").write_text("item,title\nx,X\ny,Y\n")
    ds = prepare("custom", out=tmp_path / "ds", interactions=tmp_path / "log.csv", items=tmp_path / "items.csv",
                 split="0.5,0.25,0.25")
    assert ds.train["timestamp"].tolist() == [1619827200, 1619949600]
