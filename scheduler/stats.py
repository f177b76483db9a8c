"""What a scheduler reports about its queue, read live by /metrics (`stats()` on each scheduler)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class QueueStats:
    queue_depth: int  # jobs (generation) or inputs (embedding) waiting now
    max_queue: int  # past it, 429
    running: int  # jobs (generation) or batches (embedding) running now
    rejected: int  # submissions refused with 429
    cancelled: int  # jobs whose client left, or that shutdown stopped
    models: dict[str, str] = field(default_factory=dict)  # generation: each chat model's worker state
    dtype: str | None = None  # embedding: what the model computes in ("float32" or "bfloat16")

    def counts(self) -> dict[str, int]:
        return {"queue_depth": self.queue_depth, "max_queue": self.max_queue, "running": self.running,
                "rejected": self.rejected, "cancelled": self.cancelled}
