"""One loaded chat model: its own thread, its own queue (keys take turns), one job at a time.

A llama.cpp context must not be used from two threads at once (GPT4All segfaulted so), so the engine is created,
used and closed only on this worker's single-thread executor.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Callable

from errors import EngineFailure, ModelLoadFailed, ServerError, Unavailable
from models.interfaces import ChatEngine
from scheduler.fair_queue import FairQueue
from scheduler.jobs import Delta, GenerationJob
from scheduler.stop_filter import LogprobsAlongside

SETTLE_AFTER_IDLE_S = 0.25  # idle this long after a job before `settle` (see _run)
log = logging.getLogger("scheduler.worker")


@dataclass
class _Ending:
    """Why our callback ended a generation early ("cancelled", "stop" or "length"); None: the engine ended it."""

    why: str | None = None

    def because(self, why: str) -> bool:
        """Record `why` (the first reason wins) and tell the engine to stop."""
        if self.why is None:
            self.why = why
        return False


class ModelWorker:
    def __init__(
        self,
        model: str,
        load_engine: Callable[[], ChatEngine],
        *,
        generation_timeout_s: float,
        on_start: Callable[[GenerationJob], bool],
        on_done: Callable[[GenerationJob], None],
    ):
        self.model = model
        self.state = "loading"  # loading -> ready | failed -> closed
        self.load_error: ServerError | None = None
        self.queue = FairQueue()  # the order jobs start in: see fair_queue.py
        self.running: GenerationJob | None = None
        self.last_used = time.monotonic()
        self.idle = asyncio.Event()
        self._load_engine = load_engine
        self._timeout = generation_timeout_s
        self._on_start = on_start
        self._on_done = on_done
        self._engine: ChatEngine | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"gen-{model}")
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"worker:{self.model}")

    @property
    def is_idle(self) -> bool:
        return self.running is None and self.queue.empty() and self.state != "loading"

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self._engine = await loop.run_in_executor(self._executor, self._load_engine)
            self.state = "ready"
        except ServerError as exc:
            self.state, self.load_error = "failed", exc
        except Exception as exc:  # anything else the native loader raises
            self.state, self.load_error = "failed", ModelLoadFailed(f"could not load {self.model}: {exc}")
        if self.load_error is not None:
            log.error("model %s failed to load: %s", self.model, self.load_error.message)
        settle = False
        while True:
            if self.queue.empty():
                self.idle.set()
            if settle and not await self.queue.wait(SETTLE_AFTER_IDLE_S):
                # idle for a moment (a chat's next turn comes seconds later; a client sending requests
                # back to back sends its next one sooner): make the last reply reusable for the next turn
                await loop.run_in_executor(self._executor, self._settle)
            settle = False
            job = await self.queue.get()
            self.idle.clear()
            if self.state == "failed":
                job.fail_before_start(self.load_error)
                self._on_start(job)
                continue
            if not self._on_start(job):  # cancelled while waiting: skip it
                continue
            self.running, self.last_used = job, time.monotonic()
            try:
                await loop.run_in_executor(self._executor, self._execute, job)
            finally:
                self.running = None
                self._on_done(job)
            settle = True

    def _settle(self) -> None:
        """Runs on the model's thread; a job that arrives meanwhile stops it after the current batch."""
        try:
            self._engine.settle(keep_going=self.queue.empty)
        except Exception as exc:  # noqa: BLE001 - an optimisation: it must never take the worker down
            log.error("settling the KV cache of %s failed", self.model, exc_info=exc)

    def _execute(self, job: GenerationJob) -> None:
        """Runs on the model's thread."""
        job.mark_started()
        stop_filter = LogprobsAlongside(job.params.stop)
        deadline = time.monotonic() + self._timeout
        ending = _Ending()

        def on_text(piece: str, logprobs: object | None = None) -> bool:
            if job.cancelled:
                return ending.because("cancelled")
            text, entries, stopped = stop_filter.feed(piece, logprobs)
            if text or entries:
                job.post(Delta(text, tuple(entries)))
            if stopped:
                return ending.because("stop")
            if time.monotonic() > deadline:
                return ending.because("length")  # GENERATION_TIMEOUT_S: end it like a length limit
            return True

        def keep_going() -> bool:  # asked after each batch of prompt tokens, so a long prompt can be left too
            return not job.cancelled and time.monotonic() <= deadline

        try:
            outcome = self._engine.generate(job.prompt, job.params, on_text, scope=job.scope, keep_going=keep_going)
        except ServerError as exc:
            job.finish(error=exc)
            return
        except Exception as exc:
            # What the engine said stays in the log (api/errors.py logs it under the request id): it may
            # name files, addresses or internals. The client gets a stable message and that id.
            failure = EngineFailure("the model failed during generation",
                                    detail=f"generation failed in {self.model}: {type(exc).__name__}: {exc}")
            failure.__cause__ = exc
            job.finish(error=failure)
            return
        if ending.why is None and outcome.completion_tokens == 0 and not keep_going():  # stopped during the prompt
            ending.because("cancelled" if job.cancelled else "length")
        if ending.why == "cancelled" and job.cancel_reason == "shutdown":  # cut short: not to be taken for a whole answer
            job.finish(outcome, error=Unavailable("the server shut down before this generation finished; retry later"))
            return
        if ending.why in (None, "length"):  # ended without a stop: the held-back text is output
            tail, entries = stop_filter.flush()
            if tail or entries:
                job.post(Delta(tail, tuple(entries)))
        if ending.why == "stop":
            outcome = replace(outcome, finish_reason="stop", limit=None)
        elif ending.why == "length":  # the time limit, not a token limit
            outcome = replace(outcome, finish_reason="length", limit="time")
        job.finish(outcome)

    async def close(self) -> None:
        """Stop taking jobs and free the engine on its own thread."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._engine is not None:
            try:
                await asyncio.get_running_loop().run_in_executor(self._executor, self._engine.close)
            except Exception as exc:  # unloading must go on: the dispatcher waits on it
                log.error("closing %s failed", self.model, exc_info=exc)
            self._engine = None
        self._executor.shutdown(wait=False)
        self.state = "closed"
