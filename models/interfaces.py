"""What a chat engine is, as the scheduler sees it: plain values in, plain values out.

An engine is synchronous and not thread-safe; the scheduler owns one thread per engine and calls
it only from there. `on_text(text, logprobs)` is called on that thread once per generated token,
with the text that token completes (empty inside a UTF-8 character) and, when the request asked for
them, its `TokenLogprobs`; returning False stops the generation at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Protocol

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class Tag:
    """One structure a constrained output may contain: literal `begin`, a JSON value valid against `schema`, literal `end`."""

    begin: str  # e.g. '<tool_call>\n{"name": "get_weather", "arguments": '
    schema: str  # canonical JSON text of a JSON Schema
    end: str  # e.g. '}\n</tool_call>'


@dataclass(frozen=True)
class Constraint:
    """What a generation's output must be, as data: the engine compiles it into a token mask.

    - kind "json_schema": the whole output is one JSON value valid against `schema` (canonical JSON
      text; `{"type": "object"}` for OpenAI's json_object).
    - kind "tags": the output may contain `tags`. With `text` (tool_choice "auto"), free text is
      allowed, and a tag starts where the model writes one of `triggers` (each a prefix of the
      `begin` of some tags); from there the tag is enforced to its end. Without `text` (tool_choice
      "required" or a named function), the output is only tags, joined by `separator`. Between
      `at_least` and `at_most` tags (None: no bound).
    Routes never build these: the request models and models/tool_formats.py do, after every
    schema in them has been checked (models/native/constraint.py `check_schema`).
    """

    kind: Literal["json_schema", "tags"]
    schema: str = ""
    tags: tuple[Tag, ...] = ()
    triggers: tuple[str, ...] = ()
    text: bool = True
    at_least: int = 0
    at_most: int | None = None
    separator: str = ""


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
    seed: int | None = None  # None: a fresh random seed per generation
    frequency_penalty: float = 0.0  # OpenAI's: minus count x this, over the tokens generated so far
    presence_penalty: float = 0.0  # OpenAI's: minus this for any token generated so far
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias added to its logit); -100 bans, 100 forces
    logprobs: int | None = None  # None: off; else how many top alternatives per token (0-20)
    constraint: Constraint | None = None


@dataclass(frozen=True)
class TokenLogprobs:
    """One generated token's entry in OpenAI's `logprobs`: its text, bytes and log-probability, and the top alternatives."""

    token: str  # the token's text; "bytes:\\x.." where it is not whole UTF-8, as OpenAI writes it
    bytes: bytes
    logprob: float
    top: tuple[tuple[str, bytes, float], ...] = ()  # (token, bytes, logprob), most likely first


@dataclass
class GenerationOutcome:
    """Exact counts from the engine's own callbacks, never estimates."""

    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason
    # With finish_reason "length", the limit reached: "max_tokens", "context" (the window filled)
    # or "time" (GENERATION_TIMEOUT_S). OpenAI's API has no field for it; the chat page shows it.
    limit: str | None = None
    # Of `prompt_tokens`, how many were reused from a cached context instead of evaluated (OpenAI's
    # usage.prompt_tokens_details.cached_tokens).
    cached_tokens: int = 0


@dataclass(frozen=True)
class PrefixCache:
    """How many contexts (KV caches) a chat engine keeps, and who may reuse them."""

    enabled: bool = True
    slots: int = 4  # contexts per model, each able to hold one conversation
    max_mb: int = 1024  # all contexts' KV caches together, at N_CTX each
    share: bool = False  # reuse across API keys (a timing side channel; see the README)
    exact: bool = True  # keep only what a full evaluation computes bit for bit (models/prefix_cache.py)


class ChatEngine(Protocol):
    name: str
    n_ctx: int

    def generate(
        self,
        prompt: str,
        params: SamplingParams,
        on_text: Callable[..., bool],
        *,
        scope: str | None = None,
        keep_going: Callable[[], bool] | None = None,
    ) -> GenerationOutcome:
        """`scope`: who may reuse the contexts this call leaves (None: anyone). `keep_going` is asked
        during prompt evaluation too (after each batch); False stops the call there."""

    def settle(self, keep_going: Callable[[], bool] | None = None) -> int:
        """Between jobs: work that makes the next call cheaper (see LlamaEngine.settle); tokens evaluated."""

    def close(self) -> None: ...
