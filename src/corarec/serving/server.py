"""HTTP service over a trained run (FastAPI, served by uvicorn).

Endpoints (OpenAPI documentation at ``/docs``)::

    POST /score      {"pairs": [{"user": "196", "item": "242"}, ...]}  → logits and probabilities
    POST /recommend  {"user": "196", "k": 10, "candidates": ["242", ...]}  → top-k items with titles

An item the dataset does not know is scored from its text when it comes with a title:
``{"user": "196", "item": "new-1", "title": "..."}`` in ``/score``, ``{"item": "new-1", "title": "..."}``
among the ``candidates`` of ``/recommend``.
    GET  /health     {"status": "ok"} once the model is loaded
    GET  /info       method, LLM, CF model, dataset, the run's metrics, serving settings

The run is loaded once, when the app is created. The rows of concurrent requests are scored
together by a :class:`~corarec.serving.microbatch.MicroBatcher` (``batching=False`` scores each request
alone, for comparison); model work always runs on one thread. Bad JSON (NaN and Infinity included),
wrong types (ids are JSON strings or integers: no booleans or floats; counts are integers, not
numeric strings), unknown fields and requests over the limits are answered with 422 and a message
saying what is wrong, never the input; ids the dataset does not know in ``candidates`` or
``history`` also give 422. A body over ``max_body_bytes`` is refused with 413 before it is parsed,
and with a token every endpoint but ``/health`` answers 401 without it (:mod:`corarec.serving.guard`).
"""

# No ``from __future__ import annotations`` here: FastAPI reads the endpoint annotations at run
# time, and the request models are built per app (their limits come from the settings).

import os
import re
import sys
import time
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel

from corarec.errors import CorarecError
from corarec.serving.microbatch import MicroBatcher
from corarec.serving.pairs import pair_records
from corarec.serving.recommender import Recommender, load, sigmoid
from corarec.serving.requests import ServeSettings, check_int, request_models
from corarec.serving.guard import (TOKEN_ENV, BearerToken, BodySizeLimit, StrictJSONRoute, exposure_warning,
                                 public_info, validation_error_response)

LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


def create_app(run: str | Path | Recommender, data: str | Path | None = None, device: str | None = None,
               settings: ServeSettings | None = None, token: str | None = None) -> FastAPI:
    """A FastAPI app serving ``run`` (a run directory, or an already loaded :class:`Recommender`).

    With ``token``, every endpoint but ``/health`` requires ``Authorization: Bearer <token>``."""
    s = settings or ServeSettings()
    if token is not None:
        check_token(token)
    recommender = run if isinstance(run, Recommender) else load(run, data=data, device=device)
    recommender.progress = False  # no progress bars in the server's log
    ScoreRequest, ScoreResponse, RecommendRequest, RecommendResponse = request_models(s)

    def process(rows: list[dict]) -> list[float]:  # runs on the model thread
        return recommender.logits(rows).tolist()

    batcher = MicroBatcher(process, s.max_batch_size, s.max_wait_ms, enabled=s.batching)
    started = time.time()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="corarec", summary="CoRA recommender: score user-item pairs and recommend items",
                  version=_version(), lifespan=lifespan)
    app.state.recommender = recommender
    app.state.batcher = batcher
    app.router.route_class = StrictJSONRoute  # NaN, Infinity, non-UTF-8: 422 (set before the routes)
    app.add_exception_handler(RequestValidationError, validation_error_response)
    app.add_middleware(BodySizeLimit, max_bytes=s.max_body_bytes)
    if token is not None:
        app.add_middleware(BearerToken, token=token)  # added last: outermost, checked before the body is read

    @app.post("/score", response_model=ScoreResponse)
    async def score(request: ScoreRequest) -> dict:
        """Score (user, item) pairs: the logit of "Yes" and its probability, per pair, in order."""
        def resolve() -> list[dict]:  # ids to rows: up to ~10^5 history ids, so off the event loop
            return recommender.resolve(pair_records([p.model_dump(exclude_none=True) for p in request.pairs]))

        try:
            rows = await batcher.run(resolve)
        except CorarecError as e:
            raise _unprocessable(e, "pairs")
        logits = await batcher.submit(rows)
        return {"scores": [{"user": r["user"], "item": r["item"], "logit": x, "probability": float(sigmoid(x)),
                            "cold": r["cold"]} for r, x in zip(rows, logits)]}

    @app.post("/recommend", response_model=RecommendResponse, response_model_exclude_none=True)
    async def recommend(request: RecommendRequest) -> dict:
        """Top-k items for a user, leaving out items the user already interacted with."""
        if request.candidates is None and request.pool < request.k:
            raise _unprocessable(f"pool ({request.pool}) must be at least k ({request.k})", "pool")
        candidates = None if request.candidates is None else [
            c.model_dump(exclude_none=True) if isinstance(c, BaseModel) else c for c in request.candidates]
        try:
            state = recommender.user_state(request.user, request.history)
            rows = await batcher.run(recommender.candidates, request.user, request.k, candidates,
                                     request.pool, request.history)
        except CorarecError as e:
            raise _unprocessable(e, "candidates" if request.candidates else "user")
        logits = await batcher.submit(rows[["user_id", "item_id", "history", "title"]].to_dict("records"))
        ranked = recommender.ranked(rows, logits, request.k)
        return {"user": str(request.user), "cold": state.cold, "items": ranked.to_dict("records")}

    @app.get("/health")
    async def health() -> dict:
        """Liveness: the model is loaded and the service answers."""
        return {"status": "ok", "uptime_s": round(time.time() - started, 1)}

    @app.get("/info")
    async def info() -> dict:
        """Method, LLM, CF model, dataset (names, not paths), the run's metrics and the serving settings."""
        out = public_info(recommender.info())
        out["serving"] = {**asdict(s), "token_required": token is not None, "batches": batcher.batches,
                          "rows": batcher.rows}
        return out

    return app


def serve(run: str | Path, host: str = "127.0.0.1", port: int = 8000, data: str | Path | None = None,
          device: str | None = None, batching: bool = True, max_batch_size: int = 64, max_wait_ms: float = 0.0,
          max_pairs: int = 1000, max_k: int = 100, max_body_bytes: int = 1 << 20, token: str | None = None,
          threads: int | None = None, log_level: str = "info") -> None:
    """Load ``run`` once and serve it over HTTP with uvicorn until interrupted.

    Every option is checked before the run is loaded. ``token`` (default: the ``CORAREC_TOKEN``
    environment variable, which unlike ``--token`` does not show in the process list) requires
    ``Authorization: Bearer <token>`` on every endpoint but ``/health``; serving on a non-loopback
    address without one prints a warning. ``threads`` sets torch's CPU threads (default: torch's
    choice); on a busy shared CPU fewer threads than cores avoids the steep slow-down of
    oversubscribed OpenMP threads.
    """
    from corarec.utils.distributed import one_process_only

    one_process_only("corarec serve")
    import torch
    import uvicorn

    if not isinstance(host, str) or not host.strip():
        raise CorarecError(f"--host must be an interface name or address, got {host!r}")
    check_int("--port", port, 1, 65535)
    if threads is not None:
        check_int("--threads", threads, 1)
    if log_level not in LOG_LEVELS:
        raise CorarecError(f"--log-level must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}")
    settings = ServeSettings(batching=batching, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms,
                             max_pairs=max_pairs, max_k=max_k, max_body_bytes=max_body_bytes)
    if token is None:
        token = os.environ.get(TOKEN_ENV) or None
    if token is not None:
        check_token(token)
    warning = exposure_warning(host, token)
    if warning:
        print(warning, file=sys.stderr)

    if threads is not None:
        torch.set_num_threads(threads)
    app = create_app(run, data=data, device=device, settings=settings, token=token)
    uvicorn.run(app, host=host, port=port, log_level=log_level, workers=1)


def check_token(token: str) -> None:
    """A bearer token must be sendable in an HTTP header: printable ASCII, no spaces (never echoed)."""
    if not isinstance(token, str) or not re.fullmatch(r"[\x21-\x7e]+", token):
        raise CorarecError(f"the token (--token or {TOKEN_ENV}) must be a non-empty string of printable "
                           "ASCII characters without spaces")


def _unprocessable(error: Exception | str, field: str) -> HTTPException:
    """A 422 in FastAPI's validation-error shape, carrying ``error``'s one-line message."""
    return HTTPException(status_code=422, detail=[{"loc": ["body", field], "msg": str(error),
                                                   "type": "value_error"}])


def _version() -> str:
    from corarec import __version__

    return __version__
