"""The body of `POST /v1/responses`, validated, and what it becomes: a conversation and sampling values.

Three kinds of parameter (the README lists them):
- honoured: model, input, instructions, max_output_tokens, temperature, top_p, stream, store,
  background, previous_response_id, metadata, user, function tools, tool_choice,
  parallel_tool_calls, text.format, truncation "disabled" (what happens anyway);
- accepted and ignored, because they mean nothing for these models (`IGNORED`): each one sent is
  named in `ignored` (the route's `X-Ignored-Params` header and log line);
- refused with a 400 naming them, because they would change the output and cannot be honoured:
  `_refuse_what_cannot_be_honoured`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, PrivateAttr, WithJsonSchema, field_validator, model_validator

from api.protocol import MAX_TOKENS_CAP, model_field, temperature_field, top_p_field, user_field
from api.responses_items import InputItem, parse_items
from api.responses_params import (
    FormatJsonObject,
    FormatJsonSchema,
    FormatText,
    FunctionToolParam,
    OtherTool,
    TextConfig,
    ToolChoiceAllowed,
    ResponsesToolChoiceFunction,
    parse_text,
    parse_tool_choice,
    parse_tools,
)
from api.structured_output import JSON_OBJECT, checked_schema, schema_constraint
from errors import InvalidRequest, UnsupportedParameter
from models.conversation import FunctionTool, ToolChoice
from models.interfaces import Constraint, SamplingParams

# Accepted and ignored, with why (the log line says it): they have no meaning for local models without
# reasoning, built-in tools or a cache that needs a key.
IGNORED = {
    "reasoning": "the model does not reason",
    "prompt_cache_key": "the KV cache is reused automatically, per API key",
    "prompt_cache_retention": "the KV cache is kept as long as its slot is",
    "prompt_cache_options": "the KV cache is reused automatically",
    "service_tier": "there is one tier",
    "safety_identifier": "recorded nowhere",
    "max_tool_calls": "it bounds built-in tools, which this server does not run",
    "stream_options": "stream obfuscation pads events against a side channel of hosted APIs",
    "client_metadata": "recorded nowhere",
    "access_programs": "no access programs here",
    "image": "images are not accepted",
}
# What `include` can ask for that never appears here (logprobs, which could, are refused instead).
LOGPROBS_INCLUDE = "message.output_text.logprobs"
TOOL_EXTRAS = ("allowed_callers", "defer_loading", "output_schema", "async")
INPUT_ITEMS_PAGE = 100  # the largest page of input items (OpenAI's)


def _input(raw: Any) -> list[dict[str, Any]]:
    return parse_items(raw)


NULL = {"type": "null"}


def refused(schema: dict[str, Any]) -> WithJsonSchema:
    """Document only the accepted values: a refused one is then schema-breaking, as it is (a 400)."""
    return WithJsonSchema(schema)


def _null_is(default: Any):
    return PlainValidator(lambda value: default if value is None else _strict_bool(value), json_schema_input_type=bool | None)


def _strict_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be a boolean")
    return value


class InputItemsQuery(BaseModel):
    """`GET /v1/responses/{id}/input_items`'s query (`include` is accepted and means nothing here)."""

    model_config = ConfigDict(extra="ignore")
    after: str | None = Field(None, max_length=128)
    limit: int = Field(20, ge=1, le=INPUT_ITEMS_PAGE)
    order: Literal["asc", "desc"] = "desc"


class ResponseCreateRequest(BaseModel):
    """`POST /v1/responses`: OpenAI's Responses API."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"input": "Say hello in one short sentence.", "instructions": "You are terse.", "max_output_tokens": 64}]})

    model: str | None = model_field
    input: Annotated[list[dict[str, Any]], PlainValidator(
        _input, json_schema_input_type=str | Annotated[list[InputItem], Field(min_length=1)])] = Field(
        description="A string (one user message) or a list of items: messages, function_call, function_call_output.")
    instructions: str | None = Field(None, description="A system message put first; not carried over by "
                                                       "`previous_response_id`.")
    max_output_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_CAP, description="Most tokens to generate.")
    temperature: float = temperature_field
    top_p: float = top_p_field
    stream: Annotated[bool, _null_is(False)] = Field(False, description="Send Server-Sent Events, one per step.")
    store: Annotated[bool, _null_is(True)] = Field(True, description="Keep the response (RESPONSES_TTL_S), for GET and "
                                                                     "`previous_response_id`.")
    background: Annotated[bool, _null_is(False)] = Field(False, description="Answer at once (`queued`) and generate "
                                                                             "as a server task; needs `store`.")
    previous_response_id: str | None = Field(None, max_length=128, description="Continue this stored response.")
    metadata: dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]] | None = Field(
        None, max_length=16)
    user: str | None = user_field
    tools: Annotated[list[dict[str, Any]], PlainValidator(
        parse_tools, json_schema_input_type=list[FunctionToolParam | OtherTool] | None)] = Field(
        default_factory=list, description="Function tools; other tools are accepted and ignored (named).")
    tool_choice: Annotated[str | dict[str, Any], PlainValidator(
        parse_tool_choice, json_schema_input_type=Literal["none", "auto", "required"] | ResponsesToolChoiceFunction
        | ToolChoiceAllowed | None)] = "auto"
    parallel_tool_calls: Annotated[bool, _null_is(True)] = True
    text: Annotated[TextConfig | None, PlainValidator(parse_text, json_schema_input_type=TextConfig | None)] = None
    # The refused values are left out of the documented schemas (`refused`): they are a 400 with a reason.
    truncation: Annotated[Literal["auto", "disabled"] | None, refused({"enum": ["disabled", None]})] = Field(
        None, description="Only `disabled`: an input over the context window is a 400.")
    top_logprobs: Annotated[int | None, refused({"enum": [0, None]})] = Field(
        None, ge=0, le=20, description="Only 0: logprobs are not available here yet.")
    include: Annotated[list[str] | None, refused({"anyOf": [{"type": "array", "items": {
        "type": "string", "not": {"const": LOGPROBS_INCLUDE}}}, {"type": "null"}]})] = Field(
        None, description="Ignored, except `message.output_text.logprobs`: refused.")
    reasoning: dict[str, Any] | None = Field(None, description="Ignored: the model does not reason.")
    prompt_cache_key: str | None = Field(None, max_length=1024, description="Ignored: the cache is automatic.")
    prompt_cache_retention: str | None = Field(None, description="Ignored.")
    prompt_cache_options: dict[str, Any] | None = Field(None, description="Ignored.")
    service_tier: str | None = Field(None, description="Ignored.")
    safety_identifier: str | None = Field(None, max_length=256, description="Ignored.")
    max_tool_calls: int | None = Field(None, ge=0, description="Ignored: it bounds built-in tools.")
    stream_options: dict[str, Any] | None = Field(None, description="Ignored.")
    client_metadata: dict[str, Any] | None = Field(None, description="Ignored (Codex sends it).")
    access_programs: dict[str, Any] | None = Field(None, description="Ignored.")
    image: dict[str, Any] | None = Field(None, description="Ignored.")
    conversation: Annotated[str | dict[str, Any] | None, refused(NULL)] = Field(
        None, description="Refused: no Conversations API here; use `previous_response_id`.")
    prompt: Annotated[dict[str, Any] | None, refused(NULL)] = Field(
        None, description="Refused: no stored prompt templates here.")
    context_management: Annotated[list[dict[str, Any]] | None, refused({"type": ["array", "null"], "maxItems": 0})] = Field(
        None, description="Refused (unless empty): no compaction here.")
    moderation: Annotated[dict[str, Any] | None, refused(NULL)] = Field(None, description="Refused: no moderation model here.")

    _ignored: list[tuple[str, str]] = PrivateAttr(default_factory=list)

    @field_validator("temperature", "top_p", mode="before")
    @classmethod
    def _null_means_default(cls, value: Any, info) -> Any:
        return cls.model_fields[info.field_name].default if value is None else value

    @model_validator(mode="after")
    def _refuse_what_cannot_be_honoured(self) -> "ResponseCreateRequest":
        refusals = [
            (self.conversation is not None, "conversation", "there is no Conversations API here; use previous_response_id"),
            (self.prompt is not None, "prompt", "there are no stored prompt templates here; send input and instructions"),
            (bool(self.context_management), "context_management", "there is no server-side compaction here"),
            (self.moderation is not None, "moderation", "there is no moderation model here"),
            (self.truncation == "auto", "truncation", "dropping items to fit the context window is not supported; "
                                                      "an input over the window is a 400 (truncation: disabled)"),
            (bool(self.top_logprobs), "top_logprobs", "logprobs are not available on /v1/responses yet"),
            (LOGPROBS_INCLUDE in (self.include or []), "include", "logprobs are not available on /v1/responses yet"),
            (self.background and not self.store, "background", "background responses must be stored (store: true)"),
            (self.background and self.stream, "stream", "a background response cannot be streamed here; poll GET"),
        ]
        for refused, param, why in refusals:
            if refused:
                raise UnsupportedParameter(f"{param}: {why}", param=param)
        self._ignored = self._ignored_params()
        self._check_tools()
        return self

    def _ignored_params(self) -> list[tuple[str, str]]:
        ignored = [(name, why) for name, why in IGNORED.items() if getattr(self, name) is not None]
        ignored += [(f"include[{i}]", f"{entry} never appears here") for i, entry in enumerate(self.include or [])]
        if self.text is not None and self.text.verbosity is not None:
            ignored.append(("text.verbosity", "the model has no verbosity control"))
        for index, tool in enumerate(self.tools):
            if tool["type"] != "function":
                ignored.append((f"tools[{index}]", f"a {str(tool['type'])[:64]} tool: this server runs function tools only"))
            ignored += [(f"tools[{index}].{key}", "no meaning here") for key in TOOL_EXTRAS if tool.get(key) is not None]
        return ignored

    @property
    def ignored(self) -> list[tuple[str, str]]:
        """(parameter, why) of every parameter sent that is accepted and ignored."""
        return self._ignored

    def function_tools(self) -> list[tuple[int, FunctionTool]]:
        """(index in `tools`, tool) of each function tool."""
        return [(index, FunctionTool(name=t["name"], description=t.get("description"),
                                     parameters=t.get("parameters") or {"type": "object", "properties": {}},
                                     strict=t.get("strict")))
                for index, t in enumerate(self.tools) if t["type"] == "function"]

    def _check_tools(self) -> None:
        names: set[str] = set()
        for index, tool in self.function_tools():
            checked_schema(tool.parameters, f"tools[{index}].parameters")  # 400 naming the keyword it cannot enforce
            if tool.name in names:
                raise InvalidRequest(f"tools[{index}].name: two function tools are named {tool.name!r}",
                                     param=f"tools[{index}].name")
            names.add(tool.name)
        choice = self.tool_choice
        if isinstance(choice, dict) and choice["type"] == "function" and choice["name"] not in names:
            raise InvalidRequest(f"tool_choice names {choice['name']!r}, which is not a function tool of this request",
                                 param="tool_choice")
        if (choice == "required" or isinstance(choice, dict) and choice.get("mode") == "required") and not names:
            raise InvalidRequest("tool_choice requires a call, but the request has no function tools", param="tool_choice")

    def conversation_tools(self) -> tuple[list[int], tuple[FunctionTool, ...], ToolChoice]:
        """The tools the reply may call (with their indexes in `tools`) and the normalised tool_choice."""
        tools = self.function_tools()
        choice = self.tool_choice
        if isinstance(choice, dict) and choice["type"] == "allowed_tools":
            allowed = {t.get("name") for t in choice["tools"] if t.get("type") == "function" and isinstance(t.get("name"), str)}
            tools = [(i, t) for i, t in tools if t.name in allowed]
            mode = choice["mode"]
        elif isinstance(choice, dict):
            mode = "function"
        else:
            mode = choice
        normalised = ToolChoice(mode=mode, name=choice.get("name") if mode == "function" else None,
                                parallel=self.parallel_tool_calls)
        return [i for i, _ in tools], tuple(t for _, t in tools), normalised

    def constraint(self) -> Constraint | None:
        """`text.format` as data for the engine: the whole output one JSON value of that schema (checked as
        chat's response_format is: enforced exactly, or 400 naming `text.format.schema` and the keyword)."""
        fmt = self.text.format if self.text is not None else None
        if isinstance(fmt, FormatJsonSchema):
            return schema_constraint(fmt.schema_, "text.format.schema")
        if isinstance(fmt, FormatJsonObject):
            return JSON_OBJECT
        return None

    def to_sampling_params(self) -> SamplingParams:
        return SamplingParams(max_tokens=self.max_output_tokens, temperature=self.temperature, top_p=self.top_p,
                              constraint=self.constraint())

    def text_echo(self) -> dict[str, Any]:
        """`text` as the Response object shows it."""
        fmt = self.text.format if self.text is not None and self.text.format is not None else FormatText(type="text")
        return {"format": fmt.model_dump(by_alias=True, exclude_none=True), "verbosity": "medium"}
