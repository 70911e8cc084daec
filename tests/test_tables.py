"""One table reader (prepare and predict), one atomic table writer, one seeding helper, one reference registry."""

from __future__ import annotations

import gzip
import random

import numpy as np
import pandas as pd
import pytest
import torch

from corarec.data.raw import read_table
from corarec.errors import CorarecError
from corarec.utils.io import write_table

TABLE = pd.DataFrame({"user": ["007", "u1", "u2"], "item": ["m1", "m 2", "m3"], "label": ["1", "0", "1"]})
"""Text columns, a leading zero and a space inside a value: what the reader must keep as written."""


def one_line(match: str, call, *args) -> str:
    with pytest.raises(CorarecError, match=match) as info:
        call(*args)
    assert "\n" not in str(info.value)
    return str(info.value)


@pytest.mark.parametrize("name, write", [
    ("t.csv", lambda t, p: t.to_csv(p, index=False)),
    ("t.CSV", lambda t, p: t.to_csv(p, index=False)),
    ("t.csv.gz", lambda t, p: t.to_csv(p, index=False, compression="gzip")),
    ("t.tsv", lambda t, p: t.to_csv(p, sep="\t", index=False)),
    ("t.tab", lambda t, p: t.to_csv(p, sep="\t", index=False)),
    ("t.tsv.gz", lambda t, p: t.to_csv(p, sep="\t", index=False, compression="gzip")),
    ("t.parquet", lambda t, p: t.to_parquet(p, index=False)),
    ("t.pq", lambda t, p: t.to_parquet(p, index=False)),
])
def test_read_table_reads_every_format_alike(tmp_path, name, write):
    write(TABLE, tmp_path / name)
    pd.testing.assert_frame_equal(read_table(tmp_path / name), TABLE)


def test_read_table_errors_name_the_file_and_line(tmp_path):
    one_line(r"t\.json: expected a \.csv or \.tsv \(optionally compressed: .*\) or \.parquet file$", read_table,
             tmp_path / "t.json")
    one_line(r"gone\.tsv: file not found$", read_table, tmp_path / "gone.tsv")
    (tmp_path / "empty.csv").write_text("")
    one_line(r"empty\.csv: file is empty$", read_table, tmp_path / "empty.csv")
    (tmp_path / "ragged.csv").write_text("user,item\na,x\n\nb,y,extra\n")
    one_line(r"ragged\.csv:4: malformed line: expected 2 fields separated by ',' \(as in the header\), got 3$",
             read_table, tmp_path / "ragged.csv")
    with gzip.open(tmp_path / "ragged.tsv.gz", "wt") as handle:
        handle.write("user\titem\na\n")
    one_line(r"ragged\.tsv\.gz:2: malformed line: expected 2 fields separated by '\\t'", read_table,
             tmp_path / "ragged.tsv.gz")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    one_line(r"bad\.parquet: not a readable parquet file \(", read_table, tmp_path / "bad.parquet")


def test_prepare_and_predict_share_the_reader():
    import corarec.data.custom
    import corarec.serving.predict
    import corarec.serving.pairs

    assert corarec.data.custom.read_table is read_table
    assert corarec.serving.predict.read_table is read_table
    assert corarec.serving.pairs.read_table is read_table  # the candidates file of `corarec recommend`


@pytest.mark.parametrize("name", ["out.csv", "out.parquet"])
def test_write_table_round_trips_and_leaves_no_temporary(tmp_path, name):
    write_table(tmp_path / name, TABLE)
    pd.testing.assert_frame_equal(read_table(tmp_path / name), TABLE)
    write_table(tmp_path / name, TABLE.iloc[:1])  # replaces the file whole
    assert len(read_table(tmp_path / name)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_write_table_refuses_another_suffix_and_writes_nothing(tmp_path):
    one_line(r"out\.json: a table is written as a \.csv or \.parquet file$", write_table, tmp_path / "out.json", TABLE)
    assert list(tmp_path.iterdir()) == []


def test_one_seeding_helper_seeds_python_numpy_and_torch():
    import corarec.cf.train
    import corarec.training.loop
    from corarec.utils.seeding import seed_everything

    assert corarec.cf.train.seed_everything is seed_everything
    assert corarec.training.loop.seed_everything is seed_everything

    def draws():
        seed_everything(7)
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    first, second = draws(), draws()
    assert first == second
    seed_everything(8)
    assert random.random() != first[0]


def test_one_reference_registry_in_the_cli_spelling():
    from corarec.benchmarking.plan import DEFAULT_METHODS, REFERENCE_LABELS, parse_entry
    from corarec.cf.references import REFERENCES, item_rate_scores, logistic_rates_scores

    assert REFERENCES == {"item-rate": item_rate_scores, "logistic-rate": logistic_rates_scores}
    assert set(REFERENCE_LABELS) == set(REFERENCES)
    assert [name for name in DEFAULT_METHODS if parse_entry(name).kind == "reference"] == list(REFERENCES)
    assert parse_entry("Item-Rate").label == "Item rate"
