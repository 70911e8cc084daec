"""What the HTTP service accepts before a request reaches an endpoint, and what it tells back.

* :class:`BodySizeLimit` (ASGI middleware) refuses a body over ``max_bytes`` with 413 before any
  of it is parsed: at once when ``Content-Length`` says so, else as soon as the streamed (chunked)
  bytes pass the limit. A huge body therefore never reaches the JSON parser or pydantic, and the
  event loop stays free for other clients.
* :class:`BearerToken` (ASGI middleware) answers 401 unless ``Authorization: Bearer <token>``
  matches (compared in constant time); ``/health`` stays open for liveness probes.
* :class:`StrictJSONRoute` parses request bodies as strict JSON: ``NaN``, ``Infinity``, numbers
  out of the float range, non-UTF-8 bytes and absurd nesting are JSON errors (422), not 500s.
* :func:`validation_error_response` replaces FastAPI's 422 handler: locations, messages and error
  types only, never the input values.
* :func:`public_info` turns the run's description into names (no absolute paths) for ``/info``.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import math
from pathlib import Path
from typing import Any, Awaitable, Callable

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

TOKEN_ENV = "CORAREC_TOKEN"
"""Environment variable read for the bearer token when none is passed."""
OPEN_PATHS = frozenset({"/health"})
"""Paths answered without a token (liveness probes)."""
MAX_LOC_CHARS = 64
"""Longest location element (a field name from the request) repeated in a 422."""

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodySizeLimit:
    """ASGI middleware: 413 for a request body over ``max_bytes``, decided before parsing."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._too_large(send)
            return
        body = bytearray()  # read whole (it is small) so the app never sees a body over the limit
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self._too_large(send)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send) -> None:
        await reply(send, 413, f"request body larger than {self.max_bytes} bytes (--max-body-bytes)",
                    [(b"connection", b"close")])


class BearerToken:
    """ASGI middleware: 401 unless the request carries ``Authorization: Bearer <token>``."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = hashlib.sha256(token.encode()).digest()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or self.allowed(scope):
            await self.app(scope, receive, send)
            return
        await reply(send, 401, "missing or wrong bearer token (header 'Authorization: Bearer <token>')",
                    [(b"www-authenticate", b"Bearer")])

    def allowed(self, scope: Scope) -> bool:
        """The Authorization header holds the token (hashes compared in constant time)."""
        header = next((v for k, v in scope["headers"] if k.lower() == b"authorization"), b"")
        scheme, _, given = header.partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        return hmac.compare_digest(hashlib.sha256(given.strip()).digest(), self.expected)


async def reply(send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
    """Send a complete JSON response ``{"detail": detail}`` from middleware."""
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    """The declared body size, or None when absent or unreadable (the streamed bytes are counted anyway)."""
    for key, value in scope["headers"]:
        if key.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


# ----- strict JSON ------------------------------------------------------------------------------

def strict_json_loads(body: bytes) -> Any:
    """``json.loads`` that refuses what Python accepts but JSON does not; every failure is a
    :class:`json.JSONDecodeError` (FastAPI turns it into a 422 ``json_invalid``)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise json.JSONDecodeError("the body is not UTF-8", "", e.start) from None

    def no_constant(name: str) -> Any:
        raise json.JSONDecodeError(f"{name} is not valid JSON (numbers must be finite)", text, 0)

    def finite_float(literal: str) -> float:
        value = float(literal)
        if not math.isfinite(value):
            raise json.JSONDecodeError("a number is out of the float range", text, 0)
        return value

    try:
        return json.loads(text, parse_constant=no_constant, parse_float=finite_float)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", text, 0) from None
    except ValueError:  # an integer literal with more digits than Python converts
        raise json.JSONDecodeError("a number has too many digits", text, 0) from None


class StrictJSONRequest(Request):
    """A request whose ``json()`` is :func:`strict_json_loads`."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = strict_json_loads(await self.body())
        return self._json


class StrictJSONRoute(APIRoute):
    """Route class (``app.router.route_class``) that hands endpoints a :class:`StrictJSONRequest`."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Any]]:
        handler = super().get_route_handler()

        async def strict_handler(request: Request) -> Any:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict_handler


async def validation_error_response(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 listing each error's location, message and type — never the input it was about."""
    details = []
    for error in exc.errors():
        message = str(error.get("msg", "invalid"))
        context = error.get("ctx") or {}
        if error.get("type") == "json_invalid" and "error" in context:
            message = f"JSON decode error: {context['error']}"
        details.append({"loc": [_short(part) for part in error.get("loc", ())], "msg": message,
                        "type": str(error.get("type", "value_error"))})
    return JSONResponse(status_code=422, content={"detail": details})


def _short(part: Any) -> Any:
    """A location element; a field name from the request is cut to :data:`MAX_LOC_CHARS`."""
    if isinstance(part, int) and not isinstance(part, bool):
        return part
    text = str(part)
    return text if len(text) <= MAX_LOC_CHARS else text[:MAX_LOC_CHARS] + "…"


# ----- exposure -----------------------------------------------------------------------------------

def is_loopback(host: str) -> bool:
    """``host`` is a loopback address (127.0.0.0/8, ::1) or ``localhost``; a host name is not assumed to be."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, token: str | None) -> str | None:
    """The warning for a server reachable beyond this machine without a token, else None."""
    if token or is_loopback(host):
        return None
    return (f"warning: serving on {host} without a token: anyone who can reach this address can use the API; "
            f"set {TOKEN_ENV} (or --token) to require 'Authorization: Bearer <token>'")


def public_info(info: dict[str, Any]) -> dict[str, Any]:
    """``Recommender.info()`` with names instead of paths: the run, dataset and CF run directories
    by their last component, the LLM by its folder name when it is a local folder (a Hugging Face
    id or the bundled alias is already a name), and any other absolute path by its last component."""
    out = _scrub(info)
    out["run"] = _dir_name(info.get("run"))
    out["llm"] = _llm_name(info.get("llm"))
    if isinstance(out.get("cf"), dict):
        out["cf"]["run"] = _dir_name(info["cf"].get("run"))
    if isinstance(out.get("dataset"), dict) and "path" in out["dataset"]:
        out["dataset"]["directory"] = _dir_name(out["dataset"].pop("path"))
    return out


def _scrub(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    if isinstance(value, str) and Path(value).is_absolute():
        return _dir_name(value)
    return value


def _dir_name(value: Any) -> str | None:
    if value is None:
        return None
    path = Path(str(value))
    return path.name or path.resolve().name


def _llm_name(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    local = text.startswith((".", "~")) or Path(text).is_absolute() or Path(text).exists()
    return _dir_name(text) if local else text
