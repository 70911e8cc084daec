"""`corarec predict` / `recommend` on a tiny run: files in raw ids, cold rows kept, row-numbered errors."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from corarec.cli import app
from corarec.errors import CorarecError
from corarec.serving.predict import predict
from numerics import assert_within, method_score_tolerance, scaled_delta_weights, within
from tiny import COLD_USER, CutOff

runner = CliRunner()


def _pairs() -> pd.DataFrame:
    return pd.DataFrame({"user": ["u00", "u01", "u02", "u03", COLD_USER, "stranger"],
                         "item": ["m1001", "m1002", "m1003", "m1004", "m1005", "m1006"],
                         "label": [1, 0, 1, 0, 1, 0]})


def test_predict_csv_with_labels_writes_scores_and_returns_metrics(tiny_run, recommender, tmp_path):
    _pairs().to_csv(tmp_path / "pairs.csv", index=False)
    metrics = predict(tiny_run.run, tmp_path / "pairs.csv", tmp_path / "scores.csv")
    out = pd.read_csv(tmp_path / "scores.csv", dtype={"user": str, "item": str})
    assert list(out.columns) == ["user", "item", "label", "logit", "probability", "cold", "cold_user", "cold_item"]
    assert list(out["user"]) == list(_pairs()["user"])  # every row, in order, unknown user included
    assert list(out["cold"])[-2:] == [True, True]
    expected = recommender.score(_pairs())
    tolerance = method_score_tolerance(recommender.run.method)  # fp32, maybe batched otherwise
    assert_within(out["logit"].to_numpy(), expected["logit"].to_numpy(), tolerance, "predicted logits")
    with scaled_delta_weights(recommender.run.method, 1.1):  # ... and the comparison can fail: ΔW 10% off
        assert not within(out["logit"].to_numpy(), recommender.score(_pairs())["logit"].to_numpy(), tolerance)
    assert metrics["all"]["rows"] == 6 and metrics["all"]["auc"] is not None
    assert metrics["cold"]["rows"] == int(out["cold"].sum())


def test_predict_parquet_without_labels(tiny_run, tmp_path):
    _pairs().drop(columns="label").to_parquet(tmp_path / "pairs.parquet")
    assert predict(tiny_run.run, tmp_path / "pairs.parquet", tmp_path / "scores.parquet") is None
    out = pd.read_parquet(tmp_path / "scores.parquet")
    assert len(out) == 6 and "label" not in out and out["probability"].between(0, 1).all()


def test_predict_reads_what_prepare_reads(tiny_run, tmp_path):
    """The pairs file is read by the same reader as ``prepare custom``: TSV and gzipped CSV score as the CSV does."""
    _pairs().to_csv(tmp_path / "pairs.csv", index=False)
    _pairs().to_csv(tmp_path / "pairs.tsv.gz", sep="\t", index=False)
    predict(tiny_run.run, tmp_path / "pairs.csv", tmp_path / "from_csv.csv")
    predict(tiny_run.run, tmp_path / "pairs.tsv.gz", tmp_path / "from_tsv.csv")
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "from_tsv.csv"), pd.read_csv(tmp_path / "from_csv.csv"))
    with pytest.raises(CorarecError, match=r"pairs.json: expected a .csv or .tsv .* or .parquet file$"):
        predict(tiny_run.run, tmp_path / "pairs.json", tmp_path / "o.csv")


def test_predict_malformed_rows_name_the_row(tiny_run, tmp_path):
    (tmp_path / "empty_item.csv").write_text("user,item\nu00,m1001\nu01,m1002\nu02,\n")
    with pytest.raises(CorarecError, match=r"empty_item.csv: row 3: item is empty"):
        predict(tiny_run.run, tmp_path / "empty_item.csv", tmp_path / "o.csv")
    (tmp_path / "fields.csv").write_text("user,item\nu00,m1001\nu01,m1002,extra\n")
    with pytest.raises(CorarecError, match=r"fields.csv:3: malformed line: expected 2 fields separated by ','"):
        predict(tiny_run.run, tmp_path / "fields.csv", tmp_path / "o.csv")
    (tmp_path / "label.csv").write_text("user,item,label\nu00,m1001,1\nu01,m1002,2\n")
    with pytest.raises(CorarecError, match=r"label.csv: row 2: label must be 0 or 1"):
        predict(tiny_run.run, tmp_path / "label.csv", tmp_path / "o.csv")
    (tmp_path / "cols.csv").write_text("who,what\nu00,m1001\n")
    with pytest.raises(CorarecError, match=r"cols.csv: missing column\(s\) user, item"):
        predict(tiny_run.run, tmp_path / "cols.csv", tmp_path / "o.csv")
    with pytest.raises(CorarecError, match=r"o.json: output must be a .csv or .parquet"):
        predict(tiny_run.run, tmp_path / "cols.csv", tmp_path / "o.json")
    assert not (tmp_path / "o.csv").exists()


def test_cli_predict_prints_metrics(tiny_run, tmp_path):
    _pairs().to_csv(tmp_path / "pairs.csv", index=False)
    result = runner.invoke(app, ["predict", "--run", str(tiny_run.run), "--input", str(tmp_path / "pairs.csv"),
                                 "--out", str(tmp_path / "scores.parquet")])
    assert result.exit_code == 0, result.output
    assert "AUC" in result.output and "cold" in result.output and "wrote" in result.output
    assert len(pd.read_parquet(tmp_path / "scores.parquet")) == 6


def test_cli_recommend_prints_a_table(tiny_run, recommender, tmp_path):
    result = runner.invoke(app, ["recommend", "--run", str(tiny_run.run), "--user", "u04", "-k", "3", "--pool", "6"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0].split()[:3] == ["rank", "item", "title"] and len(lines) == 4
    top = recommender.recommend("u04", k=3, pool=6)
    assert [line.split()[1] for line in lines[1:]] == list(top["item"])

    (tmp_path / "cands.txt").write_text("m1001\nm1002\nm1003\n")
    result = runner.invoke(app, ["recommend", "--run", str(tiny_run.run), "--user", "u04",
                                 "--candidates", str(tmp_path / "cands.txt")])
    assert result.exit_code == 0, result.output
    assert {line.split()[1] for line in result.stdout.strip().splitlines()[1:]} <= {"m1001", "m1002", "m1003"}


def test_cli_user_error_is_one_line(tiny_run, tmp_path, capsys, monkeypatch):
    import sys

    from corarec.cli import main

    monkeypatch.setattr(sys, "argv", ["corarec", "recommend", "--run", str(tiny_run.run), "--user", "u00",
                                      "-k", "5", "--pool", "2"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: pool (2) must be at least k (5)"


def test_predict_cut_off_goes_on_where_it_stopped(tiny_run, recommender, tmp_path, monkeypatch):
    from corarec.methods.cora import CoRA

    _pairs().to_csv(tmp_path / "pairs.csv", index=False)
    predict(tiny_run.run, tmp_path / "pairs.csv", tmp_path / "straight.csv", batch_size=2)
    cut = CutOff(CoRA.score, stop_at=2)
    monkeypatch.setattr(CoRA, "score", lambda self, batch: cut(self, batch))
    with pytest.raises(KeyboardInterrupt):
        predict(tiny_run.run, tmp_path / "pairs.csv", tmp_path / "scores.csv", batch_size=2)
    assert not (tmp_path / "scores.csv").exists() and len(list(tmp_path.glob("scores.csv-*.partial.safetensors"))) == 1
    cut.calls, cut.stop_at = 0, None
    predict(tiny_run.run, tmp_path / "pairs.csv", tmp_path / "scores.csv", batch_size=2)
    assert cut.calls == 2  # the 3 batches of 2 rows, less the one scored before Ctrl-C
    straight, resumed = (pd.read_csv(tmp_path / name) for name in ("straight.csv", "scores.csv"))
    tolerance = method_score_tolerance(recommender.run.method)
    assert_within(resumed["logit"].to_numpy(), straight["logit"].to_numpy(), tolerance, "resumed logits")
    assert list(tmp_path.glob("*.partial.safetensors")) == []  # gone with the written output
