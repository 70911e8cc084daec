"""Bad input gives one clear CorarecError naming the file (and line); nothing is half-written."""

from __future__ import annotations

import gzip
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from corarec.data import read_dataset
from corarec.data.prepare import prepare
from corarec.errors import CorarecError
from test_data_amazon import meta_lines, review, review_lines, utc, write_amazon
from test_data_ml1m import RATINGS, write_ml1m


def check(match, **kwargs):
    with pytest.raises(CorarecError, match=match) as info:
        prepare(**kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


# --- missing files and folders -----------------------------------------------------------------

def test_missing_files(tmp_path):
    raw = write_ml1m(tmp_path / "raw")
    (raw / "movies.dat").unlink()
    check(r"movies\.dat: file not found", name="ml-1m", out=tmp_path / "ds", raw=raw)
    check(r"ml-1m: pass --raw", name="ml-1m", out=tmp_path / "ds")
    check(r"nowhere: ML-1M directory not found", name="ml-1m", out=tmp_path / "ds", raw=tmp_path / "nowhere")
    check(r"reviews file not found \(looked for Books_5\.json\.gz", name="amazon-book", out=tmp_path / "ds", raw=tmp_path)
    check(r"nope\.csv: file not found", name="custom", out=tmp_path / "ds", interactions=tmp_path / "nope.csv",
          items=tmp_path / "nope.csv")
    check(r"unknown dataset 'ml-20m'", name="ml-20m", out=tmp_path / "ds")
    check(r"--interactions only applies to 'custom'", name="ml-100k", out=tmp_path / "ds", interactions=tmp_path)
    assert not (tmp_path / "ds").exists()


# --- malformed lines and values ---------------------------------------------------------------

def test_ml1m_malformed_line_and_rating(tmp_path):
    raw = write_ml1m(tmp_path / "raw")
    lines = (raw / "ratings.dat").read_text(encoding="latin-1").splitlines()
    lines[2] = "1::20::5"  # a field missing on line 3
    (raw / "ratings.dat").write_text("\n".join(lines) + "\n", encoding="latin-1")
    check(r"ratings\.dat:3: malformed line: expected 4 fields separated by '::', got 3", name="ml-1m",
          out=tmp_path / "ds", raw=raw)
    lines[2] = "1::20::five::990403199"
    (raw / "ratings.dat").write_text("\n".join(lines) + "\n", encoding="latin-1")
    check(r"ratings\.dat:3: rating must be a number, got 'five'", name="ml-1m", out=tmp_path / "ds", raw=raw)
    lines[2] = "1::20::5::yesterday"
    (raw / "ratings.dat").write_text("\n".join(lines) + "\n", encoding="latin-1")
    check(r"ratings\.dat:3: timestamp must be an integer, got 'yesterday'", name="ml-1m", out=tmp_path / "ds", raw=raw)


def test_ml1m_empty_split(tmp_path):
    ratings = [r for r in RATINGS if not r[3].startswith(("2002-04", "2002-08"))]  # nothing in months 24–28
    raw = write_ml1m(tmp_path / "raw", ratings=ratings)
    check(r"ratings\.dat: the valid split is empty \(no rows in months 24–28 counted from 2000-04\)",
          name="ml-1m", out=tmp_path / "ds", raw=raw)


def test_ml100k_wrong_header_and_malformed(tmp_path):
    raw = tmp_path / "ml100k"
    raw.mkdir()
    (raw / "ml-100k.inter").write_text("user_id:token\titem_id:token\tscore:float\ttimestamp:float\n1\t2\t3\t881250949\n")
    (raw / "ml-100k.item").write_text("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n2\tX\t1995\tDrama\n")
    check(r"ml-100k\.inter:1: missing column\(s\) rating", name="ml-100k", out=tmp_path / "ds", raw=raw)
    (raw / "ml-100k.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t2\t3\t881250949\n1 2 3\n")
    check(r"ml-100k\.inter:3: malformed line", name="ml-100k", out=tmp_path / "ds", raw=raw)


def test_amazon_malformed_json_missing_field_and_bad_rating(tmp_path):
    lines = review_lines()
    bad = lines[:2] + ['{"overall": 5.0, "reviewerID": "U00", "asin": '] + lines[2:]
    write_amazon(tmp_path / "a", gz=True, reviews=bad)
    check(r"Books_5\.json\.gz:3: malformed JSON", name="amazon-book", out=tmp_path / "ds", raw=tmp_path / "a")

    missing = lines[:4] + [json.dumps({"reviewerID": "U00", "asin": "B00", "unixReviewTime": utc(2017, 5, 5)})]
    write_amazon(tmp_path / "b", gz=False, reviews=missing)
    check(r"Books_5\.json:5: missing field 'overall'", name="amazon-book", out=tmp_path / "ds", raw=tmp_path / "b")

    rating = lines[:1] + [review("U00", "B00", "great", utc(2017, 5, 5))]
    write_amazon(tmp_path / "c", gz=False, reviews=rating)
    check(r"Books_5\.json:2: overall must be a number, got 'great'", name="amazon-book", out=tmp_path / "ds",
          raw=tmp_path / "c")

    meta = meta_lines()[:3] + ["{'asin': 'B05', 'title': __import__('os').getcwd()}"]
    write_amazon(tmp_path / "d", gz=True, meta=meta)
    check(r"meta_Books\.json\.gz:4: malformed line \(neither JSON nor a Python dict literal\)",
          name="amazon-book", out=tmp_path / "ds", raw=tmp_path / "d")


def test_amazon_not_gzip(tmp_path):
    write_amazon(tmp_path / "a", gz=False)
    shutil.copy(tmp_path / "a" / "Books_5.json", tmp_path / "a" / "Books_5.json.gz")
    check(r"Books_5\.json\.gz: cannot read", name="amazon-book", out=tmp_path / "ds", raw=tmp_path / "a")


def test_custom_bad_inputs(tmp_path):
    items = tmp_path / "items.csv"
    items.write_text("item,title\nx,X\ny,Y\n")
    log = tmp_path / "log.csv"

    def run(text, match, **kwargs):
        log.write_text(text)
        return check(match, name="custom", out=tmp_path / "ds", interactions=log, items=items, **kwargs)

    run("who,item,rating,ts\na,x,5,1\n", r"log\.csv: no user column \(looked for user_id")
    run("user,item,rating,ts\na,x,5,1\na,y,bad,2\n", r"log\.csv:3: rating must be a number, got 'bad'", label_threshold=4)
    run("user,item,rating,ts\na,x,5,1\na,y,3,2\n", r"holds ratings, not 0/1 labels; pass --label-threshold")
    run("user,item,label,ts\na,x,1,1\na,y,2,2\n", r"log\.csv:3: label must be 0 or 1, got '2'")
    run("user,item,label,ts\na,x,1,1\na,z,0,2\n", r"log\.csv:3: item 'z' has no title in .*items\.csv")
    run("user,item,label,ts\na,x,1,1\na,y,0,1600000000000\n", r"log\.csv:3: ts .* looks like milliseconds")
    run("user,item,label,ts\na,x,1,1\na,y,0,soon\n", r"log\.csv:3: ts must be Unix seconds or a date, got 'soon'")
    run("user,item,label,ts\na,x,1,1\n,y,0,2\n", r"log\.csv:3: user is empty")
    run("user,item,label,ts\na,x,1,1\na,y,0,2,9\n", r"log\.csv:3: malformed line: expected 4 fields .* got 5")
    run("user,item,label,ts\na,x,1,1\na,y,0,2\n", r"--split: expected three fractions", split="0.5,0.5")
    run("user,item,label,ts\na,x,1,1\na,y,0,2\n", r"the valid split is empty", split="0.5,0,0.5")
    run("user,item,label,ts\na,x,1,1\na,y,0,2\n", r"first cut date must come before", split="2020-02-01,2020-01-01")
    run("", r"log\.csv: file is empty")


# --- nothing half-written ----------------------------------------------------------------------

def test_failed_prepare_keeps_previous_output(tmp_path, monkeypatch):
    raw = write_ml1m(tmp_path / "raw")
    out = tmp_path / "ds"
    prepare("ml-1m", out=out, raw=raw)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    (raw / "ratings.dat").write_text("garbage\n")
    check(r"ratings\.dat:1: malformed line", name="ml-1m", out=out, raw=raw, overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    calls = {"n": 0}
    original = pd.DataFrame.to_parquet

    def flaky(self, *args, **kwargs):  # the disk "fills up" on the third file
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("No space left on device")
        return original(self, *args, **kwargs)

    write_ml1m(raw)
    monkeypatch.setattr(pd.DataFrame, "to_parquet", flaky)
    with pytest.raises(OSError):
        prepare("ml-1m", out=out, raw=raw, overwrite=True)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "raw"]  # no temporary leftovers

    check(r"already holds a prepared dataset; pass --overwrite", name="ml-1m", out=out, raw=raw)


# --- reading a hand-made prepared directory ----------------------------------------------------

@pytest.fixture
def prepared(tmp_path):
    out = tmp_path / "ds"
    prepare("ml-1m", out=out, raw=write_ml1m(tmp_path / "raw"))
    return out


def rewrite(path, change):
    frame = pd.read_parquet(path)
    result = change(frame)  # a new frame, or None after changing ``frame`` in place
    frame = frame if result is None else result
    frame.to_parquet(path, index=False)


def read_error(out, match):
    with pytest.raises(CorarecError, match=match) as info:
        read_dataset(out)
    assert "\n" not in str(info.value)


def test_read_dataset_bad_label(prepared):
    rewrite(prepared / "valid.parquet", lambda f: f.__setitem__("label", np.array([1, 3])))
    read_error(prepared, r"valid\.parquet: row 1: label must be 0 or 1, got 3")


def test_read_dataset_ids_out_of_range(prepared):
    rewrite(prepared / "test.parquet", lambda f: f.__setitem__("item_id", np.array([0, 1, 6])))
    read_error(prepared, r"test\.parquet: row 2: item_id 6 out of range 0\.\.5")
    rewrite(prepared / "test.parquet", lambda f: f.__setitem__("item_id", np.array([0, 1, 2])))
    rewrite(prepared / "train.parquet", lambda f: f.__setitem__("user_id", np.array([0, 0, 0, 0, 3])))
    read_error(prepared, r"train\.parquet: row 4: user_id 3 out of range 0\.\.2")


def test_read_dataset_unknown_history_id(prepared):
    rewrite(prepared / "test.parquet", lambda f: f.__setitem__("history", [[0, 9], [], []]))
    read_error(prepared, r"test\.parquet: row 0: history holds an unknown item id")


def test_read_dataset_columns_and_types(prepared):
    rewrite(prepared / "train.parquet", lambda f: f.drop(columns="timestamp"))
    read_error(prepared, r"train\.parquet: missing column\(s\) timestamp")
    shutil.copy(prepared / "valid.parquet", prepared / "train.parquet")
    rewrite(prepared / "train.parquet", lambda f: f.__setitem__("label", ["yes", "no"]))
    read_error(prepared, r"train\.parquet: column 'label' must hold integers")
    (prepared / "items.parquet").unlink()
    read_error(prepared, r"items\.parquet: file not found")


def test_read_dataset_bad_json_and_empty_split(prepared):
    rewrite(prepared / "valid.parquet", lambda f: f.iloc[:0])
    read_error(prepared, r"valid\.parquet: the valid split is empty")
    (prepared / "dataset.json").write_text('{"name": "x",\n "item_noun": }')
    read_error(prepared, r"dataset\.json:2: malformed JSON")


def test_gzip_fixture_is_real_gzip(tmp_path):
    write_amazon(tmp_path, gz=True)
    with gzip.open(tmp_path / "Books_5.json.gz", "rt") as handle:
        assert json.loads(handle.readline())["asin"] == "B00"


def test_read_dataset_without_users_table(prepared):
    """A hand-made directory may omit users.parquet; ids are then only checked against n_users if given."""
    (prepared / "users.parquet").unlink()
    info = json.loads((prepared / "dataset.json").read_text())
    del info["n_users"]
    (prepared / "dataset.json").write_text(json.dumps(info))
    assert read_dataset(prepared).n_users == 3
    rewrite(prepared / "valid.parquet", lambda f: f.__setitem__("user_id", np.array([0, -1])))
    read_error(prepared, r"valid\.parquet: row 1: user_id -1 is negative")
    info["n_users"] = 2
    (prepared / "dataset.json").write_text(json.dumps(info))
    rewrite(prepared / "valid.parquet", lambda f: f.__setitem__("user_id", np.array([0, 1])))
    read_error(prepared, r"train\.parquet: row 4: user_id 2 out of range 0\.\.1")


# --- values that used to pass silently, and lines an editor would show -----------------------------

def custom_log(tmp_path, text: str, **kwargs):
    """``prepare custom`` on a log ``text`` (items x and y have titles); returns the one-line error."""
    (tmp_path / "items.csv").write_text("item,title\nx,X\ny,Y\n")
    (tmp_path / "log.csv").write_text(text)
    return tmp_path / "log.csv", dict(name="custom", out=tmp_path / "ds", interactions=tmp_path / "log.csv",
                                      items=tmp_path / "items.csv", **kwargs)


RATED = "user,item,rating,ts\n" + "".join(f"u{i % 3},{'xy'[i % 2]},{i % 5 + 1},{1000 + i}\n" for i in range(12))


@pytest.mark.parametrize("threshold", [float("nan"), float("inf")])
def test_custom_label_threshold_must_be_a_finite_number(tmp_path, threshold):
    _, kwargs = custom_log(tmp_path, RATED, label_threshold=threshold)
    check(rf"^--label-threshold must be a finite number, got {threshold}$", **kwargs)
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize("stamp, problem", [("-1e300", "is out of range"), ("1e10", "is out of range"),
                                            ("inf", "must be Unix seconds or a date")])
def test_custom_timestamp_out_of_range(tmp_path, stamp, problem):
    _, kwargs = custom_log(tmp_path, RATED.replace(",1005\n", f",{stamp}\n"), label_threshold=4)
    check(rf"log\.csv:7: ts '{stamp}' {problem}", **kwargs)


def test_ml1m_timestamp_out_of_range(tmp_path):
    raw = write_ml1m(tmp_path / "raw")
    lines = (raw / "ratings.dat").read_text(encoding="latin-1").splitlines()
    lines[1] = "1::20::5::-1e300"
    (raw / "ratings.dat").write_text("\n".join(lines) + "\n", encoding="latin-1")
    check(r"ratings\.dat:2: timestamp '-1e300' is out of range \(Unix seconds between 1677-09-22 and 2262-04-11\)",
          name="ml-1m", out=tmp_path / "ds", raw=raw)


def test_custom_parquet_user_column_of_lists(tmp_path):
    (tmp_path / "items.csv").write_text("item,title\nx,X\ny,Y\n")
    log = pd.DataFrame({"user": [["a", "b"], ["c"]] * 6, "item": ["x", "y"] * 6, "label": [0, 1] * 6,
                        "ts": range(12)})  # read as text, every list would be one user id
    log.to_parquet(tmp_path / "log.parquet")
    check(r"log\.parquet: row 0: column 'user' holds a list \(\['a', 'b'\]\), expected one value per row",
          name="custom", out=tmp_path / "ds", interactions=tmp_path / "log.parquet", items=tmp_path / "items.csv")


@pytest.mark.parametrize("text, line, got", [
    ("user,item,label,ts\na,x,1,1,9\na,y,0,2\n", 2, 5),             # pandas read the extra field as an index
    ("user,item,label,ts\na,x,1,1\na,y,0\n", 3, 3),                 # pandas padded the short line
    ("user,item,label,ts\na,x,1,1\n\n\na,y,0,2,9\n", 5, 5),         # blank lines count
    ('user,item,label,ts\n"a\nb",x,1,1\na,y,0,2,9\n', 4, 5),        # a quoted line break counts
])
def test_custom_ragged_csv_names_the_line_an_editor_shows(tmp_path, text, line, got):
    _, kwargs = custom_log(tmp_path, text)
    check(rf"log\.csv:{line}: malformed line: expected 4 fields separated by ',' \(as in the header\), got {got}$",
          **kwargs)


def test_custom_value_errors_count_blank_lines_and_quoted_breaks(tmp_path):
    _, kwargs = custom_log(tmp_path, 'user,item,label,ts\n"a\nb",x,1,1\n\na,y,bad,2\n')
    check(r"log\.csv:5: label must be 0 or 1, got 'bad'$", **kwargs)


def test_read_dataset_bad_counts_in_dataset_json(prepared):
    info = json.loads((prepared / "dataset.json").read_text())
    (prepared / "dataset.json").write_text(json.dumps({**info, "n_users": "abc"}))
    read_error(prepared, r"dataset\.json: 'n_users' must be a positive integer, got 'abc'$")
    (prepared / "users.parquet").unlink()  # n_users is then what bounds the user ids
    read_error(prepared, r"dataset\.json: 'n_users' must be a positive integer, got 'abc'$")
    (prepared / "dataset.json").write_text(json.dumps({**info, "item_noun": 7}))
    read_error(prepared, r"dataset\.json: 'item_noun' must be non-empty text, got 7$")


def test_read_dataset_json_that_is_not_utf8(prepared):
    (prepared / "dataset.json").write_bytes(b'{"name": "caf\xe9", "item_noun": "movie"}')
    read_error(prepared, r"dataset\.json: not UTF-8 text \(invalid continuation byte at byte 13\); JSON files must be UTF-8$")
