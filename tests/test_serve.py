"""The HTTP service: every endpoint with FastAPI's test client (bad inputs included), micro-batching,
and real round trips through uvicorn on 127.0.0.1 (the body cap and the token included; the rest of
the limits are in test_serve_limits.py)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from contextlib import contextmanager

import httpx
import pytest
from fastapi.testclient import TestClient

from corarec.serving.microbatch import MicroBatcher
from corarec.serving.requests import ServeSettings
from corarec.serving.server import create_app
from numerics import assert_within, method_score_tolerance, scaled_delta_weights, within


@pytest.fixture(scope="module")
def client(recommender):
    app = create_app(recommender, settings=ServeSettings(max_pairs=8, max_k=5, max_candidates=10))
    with TestClient(app) as c:
        yield c


def test_health_info_and_docs(client, tiny_run):
    assert client.get("/health").json()["status"] == "ok"
    info = client.get("/info").json()
    assert info["method"] == "cora" and info["llm"] == tiny_run.llm.name  # a name, not the path
    assert info["cf"]["model"] == "mf" and info["cf"]["dim"] == 16
    assert info["dataset"]["name"] == "tiny" and info["dataset"]["items"] == 30
    assert info["metrics"]["best_valid_auc"] is not None
    assert info["serving"]["batching"] is True and info["serving"]["max_pairs"] == 8
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert {"/score", "/recommend", "/health", "/info"} <= set(spec["paths"])


def test_score(client, recommender):
    body = {"pairs": [{"user": "u00", "item": "m1001"}, {"user": "stranger", "item": 1003},
                      {"user": "newbie", "item": "m1004", "history": ["m1000", "m1002"]}]}
    response = client.post("/score", json=body)
    assert response.status_code == 200, response.text
    scores = response.json()["scores"]
    assert [(s["user"], s["item"]) for s in scores] == [("u00", "m1001"), ("stranger", "1003"), ("newbie", "m1004")]
    assert [s["cold"] for s in scores] == [False, True, True]
    expected = recommender.score([("u00", "m1001"), ("stranger", "1003"),
                                  {"user": "newbie", "item": "m1004", "history": ["m1000", "m1002"]}])
    tolerance = method_score_tolerance(recommender.run.method)  # fp32, batched otherwise
    assert_within([s["logit"] for s in scores], expected["logit"].to_numpy(), tolerance, "served logits")
    with scaled_delta_weights(recommender.run.method, 1.1):  # ... and the comparison can fail: ΔW 10% off
        off = recommender.score([("u00", "m1001"), ("stranger", "1003"),
                                 {"user": "newbie", "item": "m1004", "history": ["m1000", "m1002"]}])
    assert not within([s["logit"] for s in scores], off["logit"].to_numpy(), tolerance)
    assert all(0 < s["probability"] < 1 for s in scores)


@pytest.mark.parametrize("body, fragment", [
    ({}, "Field required"),
    ({"pairs": []}, "at least 1 item"),
    ({"pairs": [{"user": "u00", "item": "m1001"}] * 9}, "at most 8 items"),
    ({"pairs": [{"user": "u00"}]}, "Field required"),
    ({"pairs": [{"user": {"id": 1}, "item": "m1001"}]}, "an id is a JSON string or integer"),
    ({"pairs": [{"user": "u00", "item": "m1001", "history": "m1000"}]}, "valid list"),
    ({"pairs": [{"user": "u00", "item": "  "}]}, "row 1: item is empty"),
    ({"pairs": [{"user": "u00", "item": "m1001", "history": ["zz"]}]}, "row 1: history: item 1 ('zz') is not an item"),
])
def test_score_rejects_bad_input_with_422(client, body, fragment):
    response = client.post("/score", json=body)
    assert response.status_code == 422
    assert fragment in response.text


def test_score_rejects_malformed_json(client):
    response = client.post("/score", content=b'{"pairs": [', headers={"content-type": "application/json"})
    assert response.status_code == 422 and "json" in response.text.lower()


def test_recommend(client, recommender):
    response = client.post("/recommend", json={"user": "u02", "k": 3})
    assert response.status_code == 200, response.text
    body = response.json()
    expected = recommender.recommend("u02", k=3)
    assert body["user"] == "u02" and body["cold"] is False
    assert [i["item"] for i in body["items"]] == list(expected["item"])
    assert [i["rank"] for i in body["items"]] == [1, 2, 3] and all(i["title"] for i in body["items"])
    seen = recommender.user_state("u02").seen
    assert not set(recommender.item_list([i["item"] for i in body["items"]], "t")) & seen

    response = client.post("/recommend", json={"user": "u02", "k": 2, "candidates": ["m1001", "m1003", "m1005"]})
    assert response.status_code == 200
    assert {i["item"] for i in response.json()["items"]} <= {"m1001", "m1003", "m1005"}
    cold = client.post("/recommend", json={"user": "stranger", "k": 2, "history": ["m1000"]}).json()
    assert cold["cold"] is True and len(cold["items"]) == 2


@pytest.mark.parametrize("body, fragment", [
    ({"k": 3}, "Field required"),
    ({"user": "u00", "k": 0}, "greater than or equal to 1"),
    ({"user": "u00", "k": 6}, "less than or equal to 5"),
    ({"user": "u00", "k": "many"}, "valid integer"),
    ({"user": "u00", "candidates": []}, "at least 1 item"),
    ({"user": "u00", "candidates": [str(i) for i in range(11)]}, "at most 10 items"),
    ({"user": "u00", "candidates": ["m1001", "nope"]}, "candidates: item 2 ('nope') is not an item"),
    ({"user": "u00", "k": 5, "pool": 2}, "pool (2) must be at least k (5)"),
])
def test_recommend_rejects_bad_input_with_422(client, body, fragment):
    response = client.post("/recommend", json=body)
    assert response.status_code == 422
    assert fragment in response.text


def test_microbatcher_merges_concurrent_requests_and_splits_results():
    calls = []

    def process(rows):
        calls.append(list(rows))
        return [r * 10 for r in rows]

    async def main(enabled):
        batcher = MicroBatcher(process, max_batch_size=100, max_wait_ms=50, enabled=enabled)
        await batcher.start()
        results = await asyncio.gather(*(batcher.submit([i, i + 100]) for i in range(6)))
        await batcher.stop()
        return results

    results = asyncio.run(main(True))
    assert results == [[10 * i, 10 * (i + 100)] for i in range(6)]
    assert len(calls) == 1 and len(calls[0]) == 12
    calls.clear()
    assert asyncio.run(main(False)) == results and len(calls) == 6


def test_microbatcher_respects_max_batch_size_and_propagates_errors():
    calls = []

    def process(rows):
        calls.append(len(rows))
        if -1 in rows:
            raise ValueError("bad row")
        return rows

    async def main():
        batcher = MicroBatcher(process, max_batch_size=4, max_wait_ms=20)
        await batcher.start()
        ok = await asyncio.gather(*(batcher.submit([i, i]) for i in range(5)))
        bad = await asyncio.gather(batcher.submit([-1]), return_exceptions=True)
        await batcher.stop()
        return ok, bad

    ok, bad = asyncio.run(main())
    assert ok == [[i, i] for i in range(5)]
    assert max(calls[:-1]) <= 4 and sum(calls[:-1]) == 10
    assert isinstance(bad[0], ValueError)


def test_batched_and_unbatched_servers_agree_under_concurrency(recommender):
    pairs = [{"user": f"u{u:02d}", "item": f"m{1000 + (3 * u) % 29}"} for u in range(8)]

    def run_all(batching):
        # the batch closes on its size, not on a clock: a loaded machine cannot make the requests miss it
        app = create_app(recommender, settings=ServeSettings(batching=batching, max_batch_size=len(pairs),
                                                             max_wait_ms=60_000))
        with TestClient(app) as c:
            threads, out = [], {}
            for n, pair in enumerate(pairs):
                t = threading.Thread(target=lambda n=n, p=pair: out.__setitem__(n, c.post("/score", json={"pairs": [p]})))
                threads.append(t)
                t.start()
            for t in threads:
                t.join()
            serving = c.get("/info").json()["serving"]
        assert all(out[n].status_code == 200 for n in out)
        return [out[n].json()["scores"][0]["logit"] for n in range(len(pairs))], serving

    batched, stats_on = run_all(True)
    alone, stats_off = run_all(False)
    assert_within(batched, alone, method_score_tolerance(recommender.run.method), "batched vs unbatched logits")
    assert stats_off["batches"] == len(pairs) and stats_on["rows"] == len(pairs)
    assert stats_on["batches"] == 1  # the concurrent requests shared one model call


@contextmanager
def uvicorn_server(app):
    """``app`` served by uvicorn on a free 127.0.0.1 port in a thread; yields the base URL."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 30
        while not server.started:
            assert time.time() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    assert not thread.is_alive()


def test_real_http_round_trip_through_uvicorn(recommender):
    with uvicorn_server(create_app(recommender)) as base, httpx.Client(base_url=base, timeout=30) as http:
        assert http.get("/health").json()["status"] == "ok"
        scored = http.post("/score", json={"pairs": [{"user": "u01", "item": "m1002"}]})
        assert scored.status_code == 200
        expected = recommender.score([("u01", "m1002")])["logit"].iloc[0]
        assert_within(scored.json()["scores"][0]["logit"], expected, method_score_tolerance(recommender.run.method))
        assert http.post("/recommend", json={"user": "u01", "k": 2}).json()["items"][0]["rank"] == 1
        assert http.post("/score", json={"pairs": "nope"}).status_code == 422


def test_body_cap_token_and_strict_json_over_real_http(recommender):
    limit, token = 2000, "s3cret-Token_1"
    valid = json.dumps({"pairs": [{"user": "u00", "item": "m1001"}]}).encode()
    at_limit, over = (valid[:-1] + b" " * (size - len(valid)) + b"}" for size in (limit, limit + 1))
    plain = {"content-type": "application/json"}
    ok = {"Authorization": f"Bearer {token}", **plain}
    app = create_app(recommender, settings=ServeSettings(max_body_bytes=limit), token=token)
    with uvicorn_server(app) as base:
        with httpx.Client(base_url=base, timeout=30) as http:
            assert http.get("/health").status_code == 200
            assert http.post("/score", content=at_limit, headers=plain).status_code == 401
            assert http.post("/score", content=at_limit, headers=ok).status_code == 200
            assert http.post("/score", content=over, headers=ok).status_code == 413
        with httpx.Client(base_url=base, timeout=30) as http:  # the 413 closed the connection
            assert http.post("/score", content=iter([b"{" + b" " * 999] * 3), headers=ok).status_code == 413  # chunked
        with httpx.Client(base_url=base, timeout=30) as http:
            nan = b'{"pairs": [{"user": NaN, "item": "m1001"}]}'
            assert http.post("/score", content=nan, headers=ok).status_code == 422
