"""What a chat engine is, as the scheduler sees it: plain values in, plain values out.

An engine is synchronous and not thread-safe; the scheduler owns one thread per engine and calls
it only from there. `on_text` is called on that thread with each decoded piece of text; returning
False stops the generation at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Protocol

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class SamplingParams:
    """Engine-level sampling settings; built by the API layer from an OpenAI request."""

    max_tokens: int | None = None  # None: until the context window is full
    temperature: float = 1.0  # 0 is greedy
    top_p: float = 1.0
    top_k: int = 40
    min_p: float = 0.0
    repeat_penalty: float = 1.0  # 1.0 is no penalty
    repeat_last_n: int = 64
    stop: tuple[str, ...] = ()


@dataclass
class GenerationOutcome:
    """Exact counts from the engine's own callbacks, never estimates."""

    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason
    # With finish_reason "length", the limit reached: "max_tokens", "context" (the window filled)
    # or "time" (GENERATION_TIMEOUT_S). OpenAI's API has no field for it; the chat page shows it.
    limit: str | None = None


class ChatEngine(Protocol):
    name: str
    n_ctx: int

    def generate(self, prompt: str, params: SamplingParams, on_text: Callable[[str], bool]) -> GenerationOutcome: ...

    def close(self) -> None: ...
