"""Every response body of the OpenAI-compatible API, and how a choice's events become chunks.

Names and shapes follow OpenAI's own. The routes build nothing themselves: `chat_chunks`,
`completion_chunks`, `chat_completion` and `text_completion` turn the generation service's
output into these models, streamed or whole.
"""

from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel, Field, model_serializer

from models.interfaces import GenerationOutcome, TokenLogprobs

class PromptTokensDetails(BaseModel):
    cached_tokens: int = Field(0, description="Prompt tokens reused from a cached context instead of evaluated.")


class UsageInfo(BaseModel):
    prompt_tokens: int = Field(0, description="The whole prompt, cached part included, as OpenAI counts it.")
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: PromptTokensDetails = Field(default_factory=PromptTokensDetails)

    def add(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> None:
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        self.total_tokens = self.prompt_tokens + self.completion_tokens
        self.prompt_tokens_details.cached_tokens += cached_tokens


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class ChatTokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    """Chat's `logprobs`: one entry per generated token, in order."""

    content: list[ChatTokenLogprob] | None
    refusal: list[ChatTokenLogprob] | None = None

    @classmethod
    def of(cls, entries: tuple[TokenLogprobs, ...] | list[TokenLogprobs]) -> "ChoiceLogprobs":
        return cls(content=[
            ChatTokenLogprob(token=e.token, logprob=e.logprob, bytes=list(e.bytes),
                             top_logprobs=[TopLogprob(token=t, logprob=lp, bytes=list(b)) for t, b, lp in e.top])
            for e in entries
        ])


class CompletionLogprobs(BaseModel):
    """Text completions' (legacy) `logprobs`: parallel lists, and each token's offset in the choice's text."""

    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]

    @classmethod
    def of(cls, entries: tuple[TokenLogprobs, ...] | list[TokenLogprobs], offset: int) -> "CompletionLogprobs":
        offsets = []
        for entry in entries:
            offsets.append(offset)
            offset += len(entry.bytes.decode("utf-8", "replace"))
        return cls(tokens=[e.token for e in entries], token_logprobs=[e.logprob for e in entries],
                   top_logprobs=[{t: lp for t, _, lp in e.top} for e in entries], text_offset=offsets)


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: Literal["stop", "length"] | None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: UsageInfo
    system_fingerprint: str | None = None


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None

    @model_serializer(mode="wrap")
    def _omit_unset(self, handler):  # OpenAI sends only the keys a delta carries
        return {k: v for k, v in handler(self).items() if v is not None}


class ChatChunkChoice(BaseModel):
    index: int
    delta: DeltaMessage
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChunkChoice]
    usage: UsageInfo | None = None


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: CompletionLogprobs | None = None


class Completion(BaseModel):
    """Both the full response and each streamed chunk (OpenAI uses one shape for both)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: UsageInfo | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "local"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


# ---- from the generation service's output to the models above --------------------------------

Results = list  # of api.generation.ChoiceResult: each choice's whole text, how it ended, its logprobs


def chat_chunks(completion_id: str, model: str, index: int, text: str, *, first: bool,
                finish: GenerationOutcome | None, logprobs: tuple[TokenLogprobs, ...] | None = None) -> list[ChatCompletionChunk]:
    """One choice's event as chat chunks: its role first, then text (with its tokens' logprobs, when
    `logprobs` is not None: the request asked for them), then its finish reason."""
    def chunk(delta: DeltaMessage, reason: str | None = None, entries=None) -> ChatCompletionChunk:
        choice = ChatChunkChoice(index=index, delta=delta, finish_reason=reason,
                                 logprobs=ChoiceLogprobs.of(entries) if entries else None)
        return ChatCompletionChunk(id=completion_id, model=model, choices=[choice])

    out = [chunk(DeltaMessage(role="assistant", content=""))] if first else []
    if text or logprobs:
        out.append(chunk(DeltaMessage(content=text), entries=logprobs))
    if finish is not None:
        out.append(chunk(DeltaMessage(), finish.finish_reason))
    return out


def completion_chunks(completion_id: str, model: str, index: int, text: str, finish: GenerationOutcome | None,
                      logprobs: CompletionLogprobs | None = None) -> list[Completion]:
    """One choice's event as text-completion chunks (text, logprobs and finish reason in one chunk)."""
    reason = finish.finish_reason if finish is not None else None
    if not text and reason is None and logprobs is None:
        return []
    choice = CompletionChoice(index=index, text=text, finish_reason=reason, logprobs=logprobs)
    return [Completion(id=completion_id, model=model, choices=[choice])]


def chat_completion(completion_id: str, model: str, results: Results, usage: UsageInfo, *, logprobs: bool = False) -> ChatCompletion:
    choices = [ChatChoice(index=i, message=AssistantMessage(content=r.text), finish_reason=r.outcome.finish_reason,
                          logprobs=ChoiceLogprobs.of(r.logprobs) if logprobs else None)
               for i, r in enumerate(results)]
    return ChatCompletion(id=completion_id, model=model, choices=choices, usage=usage)


def text_completion(completion_id: str, model: str, results: Results, usage: UsageInfo, prefixes: list[str], *,
                    logprobs: bool = False) -> Completion:
    """`prefixes[i]`: what choice i's text starts with (its prompt when `echo` is on)."""
    choices = [CompletionChoice(index=i, text=prefixes[i] + r.text, finish_reason=r.outcome.finish_reason,
                                logprobs=CompletionLogprobs.of(r.logprobs, len(prefixes[i])) if logprobs else None)
               for i, r in enumerate(results)]
    return Completion(id=completion_id, model=model, choices=choices, usage=usage)


def usage_chunk_of(chunk_type: type[ChatCompletionChunk] | type[Completion], completion_id: str, model: str,
                   usage: UsageInfo) -> ChatCompletionChunk | Completion:
    """The last chunk of a stream with `include_usage`: no choices, the whole request's usage."""
    return chunk_type(id=completion_id, model=model, choices=[], usage=usage)
