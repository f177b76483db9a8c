"""A scriptable chat engine for fast tests: same interface as LlamaEngine, no model.

    engine = FakeChatEngine(); engine.enqueue(["Hel", "lo"])   # next generation's pieces
    engine.prompts  # every prompt it was asked to generate from, in order

Pieces are emitted with `delay_s` between them; a piece that is an Exception instance is raised
there (an engine failure mid-generation). With nothing queued it echoes the prompt word by word.
`prompt_s` is a prompt evaluation of that length, in ten steps that each ask `keep_going` first;
`scopes` records the cache scope of every call.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable

from models.interfaces import GenerationOutcome, SamplingParams


class FakeChatEngine:
    def __init__(self, name: str = "fake.gguf", *, n_ctx: int = 2048, delay_s: float = 0.0, prompt_s: float = 0.0):
        self.name = name
        self.n_ctx = n_ctx
        self.delay_s = delay_s
        self.prompt_s = prompt_s
        self.prompts: list[str] = []
        self.scopes: list[str | None] = []
        self.threads: set[int] = set()
        self.active = 0
        self.max_active = 0
        self.stopped_early: list[str] = []
        self.closed = False
        self.settled = 0  # calls of `settle`: the worker makes one when its queue runs empty
        self._scripts: deque[list] = deque()
        self._lock = threading.Lock()

    def enqueue(self, pieces: list) -> None:
        self._scripts.append(list(pieces))

    def generate(
        self,
        prompt: str,
        params: SamplingParams,
        on_text: Callable[[str], bool],
        *,
        scope: str | None = None,
        keep_going: Callable[[], bool] | None = None,
    ) -> GenerationOutcome:
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        self.threads.add(threading.get_ident())
        self.prompts.append(prompt)
        self.scopes.append(scope)
        try:
            for _ in range(10 if self.prompt_s else 0):
                if keep_going is not None and not keep_going():
                    return GenerationOutcome(len(prompt.split()), 0, "stop")
                time.sleep(self.prompt_s / 10)
            pieces = self._scripts.popleft() if self._scripts else [w + " " for w in prompt.split()]
            produced = 0
            for piece in pieces:
                if params.max_tokens is not None and produced >= params.max_tokens:
                    return GenerationOutcome(len(prompt.split()), produced, "length", "max_tokens")
                if self.delay_s:
                    time.sleep(self.delay_s)
                if isinstance(piece, BaseException):
                    raise piece
                produced += 1
                if not on_text(piece):
                    self.stopped_early.append(prompt)
                    return GenerationOutcome(len(prompt.split()), produced, "stop")
            return GenerationOutcome(len(prompt.split()), produced, "stop")
        finally:
            with self._lock:
                self.active -= 1

    def settle(self, keep_going: Callable[[], bool] | None = None) -> int:
        self.settled += 1
        return 0

    def close(self) -> None:
        self.closed = True
