"""One embedding request inside the batcher: its inputs, how many went into batches, its rows."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np


@dataclass(eq=False)  # identity hashing: requests are keys of the pending dict
class EmbeddingRequest:
    texts: list[str]
    future: asyncio.Future
    enqueued_at: float
    taken: int = 0  # inputs already handed to a batch (they are taken in order)
    delivered: int = 0  # inputs whose rows have arrived
    rows: np.ndarray | None = None
    counts: list[int] | None = None  # exact tokens the model saw, per input
    first_batch_at: float | None = None

    @property
    def waiting(self) -> int:
        return len(self.texts) - self.taken


Part = tuple[EmbeddingRequest, int, int]  # (request, first input index, count)
