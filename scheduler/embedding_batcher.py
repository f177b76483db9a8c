"""The embedding micro-batcher: many clients' inputs, one `encode` call at a time.

It owns the embedding queue, the one worker task that cuts batches, and the single-thread
executor the model runs on. Rules:

* **Lone requests go at once.** When the model is idle and nothing waits, an arriving request
  is dispatched immediately. Batches grow only while the model is busy: inputs that arrive
  during a batch wait, and when the batch ends the next one is cut as soon as it holds as many
  inputs as the batch that just ended plus those already waiting (at most `max_batch`), or
  `max_wait_ms` after the batch ended. Clients that were just answered usually come straight
  back with their next request; without the short wait, a few early arrivals would run alone
  while the rest queued behind them (measured with 32 clients: batches alternated between 2
  and 30 inputs, and a batch of 2 costs two to three times as much CPU per input as one of 32).
* **Fair shares.** Each batch is shared among waiting requests by water-filling in arrival
  order (`scheduler/fair_share.py`). Rows are written back by index, so each caller gets its
  rows in input order however its inputs were split.
* **Every future is resolved.** A failing batch fails each of its requests with EngineFailure
  (a stable message; the engine's type and message are its `detail`, for the log) and the worker carries on. `stop()` answers every waiter,
  queued or in flight, with Unavailable. A waiter whose task is cancelled (client gone) is
  removed at once, so its not-yet-batched inputs never reach `encode`.
* **Bounded.** More than `max_queue` inputs waiting raises QueueFull at once (429).

Observability: `batch_listeners` are called with (batch_size, seconds of encode) after every
batch, `queue_listeners` with the seconds a request waited before its first input entered a
batch; `queue_depth`, `busy` and the counters are plain properties/attributes. If the worker
ever dies of a bug it is not restarted (its state may be broken): `died` holds the exception and
`death_listeners` are called with it, so the owner can report the service failed.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Callable

import numpy as np

from errors import EngineFailure, InvalidRequest, QueueFull, Unavailable
from models.embedding_engine import EmbeddingEngine
from scheduler.embedding_requests import EmbeddingRequest, Part
from scheduler.fair_share import water_fill
from scheduler.stats import QueueStats

log = logging.getLogger(__name__)


class EmbeddingBatcher:
    def __init__(self, engine: EmbeddingEngine, *, max_batch: int = 64, max_wait_ms: float = 5.0,
                 max_queue: int = 4096, executor: Executor | None = None):
        if max_batch < 1 or max_queue < 1 or max_wait_ms < 0:
            raise ValueError("max_batch and max_queue must be >= 1 and max_wait_ms >= 0")
        self.engine = engine
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self._own_executor = executor is None
        self._executor = executor
        self.batch_listeners: list[Callable[[int, float], None]] = []
        self.queue_listeners: list[Callable[[float], None]] = []
        self.death_listeners: list[Callable[[BaseException], None]] = []  # told if the worker dies of a bug
        self.died: BaseException | None = None  # what killed the worker; it is not restarted
        self.batches_run = 0
        self.rejected = 0  # requests answered 429
        self.cancelled = 0  # requests whose client left before their rows were ready
        self.batches_failed = 0
        self.inputs_embedded = 0
        self._pending: dict[EmbeddingRequest, None] = {}  # insertion-ordered set: arrival order
        self._depth = 0
        self._in_flight: list[Part] = []
        self._busy = False
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_settings(cls, engine: EmbeddingEngine, settings, executor: Executor | None = None) -> "EmbeddingBatcher":
        return cls(engine, max_batch=settings.embed_max_batch, max_wait_ms=settings.embed_max_wait_ms,
                   max_queue=settings.embed_max_queue, executor=executor)

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        if self.running:
            return
        self._loop = asyncio.get_running_loop()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedding-engine")
        self._wakeup = asyncio.Event()
        self._worker = asyncio.create_task(self._run(), name="embedding-batcher")
        self._worker.add_done_callback(self._on_worker_done)

    async def stop(self) -> None:
        """Stop serving; every queued or in-flight waiter gets Unavailable."""
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
        self._fail_everyone(lambda: Unavailable("the embedding service is shutting down"))
        if self._own_executor and self._executor is not None:
            # An encode already running finishes in its thread; its result is discarded.
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def __aenter__(self) -> "EmbeddingBatcher":
        await self.start()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.stop()

    # -- public API ---------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._worker is not None and not self._worker.done()

    @property
    def queue_depth(self) -> int:
        """Inputs waiting for a batch (inputs of the running batch are not counted)."""
        return self._depth

    @property
    def busy(self) -> bool:
        """True while an `encode` call runs."""
        return self._busy

    def stats(self) -> QueueStats:
        return QueueStats(self.queue_depth, self.max_queue, int(self.busy), self.rejected, self.cancelled,
                          dtype=getattr(self.engine, "dtype", None))

    async def embed(self, texts: list[str]) -> np.ndarray:
        """Embed `texts`; returns float32 rows in input order."""
        rows, _ = await self.embed_counted(texts)
        return rows

    async def embed_counted(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        """Rows in input order, and the exact token count of each input (counted in the same batch)."""
        if not self.running:
            raise Unavailable("the embedding service is not running")
        if not texts:
            return np.empty((0, self.engine.dimensions), dtype=np.float32), []
        if len(texts) > self.max_queue:
            raise InvalidRequest(
                f"{len(texts)} inputs exceed the embedding queue size ({self.max_queue}, EMBED_MAX_QUEUE)",
                param="input",
            )
        if self._depth + len(texts) > self.max_queue:
            self.rejected += 1
            raise QueueFull(f"the embedding queue is full ({self._depth} inputs waiting)", retry_after_s=1)
        request = EmbeddingRequest(list(texts), self._loop.create_future(), self._loop.time())
        self._pending[request] = None
        self._depth += len(texts)
        self._wakeup.set()
        try:
            return await request.future
        except asyncio.CancelledError:
            self._withdraw(request)  # client gone: its waiting inputs never reach encode
            self.cancelled += 1
            raise

    async def decode(self, token_ids: list[int]) -> str:
        return await self._on_engine_thread(self.engine.decode, list(token_ids))

    # -- worker -------------------------------------------------------------------------------

    async def _run(self) -> None:
        after_batch, last_size = False, 0
        while True:
            if not self._pending:
                after_batch = False
                self._wakeup.clear()
                await self._wakeup.wait()
                continue  # idle wake-up: dispatch at once, no gathering
            if after_batch and self.max_wait_s > 0:
                await self._gather(min(self.max_batch, self._depth + last_size))
            parts, texts = self._take_batch()
            if texts:
                await self._run_batch(parts, texts)
            after_batch, last_size = bool(texts), len(texts)

    async def _gather(self, target: int) -> None:
        """Wait until `target` inputs wait, or max_wait has passed since the last batch ended."""
        deadline = self._loop.time() + self.max_wait_s
        while self._pending and self._depth < target:
            timeout = deadline - self._loop.time()
            if timeout <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout)
            except asyncio.TimeoutError:
                return

    def _take_batch(self) -> tuple[list[Part], list[str]]:
        # A cancelled waiter may still be listed if its task has not run its except-block yet.
        for request in [r for r in self._pending if r.future.done()]:
            self._withdraw(request)
        waiting = list(self._pending)
        parts: list[Part] = []
        texts: list[str] = []
        for request, count in zip(waiting, water_fill([r.waiting for r in waiting], self.max_batch)):
            if count == 0:
                continue
            parts.append((request, request.taken, count))
            texts.extend(request.texts[request.taken : request.taken + count])
            request.taken += count
            self._depth -= count
            if request.waiting == 0:
                del self._pending[request]
        return parts, texts

    async def _run_batch(self, parts: list[Part], texts: list[str]) -> None:
        started = self._loop.time()
        for request, _, _ in parts:
            if request.first_batch_at is None:
                request.first_batch_at = started
                self._notify(self.queue_listeners, started - request.enqueued_at)
        self._busy, self._in_flight = True, parts
        try:
            rows, counts = await self._loop.run_in_executor(self._executor, self._encode_counted, texts)
            rows = np.asarray(rows, dtype=np.float32)
            if rows.ndim != 2 or rows.shape[0] != len(texts):
                raise RuntimeError(f"engine returned shape {rows.shape} for {len(texts)} inputs")
        except Exception as exc:  # noqa: BLE001 - any engine failure goes to the waiters
            self.batches_failed += 1
            # First line only: engines sometimes embed a whole traceback in their message.
            detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            message = f"embedding failed: {type(exc).__name__}" + (f": {detail}" if detail else "")
            # The engine's words go to the log only (api/errors.py, under the request id): they may name paths.
            self._fail_parts(parts, lambda: EngineFailure("the embedding model failed on this batch", detail=message))
        else:
            self._deliver(parts, rows, counts)
            self.inputs_embedded += len(texts)
        finally:
            self._busy = False
        # Cleared only here: if the await above was cancelled (stop) or _deliver hit a bug,
        # _in_flight still names the waiters that stop()/_on_worker_done must answer.
        self._in_flight = []
        self.batches_run += 1
        self._notify(self.batch_listeners, len(texts), self._loop.time() - started)

    def _encode_counted(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        """Runs on the engine thread: the tokenizer is not thread-safe, so counting happens here too."""
        return self.engine.encode(texts), self.engine.count_tokens(texts)

    def _deliver(self, parts: list[Part], rows: np.ndarray, counts: list[int]) -> None:
        offset = 0
        for request, start, count in parts:
            if not request.future.done():
                if request.rows is None:
                    request.rows = np.empty((len(request.texts), rows.shape[1]), dtype=np.float32)
                    request.counts = [0] * len(request.texts)
                request.rows[start : start + count] = rows[offset : offset + count]
                request.counts[start : start + count] = counts[offset : offset + count]
                request.delivered += count
                if request.delivered == len(request.texts):
                    request.future.set_result((request.rows, request.counts))
            offset += count

    # -- failure paths ------------------------------------------------------------------------

    def _withdraw(self, request: EmbeddingRequest) -> None:
        if request in self._pending:
            del self._pending[request]
            self._depth -= request.waiting

    def _fail_parts(self, parts: list[Part], make_error: Callable[[], Exception]) -> None:
        for request, _, _ in parts:
            self._withdraw(request)  # its later inputs are pointless now
            if not request.future.done():
                request.future.set_exception(make_error())

    def _fail_everyone(self, make_error: Callable[[], Exception]) -> None:
        everyone = [(r, 0, 0) for r in self._pending] + list(self._in_flight)
        self._in_flight = []
        self._fail_parts(everyone, make_error)
        self._busy = False

    def _on_worker_done(self, task: asyncio.Task) -> None:
        # Last resort: if the worker ever dies of a bug, nobody may wait forever.
        # (stop() forgets the task before cancelling it; any other end of it is a death.)
        if task is self._worker and (task.cancelled() or task.exception() is not None):
            self.died = asyncio.CancelledError("the worker task was cancelled") if task.cancelled() else task.exception()
            log.error("embedding batcher worker died", exc_info=self.died)
            self._fail_everyone(lambda: EngineFailure("the embedding worker stopped unexpectedly"))
            self._notify(self.death_listeners, self.died)

    async def _on_engine_thread(self, fn, *args):
        if not self.running:
            raise Unavailable("the embedding service is not running")
        return await self._loop.run_in_executor(self._executor, fn, *args)

    @staticmethod
    def _notify(listeners: list[Callable], *args) -> None:
        for listener in list(listeners):
            try:
                listener(*args)
            except Exception:  # noqa: BLE001 - a metrics hook must not break serving
                log.exception("embedding batcher listener failed")
