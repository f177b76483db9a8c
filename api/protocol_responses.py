"""Every response body of the OpenAI-compatible API, and how a choice's events become chunks.

Names and shapes follow OpenAI's own (logprobs: api/protocol_logprobs.py). The routes build nothing
themselves: `ChatChoiceStream`, `completion_chunks`, `chat_completion` and `text_completion` turn
the generation service's output into these models, streamed or whole. A chat reply parsed into ReplyEvents (text and tool
calls, models/tool_parser.py) goes through `ChatChoiceStream` (chunks) or `chat_completion(...,
parsers=...)` (the whole message); both give the same message, as the `openai` SDK accumulates it.
"""

from __future__ import annotations

import time
from typing import Callable, Literal

from pydantic import BaseModel, Field, model_serializer

from api.protocol_logprobs import ChoiceLogprobs, CompletionLogprobs
from models.conversation import CallStart, ReplyEvent, TextDelta
from models.interfaces import GenerationOutcome, TokenLogprobs
from models.tool_parser import ReplyParser

ChatFinishReason = Literal["stop", "length", "tool_calls"]


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


def _without_none(handler, value) -> dict:
    """OpenAI leaves out the keys a delta (or an optional part) does not carry."""
    return {k: v for k, v in handler(value).items() if v is not None}


class FunctionCallOut(BaseModel):
    name: str
    arguments: str = Field(..., description="The arguments' JSON text, as generated (valid against the tool's parameters).")


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallOut


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = Field(..., description="null when the reply is only tool calls.")
    tool_calls: list[ToolCallOut] | None = None

    @model_serializer(mode="wrap")
    def _omit_no_calls(self, handler):  # `content: null` stays; `tool_calls` only when there are some
        data = handler(self)
        if data.get("tool_calls") is None:
            data.pop("tool_calls", None)
        return data


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: ChatFinishReason | None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: UsageInfo
    system_fingerprint: str | None = None


class DeltaFunction(BaseModel):
    name: str | None = None
    arguments: str | None = None

    @model_serializer(mode="wrap")
    def _omit_unset(self, handler):
        return _without_none(handler, self)


class DeltaToolCall(BaseModel):
    """A call's first delta has `id`, `type` and `function.name` (arguments ""); later ones only arguments."""

    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: DeltaFunction

    @model_serializer(mode="wrap")
    def _omit_unset(self, handler):
        return _without_none(handler, self)


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[DeltaToolCall] | None = None

    @model_serializer(mode="wrap")
    def _omit_unset(self, handler):  # OpenAI sends only the keys a delta carries
        return _without_none(handler, self)


class ChatChunkChoice(BaseModel):
    index: int
    delta: DeltaMessage
    finish_reason: ChatFinishReason | None = None
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


def completion_chunks(completion_id: str, model: str, index: int, text: str, finish: GenerationOutcome | None,
                      logprobs: CompletionLogprobs | None = None) -> list[Completion]:
    """One choice's event as text-completion chunks (text, logprobs and finish reason in one chunk)."""
    reason = finish.finish_reason if finish is not None else None
    if not text and reason is None and logprobs is None:
        return []
    choice = CompletionChoice(index=index, text=text, finish_reason=reason, logprobs=logprobs)
    return [Completion(id=completion_id, model=model, choices=[choice])]


def chat_completion(completion_id: str, model: str, results: Results, usage: UsageInfo,
                    parsers: Callable[[], ReplyParser], *, logprobs: bool = False) -> ChatCompletion:
    """`parsers`: makes each choice's reply parser (ChatPlan.parser). `logprobs`: the request asked for them."""
    choices = []
    for i, result in enumerate(results):
        parser = parsers()
        message = assistant_message(parser.feed(result.text) + parser.finish())
        reason = finish_reason(result.outcome, parser.calls)
        entries = ChoiceLogprobs.of(result.logprobs) if logprobs else None
        choices.append(ChatChoice(index=i, message=message, finish_reason=reason, logprobs=entries))
    return ChatCompletion(id=completion_id, model=model, choices=choices, usage=usage)


def assistant_message(events: list[ReplyEvent]) -> AssistantMessage:
    """A whole reply's events as its message: the text (null when there are only calls), then the calls."""
    text: list[str] = []
    calls: list[ToolCallOut] = []
    arguments: list[list[str]] = []
    for event in events:
        if isinstance(event, TextDelta):
            text.append(event.text)
        elif isinstance(event, CallStart):
            calls.append(ToolCallOut(id=event.id, function=FunctionCallOut(name=event.name, arguments="")))
            arguments.append([])
        else:
            arguments[event.index].append(event.fragment)
    for call, fragments in zip(calls, arguments):
        call.function.arguments = "".join(fragments)
    content = "".join(text) if text or not calls else None
    return AssistantMessage(content=content, tool_calls=calls or None)


def finish_reason(outcome: GenerationOutcome, calls: int) -> ChatFinishReason:
    """"tool_calls" when the reply made calls and ended as the model chose; a reply cut short stays "length"."""
    return "tool_calls" if calls and outcome.finish_reason == "stop" else outcome.finish_reason


class ChatChoiceStream:
    """One streamed choice whose reply is parsed into text and tool calls: its text deltas in, chunks out.

    The role comes with the first event: `{"role", "content": ""}` before text (as a plain reply
    streams), or in the first call's delta when the reply starts with a call, so that the `openai`
    SDK accumulates `content: null` for a reply of calls only, as the whole message has it."""

    def __init__(self, completion_id: str, model: str, index: int, parser: ReplyParser):
        self.completion_id, self.model, self.index, self.parser = completion_id, model, index, parser
        self._started = False
        self._logprobs: list[TokenLogprobs] = []  # entries not sent yet: they go with the next chunk

    def chunks(self, text: str, finish: GenerationOutcome | None = None,
               logprobs: tuple[TokenLogprobs, ...] | None = None) -> list[ChatCompletionChunk]:
        """`logprobs`: this text's tokens' entries, when the request asked for them (None otherwise)."""
        if logprobs is not None:
            self._logprobs.extend(logprobs)
        events = self.parser.feed(text) if text else []
        if finish is not None:
            events += self.parser.finish()
        deltas = [self._delta(event) for event in events]
        if not self._started and (deltas or finish is not None):
            self._started = True
            if deltas and deltas[0].tool_calls:
                deltas[0].role = "assistant"
            else:
                deltas.insert(0, DeltaMessage(role="assistant", content=""))
        out = [self._chunk(delta) for delta in deltas]
        if finish is not None:
            out.append(self._chunk(DeltaMessage(), finish_reason(finish, self.parser.calls)))
        return out

    def _delta(self, event: ReplyEvent) -> DeltaMessage:
        if isinstance(event, TextDelta):
            return DeltaMessage(content=event.text)
        if isinstance(event, CallStart):
            call = DeltaToolCall(index=event.index, id=event.id, type="function",
                                 function=DeltaFunction(name=event.name, arguments=""))
        else:
            call = DeltaToolCall(index=event.index, function=DeltaFunction(arguments=event.fragment))
        return DeltaMessage(tool_calls=[call])

    def _chunk(self, delta: DeltaMessage, reason: ChatFinishReason | None = None) -> ChatCompletionChunk:
        entries = ChoiceLogprobs.of(self._logprobs) if self._logprobs else None
        self._logprobs = []
        choice = ChatChunkChoice(index=self.index, delta=delta, finish_reason=reason, logprobs=entries)
        return ChatCompletionChunk(id=self.completion_id, model=self.model, choices=[choice])


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
