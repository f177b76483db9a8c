"""Small HTTP helpers for the routes: JSON bodies into pydantic models, SSE framing, timing headers."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from sanic import Blueprint, Request
from sanic.response import HTTPResponse

from api.errors import error_body, from_validation_error
from errors import InvalidRequest, ServerError, UnsupportedMediaType
from scheduler.jobs import GenerationJob

if TYPE_CHECKING:  # server.py builds it; the routes only read it
    from server import AppContext

RequestModel = TypeVar("RequestModel", bound=BaseModel)

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
NOSNIFF = {"X-Content-Type-Options": "nosniff"}
# On every JSON answer and everything behind the key: kept in no cache (shared machine, next user), never sniffed.
DATA_HEADERS = {**NOSNIFF, "Cache-Control": "no-store"}
# Page assets: revalidated on every load (a 304 when unchanged), so a new version shows at once.
STATIC_HEADERS = {**NOSNIFF, "Cache-Control": "no-cache"}
ASSET_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".png": "image/png",
               ".svg": "image/svg+xml"}


def serve_file(bp: Blueprint, url: str, path: Path) -> None:
    """Serve the one file `path` at `url` as a Sanic static file (Last-Modified, 304); the app's
    response middleware adds `STATIC_HEADERS`."""
    bp.static(url, path, name=re.sub(r"\W", "_", url.strip("/")), content_type=ASSET_TYPES[path.suffix],
              resource_type="file")


def page_headers(csp: str, *, referrer: str = "no-referrer", extra: dict[str, str] | None = None) -> dict[str, str]:
    """The headers of every HTML page: its CSP, never framed (clickjacking), never sniffed."""
    return {"Content-Security-Policy": csp, **NOSNIFF, "X-Frame-Options": "DENY", "Referrer-Policy": referrer, **(extra or {})}

DONE = b"data: [DONE]\n\n"


def app_context(request: Request) -> "AppContext":
    """What the app gives the routes (server.AppContext), typed."""
    return request.app.ctx


def parse_body(request: Request, model: type[RequestModel]) -> RequestModel:
    # What a foreign page can POST without a CORS preflight is a form, text/plain, or (a Blob body in a
    # no-cors fetch) no Content-Type at all: refuse all three. A JSON type needs a preflight, which fails.
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not request.body and not media_type:  # nothing sent at all: a missing body, not a wrong type
        raise InvalidRequest("The request body is empty; send a JSON object.")
    if media_type != "application/json" and not media_type.endswith("+json"):
        sent = f"not {media_type[:100]!r}" if media_type else "and the request sent none"
        raise UnsupportedMediaType(f"Content-Type must be application/json, {sent}")
    if not request.body:
        raise InvalidRequest("The request body is empty; send a JSON object.")
    try:
        data = orjson.loads(request.body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    try:
        # strict: as OpenAI, and as the schema says, `"stream": "yes"`, `"n": true` or `"max_tokens": "5"` are errors
        return model.model_validate(data, strict=True)
    except ValidationError as exc:
        raise from_validation_error(exc) from None


def parse_query(request: Request, model: type[RequestModel]) -> RequestModel:
    """The query string's parameters that `model` names (each given once), validated; strings convert."""
    try:
        return model.model_validate({key: request.args.get(key) for key in model.model_fields if key in request.args})
    except ValidationError as exc:
        raise from_validation_error(exc) from None


def json_response(body: BaseModel | dict, status: int = 200, headers: dict[str, str] | None = None) -> HTTPResponse:
    payload = body.model_dump(mode="json") if isinstance(body, BaseModel) else body
    return HTTPResponse(orjson.dumps(payload), status=status, headers=headers, content_type="application/json")


def is_json(response: HTTPResponse) -> bool:
    content_type = response.headers.get("content-type") or response.content_type or ""
    media_type = content_type.split(";")[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


def add_data_headers(response: HTTPResponse) -> None:
    """`DATA_HEADERS`, where the response does not set its own (an SSE stream keeps `no-cache`)."""
    _add_missing(response, DATA_HEADERS)


def add_static_headers(response: HTTPResponse) -> None:
    _add_missing(response, STATIC_HEADERS)


def _add_missing(response: HTTPResponse, headers: dict[str, str]) -> None:
    for name, value in headers.items():
        if name not in response.headers:
            response.headers[name] = value


def sse_data(body: BaseModel | dict) -> bytes:
    payload = body.model_dump(mode="json", exclude_none=False) if isinstance(body, BaseModel) else body
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def sse_error(exc: ServerError, request: Request | None = None) -> bytes:
    return sse_data(error_body(exc, request))


def timing_headers(jobs: list[GenerationJob]) -> dict[str, str]:
    """TEI-style timings of the first job, in milliseconds, as far as they are known now."""
    job = jobs[0]
    found = {
        "x-queue-time": job.queue_time,
        "x-time-to-first-token": job.time_to_first_token,
        "x-generation-time": job.generation_time,
    }
    return {name: f"{seconds * 1000:.1f}" for name, seconds in found.items() if seconds is not None}
