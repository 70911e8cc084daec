"""What the HTTP service (:mod:`corarec.serving.server`) accepts: its settings (limits, batching) and the
request and response models built from them, with strict types (:func:`request_models`).
"""

# No ``from __future__ import annotations`` here: pydantic reads the models' annotations at run time, and
# the models are local to request_models (their limits come from the settings).

import math
from dataclasses import dataclass, fields
from typing import Annotated, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, StrictInt, WithJsonSchema

from corarec.errors import CorarecError

INT64 = 2 ** 63


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
    max_body_bytes: int = 1 << 20
    """Largest request body in bytes (1 MiB); a larger one is refused with 413 before it is parsed."""
    max_id_length: int = 256
    """Longest id string accepted."""
    max_title_length: int = 500
    """Longest title (of an item the dataset does not know) accepted."""

    def __post_init__(self) -> None:
        """Check every field's type and range (one line naming the option on a bad value)."""
        if not isinstance(self.batching, bool):
            raise CorarecError(f"batching must be true or false, got {self.batching!r}")
        wait = self.max_wait_ms
        if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not math.isfinite(wait) or wait < 0:
            raise CorarecError(f"--max-wait-ms must be a finite number of at least 0, got {wait!r}")
        for f in fields(self):
            if f.name not in ("batching", "max_wait_ms"):
                check_int(f"--{f.name.replace('_', '-')}", getattr(self, f.name), 1)


def raw_id_type(max_length: int) -> object:
    """The type of a raw id in a request: a JSON string of at most ``max_length`` characters or a
    64-bit integer. Booleans and floats are refused (not turned into ``"True"`` or ``"7"``)."""

    def check(value: object) -> Union[str, int]:
        if isinstance(value, str):
            if len(value) > max_length:
                raise ValueError(f"an id is at most {max_length} characters")
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            if not -INT64 <= value < INT64:
                raise ValueError("an integer id must fit in 64 bits")
            return value
        raise ValueError("an id is a JSON string or integer")

    schema = {"anyOf": [{"type": "string", "maxLength": max_length}, {"type": "integer"}]}
    return Annotated[Union[str, int], PlainValidator(check), WithJsonSchema(schema)]


def request_models(s: ServeSettings) -> tuple[type[BaseModel], ...]:
    """Pydantic request/response models whose limits come from ``s`` (they show in /docs).

    Strict types: an id is a JSON string (at most ``max_id_length`` characters) or a 64-bit integer,
    never a boolean or a float; ``k`` and ``pool`` are integers, not numeric strings. Unknown fields
    are refused, so a misspelt option is not silently ignored."""
    RawId = raw_id_type(s.max_id_length)
    strict = ConfigDict(extra="forbid")

    class Pair(BaseModel):
        model_config = strict
        user: RawId = Field(description="User id as in the original data")
        item: RawId = Field(description="Item id as in the original data")
        history: Optional[list[RawId]] = Field(
            None, max_length=s.max_history,
            description="Item ids the user liked, oldest first; replaces the dataset's history (for a new user)")
        title: Optional[str] = Field(None, max_length=s.max_title_length,
                                     description="The item's title, used in the prompt when the dataset does "
                                                 "not know the item (a known item keeps its own)")

    class ScoreRequest(BaseModel):
        model_config = strict
        pairs: list[Pair] = Field(min_length=1, max_length=s.max_pairs)

    class ScoredPair(BaseModel):
        user: str
        item: str
        logit: float
        probability: float = Field(description="Sigmoid of the logit: P(the user likes the item)")
        cold: bool = Field(description="The user or item did not occur in train (cold-start embedding)")

    class ScoreResponse(BaseModel):
        scores: list[ScoredPair]

    class Candidate(BaseModel):
        model_config = strict
        item: RawId = Field(description="Item id; one the dataset does not know is scored from its title")
        title: Optional[str] = Field(None, max_length=s.max_title_length,
                                     description="The item's title (used when the dataset does not know the item)")

    class RecommendRequest(BaseModel):
        model_config = strict
        user: RawId
        k: StrictInt = Field(10, ge=1, le=s.max_k)
        candidates: Optional[list[Union[RawId, Candidate]]] = Field(
            None, min_length=1, max_length=s.max_candidates,
            description="Item ids (or {item, title} for new items) to rank; default: the CF model's top `pool`")
        pool: StrictInt = Field(100, ge=1, le=s.max_candidates, description="CF pre-selection size without candidates")
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


def check_int(name: str, value: object, low: int, high: int | None = None) -> None:
    """``value`` is an integer (not a bool) in ``[low, high]``, else a one-line error naming the option."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise CorarecError(f"{name} must be an integer {bounds}, got {value!r}")
