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
    ToolChoiceField,
    ToolDefinition,
    check_tool_request,
    to_conversation,
)
from api.structured_output import ResponseFormat
from errors import UnsupportedParameter
from models.conversation import Conversation
from models.interfaces import Constraint, SamplingParams

MAX_TOKENS_CAP = 1 << 20  # past any context window; a larger value is a client bug
MAX_LOGIT_BIAS = 1024  # biased tokens per request (OpenAI allows 300)
MAX_TOP_LOGPROBS = 20  # as OpenAI

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
    """Fields shared by chat and text completions, and the refusals of what cannot be honoured."""

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
    seed: int | None = Field(
        None, ge=-(2**63), le=2**64 - 1,
        description="The same seed, prompt and parameters give the same text on this build, at any temperature "
        "(choice i of `n` uses seed + i). Without one, every generation draws a fresh seed.",
    )
    frequency_penalty: float | None = Field(
        None, ge=-2.0, le=2.0, description="Lowers a token's logit by this times the times it was generated so far.")
    presence_penalty: float | None = Field(
        None, ge=-2.0, le=2.0, description="Lowers the logit of every token generated so far by this.")
    logit_bias: dict[str, float] | None = Field(
        None, description="Token id (as a string) to a bias from -100 to 100, added to its logit; -100 bans it, 100 forces it.")

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

    @field_validator("logit_bias")
    @classmethod
    def _check_logit_bias(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for key, bias in (value or {}).items():
            if not key.isdigit() or len(key) > 9:
                raise ValueError(f"keys must be token ids (non-negative integers as strings), not {key[:40]!r}")
            if not -100 <= bias <= 100:
                raise ValueError(f"the bias of token {key} must be from -100 to 100, not {bias}")
        if value is not None and len(value) > MAX_LOGIT_BIAS:
            raise ValueError(f"at most {MAX_LOGIT_BIAS} tokens may be biased")
        return value

    @model_validator(mode="after")
    def _refuse_what_cannot_be_honoured(self) -> "SamplingRequest":
        if self.stream_options is not None and not self.stream:
            raise UnsupportedParameter("stream_options is only allowed with stream: true", param="stream_options")
        return self

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def to_sampling_params(self, max_tokens: int | None, *, logprobs: int | None = None,
                           constraint: Constraint | None = None) -> SamplingParams:
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            min_p=self.min_p,
            repeat_penalty=self.repeat_penalty,
            stop=tuple(self.stop or ()),
            seed=self.seed,
            frequency_penalty=self.frequency_penalty or 0.0,
            presence_penalty=self.presence_penalty or 0.0,
            logit_bias=tuple((int(token), bias) for token, bias in (self.logit_bias or {}).items()),
            logprobs=logprobs,
            constraint=constraint,
        )


# ---- chat ----------------------------------------------------------------------------------



class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(..., min_length=1, description="The conversation so far.")
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_CAP, description="Alias of `max_tokens`.")
    response_format: ResponseFormat | None = Field(
        None, description="`text`, `json_object` (any JSON object) or `json_schema`: enforced by a token mask, or refused "
        "with 400 naming the keyword that cannot be enforced.")
    logprobs: bool | None = Field(None, description="Return each generated token's log-probability (of the model's own distribution).")
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS, description="With `logprobs`: the most likely alternatives per token (0-20).")
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
        if self.top_logprobs is not None and not self.logprobs:
            raise UnsupportedParameter("top_logprobs needs logprobs: true", param="top_logprobs")
        check_tool_request(self.messages, self.tools, self.tool_choice, self.functions, self.function_call)
        if self.response_format is not None and self.response_format.type != "text" and self.tools \
                and self.tool_choice != "none":
            raise UnsupportedParameter("response_format cannot be combined with tools: the reply is constrained to "
                                       "the tools' calls or to the schema, not both", param="response_format")
        if self.max_tokens is not None and self.max_completion_tokens is not None and self.max_tokens != self.max_completion_tokens:
            raise UnsupportedParameter("max_tokens and max_completion_tokens disagree", param="max_completion_tokens")
        return self

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def sampling_params(self, tool_constraint: Constraint | None = None) -> SamplingParams:
        """The engine's values; `tool_constraint`: what the tools ask of the reply (ChatPlan.constraint)."""
        logprobs = (self.top_logprobs or 0) if self.logprobs else None
        constraint = self.response_format.constraint() if self.response_format is not None else None
        return self.to_sampling_params(self.token_limit, logprobs=logprobs, constraint=constraint or tool_constraint)

    def to_conversation(self) -> Conversation:
        return to_conversation(self.messages, self.tools, self.tool_choice, self.parallel_tool_calls)


class CompletionRequest(SamplingRequest):
    prompt: str | list[str] = Field(..., description="A prompt, or a list of prompts (one choice each).")
    max_tokens: int | None = Field(16, ge=1, le=MAX_TOKENS_CAP, description="Most tokens to generate (default 16, as OpenAI).")
    echo: bool = Field(False, description="Put the prompt before the completion in `text`.")
    suffix: str | None = Field(None, description="Not supported.")
    logprobs: int | None = Field(None, ge=0, le=5, description="Return each generated token's log-probability and this many alternatives (0-5, as OpenAI).")
    response_format: ResponseFormat | None = Field(
        None, description="As on chat completions: `json_object` or `json_schema` constrain the completion.")
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
        if self.logprobs is not None and self.echo:
            raise UnsupportedParameter("logprobs of the echoed prompt are not computed; use echo or logprobs, not both",
                                       param="echo")
        if self.best_of not in (None, 1, self.n):
            raise UnsupportedParameter("best_of other than 1 is not supported", param="best_of")
        return self

    def sampling_params(self) -> SamplingParams:
        constraint = self.response_format.constraint() if self.response_format is not None else None
        return self.to_sampling_params(self.max_tokens, logprobs=self.logprobs, constraint=constraint)

    @property
    def prompts(self) -> list[str]:
        return self.prompt if isinstance(self.prompt, list) else [self.prompt]
