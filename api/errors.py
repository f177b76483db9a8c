"""The one place where exceptions become HTTP responses with OpenAI's error envelope.

Our own tree (`errors.py`) carries status, type and code; Sanic's routing and protocol errors
(404, 405, 413, 431, a malformed request) and pydantic's validation errors are translated into it.
Anything else is a 500 whose body says nothing about the internals; the traceback goes to the log.

Every response carries `X-Request-ID` (made here, never taken from the client, so that an id in the
log is always this server's own); a 5xx body names it too, and the log line with the detail
(an engine's exception, a traceback) names it, so a user's report leads to the cause.
"""

from __future__ import annotations

import logging
import uuid

from pydantic import ValidationError
from sanic import Request, Sanic
from sanic import exceptions as sanic_exc
from sanic.response import HTTPResponse, json

import errors

log = logging.getLogger("server.errors")

_SANIC_TO_OURS: list[tuple[type[Exception], type[errors.ServerError]]] = [
    (sanic_exc.NotFound, errors.NotFound),
    (sanic_exc.MethodNotAllowed, errors.MethodNotAllowed),
    (sanic_exc.PayloadTooLarge, errors.PayloadTooLarge),
    (sanic_exc.BadRequest, errors.InvalidRequest),
    (sanic_exc.ServiceUnavailable, errors.Unavailable),
]


def from_validation_error(exc: ValidationError) -> errors.InvalidRequest:
    problems = exc.errors(include_url=False)
    # An unknown field is the clearest cause: name it, even when a union member's error comes first.
    first = next((p for p in problems if p["type"] == "extra_forbidden"), problems[0])
    loc = [str(part) for part in first["loc"]]
    # pydantic reports union members in the path (e.g. "str", "list[...]"); keep the field path
    param_parts = [p for p in loc if not any(c in p for c in "[]") and p not in ("str", "int", "float", "bool", "list")]
    param = ".".join(param_parts) or None
    where = f"{param}: " if param else ""
    more = f" (and {len(exc.errors()) - 1} more problems)" if len(exc.errors()) > 1 else ""
    return errors.InvalidRequest(f"{where}{first['msg']}{more}", param=param)


def to_server_error(exc: BaseException) -> errors.ServerError:
    if isinstance(exc, errors.ServerError):
        return exc
    if isinstance(exc, ValidationError):
        return from_validation_error(exc)
    if isinstance(exc, sanic_exc.PayloadTooLarge) and "header" in str(exc).lower():
        # Sanic reports an oversized request line or header block as 413; HTTP's status for it is 431.
        return errors.HeadersTooLarge("The request line and headers exceed the size limit.")
    for sanic_type, ours in _SANIC_TO_OURS:
        if isinstance(exc, sanic_type):
            return ours(_sanic_message(exc))
    if isinstance(exc, sanic_exc.SanicException) and exc.status_code < 500:
        error = errors.InvalidRequest(_sanic_message(exc))
        error.status = exc.status_code
        return error
    error = errors.ServerError("The server had an error while processing your request.", detail="unhandled error")
    error.__cause__ = exc
    return error


def request_id(request: Request) -> str:
    """This request's id: made on first use, the same for its log lines, its header and its error body."""
    rid = getattr(request.ctx, "request_id", None)
    if rid is None:
        rid = request.ctx.request_id = uuid.uuid4().hex
    return rid


def error_body(error: errors.ServerError, request: Request | None) -> dict:
    """The envelope for `error`; a 5xx's detail goes to the log under the request id that the body names."""
    rid = request_id(request) if request is not None else None
    if error.status >= 500 and (error.detail or error.__cause__ is not None):
        log.error("request %s: %s: %s", rid, type(error).__name__, error.detail or error.message, exc_info=error.__cause__)
    return error.body(rid)


def error_response(exc: BaseException, request: Request | None = None) -> HTTPResponse:
    error = to_server_error(exc)
    headers = error.headers()
    if isinstance(exc, sanic_exc.MethodNotAllowed) and "Allow" in (exc.headers or {}):
        headers = {**headers, "Allow": exc.headers["Allow"]}  # a 405 names the methods that are allowed
    return json(error_body(error, request), status=error.status, headers=headers)


def _sanic_message(exc: Exception) -> str:
    message = str(exc) or type(exc).__name__
    if isinstance(exc, sanic_exc.NotFound):
        return message.replace("Requested URL", "Unknown path").rstrip() or "Not found"
    return message


def install(app: Sanic) -> None:
    @app.exception(Exception)
    async def _handle(request: Request, exc: Exception) -> HTTPResponse:
        return error_response(exc, request)

    @app.on_request(priority=10_000)  # first of all, so that every later log line can name it
    async def assign_request_id(request: Request) -> None:
        request_id(request)

    @app.on_response(priority=10_000)
    async def send_request_id(request: Request, response) -> None:
        response.headers["X-Request-ID"] = request_id(request)
