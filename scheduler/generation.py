"""The generation scheduler: a bounded, fair queue in front of one worker per loaded model.

    submit() ─► pending (≤ MAX_QUEUE; ≤ MAX_QUEUE_PER_KEY per key) ─► dispatcher
             ─► ModelWorker(model).queue (keys take turns) ─► model thread

`submit` answers at once: a job, or QueueFull (429) when MAX_QUEUE jobs already wait or when the
caller's key (its `scope`) already has its share waiting; `check_room` refuses a whole request
before any of its jobs is queued. No key can fill the queue alone, and in each worker's queue
the keys take turns (fair_queue.py), so one key's big request does not hold up another key's.
The dispatcher hands jobs over in arrival order; a job for a model that is not loaded loads it on
demand, first unloading the least recently used idle model when MAX_LOADED_MODELS are loaded.
A job whose client left before it started is dropped from the count at once and skipped.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Callable

from errors import QueueFull, ServerError, Unavailable
from models.interfaces import ChatEngine, SamplingParams
from scheduler.jobs import GenerationJob
from scheduler.stats import QueueStats
from scheduler.worker import ModelWorker

JobListener = Callable[[GenerationJob], None]

log = logging.getLogger("scheduler.generation")


class GenerationScheduler:
    def __init__(
        self,
        load_engine: Callable[[str], ChatEngine],
        *,
        max_queue: int = 32,
        max_queue_per_key: int | None = None,
        max_loaded: int = 1,
        queue_timeout_s: float = 120.0,
        generation_timeout_s: float = 300.0,
    ):
        self._load_engine = load_engine
        self.max_queue = max_queue
        self.max_queue_per_key = min(max_queue, max_queue_per_key or max_queue)  # None: only MAX_QUEUE bounds a key
        self.max_loaded = max_loaded
        self.queue_timeout_s = queue_timeout_s
        self.generation_timeout_s = generation_timeout_s
        self.workers: dict[str, ModelWorker] = {}
        self.pending: set[GenerationJob] = set()  # submitted, not yet started
        self.listeners: list[JobListener] = []  # called with every finished job
        self.rejected = 0
        self.cancelled = 0
        self._incoming: asyncio.Queue[GenerationJob] | None = None
        self._dispatcher: asyncio.Task | None = None
        self._closing = False
        self._recent_seconds: list[float] = []

    # ---- life cycle --------------------------------------------------------------------------

    async def start(self, preload: str | None = None) -> None:
        self._incoming = asyncio.Queue()
        self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch(), name="generation-dispatcher")
        if preload is not None:
            await self._worker_for(preload)

    async def close(self, grace_s: float = 10.0) -> None:
        """Refuse new jobs, answer waiting ones, let running ones finish up to grace_s."""
        self._closing = True
        for job in list(self.pending):
            self.pending.discard(job)
            job.fail_before_start(Unavailable("the server is shutting down"))
        running = [w.running for w in self.workers.values() if w.running is not None]
        deadline = time.monotonic() + grace_s
        while any(j.finished_at is None for j in running) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for job in running:
            if job.finished_at is None:
                job.cancel("shutdown")
        if self._dispatcher is not None:
            self._dispatcher.cancel()
        for worker in list(self.workers.values()):
            await worker.close()
        self.workers.clear()

    # ---- submitting --------------------------------------------------------------------------

    def submit(
        self, model: str, prompt: str, params: SamplingParams, *, origin: str = "api", scope: str | None = None
    ) -> GenerationJob:
        if self._closing or self._incoming is None:
            raise Unavailable("the server is shutting down" if self._closing else "the scheduler is not running")
        self.check_room(1, scope)
        job = GenerationJob(model, prompt, params, origin=origin, scope=scope)
        job._on_cancel = self._forget
        self.pending.add(job)
        self._incoming.put_nowait(job)
        return job

    def check_room(self, jobs: int, scope: str | None = None) -> None:
        """Raise QueueFull (counted as one rejection) unless `jobs` more jobs of `scope` may wait now."""
        refusal = self._refusal(jobs, scope)
        if refusal is not None:
            self.rejected += 1
            message, jobs_ahead = refusal
            raise QueueFull(message, retry_after_s=self._retry_after(jobs_ahead))

    def _refusal(self, jobs: int, scope: str | None) -> tuple[str, int] | None:
        """Why `jobs` more jobs of `scope` may not wait now, and how many jobs must start first; None if they may."""
        waiting, share, room = self.waiting(scope), self.max_queue_per_key, self.max_queue - len(self.pending)
        too_big = "this request needs {} generation jobs (prompts × n) but {}; send fewer prompts or a smaller n"
        if share < self.max_queue and waiting + jobs > share:  # the key's share, not the whole queue, is the bound
            keys = len({job.scope or "" for job in self.pending})  # keys take turns: each of its jobs waits for theirs
            ahead = min(len(self.pending), (waiting + jobs - share) * keys)
            if jobs > share:  # it could never fit: say so, rather than let it be retried as is
                return too_big.format(jobs, f"one API key may have at most {share} waiting (MAX_QUEUE_PER_KEY)"), ahead
            who = "this API key already has" if scope else "requests without an API key already have"
            return (f"{who} {waiting} generation jobs waiting and one key's share of the queue is {share} "
                    "(MAX_QUEUE_PER_KEY); retry later"), ahead
        if jobs <= room:
            return None
        if jobs > self.max_queue:
            return too_big.format(jobs, f"the queue holds at most {self.max_queue} (MAX_QUEUE)"), len(self.pending)
        if room == 0:
            return f"the generation queue is full ({self.max_queue} requests waiting); retry later", len(self.pending)
        return (f"the generation queue has room for {room} more jobs and this request needs {jobs} (prompts × n); "
                "retry later"), len(self.pending)

    def waiting(self, scope: str | None) -> int:
        """Jobs of one key (None and "" are both "no key") submitted and not yet started."""
        return sum(1 for job in self.pending if (job.scope or "") == (scope or ""))

    def _forget(self, job: GenerationJob) -> None:
        if job in self.pending:
            self.pending.discard(job)
            self.cancelled += 1
        elif job.finished_at is None:
            self.cancelled += 1  # cancelled while running

    def _retry_after(self, jobs_ahead: int) -> int:
        typical = sorted(self._recent_seconds)[len(self._recent_seconds) // 2] if self._recent_seconds else 1.0
        return max(1, math.ceil(typical * jobs_ahead / max(1, len(self.workers))))

    # ---- dispatching -------------------------------------------------------------------------

    async def _dispatch(self) -> None:
        while True:
            job = await self._incoming.get()
            if job.cancelled:
                continue
            try:
                worker = await self._worker_for(job.model)
            except Exception as exc:  # never let one job's trouble stop the dispatcher for all
                log.error("could not get a worker for %s", job.model, exc_info=exc)
                self.pending.discard(job)
                job.fail_before_start(ServerError(f"could not start a worker for {job.model}"))
                continue
            worker.queue.put_nowait(job)
            worker.idle.clear()

    async def _worker_for(self, model: str) -> ModelWorker:
        worker = self.workers.get(model)
        if worker is not None and worker.state != "failed":
            return worker
        if worker is not None:  # a failed load: drop it and try the file again
            await self._unload(worker)
        while len(self.workers) >= self.max_loaded:
            idle = [w for w in self.workers.values() if w.is_idle]
            if idle:
                await self._unload(min(idle, key=lambda w: w.last_used))
            else:
                waiters = [asyncio.ensure_future(w.idle.wait()) for w in self.workers.values()]
                try:
                    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for waiter in waiters:
                        waiter.cancel()
        worker = ModelWorker(
            model,
            lambda: self._load_engine(model),
            generation_timeout_s=self.generation_timeout_s,
            on_start=self._on_start,
            on_done=self._on_done,
        )
        self.workers[model] = worker
        worker.start()
        return worker

    async def _unload(self, worker: ModelWorker) -> None:
        self.workers.pop(worker.model, None)
        await worker.close()

    def _on_start(self, job: GenerationJob) -> bool:
        """The worker took `job` off its queue; False means skip it (its client left)."""
        if job not in self.pending:
            return False
        self.pending.discard(job)
        return True

    def _on_done(self, job: GenerationJob) -> None:
        if job.generation_time is not None:
            self._recent_seconds = (self._recent_seconds + [job.generation_time])[-50:]
        for listener in self.listeners:
            try:
                listener(job)
            except Exception as exc:  # a listener (metrics) bug must not stop the model's worker
                log.error("job listener failed", exc_info=exc)

    # ---- state for /health and /metrics ------------------------------------------------------

    def stats(self) -> QueueStats:
        return QueueStats(len(self.pending), self.max_queue, self.running, self.rejected, self.cancelled,
                          {model: worker.state for model, worker in list(self.workers.items())})

    def model_state(self, model: str) -> tuple[str, str | None]:
        worker = self.workers.get(model)
        if worker is None:
            return "unloaded", None
        return worker.state, worker.load_error.message if worker.load_error else None

    @property
    def running(self) -> int:
        return sum(1 for w in self.workers.values() if w.running is not None)
