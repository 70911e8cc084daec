"""ML-100K from the bundled RecBole files: exact split counts, ids, titles, history, statistics."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from corarec.data import read_dataset
from corarec.data.prepare import prepare
from corarec.data.stats import format_stats


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("ml100k") / "ds"
    ds = prepare("ml-100k", out=out)
    return ds, out


def test_exact_split_counts(prepared):
    ds, out = prepared
    assert [len(ds.splits[s]) for s in ("train", "valid", "test")] == [66_994, 10_991, 22_015]
    stats = json.loads((out / "dataset.json").read_text())["stats"]
    assert [stats["splits"][s]["rows"] for s in ("train", "valid", "test")] == [66_994, 10_991, 22_015]
    assert stats["n_users"] == 943 and stats["n_items"] == 1682
    assert stats["splits"]["train"]["warm_share"] == 1.0


def test_split_months_are_utc_calendar_months(prepared):
    ds, _ = prepared
    for split, (lo, hi) in {"train": ("1997-09", "1998-01"), "valid": ("1998-02", "1998-02"),
                            "test": ("1998-03", "1998-04")}.items():
        months = pd.to_datetime(ds.splits[split]["timestamp"], unit="s", utc=True).dt.strftime("%Y-%m")
        assert months.min() == lo and months.max() == hi


def test_labels_ids_and_titles(prepared):
    ds, out = prepared
    back = read_dataset(out)
    assert back.n_items == 1682 and back.n_users == 943
    assert back.items["item_id"].tolist() == list(range(1682))
    titles = dict(zip(back.items["item_raw"], back.items["title"]))
    assert titles["1"] == "Toy Story (1995)"
    assert titles["12"] == "Usual Suspects, The (1995)"
    assert titles["1412"] == "Land Before Time III: The Time of the Great Giving (1995)"  # year field 'V'
    assert back.users["user_raw"].tolist()[:3] == ["1", "2", "3"]
    for split in ("train", "valid", "test"):
        assert set(back.splits[split]["label"].unique()) <= {0, 1}
        pd.testing.assert_frame_equal(back.splits[split], ds.splits[split], check_dtype=False)
    # Label = rating >= 4: the raw file's share of ratings 4 and 5 is 55.375%.
    total_pos = sum(int(back.splits[s]["label"].sum()) for s in ("train", "valid", "test"))
    assert total_pos == 34_174 + 21_201


def test_history_is_earlier_positives_of_same_user(prepared):
    ds, _ = prepared
    rows = pd.concat([ds.splits[s].assign(split=i) for i, s in enumerate(("train", "valid", "test"))])
    rng = np.random.default_rng(0)
    for user in rng.choice(rows["user_id"].unique(), 20, replace=False):
        mine = rows[rows["user_id"] == user].sort_values(["timestamp", "split"], kind="stable")
        positives: list[int] = []
        for item, label, hist in zip(mine["item_id"], mine["label"], mine["history"]):
            assert list(hist) == positives
            if label == 1:
                positives.append(int(item))
    # rows are ordered by (user, timestamp) in each split
    for frame in ds.splits.values():
        keys = frame[["user_id", "timestamp"]].to_numpy()
        assert (np.diff(keys[:, 0]) >= 0).all()
        same = np.diff(keys[:, 0]) == 0
        assert (np.diff(keys[:, 1])[same] >= 0).all()


def test_format_stats_table(prepared):
    ds, _ = prepared
    table = format_stats(ds.info["stats"])
    lines = table.splitlines()
    assert lines[0] == "ml-100k: 943 users, 1,682 items"
    assert "66,994" in table and "10,991" in table and "22,015" in table and "100,000" in table
    assert len({len(line) for line in lines[1:4]}) == 1  # aligned columns


def test_grouplens_u_data_format(tmp_path):
    """``--raw`` may point at the original GroupLens ml-100k folder (u.data tab-separated, u.item '|' latin-1)."""
    raw = tmp_path / "ml-100k"
    raw.mkdir()
    # 1997-09-30 23:59:59 UTC (train), 1998-02-01 00:00:00 (valid), 1998-03-01 00:00:00 (test), 1998-05-01 (dropped)
    rows = [(5, 2, 4, 875663999), (5, 1, 3, 886291200), (7, 2, 5, 888710400), (7, 1, 5, 893980800)]
    (raw / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows))
    flags = "|".join(["0"] * 19)
    items = [f"1|Misérables, Les (1995)|01-Jan-1995||http://x|{flags}", f"2|GoldenEye (1995)|01-Jan-1995||http://y|{flags}"]
    (raw / "u.item").write_bytes(("\n".join(items) + "\n").encode("latin-1"))
    ds = prepare("ml-100k", out=tmp_path / "ds", raw=raw)
    assert [len(ds.splits[s]) for s in ("train", "valid", "test")] == [1, 1, 1]
    assert ds.items["title"].tolist() == ["Misérables, Les (1995)", "GoldenEye (1995)"]
    assert ds.train["label"].tolist() == [1] and ds.valid["label"].tolist() == [0]
    assert ds.test["history"].tolist() == [[]]  # user 7's test row; the month-5 row was dropped
