"""One generation job: what to generate, its events back to the event loop, its timings.

The worker thread writes events with `post()` (thread-safe); the request handler reads them with
`stream()`. Leaving `stream()` early for any reason (client gone, handler cancelled, consumer
stopped) cancels the job, and the worker's token callback then stops the decode loop within a token.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from dataclasses import dataclass
from typing import AsyncIterator, Callable

from errors import Unavailable
from models.interfaces import GenerationOutcome, SamplingParams, TokenLogprobs

_END = object()
_ids = itertools.count(1)


@dataclass(frozen=True)
class Delta:
    """The next piece of a generation's text, with the logprobs of the tokens that wrote it (if asked for)."""

    text: str
    logprobs: tuple[TokenLogprobs, ...] = ()


class GenerationJob:
    def __init__(self, model: str, prompt: str, params: SamplingParams, *, origin: str = "api", scope: str | None = None):
        self.id = next(_ids)
        self.model = model
        self.prompt = prompt
        self.params = params
        self.origin = origin  # "api" or "ui", for metrics
        self.scope = scope  # whose cached prefixes the engine may reuse (an API key's hash)
        self.loop = asyncio.get_running_loop()
        self.enqueued_at = time.monotonic()
        self.started_at: float | None = None
        self.first_token_at: float | None = None
        self.finished_at: float | None = None
        self.outcome: GenerationOutcome | None = None
        self.error: BaseException | None = None
        self.cancel_reason: str | None = None
        self._events: asyncio.Queue = asyncio.Queue()
        self._started: asyncio.Future = self.loop.create_future()
        self._cancelled = threading.Event()
        self._on_cancel: Callable[["GenerationJob"], None] | None = None

    # ---- the consumer's side (event loop) ----------------------------------------------------

    async def stream(self, queue_timeout_s: float) -> AsyncIterator[Delta]:
        """Yield the deltas; raise the job's error; cancel the job if left early."""
        finished = False
        try:
            try:
                await asyncio.wait_for(asyncio.shield(self._started), queue_timeout_s)
            except TimeoutError:
                raise Unavailable(
                    f"the request waited {queue_timeout_s:g}s in the generation queue without starting; retry later"
                ) from None
            while True:
                item = await self._events.get()
                if item is _END:
                    finished = True
                    return
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                yield item
        finally:
            if not finished:
                self.cancel("client")

    def cancel(self, reason: str = "client") -> None:
        if self._cancelled.is_set():
            return
        self.cancel_reason = reason
        self._cancelled.set()
        if self._on_cancel is not None:
            self._on_cancel(self)

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    # ---- the worker's side (any thread) ------------------------------------------------------

    def post(self, item: object) -> None:
        """Hand a Delta, an exception or the end marker to the event loop."""
        if item is not _END and not isinstance(item, BaseException) and self.first_token_at is None:
            self.first_token_at = time.monotonic()
        self.loop.call_soon_threadsafe(self._events.put_nowait, item)

    def mark_started(self) -> None:
        self.started_at = time.monotonic()
        self.loop.call_soon_threadsafe(_resolve, self._started)

    def finish(self, outcome: GenerationOutcome | None = None, error: BaseException | None = None) -> None:
        self.finished_at = time.monotonic()
        self.outcome, self.error = outcome, error
        self.post(error if error is not None else _END)

    def fail_before_start(self, error: BaseException) -> None:
        """Answer a job that will never run (shutdown, model failed to load)."""
        self.error = error
        if not self._started.done():
            self._started.set_result(None)
        self._events.put_nowait(error)

    # ---- timings (seconds) -------------------------------------------------------------------

    @property
    def queue_time(self) -> float | None:
        return None if self.started_at is None else self.started_at - self.enqueued_at

    @property
    def time_to_first_token(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.enqueued_at

    @property
    def generation_time(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)

