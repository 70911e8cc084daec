"""What the HTTP service refuses and reveals: the body-size cap (413 before parsing, also for chunked
bodies), id length, strict JSON and strict types (422), errors that never echo the input, /info
without paths, the optional bearer token, and serve options checked before anything is loaded."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import corarec.serving.server as serve_module
from corarec.serving import guard as serve_guard
from corarec.errors import CorarecError
from corarec.serving.requests import ServeSettings
from corarec.serving.server import create_app, serve
from corarec.serving.guard import BodySizeLimit, exposure_warning, public_info, strict_json_loads

LIMIT = 2000
TOKEN = "s3cret-Token_1"
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def client(recommender):
    app = create_app(recommender, settings=ServeSettings(max_pairs=8, max_k=5, max_candidates=10, max_body_bytes=LIMIT))
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def guarded(recommender):
    with TestClient(create_app(recommender, settings=ServeSettings(max_body_bytes=LIMIT), token=TOKEN)) as c:
        yield c


def padded_score_body(size: int) -> bytes:
    """A valid /score body padded with spaces to exactly ``size`` bytes."""
    body = json.dumps({"pairs": [{"user": "u00", "item": "m1001"}]}).encode()
    return body[:-1] + b" " * (size - len(body)) + b"}"


# ----- body size ------------------------------------------------------------------------------------

def test_body_at_the_limit_is_served_and_one_byte_more_is_413(client):
    assert client.post("/score", content=padded_score_body(LIMIT), headers=JSON).status_code == 200
    rows_before = client.get("/info").json()["serving"]["rows"]
    response = client.post("/score", content=padded_score_body(LIMIT + 1), headers=JSON)
    assert response.status_code == 413 and f"larger than {LIMIT} bytes" in response.text
    assert client.get("/info").json()["serving"]["rows"] == rows_before  # nothing was scored


def test_chunked_body_without_content_length_is_413(client):
    def chunks():
        for _ in range(10):
            yield b"x" * 500

    response = client.post("/score", content=chunks(), headers=JSON)
    assert response.request.headers.get("content-length") is None  # streamed, size not declared
    assert response.status_code == 413


def run_middleware(chunks: list[bytes], content_length: int | None, max_bytes: int):
    """Drive BodySizeLimit directly: how many chunks it read, whether the app ran, what it answered."""
    reads, inner_calls, sent = [], [], []

    async def receive():
        n = len(reads)
        reads.append(n)
        return {"type": "http.request", "body": chunks[n], "more_body": n + 1 < len(chunks)}

    async def send(message):
        sent.append(message)

    async def inner(scope, receive_, send_):
        inner_calls.append((await receive_())["body"])
        await send_({"type": "http.response.start", "status": 200, "headers": []})
        await send_({"type": "http.response.body", "body": b""})

    headers = [] if content_length is None else [(b"content-length", str(content_length).encode())]
    scope = {"type": "http", "method": "POST", "path": "/score", "headers": headers}
    asyncio.run(BodySizeLimit(inner, max_bytes)(scope, receive, send))
    return len(reads), inner_calls, sent[0]["status"]


def test_size_cap_is_decided_before_the_body_is_read_or_parsed():
    many = [b"x" * 100] * 50
    # a declared size over the limit: not one chunk is read
    assert run_middleware(many, content_length=5000, max_bytes=250) == (0, [], 413)
    # undeclared size: reading stops at the first chunk past the limit, the app never runs
    assert run_middleware(many, content_length=None, max_bytes=250) == (3, [], 413)
    # under the limit the app gets the whole body, once
    assert run_middleware([b"ab", b"cd"], content_length=None, max_bytes=250) == (2, [b"abcd"], 200)


# ----- strict JSON and strict types -----------------------------------------------------------------

@pytest.mark.parametrize("path, body, fragment", [
    ("/score", b'{"pairs": [{"user": NaN, "item": "m1001"}]}', "NaN is not valid JSON"),
    ("/score", b'{"pairs": [{"user": "u00", "item": Infinity}]}', "Infinity is not valid JSON"),
    ("/score", b'{"pairs": [{"user": "u00", "item": -Infinity}]}', "Infinity is not valid JSON"),
    ("/recommend", b'{"user": "u00", "k": NaN}', "NaN is not valid JSON"),
    ("/score", b'{"pairs": [{"user": "u00", "item": 1e999}]}', "out of the float range"),
    ("/score", b'{"pairs": [{"user": "\xff", "item": "m1001"}]}', "not UTF-8"),
])
def test_non_json_numbers_and_bytes_are_422(client, path, body, fragment):
    response = client.post(path, content=body, headers=JSON)
    assert response.status_code == 422, response.text
    assert fragment in response.text


def test_strict_json_loads_reports_deep_nesting_and_huge_integers_as_json_errors():
    with pytest.raises(json.JSONDecodeError, match="nested too deeply"):
        strict_json_loads(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(json.JSONDecodeError, match="too many digits"):
        strict_json_loads(b"1" * 5000)
    assert strict_json_loads(b'{"a": [1, 2.5, "NaN"]}') == {"a": [1, 2.5, "NaN"]}


@pytest.mark.parametrize("path, body, fragment", [
    ("/score", {"pairs": [{"user": True, "item": "m1001"}]}, "an id is a JSON string or integer"),
    ("/score", {"pairs": [{"user": "u00", "item": 1003.0}]}, "an id is a JSON string or integer"),
    ("/score", {"pairs": [{"user": "u00", "item": "m1001", "history": ["m1000", False]}]}, "an id is a JSON string"),
    ("/score", {"pairs": [{"user": 2 ** 64, "item": "m1001"}]}, "must fit in 64 bits"),
    ("/score", {"pairs": [{"user": "x" * 257, "item": "m1001"}]}, "an id is at most 256 characters"),
    ("/score", {"pairs": [{"user": "u00", "item": "m1001", "label": 1}]}, "Extra inputs are not permitted"),
    ("/recommend", {"user": "u00", "k": "3"}, "valid integer"),
    ("/recommend", {"user": "u00", "k": True}, "valid integer"),
    ("/recommend", {"user": "u00", "k": 3.0}, "valid integer"),
    ("/recommend", {"user": "u00", "pool": "50"}, "valid integer"),
    ("/recommend", {"user": False}, "an id is a JSON string or integer"),
    ("/recommend", {"user": "u00", "candidate": ["m1001"]}, "Extra inputs are not permitted"),
])
def test_booleans_floats_numeric_strings_long_ids_and_unknown_fields_are_422(client, path, body, fragment):
    response = client.post(path, json=body)
    assert response.status_code == 422, response.text
    assert fragment in response.text


def test_strings_and_integers_stay_valid_ids(client):
    long_id = "x" * 256  # at the limit: accepted, scored as a cold-start user
    body = {"pairs": [{"user": "u00", "item": 1003}, {"user": "u00", "item": "1003"}, {"user": long_id, "item": "m1001"}]}
    response = client.post("/score", json=body)
    assert response.status_code == 200, response.text
    scores = response.json()["scores"]
    assert scores[0]["item"] == scores[1]["item"] == "1003" and scores[2]["cold"] is True
    assert client.post("/recommend", json={"user": "u00", "k": 2, "pool": 5}).status_code == 200


def test_errors_never_echo_the_input(client):
    marker = "ECHO-ME-7f3a"
    bodies = [
        {"pairs": [{"user": {"nested": marker}, "item": "m1001"}]},
        {"pairs": [{"user": marker * 30, "item": "m1001"}]},
        {"pairs": [{"user": "u00", "item": "m1001", "x" * 80 + marker: 1}]},
        {"pairs": marker},
        {"user": "u00", "k": marker},
    ]
    for body in bodies:
        for path in ("/score", "/recommend"):
            response = client.post(path, json=body)
            assert response.status_code == 422
            assert marker not in response.text, response.text
            assert all("input" not in d for d in response.json()["detail"])
    response = client.post("/score", content=f'{{"pairs": [{{"user": "{marker}", '.encode(), headers=JSON)
    assert response.status_code == 422 and "JSON decode error" in response.text and marker not in response.text


# ----- /info ----------------------------------------------------------------------------------------

def all_strings(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from all_strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from all_strings(v)
    elif isinstance(value, str):
        yield value


def test_info_shows_names_not_paths(client, tiny_run):
    info = client.get("/info").json()
    assert info["run"] == tiny_run.run.name and info["llm"] == tiny_run.llm.name
    assert info["cf"]["run"] == tiny_run.cf.name and info["dataset"]["directory"] == tiny_run.data.name
    root = str(tiny_run.run.parent)
    assert not [s for s in all_strings(info) if Path(s).is_absolute() or root in s]


def test_public_info_keeps_model_ids_and_names_local_folders(tmp_path):
    base = {"run": str(tmp_path / "my-run"), "cf": {"run": "runs/mf", "model": "mf"},
            "dataset": {"name": "ml-100k", "path": str(tmp_path / "ml-100k")}, "metrics": {"note": "/etc/x"}}
    for llm, shown in [("HuggingFaceTB/SmolLM2-135M", "HuggingFaceTB/SmolLM2-135M"), ("smollm2-135m", "smollm2-135m"),
                       (str(tmp_path / "llama"), "llama"), ("./models/llama/", "llama")]:
        out = public_info({**base, "llm": llm})
        assert out["llm"] == shown
        assert out["run"] == "my-run" and out["cf"]["run"] == "mf" and out["dataset"] == {"name": "ml-100k", "directory": "ml-100k"}
        assert out["metrics"]["note"] == "x"
    assert base["run"] == str(tmp_path / "my-run")  # the input is left alone


# ----- bearer token ---------------------------------------------------------------------------------

def test_token_is_required_everywhere_but_health(guarded, monkeypatch):
    body = {"pairs": [{"user": "u00", "item": "m1001"}]}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                    {"Authorization": f"Basic {TOKEN}"}, {"Authorization": f"Bearer {TOKEN}x"}):
        response = guarded.post("/score", json=body, headers=headers)
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
        assert TOKEN not in response.text
    for path in ("/info", "/docs", "/openapi.json"):
        assert guarded.get(path).status_code == 401
    assert guarded.get("/health").status_code == 200
    ok = {"Authorization": f"Bearer {TOKEN}"}
    assert guarded.post("/score", json=body, headers=ok).status_code == 200
    assert guarded.post("/score", json=body, headers={"authorization": f"bearer {TOKEN}"}).status_code == 200
    assert guarded.get("/info", headers=ok).json()["serving"]["token_required"] is True
    # unauthenticated clients are refused before their body is looked at
    assert guarded.post("/score", content=b"x" * (LIMIT + 1), headers=JSON).status_code == 401

    compared = []
    real = serve_guard.hmac.compare_digest
    monkeypatch.setattr(serve_guard.hmac, "compare_digest", lambda a, b: compared.append(1) or real(a, b))
    assert guarded.get("/info", headers=ok).status_code == 200 and compared  # constant-time comparison


@pytest.mark.parametrize("host, token, warns", [
    ("127.0.0.1", None, False), ("localhost", None, False), ("::1", None, False), ("127.0.0.2", None, False),
    ("0.0.0.0", None, True), ("::", None, True), ("192.168.1.5", None, True), ("myhost.example", None, True),
    ("0.0.0.0", TOKEN, False),
])
def test_exposure_warning(host, token, warns):
    assert (exposure_warning(host, token) is not None) == warns


# ----- serve(): options and wiring ------------------------------------------------------------------

@pytest.fixture
def no_uvicorn(monkeypatch):
    """serve() up to uvicorn.run, which records its arguments instead of serving."""
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    monkeypatch.delenv(serve_guard.TOKEN_ENV, raising=False)
    return calls


def test_serve_reads_the_token_from_the_environment_and_warns_when_exposed(tiny_run, no_uvicorn, monkeypatch, capsys):
    serve(tiny_run.run, host="0.0.0.0", port=8123, max_body_bytes=4096, log_level="warning")
    app, kwargs = no_uvicorn[-1]
    assert kwargs["host"] == "0.0.0.0" and kwargs["port"] == 8123
    assert "without a token" in capsys.readouterr().err
    with TestClient(app) as c:
        assert c.get("/info").json()["serving"]["max_body_bytes"] == 4096

    monkeypatch.setenv(serve_guard.TOKEN_ENV, TOKEN)
    serve(tiny_run.run, host="0.0.0.0", port=8123)
    assert "without a token" not in capsys.readouterr().err
    with TestClient(no_uvicorn[-1][0]) as c:
        assert c.get("/info").status_code == 401
        assert c.get("/info", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


@pytest.mark.parametrize("options, fragment", [
    ({"max_batch_size": 0}, "--max-batch-size must be an integer at least 1, got 0"),
    ({"max_wait_ms": -1}, "--max-wait-ms must be a finite number of at least 0, got -1"),
    ({"max_wait_ms": float("nan")}, "--max-wait-ms must be a finite number"),
    ({"max_pairs": -1}, "--max-pairs must be an integer at least 1, got -1"),
    ({"max_k": 0}, "--max-k must be"),
    ({"max_body_bytes": 0}, "--max-body-bytes must be"),
    ({"port": 99999}, "--port must be an integer between 1 and 65535, got 99999"),
    ({"port": 0}, "--port must be"),
    ({"threads": 0}, "--threads must be"),
    ({"log_level": "loud"}, "--log-level must be one of"),
    ({"host": " "}, "--host must be"),
    ({"token": ""}, "the token"),
    ({"token": "two words"}, "the token"),
    ({"batching": "yes"}, "batching must be true or false"),
])
def test_bad_serve_options_fail_before_loading(tiny_run, no_uvicorn, monkeypatch, options, fragment):
    monkeypatch.setattr(serve_module, "create_app", lambda *a, **k: pytest.fail("loaded despite a bad option"))
    with pytest.raises(CorarecError, match="^" + re.escape(fragment)) as error:
        serve(tiny_run.run, **options)
    assert "\n" not in str(error.value) and "two words" not in str(error.value)


@pytest.mark.parametrize("argv, fragment", [
    (["--max-batch-size", "0"], "--max-batch-size"), (["--max-wait-ms", "-1"], "--max-wait-ms"),
    (["--max-pairs", "-1"], "--max-pairs"), (["--port", "99999"], "--port"),
])
def test_cli_serve_bad_options_are_one_line_errors(tiny_run, no_uvicorn, monkeypatch, capsys, argv, fragment):
    from corarec import cli

    monkeypatch.setattr(sys, "argv", ["corarec", "serve", "--run", str(tiny_run.run), *argv])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith(f"error: {fragment} must be") and err.count("\n") == 1
    assert not no_uvicorn
