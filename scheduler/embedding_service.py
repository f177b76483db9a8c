"""The embedding model's life cycle: load it in the background, then serve it through the batcher.

Until the model is loaded, embedding requests get 503 (loading); if it failed to load, 500 with
the reason; if the batcher's worker died (a bug), 503 and `state` "failed", so `/health` says 503
too instead of "ready". `/health` reads `state` and the short, stable `reason` (no paths, no
exception text); `error` is the detail, for the log and `/metrics`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from errors import ModelLoadFailed, ServerError, Unavailable
from models.embedding_engine import EmbeddingEngine
from scheduler.embedding_batcher import EmbeddingBatcher
from scheduler.stats import QueueStats

log = logging.getLogger("server.embeddings")


class EmbeddingService:
    def __init__(self, model_id: str, load_engine: Callable[[], EmbeddingEngine], make_batcher: Callable[[EmbeddingEngine], EmbeddingBatcher]):
        self.model_id = model_id
        self.state = "loading"
        self.error: str | None = None  # the detail: for the log and /metrics
        self.reason: str | None = None  # short and stable: for /health
        self.dtype: str | None = None  # once loaded: what the model computes in ("float32" or "bfloat16")
        self.dtype_reason: str | None = None  # and why (EMBEDDING_DTYPE, the CPU, the load-time check)
        self.batcher: EmbeddingBatcher | None = None
        self.batch_listeners: list[Callable] = []  # handed to the batcher once it exists
        self.queue_listeners: list[Callable] = []
        self._load_engine = load_engine
        self._make_batcher = make_batcher
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._load(), name="embedding-load")

    async def _load(self) -> None:
        try:
            engine = await asyncio.to_thread(self._load_engine)
            batcher = self._make_batcher(engine)
            batcher.batch_listeners.extend(self.batch_listeners)
            batcher.queue_listeners.extend(self.queue_listeners)
            batcher.death_listeners.append(self._worker_died)
            await batcher.start()
        except Exception as exc:
            self.state = "failed"
            self.error = exc.message if isinstance(exc, ServerError) else f"{type(exc).__name__}: {exc}"
            self.reason = "the embedding model failed to load"
            log.error("embedding model %s failed to load: %s", self.model_id, self.error)
            return
        precision = getattr(engine, "precision", None)
        self.dtype = getattr(engine, "dtype", "float32")
        self.dtype_reason = getattr(precision, "reason", None)
        log.info("embedding model %s computes in %s (%s)", self.model_id, self.dtype, self.dtype_reason or "as loaded")
        self.batcher, self.state = batcher, "ready"

    def _worker_died(self, exc: BaseException) -> None:
        self.state, self.reason = "failed", "the embedding worker stopped"
        self.error = f"the embedding worker died: {type(exc).__name__}: {exc}"

    def require(self) -> EmbeddingBatcher:
        if self.batcher is not None and self.batcher.died is not None:
            raise Unavailable(
                f"the embedding model {self.model_id} is out of service (its worker stopped); restart the server"
            )
        if self.batcher is not None:
            return self.batcher
        if self.state == "failed":
            raise ModelLoadFailed(f"the embedding model {self.model_id} failed to load: {self.error}")
        raise Unavailable(f"the embedding model {self.model_id} is still loading; retry in a few seconds")

    def stats(self) -> QueueStats | None:
        """The batcher's queue, once the model has loaded."""
        return self.batcher.stats() if self.batcher is not None else None

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self.batcher is not None:
            await self.batcher.stop()
