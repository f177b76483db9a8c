"""`/v1/models`, `/v1/chat/completions` and `/v1/completions`: parse, submit, wrap.

Streams wait for the first event before answering 200, so an error known at the start (queue
full, context too long, model failed to load) is a normal HTTP error; an error later in a stream
is an SSE `data: {"error": ...}` event followed by `[DONE]`.
"""

from __future__ import annotations

import uuid
from functools import partial
from typing import AsyncIterator, Callable

from sanic import Blueprint, Request
from sanic.response import HTTPResponse

from api import auth
from api.generation import ChoiceEvent, GenerationService
from api.http import DONE, SSE_HEADERS, app_context, json_response, parse_body, sse_data, sse_error, timing_headers
from api.protocol import ChatCompletionRequest, CompletionRequest
from api.protocol_logprobs import CompletionLogprobs
from api.protocol_responses import (
    ChatChoiceStream,
    ChatCompletionChunk,
    Completion,
    ModelCard,
    ModelList,
    UsageInfo,
    chat_completion,
    completion_chunks,
    text_completion,
    usage_chunk_of,
)
from errors import ServerError
from scheduler.jobs import GenerationJob

bp = Blueprint("openai", url_prefix="/v1")


def _service(request: Request) -> GenerationService:
    return app_context(request).generation


@bp.get("/models")
async def list_models(request: Request) -> HTTPResponse:
    cards = [ModelCard(id=m.id, created=m.created) for m in _service(request).registry.list()]
    cards += app_context(request).extra_model_cards
    return json_response(ModelList(data=cards))


@bp.post("/chat/completions")
async def chat_completions(request: Request) -> HTTPResponse | None:
    body = parse_body(request, ChatCompletionRequest)
    service = _service(request)
    model = service.resolve_model(body.model)
    prompt, plan = await service.chat_prompt(model, body.to_conversation())
    jobs = service.submit(model, [prompt], body.sampling_params(plan.constraint), body.n, scope=auth.request_scope(request.headers))
    cid = f"chatcmpl-{uuid.uuid4().hex}"
    if body.stream:
        choices = [ChatChoiceStream(cid, model.id, index, plan.parser()) for index in range(body.n)]

        def on_event(e: ChoiceEvent) -> list:
            return choices[e.index].chunks(e.text, e.finish, e.logprobs if body.logprobs else None)

        usage = partial(usage_chunk_of, ChatCompletionChunk, cid, model.id) if body.include_usage else None
        return await _stream(request, service, jobs, on_event, usage, body.n, "messages")
    results = await service.complete(jobs, "messages")
    completion = chat_completion(cid, model.id, results, _usage(jobs, body.n), plan.parser, logprobs=bool(body.logprobs))
    return json_response(completion, headers=timing_headers(jobs))


@bp.post("/completions")
async def completions(request: Request) -> HTTPResponse | None:
    body = parse_body(request, CompletionRequest)
    service = _service(request)
    model = service.resolve_model(body.model)
    jobs = service.submit(model, body.prompts, body.sampling_params(), body.n, scope=auth.request_scope(request.headers))
    cid = f"cmpl-{uuid.uuid4().hex}"
    prefixes = [prompt if body.echo else "" for prompt in body.prompts for _ in range(body.n)]  # one per choice
    if body.stream:
        offsets = [len(prefix) for prefix in prefixes]  # where each choice's next token starts in its text

        def on_event(e: ChoiceEvent) -> list:
            text = (prefixes[e.index] if e.first else "") + e.text
            entries = CompletionLogprobs.of(e.logprobs, offsets[e.index]) if body.logprobs is not None and e.logprobs else None
            offsets[e.index] += len(e.text)
            return completion_chunks(cid, model.id, e.index, text, e.finish, entries)

        usage = partial(usage_chunk_of, Completion, cid, model.id) if body.include_usage else None
        return await _stream(request, service, jobs, on_event, usage, body.n, "prompt")
    results = await service.complete(jobs, "prompt")
    completion = text_completion(cid, model.id, results, _usage(jobs, body.n), prefixes, logprobs=body.logprobs is not None)
    return json_response(completion, headers=timing_headers(jobs))


def _usage(jobs: list[GenerationJob], n: int) -> UsageInfo:
    """Exact usage of finished jobs; the n choices of one prompt (consecutive jobs) count it once, as OpenAI does.

    A prompt given twice in a list is two prompts and counts twice. `cached_tokens` is that counted
    evaluation's own (choices 2..n reuse the prompt too, which /metrics counts)."""
    usage = UsageInfo()
    for index, job in enumerate(jobs):
        if job.outcome is not None:
            first = index % n == 0
            usage.add(job.outcome.prompt_tokens if first else 0, job.outcome.completion_tokens,
                      job.outcome.cached_tokens if first else 0)
    return usage


async def _stream(
    request: Request,
    service: GenerationService,
    jobs: list[GenerationJob],
    on_event: Callable[[ChoiceEvent], list],
    usage_chunk: Callable[[UsageInfo], object] | None,
    n: int,
    prompt_param: str,
) -> None:
    """Answer 200 at the first event, send each event's chunks, then the usage chunk (if asked) and [DONE]."""
    events: AsyncIterator[ChoiceEvent] = service.events(jobs, prompt_param)
    try:
        first = await anext(events)  # errors before the first token are plain HTTP errors
    except BaseException:
        await events.aclose()
        raise
    response = await request.respond(
        content_type="text/event-stream", headers={**SSE_HEADERS, **timing_headers(jobs)}
    )
    try:
        event = first
        while True:
            for chunk in on_event(event):
                await response.send(sse_data(chunk))
            event = await anext(events, None)
            if event is None:
                break
        if usage_chunk is not None:
            await response.send(sse_data(usage_chunk(_usage(jobs, n))))
    except ServerError as exc:
        await response.send(sse_error(exc, request))
    finally:
        await events.aclose()
    await response.send(DONE)
    await response.eof()
