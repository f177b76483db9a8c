"""Every request body of the OpenAI-compatible API, as pydantic models (responses: protocol_responses.py).

Names follow OpenAI's own. Requests validate themselves (ranges, unsupported parameters) and
convert into engine values (`to_sampling_params`), so nothing below the routes sees HTTP types.
A parameter that cannot be honoured is refused (400 naming it), never silently ignored.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from api.protocol_chat import (
    ChatMessage,
    TextPart,
    ToolChoiceField,
    ToolDefinition,
    check_tool_request,
    to_conversation,
)
from errors import UnsupportedParameter
from models.conversation import Conversation
from models.interfaces import SamplingParams

MAX_TOKENS_CAP = 1 << 20  # past any context window; a larger value is a client bug

# Reusable field definitions, declared once with their meaning. NULL_IS_DEFAULT: `null` is accepted (as
# OpenAI's clients send it) and means the default; the OpenAPI document says `nullable`.
NULL_IS_DEFAULT = {"nullable": True}
model_field = Field(None, description="Model id from `/v1/models`; the default model when absent.", examples=[None])
max_tokens_field = Field(None, ge=1, le=MAX_TOKENS_CAP, description="Most tokens to generate.")
temperature_field = Field(1.0, ge=0.0, le=2.0, description="Sampling temperature; 0 is greedy.", json_schema_extra=NULL_IS_DEFAULT)
top_p_field = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.", json_schema_extra=NULL_IS_DEFAULT)
top_k_field = Field(40, ge=0, le=100_000, description="Sample among the k most likely tokens (0: all).", json_schema_extra=NULL_IS_DEFAULT)
min_p_field = Field(0.0, ge=0.0, le=1.0, description="Drop tokens below this fraction of the top token's probability.", json_schema_extra=NULL_IS_DEFAULT)
repeat_penalty_field = Field(1.0, ge=0.5, le=2.0, description="Penalty on recently generated tokens; 1 is none.", json_schema_extra=NULL_IS_DEFAULT)
n_field = Field(1, ge=1, le=16, description="Choices to generate, one after another (bounded by `MAX_N`).", json_schema_extra=NULL_IS_DEFAULT)
stream_field = Field(False, description="Send Server-Sent Events as tokens arrive.", json_schema_extra=NULL_IS_DEFAULT)
user_field = Field(None, max_length=256, description="End-user id (recorded nowhere; accepted for compatibility).")
stop_field = Field(None, description="Up to 4 sequences; generation stops before any of them.")


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = Field(False, description="Send a last chunk with `choices: []` and exact `usage`.")


class SamplingRequest(BaseModel):
    """Fields shared by chat and text completions, and the refusals of what GPT4All cannot do."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = model_field
    max_tokens: int | None = max_tokens_field
    temperature: float = temperature_field
    top_p: float = top_p_field
    top_k: int = top_k_field
    min_p: float = min_p_field
    repeat_penalty: float = repeat_penalty_field
    n: int = n_field
    stream: bool = stream_field
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = stop_field
    user: str | None = user_field
    seed: int | None = Field(None, description="Accepted only with `temperature: 0`, where output is deterministic.")
    frequency_penalty: float | None = Field(None, description="Only 0 is supported; use `repeat_penalty`.")
    presence_penalty: float | None = Field(None, description="Only 0 is supported; use `repeat_penalty`.")
    logit_bias: dict[str, float] | None = Field(None, description="Not supported; only empty.")

    @field_validator("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "n", "stream", mode="before")
    @classmethod
    def _null_means_default(cls, value: Any, info) -> Any:
        return cls.model_fields[info.field_name].default if value is None else value

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, value: str | list[str] | None) -> list[str]:
        stops = [value] if isinstance(value, str) else list(value or [])
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences are allowed")
        if any(not s for s in stops):
            raise ValueError("stop sequences must not be empty")
        return stops

    @model_validator(mode="after")
    def _refuse_what_cannot_be_honoured(self) -> "SamplingRequest":
        for name in ("frequency_penalty", "presence_penalty"):
            if getattr(self, name) not in (None, 0, 0.0):
                raise UnsupportedParameter(
                    f"{name} cannot be honoured by GPT4All; use repeat_penalty instead", param=name
                )
        if self.logit_bias:
            raise UnsupportedParameter("logit_bias is not supported by GPT4All", param="logit_bias")
        if self.seed is not None and self.temperature != 0:
            raise UnsupportedParameter(
                "GPT4All has no sampling seed; a seed holds only with temperature 0 (greedy)", param="seed"
            )
        if self.stream_options is not None and not self.stream:
            raise UnsupportedParameter("stream_options is only allowed with stream: true", param="stream_options")
        return self

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def to_sampling_params(self, max_tokens: int | None) -> SamplingParams:
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            min_p=self.min_p,
            repeat_penalty=self.repeat_penalty,
            stop=tuple(self.stop or ()),
        )


# ---- chat ----------------------------------------------------------------------------------


__all__ = ["ChatMessage", "TextPart"]  # chat messages and tools: api/protocol_chat.py


class ResponseFormat(BaseModel):
    type: str


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(..., min_length=1, description="The conversation so far.")
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_CAP, description="Alias of `max_tokens`.")
    response_format: ResponseFormat | None = Field(None, description="Only `{\"type\": \"text\"}`.")
    logprobs: bool | None = Field(None, description="Not supported; only false.")
    top_logprobs: int | None = Field(None, description="Not supported.")
    tools: list[ToolDefinition] | None = Field(None, description="Function tools; their `parameters` are enforced.")
    tool_choice: ToolChoiceField = Field(
        None, description='`"none"`, `"auto"` (the default with tools), `"required"`, or `{"type": "function", "function": {"name": ...}}`.')
    functions: list[Any] | None = Field(None, description="Deprecated by OpenAI; refused: send `tools`.")
    function_call: Any = Field(None, description="Deprecated by OpenAI; refused: send `tool_choice`.")
    parallel_tool_calls: bool | None = Field(None, description="false: at most one tool call (default true).")

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "messages": [
                        {"role": "system", "content": "You are a helpful assistant."},
                        {"role": "user", "content": "Say hello in one short sentence."},
                    ],
                    "max_tokens": 64,
                }
            ]
        },
    )

    @model_validator(mode="after")
    def _refuse_chat_extras(self) -> "ChatCompletionRequest":
        if self.logprobs or self.top_logprobs is not None:
            raise UnsupportedParameter("logprobs are not available from GPT4All", param="logprobs" if self.logprobs else "top_logprobs")
        check_tool_request(self.messages, self.tools, self.tool_choice, self.functions, self.function_call)
        if self.response_format is not None and self.response_format.type != "text":
            raise UnsupportedParameter("only response_format {\"type\": \"text\"} is supported", param="response_format")
        if self.max_tokens is not None and self.max_completion_tokens is not None and self.max_tokens != self.max_completion_tokens:
            raise UnsupportedParameter("max_tokens and max_completion_tokens disagree", param="max_completion_tokens")
        return self

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def to_conversation(self) -> Conversation:
        return to_conversation(self.messages, self.tools, self.tool_choice, self.parallel_tool_calls)

    def plain_messages(self) -> list[dict[str, str]]:
        """The messages as role/content dicts, for the prompt path that knows no tools (until it takes a
        Conversation): a request with tools or tool calls in its history is refused here, as before."""
        conversation = self.to_conversation()
        if conversation.tools:
            raise UnsupportedParameter("tools (function calling) are not supported yet", param="tools")
        if any(m.tool_calls or m.role == "tool" for m in conversation.messages):
            raise UnsupportedParameter("tool calls in messages are not supported yet", param="messages")
        return [{"role": m.role, "content": m.content or ""} for m in conversation.messages]


class CompletionRequest(SamplingRequest):
    prompt: str | list[str] = Field(..., description="A prompt, or a list of prompts (one choice each).")
    max_tokens: int | None = Field(16, ge=1, le=MAX_TOKENS_CAP, description="Most tokens to generate (default 16, as OpenAI).")
    echo: bool = Field(False, description="Put the prompt before the completion in `text`.")
    suffix: str | None = Field(None, description="Not supported.")
    logprobs: int | None = Field(None, description="Not supported.")
    best_of: int | None = Field(None, description="Only 1 (or equal to n).")

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"prompt": "Write a short haiku about autumn.", "max_tokens": 64}]},
    )

    @field_validator("prompt")
    @classmethod
    def _check_prompt(cls, value: str | list[str]) -> list[str]:
        prompts = [value] if isinstance(value, str) else value
        if not prompts:
            raise ValueError("prompt must not be an empty list")
        return prompts

    @model_validator(mode="after")
    def _refuse_completion_extras(self) -> "CompletionRequest":
        if self.suffix:
            raise UnsupportedParameter("suffix (insertion) is not supported", param="suffix")
        if self.logprobs is not None:
            raise UnsupportedParameter("logprobs are not available from GPT4All", param="logprobs")
        if self.best_of not in (None, 1, self.n):
            raise UnsupportedParameter("best_of other than 1 is not supported", param="best_of")
        return self

    @property
    def prompts(self) -> list[str]:
        return self.prompt if isinstance(self.prompt, list) else [self.prompt]
