"""One response being generated: the reply source it reads, the builder it feeds, the row it keeps.

`ReplySource` is the one thing `/v1/responses` needs from the chat engine: a model id, and a
parsed reply to a `Conversation`. How the prompt is rendered, how tools are written into it and
how the reply is parsed back are the source's business (models/tool_formats.py, the engine).

A `Run` is made by `ResponsesService.create`, then either streamed (`open`, then `events`),
awaited whole (`open`, then `result`) or run as a background task (`run_in_background`). Errors
before the first reply event are plain HTTP errors (nothing is kept); after it, the response is
`failed` with the error, and kept like any other. A run stopped early (the client left, a cancel)
is kept as `cancelled`, with the output made so far.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable, Protocol

from api.responses_events import Event, ResponseBuilder
from api.responses_objects import ResponseObject
from data.response_store import ResponseStore
from errors import EngineFailure, ServerError, Unavailable
from models.conversation import Conversation, ReplyEvent
from models.interfaces import GenerationOutcome, SamplingParams

log = logging.getLogger("server.responses")
_END = object()


class ReplySource(Protocol):
    """What the chat engine gives `/v1/responses` (the lead wires the real one; fakes in tests)."""

    def model_id(self, name: str | None) -> str:
        """The id `/v1/models` lists for `name` (None: the default model); raises ModelNotFound, or
        InvalidRequest(param="model") when there is no default or `name` is not a chat model."""

    def reply(self, model: str, conversation: Conversation, params: SamplingParams, *,
              scope: str) -> AsyncIterator[ReplyEvent | GenerationOutcome]:
        """The reply, parsed, as it is generated, then its exact `GenerationOutcome` as the last item.

        `params.constraint` is `text.format` (None for text); the conversation's tools and tool_choice
        are the source's to combine with it. Errors are `errors.ServerError`s: before the first item
        they become the HTTP answer (ContextLengthExceeded for an input over the window, QueueFull...);
        later ones fail the response. `param` may name chat's fields (`messages`, `max_tokens`,
        `tools[i].function...`, `response_format`): they are translated. Closing the iterator early
        (aclose, or the consuming task cancelled) must stop the generation. `scope` is the caller's
        key, hashed: whose cached prefixes the generation may reuse, and its fair-queue key."""


# chat completions' parameter names, as the source may raise them -> this API's
PARAM_NAMES = [(re.compile(r"^(messages|prompt)\b"), "input"), (re.compile(r"^max_(completion_)?tokens$"), "max_output_tokens"),
               (re.compile(r"^response_format\b"), "text.format")]
TOOL_PARAM = re.compile(r"^tools\[(\d+)\](?:\.function)?")


def translate(error: ServerError, tool_indexes: list[int]) -> ServerError:
    """`error` with its `param` named as this API names it (the source may speak chat completions)."""
    param = error.param
    if param:
        for pattern, name in PARAM_NAMES:
            param = pattern.sub(name, param)
        found = TOOL_PARAM.match(param)
        if found and int(found[1]) < len(tool_indexes):
            param = f"tools[{tool_indexes[int(found[1])]}]" + param[found.end():]
        error.param = param
    return error


@dataclass(eq=False)
class Run:
    response: ResponseObject
    conversation: Conversation
    params: SamplingParams
    scope: str
    source: ReplySource
    store: ResponseStore | None  # None: not kept (store: false)
    tool_indexes: list[int] = field(default_factory=list)  # the conversation's tool i is the request's tools[i']
    error: ServerError | None = None  # why it failed, once it has
    shutdown: bool = False  # set when the server stops it: then it failed, it was not cancelled
    on_done: Callable[["Run"], None] | None = None  # called once, when it has ended (or was refused)
    builder: ResponseBuilder = field(init=False)

    def __post_init__(self) -> None:
        self.builder = ResponseBuilder(self.response)
        self._replies: AsyncIterator | None = None
        self._first: object = _END

    @property
    def id(self) -> str:
        return self.response.id

    async def open(self, *, keep_on_error: bool = False) -> None:
        """Start generating, up to the reply's first item; an error here is the request's answer
        (and the kept row goes, unless `keep_on_error`: a background run fails instead)."""
        try:
            self._replies = aiter(self.source.reply(self.response.model, self.conversation, self.params, scope=self.scope))
            self._first = await anext(self._replies, _END)
        except BaseException as exc:
            if isinstance(exc, ServerError):
                translate(exc, self.tool_indexes)
            await self._close_replies()
            if not keep_on_error:
                await self._forget()
                self._done()
            raise

    async def events(self) -> AsyncIterator[Event]:
        """Every event of the response, from `response.created` to its terminal event; kept before that one."""
        inner = self._events()
        try:
            async for event in inner:
                yield event
        finally:
            await inner.aclose()  # now, not when collected: it keeps what was made and stops the reply
            self._done()

    async def _events(self) -> AsyncIterator[Event]:
        terminal: list[Event] = []
        try:
            for event in self.builder.begin():
                yield event
            await self._save_progress()
            item = self._first
            while not isinstance(item, GenerationOutcome):
                if item is _END:
                    raise EngineFailure("the reply ended without its outcome", detail="reply source ended early")
                for event in self.builder.add(item):
                    yield event
                item = await anext(self._replies, _END)
            terminal = self.builder.finish(item)
        except ServerError as exc:
            self.error = translate(exc, self.tool_indexes)
            terminal = self.builder.fail(self.error)
        except Exception as exc:  # noqa: BLE001 - a reply the builder cannot read: the engine's fault
            self.error = EngineFailure("the model's reply could not be read", detail=repr(exc))
            self.error.__cause__ = exc
            terminal = self.builder.fail(self.error)
        except BaseException:  # the client left, a cancel, or shutdown: keep what was made, then stop
            self._stopped_early()
            await self._close_replies()
            await self._save(quietly=True)
            raise
        await self._close_replies()
        await self._save()
        for event in terminal:
            yield event

    async def result(self) -> dict:
        """The finished Response; a failure after the start is raised (and the failed response kept)."""
        async for _ in self.events():
            pass
        if self.error is not None:
            raise self.error
        return self.body()

    def body(self) -> dict:
        return self.response.model_dump(mode="json")

    def error_event(self, error: ServerError) -> Event:
        """An `error` event, for a failure after the terminal event was made (storing it failed)."""
        return self.builder.error_event(error)

    async def run_in_background(self) -> None:
        """The whole run as a server task: its errors and its cancellation end up in its row."""
        try:
            try:
                await self.open(keep_on_error=True)
            except ServerError as exc:
                self.error = exc
                self.builder.fail(exc)
                await self._save(quietly=True)
                return
            async for _ in self.events():
                pass
        except asyncio.CancelledError:
            if self.response.status not in ("cancelled", "failed"):  # cancelled while still queued
                self._stopped_early()
                await self._save(quietly=True)
        finally:
            self._done()

    def _stopped_early(self) -> None:
        if self.shutdown:
            self.error = Unavailable("the server shut down before this response was finished")
            self.builder.fail(self.error)
        else:
            self.builder.cancel()

    async def _save_progress(self) -> None:
        if self.response.background:  # a polling client sees in_progress
            await self._save(quietly=True)

    async def _save(self, *, quietly: bool = False) -> None:
        if self.store is None:
            return
        try:
            # shielded: a task cancelled meanwhile (shutdown) still leaves its last state in the row
            status = await asyncio.shield(self.store.update(self.id, self.body()))
        except ServerError:
            if not quietly:
                raise
            log.warning("response %s: could not keep its %s state", self.id, self.response.status, exc_info=True)
            return
        if status is not None and status != self.response.status:
            self.response.status = status  # cancelled meanwhile (by any replica): that wins

    def _done(self) -> None:
        on_done, self.on_done = self.on_done, None
        if on_done is not None:
            on_done(self)

    async def _forget(self) -> None:
        if self.store is not None:
            try:
                await self.store.delete(self.id, self.scope)
            except ServerError:
                log.warning("response %s: could not remove its row after a refusal", self.id, exc_info=True)

    async def _close_replies(self) -> None:
        replies, self._replies = self._replies, None
        if replies is not None and hasattr(replies, "aclose"):
            await replies.aclose()
