"""`/v1/models`, `/v1/chat/completions` and `/v1/completions`: parse, submit, wrap.

Streams wait for the first event before answering 200, so an error known at the start (queue
full, context too long, model failed to load) is a normal HTTP error; an error later in a stream
is an SSE `data: {"error": ...}` event followed by `[DONE]`.
"""

from __future__ import annotations

import uuid
from typing import AsyncIterator, Callable

from sanic import Blueprint, Request
from sanic.response import HTTPResponse

from api import auth
from api.generation import ChoiceEvent, GenerationService
from api.http import DONE, SSE_HEADERS, app_context, json_response, parse_body, sse_data, sse_error, timing_headers
from api.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Completion,
    CompletionChoice,
    CompletionRequest,
    DeltaMessage,
    ModelCard,
    ModelList,
    UsageInfo,
)
from errors import ContextLengthExceeded, ServerError
from scheduler.jobs import GenerationJob

bp = Blueprint("openai", url_prefix="/v1")


def _service(request: Request) -> GenerationService:
    return app_context(request).generation


def _scope(request: Request) -> str:
    return auth.cache_scope(auth.bearer_token(request.headers.get("authorization")))


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
    prompt = await service.chat_prompt(model, body.plain_messages())
    jobs = service.submit(model, [prompt], body.to_sampling_params(body.token_limit), body.n, scope=_scope(request))
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    if body.stream:
        def chunk(choices: list[ChatChunkChoice], usage: UsageInfo | None = None) -> ChatCompletionChunk:
            return ChatCompletionChunk(id=completion_id, model=model.id, choices=choices, usage=usage)

        def on_event(event: ChoiceEvent) -> list[ChatCompletionChunk]:
            out = []
            if event.first:
                out.append(chunk([ChatChunkChoice(index=event.index, delta=DeltaMessage(role="assistant", content=""))]))
            if event.text:
                out.append(chunk([ChatChunkChoice(index=event.index, delta=DeltaMessage(content=event.text))]))
            if event.finish:
                out.append(chunk([ChatChunkChoice(index=event.index, delta=DeltaMessage(), finish_reason=event.finish.finish_reason)]))
            return out

        return await _stream(request, service, jobs, on_event, lambda usage: chunk([], usage), body.include_usage, body.n)
    results = await service.complete(jobs)
    return json_response(
        ChatCompletion(
            id=completion_id,
            model=model.id,
            choices=[
                ChatChoice(index=i, message=AssistantMessage(content=text), finish_reason=outcome.finish_reason)
                for i, (text, outcome) in enumerate(results)
            ],
            usage=_usage(jobs, body.n),
        ),
        headers=timing_headers(jobs),
    )


@bp.post("/completions")
async def completions(request: Request) -> HTTPResponse | None:
    try:
        return await _completions(request)
    except ContextLengthExceeded as exc:
        if exc.param == "messages":  # the engine names the chat field; here the prompt is `prompt`
            exc.param = "prompt"
        raise


async def _completions(request: Request) -> HTTPResponse | None:
    body = parse_body(request, CompletionRequest)
    service = _service(request)
    model = service.resolve_model(body.model)
    prompts = body.prompts
    jobs = service.submit(model, prompts, body.to_sampling_params(body.max_tokens), body.n, scope=_scope(request))
    completion_id = f"cmpl-{uuid.uuid4().hex}"

    def echoed(index: int) -> str:
        return prompts[index // body.n] if body.echo else ""

    if body.stream:
        def chunk(choices: list[CompletionChoice], usage: UsageInfo | None = None) -> Completion:
            return Completion(id=completion_id, model=model.id, choices=choices, usage=usage)

        def on_event(event: ChoiceEvent) -> list[Completion]:
            text = (echoed(event.index) if event.first else "") + event.text
            reason = event.finish.finish_reason if event.finish else None
            if not text and reason is None:
                return []
            return [chunk([CompletionChoice(index=event.index, text=text, finish_reason=reason)])]

        return await _stream(request, service, jobs, on_event, lambda usage: chunk([], usage), body.include_usage, body.n)
    results = await service.complete(jobs)
    return json_response(
        Completion(
            id=completion_id,
            model=model.id,
            choices=[
                CompletionChoice(index=i, text=echoed(i) + text, finish_reason=outcome.finish_reason)
                for i, (text, outcome) in enumerate(results)
            ],
            usage=_usage(jobs, body.n),
        ),
        headers=timing_headers(jobs),
    )


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
    usage_chunk: Callable[[UsageInfo], object],
    include_usage: bool,
    n: int,
) -> None:
    events: AsyncIterator[ChoiceEvent] = service.events(jobs)
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
        if include_usage:
            await response.send(sse_data(usage_chunk(_usage(jobs, n))))
    except ServerError as exc:
        await response.send(sse_error(exc, request))
    finally:
        await events.aclose()
    await response.send(DONE)
    await response.eof()
