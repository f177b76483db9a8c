"""The order in which one model's waiting jobs start: API keys take turns.

Each key (a job's `scope`: its API key, hashed; "" for requests without one) has its own FIFO
lane, and the worker takes one job per turn from the lanes in rotation. So a key with 15 jobs
waiting delays another key's job by at most one of them (after the one running), not by all 15;
and within a key, jobs start in arrival order, so a request's choices run in order.

Turns count jobs, not tokens: a job's length is unknown until it has run, and every job is
already bounded by `max_tokens` and GENERATION_TIMEOUT_S.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque

from scheduler.jobs import GenerationJob


class FairQueue:
    """An asyncio.Queue-like queue for one consumer (the model's worker), round robin by scope."""

    def __init__(self) -> None:
        self._lanes: OrderedDict[str, deque[GenerationJob]] = OrderedDict()  # next turn first
        self._last: str | None = None  # the lane served last
        self._ready = asyncio.Event()

    def put_nowait(self, job: GenerationJob) -> None:
        self._lanes.setdefault(job.scope or "", deque()).append(job)
        self._ready.set()

    def get_nowait(self) -> GenerationJob:
        if not self._lanes:
            raise asyncio.QueueEmpty
        scope = next(iter(self._lanes))
        if scope == self._last and len(self._lanes) > 1:
            # it was the only lane when served, so it stayed in front; lanes that came since go first
            self._lanes.move_to_end(scope)
            scope = next(iter(self._lanes))
        lane = self._lanes[scope]
        job = lane.popleft()
        if lane:
            self._lanes.move_to_end(scope)
        else:
            del self._lanes[scope]
        if not self._lanes:
            self._ready.clear()
        self._last = scope
        return job

    async def get(self) -> GenerationJob:
        while not self._lanes:
            await self._ready.wait()
        return self.get_nowait()

    def empty(self) -> bool:
        return not self._lanes

    async def wait(self, timeout: float) -> bool:
        """True as soon as a job waits; False after `timeout` seconds without one (nothing is taken).

        Not `asyncio.wait_for`: on Python 3.11 it swallows a cancellation that arrives as the event
        is set, and the worker's `close()` then waits forever on a task that never ends."""
        if self._lanes:
            return True
        waiter = asyncio.ensure_future(self._ready.wait())
        try:
            await asyncio.wait({waiter}, timeout=timeout)
        finally:
            waiter.cancel()
        return not self.empty()
