"""`/v1/responses`: create (plain, streamed or in the background), retrieve, delete, list input items, cancel.

Parse, submit, wrap: the work is `ResponsesService`'s. A streamed response answers 200 at the
reply's first event, so an error known at the start (input over the window, queue full, unknown
model) is a plain HTTP error; later, the stream ends with `response.failed`. Parameters accepted
and ignored are named in `X-Ignored-Params` and in one log line.
"""

from __future__ import annotations

import logging
from sanic import Blueprint, Request
from sanic.response import HTTPResponse

from api import auth
from api.errors import request_id
from api.http import SSE_HEADERS, app_context, json_response, parse_body, parse_query
from api.responses_events import sse_event
from api.responses_request import InputItemsQuery, ResponseCreateRequest
from api.responses_run import Run
from api.responses_service import ResponsesService
from errors import ServerError, UnsupportedParameter

log = logging.getLogger("server.responses")
bp = Blueprint("responses", url_prefix="/v1")


def _service(request: Request) -> ResponsesService:
    return app_context(request).responses


def _ignored_headers(request: Request, body: ResponseCreateRequest) -> dict[str, str]:
    if not body.ignored:
        return {}
    log.info("request %s: POST /v1/responses ignored %s", request_id(request),
             "; ".join(f"{param} ({why})" for param, why in body.ignored))
    return {"X-Ignored-Params": ", ".join(param for param, _ in body.ignored)}


@bp.post("/responses")
async def create_response(request: Request) -> HTTPResponse | None:
    body = parse_body(request, ResponseCreateRequest)
    service = _service(request)
    run = await service.create(body, auth.request_scope(request.headers))
    headers = _ignored_headers(request, body)
    if body.background:
        return json_response(service.launch(run), headers=headers)
    await run.open()
    if body.stream:
        return await _stream(request, run, headers)
    return json_response(await run.result(), headers=headers)


async def _stream(request: Request, run: Run, headers: dict[str, str]) -> None:
    response = await request.respond(content_type="text/event-stream", headers={**SSE_HEADERS, **headers})
    events = run.events()
    try:
        async for event in events:
            await response.send(sse_event(event))
    except ServerError as exc:  # keeping the finished response failed: the client must not trust it is stored
        await response.send(sse_event(run.error_event(exc)))
    finally:
        await events.aclose()
    await response.eof()


@bp.get("/responses/<response_id:str>")
async def retrieve_response(request: Request, response_id: str) -> HTTPResponse:
    if request.args.get("stream", "").lower() == "true":
        raise UnsupportedParameter("stream: a stored response is read whole here, not streamed again", param="stream")
    return json_response(await _service(request).retrieve(response_id, auth.request_scope(request.headers)))


@bp.delete("/responses/<response_id:str>")
async def delete_response(request: Request, response_id: str) -> HTTPResponse:
    return json_response(await _service(request).delete(response_id, auth.request_scope(request.headers)))


@bp.get("/responses/<response_id:str>/input_items")
async def list_input_items(request: Request, response_id: str) -> HTTPResponse:
    query = parse_query(request, InputItemsQuery)
    page = await _service(request).input_items(response_id, auth.request_scope(request.headers), after=query.after, limit=query.limit,
                                               order=query.order)
    return json_response(page)


@bp.post("/responses/<response_id:str>/cancel")
async def cancel_response(request: Request, response_id: str) -> HTTPResponse:
    return json_response(await _service(request).cancel(response_id, auth.request_scope(request.headers)))
