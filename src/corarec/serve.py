"""HTTP service over a trained run (FastAPI, served by uvicorn).

Endpoints (OpenAPI documentation at ``/docs``)::

    POST /score      {"pairs": [{"user": "196", "item": "242"}, ...]}  → logits and probabilities
    POST /recommend  {"user": "196", "k": 10, "candidates": ["242", ...]}  → top-k items with titles
    GET  /health     {"status": "ok"} once the model is loaded
    GET  /info       method, LLM, CF model, dataset, the run's metrics, serving settings

The run is loaded once, when the app is created. The rows of concurrent requests are scored
together by a :class:`~corarec.microbatch.MicroBatcher` (``batching=False`` scores each request
alone, for comparison); model work always runs on one thread. Bad JSON, wrong types and requests
over the limits are answered with 422 and a message saying what is wrong; ids the dataset does not
know in ``candidates`` or ``history`` also give 422.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the endpoint annotations at run
# time, and the request models are local to create_app (their limits come from the settings).

import time
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Union

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

from corarec.errors import CorarecError
from corarec.microbatch import MicroBatcher
from corarec.recommender import Recommender, load, pair_records, sigmoid

RawId = Union[str, int]


@dataclass
class ServeSettings:
    """How the service batches and what it accepts."""

    batching: bool = True
    """Score the rows of concurrent requests together (off: one request per model call)."""
    max_batch_size: int = 64
    """Most rows collected into one model call (a larger single request is still scored whole)."""
    max_wait_ms: float = 0.0
    """How long the first waiting request may wait for others to join its batch. 0 (default):
    no added latency — the requests that arrived while the model was busy form the next batch."""
    max_pairs: int = 1000
    """Most pairs in one ``/score`` request."""
    max_k: int = 100
    """Largest ``k`` of ``/recommend``."""
    max_candidates: int = 1000
    """Most ``candidates`` (and largest ``pool``) of one ``/recommend`` request."""
    max_history: int = 1000
    """Most items in a request's ``history``."""


def request_models(s: ServeSettings) -> tuple[type[BaseModel], ...]:
    """Pydantic request/response models whose limits come from ``s`` (they show in /docs)."""

    class Pair(BaseModel):
        user: RawId = Field(description="User id as in the original data")
        item: RawId = Field(description="Item id as in the original data")
        history: Optional[list[RawId]] = Field(
            None, max_length=s.max_history,
            description="Item ids the user liked, oldest first; replaces the dataset's history (for a new user)")

    class ScoreRequest(BaseModel):
        pairs: list[Pair] = Field(min_length=1, max_length=s.max_pairs)

    class ScoredPair(BaseModel):
        user: str
        item: str
        logit: float
        probability: float = Field(description="Sigmoid of the logit: P(the user likes the item)")
        cold: bool = Field(description="The user or item did not occur in train (cold-start embedding)")

    class ScoreResponse(BaseModel):
        scores: list[ScoredPair]

    class RecommendRequest(BaseModel):
        user: RawId
        k: int = Field(10, ge=1, le=s.max_k)
        candidates: Optional[list[RawId]] = Field(None, min_length=1, max_length=s.max_candidates,
                                                  description="Item ids to rank; default: the CF model's top `pool`")
        pool: int = Field(100, ge=1, le=s.max_candidates, description="CF pre-selection size without candidates")
        history: Optional[list[RawId]] = Field(None, max_length=s.max_history,
                                               description="Item ids the user liked, oldest first (for a new user)")

    class RecommendedItem(BaseModel):
        rank: int
        item: str
        title: str
        logit: float
        probability: float
        cf_logit: Optional[float] = None

    class RecommendResponse(BaseModel):
        user: str
        cold: bool
        items: list[RecommendedItem]

    return ScoreRequest, ScoreResponse, RecommendRequest, RecommendResponse


def create_app(run: str | Path | Recommender, data: str | Path | None = None, device: str | None = None,
               settings: ServeSettings | None = None) -> FastAPI:
    """A FastAPI app serving ``run`` (a run directory, or an already loaded :class:`Recommender`)."""
    s = settings or ServeSettings()
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

    @app.post("/score", response_model=ScoreResponse)
    async def score(request: ScoreRequest) -> dict:
        """Score (user, item) pairs: the logit of "Yes" and its probability, per pair, in order."""
        try:
            rows = recommender.resolve(pair_records([p.model_dump(exclude_none=True) for p in request.pairs]))
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
        try:
            state = recommender.user_state(request.user, request.history)
            rows = await batcher.run(recommender.candidates, request.user, request.k, request.candidates,
                                     request.pool, request.history)
        except CorarecError as e:
            raise _unprocessable(e, "candidates" if request.candidates else "user")
        logits = await batcher.submit(rows[["user_id", "item_id", "history"]].to_dict("records"))
        ranked = recommender.ranked(rows, logits, request.k)
        return {"user": str(request.user), "cold": state.cold, "items": ranked.to_dict("records")}

    @app.get("/health")
    async def health() -> dict:
        """Liveness: the model is loaded and the service answers."""
        return {"status": "ok", "uptime_s": round(time.time() - started, 1)}

    @app.get("/info")
    async def info() -> dict:
        """Method, LLM, CF model, dataset, the run's metrics and the serving settings."""
        out = recommender.info()
        out["serving"] = {**asdict(s), "batches": batcher.batches, "rows": batcher.rows}
        return out

    return app


def serve(run: str | Path, host: str = "127.0.0.1", port: int = 8000, data: str | Path | None = None,
          device: str | None = None, batching: bool = True, max_batch_size: int = 64, max_wait_ms: float = 0.0,
          max_pairs: int = 1000, max_k: int = 100, threads: int | None = None, log_level: str = "info") -> None:
    """Load ``run`` once and serve it over HTTP with uvicorn until interrupted.

    ``threads`` sets torch's CPU threads (default: torch's choice); on a busy shared CPU fewer
    threads than cores avoids the steep slow-down of oversubscribed OpenMP threads.
    """
    import torch
    import uvicorn

    if threads is not None:
        if threads < 1:
            raise CorarecError(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)

    settings = ServeSettings(batching=batching, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms,
                             max_pairs=max_pairs, max_k=max_k)
    app = create_app(run, data=data, device=device, settings=settings)
    uvicorn.run(app, host=host, port=port, log_level=log_level, workers=1)


def _unprocessable(error: Exception | str, field: str) -> HTTPException:
    """A 422 in FastAPI's validation-error shape, carrying ``error``'s one-line message."""
    return HTTPException(status_code=422, detail=[{"loc": ["body", field], "msg": str(error),
                                                   "type": "value_error"}])


def _version() -> str:
    from corarec import __version__

    return __version__
