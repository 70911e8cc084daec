"""New items scored from their text: a title given with an item the dataset does not know reaches
the prompt (in place of "an unknown <noun>") and changes the score — from Python, `corarec predict`,
`POST /score` and `POST /recommend`; a known item keeps its dataset title."""

from __future__ import annotations

from contextlib import contextmanager

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from corarec.errors import CorarecError
from corarec.serving.pairs import candidate_records, read_candidates
from corarec.serving.predict import predict
from corarec.serving.requests import ServeSettings
from corarec.serving.server import create_app
from numerics import assert_within, method_score_tolerance, within

TITLE = "Space Robots Return (2031)"


@contextmanager
def prompts_seen(method):
    """Record the prompts of every batch ``method`` scores."""
    seen: list[str] = []
    score = method.score
    method.score = lambda batch: (seen.extend(batch.prompts), score(batch))[1]
    try:
        yield seen
    finally:
        del method.score  # the class's method again


def test_the_batcher_names_an_unknown_item_by_its_title(recommender):
    batcher = recommender.run.batcher
    assert f'titled "{TITLE}"?' in batcher.prompt([0, 2], -1, TITLE)
    assert 'titled "an unknown movie"?' in batcher.prompt([0, 2], -1, None)
    assert f'titled "{recommender.titles[4]}"?' in batcher.prompt([0, 2], 4, TITLE)  # a known item keeps its own
    rows = pd.DataFrame({"history": [[0], [0], [0]], "item_id": [-1, -1, 3], "title": [TITLE, float("nan"), "x"]})
    prompts = batcher.prompts(rows)
    assert TITLE in prompts[0] and "an unknown movie" in prompts[1] and recommender.titles[3] in prompts[2]


def test_a_title_reaches_the_prompt_and_changes_the_score(recommender):
    method = recommender.run.method
    with prompts_seen(method) as seen:
        titled = recommender.score([{"user": "u03", "item": "new-1", "title": TITLE}])
    assert len(seen) == 1 and f'titled "{TITLE}"?' in seen[0]
    plain = recommender.score([("u03", "new-1")])
    tolerance = method_score_tolerance(method)
    assert not within(titled["logit"].to_numpy(), plain["logit"].to_numpy(), tolerance)
    assert bool(titled["cold_item"].iloc[0])  # the CF side still reads its cold-item fallback
    # a known item keeps its dataset title: the given one changes nothing
    known = recommender.score([{"user": "u03", "item": "m1004", "title": TITLE}, ("u03", "m1004")])
    assert_within(known["logit"].iloc[:1].to_numpy(), known["logit"].iloc[1:].to_numpy(), tolerance)


def test_predict_reads_a_title_column(tiny_run, recommender, tmp_path):
    (tmp_path / "pairs.csv").write_text(f'user,item,title\nu03,new-1,"{TITLE}"\nu03,new-1,\nu03,m1004,\n')
    predict(tiny_run.run, tmp_path / "pairs.csv", tmp_path / "scores.csv")
    out = pd.read_csv(tmp_path / "scores.csv")
    expected = recommender.score([{"user": "u03", "item": "new-1", "title": TITLE}, ("u03", "new-1"), ("u03", "m1004")])
    tolerance = method_score_tolerance(recommender.run.method)
    assert_within(out["logit"].to_numpy(), expected["logit"].to_numpy(), tolerance, "predicted logits")
    assert not within(out["logit"].iloc[0], out["logit"].iloc[1], tolerance)  # the title row differs
    pd.DataFrame({"user": ["u03"], "item": ["new-1"], "title": [7]}).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(CorarecError, match=r"bad.parquet: row 1: title must be text"):
        predict(tiny_run.run, tmp_path / "bad.parquet", tmp_path / "o.csv")


def test_recommend_ranks_new_items_given_with_a_title(recommender):
    candidates = ["m1001", {"item": "new-1", "title": TITLE}, {"item": "new-2", "title": "Quiet Lake"}, "m1001"]
    top = recommender.recommend("u03", k=5, candidates=candidates, exclude_seen=False)
    assert set(top["item"]) == {"m1001", "new-1", "new-2"}
    titles = dict(zip(top["item"], top["title"]))
    assert titles["new-1"] == TITLE and titles["new-2"] == "Quiet Lake"
    scored = recommender.score([{"user": "u03", "item": item, "title": titles[item]} for item in top["item"]])
    assert_within(top["logit"].to_numpy(), scored["logit"].to_numpy(), method_score_tolerance(recommender.run.method))
    unknown = r"candidates: item 2 \('new-3'\) is not an item .* \(give a new item with its title\)"
    with pytest.raises(CorarecError, match=unknown):
        recommender.recommend("u03", candidates=["m1001", "new-3"])
    with pytest.raises(CorarecError, match=r"candidates: item 1: title must be text"):
        candidate_records([{"item": "new-1", "title": 3}])


def test_candidates_file_with_titles(tmp_path):
    (tmp_path / "c.csv").write_text(f'item,title\nm1001,\nnew-1,"{TITLE}"\n')
    assert read_candidates(tmp_path / "c.csv") == [{"item": "m1001", "title": None}, {"item": "new-1", "title": TITLE}]


@pytest.fixture(scope="module")
def client(recommender):
    with TestClient(create_app(recommender, settings=ServeSettings(max_candidates=10))) as c:
        yield c


def test_http_score_and_recommend_accept_titles(client, recommender):
    tolerance = method_score_tolerance(recommender.run.method)
    body = {"pairs": [{"user": "u03", "item": "new-1", "title": TITLE}, {"user": "u03", "item": "new-1"}]}
    scores = client.post("/score", json=body).json()["scores"]
    expected = recommender.score([{"user": "u03", "item": "new-1", "title": TITLE}, ("u03", "new-1")])
    assert_within([s["logit"] for s in scores], expected["logit"].to_numpy(), tolerance, "served logits")
    assert not within(scores[0]["logit"], scores[1]["logit"], tolerance) and scores[0]["cold"]

    body = {"user": "u03", "k": 3, "candidates": ["m1001", {"item": "new-1", "title": TITLE}]}
    response = client.post("/recommend", json=body)
    assert response.status_code == 200, response.text
    items = {i["item"]: i for i in response.json()["items"]}
    assert items["new-1"]["title"] == TITLE
    assert_within(items["new-1"]["logit"], expected["logit"].iloc[0], tolerance)
    for bad, fragment in ((["new-3"], "is not an item"), ([{"item": "new-1", "title": 5}], "string"),
                          ([{"item": "new-1", "name": "x"}], "Extra inputs"),
                          ([{"item": "new-1", "title": "x" * 501}], "at most 500")):
        response = client.post("/recommend", json={"user": "u03", "candidates": bad})
        assert response.status_code == 422 and fragment in response.text, response.text
