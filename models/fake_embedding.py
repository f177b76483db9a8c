"""A scriptable fake embedding engine for unit tests (same interface as the real one).

It records every `encode` call, derives each vector from its text alone (so tests can check
that rows come back in input order), can be told to fail, to be slow, or to hold every call
until released (to make "the model is busy" deterministic). Nothing here loads torch.
"""

from __future__ import annotations

import hashlib
import threading
import time

import numpy as np

from errors import InvalidRequest
from models.embedding_precision import DtypeChoice


class FakeEmbeddingEngine:
    """Fake engine. Tokens are whitespace-separated words plus 2 "special" tokens per text."""

    def __init__(self, *, dimensions: int = 8, name: str = "fake-embedding", delay_s: float = 0.0,
                 max_seq_length: int = 16, vocab_size: int = 1000, dtype: str = "float32"):
        self._name = name
        self.precision = DtypeChoice(dtype, f"fake engine set to {dtype}")  # the fake's vectors are float32 regardless
        self._dimensions = dimensions
        self.delay_s = delay_s  # seconds each encode call sleeps, to simulate a busy model
        self.max_seq_length = max_seq_length
        self.vocab_size = vocab_size
        self.batches: list[list[str]] = []  # every encode call's texts, in call order
        self._failures: list[BaseException] = []
        self._lock = threading.Lock()
        self._gate = threading.Event()
        self._gate.set()
        self.entered = threading.Event()  # set when an encode call has started

    # -- scripting ----------------------------------------------------------------------------

    def fail_next(self, exc: BaseException | None = None, times: int = 1) -> None:
        """Make the next `times` encode calls raise `exc` (a RuntimeError by default)."""
        with self._lock:
            for _ in range(times):
                self._failures.append(exc or RuntimeError("fake engine failure"))

    def hold(self) -> None:
        """Block every encode call (after it is recorded) until `release()`."""
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    @property
    def batch_sizes(self) -> list[int]:
        with self._lock:
            return [len(batch) for batch in self.batches]

    @property
    def texts_seen(self) -> list[str]:
        with self._lock:
            return [text for batch in self.batches for text in batch]

    def vector(self, text: str) -> np.ndarray:
        """The row `encode` returns for `text`: unit length, derived from the text only."""
        digest = hashlib.sha256(text.encode("utf-8")).digest()
        raw = np.frombuffer(digest * (1 + self._dimensions * 4 // len(digest)), dtype=np.uint8)
        row = raw[: self._dimensions].astype(np.float32) + 1.0
        return row / np.linalg.norm(row)

    # -- engine interface ---------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def dimensions(self) -> int:
        return self._dimensions

    @property
    def dtype(self) -> str:
        return self.precision.dtype

    def encode(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            self.batches.append(list(texts))
            failure = self._failures.pop(0) if self._failures else None
        self.entered.set()
        self._gate.wait()
        if self.delay_s:
            time.sleep(self.delay_s)
        if failure is not None:
            raise failure
        if not texts:
            return np.empty((0, self._dimensions), dtype=np.float32)
        return np.stack([self.vector(text) for text in texts])

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [min(len(text.split()) + 2, self.max_seq_length) for text in texts]

    def decode(self, token_ids: list[int]) -> str:
        if not token_ids:
            raise InvalidRequest("a token-id input must not be empty", param="input")
        for token in token_ids:
            if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token < self.vocab_size:
                raise InvalidRequest(f"token id {token!r} is not in the vocabulary", param="input")
        return " ".join(f"t{token}" for token in token_ids)
