"""Chat messages, function tools and `tool_choice` in a chat completion request, and their checks.

`ChatCompletionRequest` (api/protocol.py) declares its fields with these models and calls
`check_tool_request` once pydantic has parsed the body; `to_conversation` turns the request into
the one internal `Conversation` (models/conversation.py). Every refusal is a 400 naming where:

- `tools[i].type` other than "function"; `tools[i].function.name` not `^[a-zA-Z0-9_-]{1,64}$`, or
  given twice; `tools[i].function.parameters` not an object schema, or using a keyword the token
  mask cannot enforce (models/native/constraint.py `check_schema` names it);
- `tool_choice` naming a function that is not in `tools`, or given without `tools` ("none" excepted:
  there is nothing to honour, and it was always accepted here);
- `messages[i].tool_call_id` that answers no call made earlier in the history; a `tool` message
  without one; `tool_calls` on a message that is not the assistant's; content missing where it is
  required (an assistant message may have none when it has tool calls);
- legacy `functions` / `function_call`: refused, not mapped. Their answer has another shape
  (`message.function_call`, `finish_reason: "function_call"`): a client that sends them reads that
  shape, and would not find its call in `tool_calls`.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from errors import InvalidRequest, UnsupportedParameter
from models.conversation import Conversation, FunctionTool, Message, ToolCall, ToolChoice

TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
# A NUL is no text a model was trained on, and C code downstream (llama.cpp's log, GPT4All's own calls in
# the benchmarks) reads strings up to it: refused rather than passed on.
NUL_MESSAGE = "text must not contain NUL characters (U+0000)"


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class FunctionCall(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    arguments: str = Field(..., description="The arguments' JSON text, as the assistant wrote it.")


class ToolCallIn(BaseModel):
    """A call the assistant made, sent back in the history."""

    model_config = ConfigDict(extra="forbid")
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = Field(None, description="Required except on an assistant message with tool_calls.")
    name: str | None = Field(None, max_length=64)
    tool_calls: list[ToolCallIn] | None = Field(None, description="Assistant only: the calls it made.")
    tool_call_id: str | None = Field(None, description="Tool only: the call this message answers.")

    def text(self) -> str | None:
        if self.content is None or isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class FunctionDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(..., description="`^[a-zA-Z0-9_-]{1,64}$`, unique among the tools.")
    description: str | None = None
    parameters: dict[str, Any] | None = Field(None, description="JSON Schema of the arguments object; enforced.")
    strict: bool | None = Field(None, description="Accepted; the arguments are always enforced.")


class ToolDefinition(BaseModel):
    # Other tool types carry other fields: allowed through here so that the refusal names `tools[i].type`.
    model_config = ConfigDict(extra="allow")
    type: str
    function: FunctionDefinition | None = None


class ToolChoiceFunction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str


class NamedToolChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str
    function: ToolChoiceFunction


ToolChoiceField = Literal["none", "auto", "required"] | NamedToolChoice | None


def check_tool_request(messages: list[ChatMessage], tools: list[ToolDefinition] | None, tool_choice: ToolChoiceField,
                       functions: Any, function_call: Any) -> None:
    for name, value in (("functions", functions), ("function_call", function_call)):
        if value is not None:
            raise UnsupportedParameter(f"{name} is OpenAI's deprecated form of function calling; send tools and tool_choice",
                                       param=name)
    names = _check_tools(tools or [])
    _check_tool_choice(tool_choice, names)
    _check_messages(messages)


def _check_tools(tools: list[ToolDefinition]) -> list[str]:
    names: list[str] = []
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if tool.type != "function":
            raise UnsupportedParameter(f"{where}.type: only function tools are supported, not {tool.type!r}", param=f"{where}.type")
        if tool.model_extra:
            extra = next(iter(tool.model_extra))
            raise InvalidRequest(f"{where}.{extra}: unknown field of a function tool", param=f"{where}.{extra}")
        if tool.function is None:
            raise InvalidRequest(f"{where}.function is required", param=f"{where}.function")
        name = tool.function.name
        if not TOOL_NAME.fullmatch(name):
            raise InvalidRequest(f"{where}.function.name must match ^[a-zA-Z0-9_-]{{1,64}}$", param=f"{where}.function.name")
        if name in names:
            raise InvalidRequest(f"{where}.function.name: {name!r} is given twice", param=f"{where}.function.name")
        if _has_nul(tool.function.description) or _has_nul(tool.function.parameters):
            raise InvalidRequest(f"{where}.function: {NUL_MESSAGE}", param=f"{where}.function")
        _check_parameters(tool.function.parameters, f"{where}.function.parameters")
        names.append(name)
    return names


def _check_parameters(parameters: dict[str, Any] | None, where: str) -> None:
    if parameters is None:
        return
    if parameters.get("type", "object") != "object":
        raise InvalidRequest(f"{where} must be the JSON Schema of an object (type \"object\")", param=where)
    try:
        from models.native.constraint import check_schema
    except ImportError:  # the mask library is not in this build: nothing could enforce the tools
        raise UnsupportedParameter("tools need the token mask (models/native/constraint.py), which this build lacks",
                                   param="tools") from None
    try:
        check_schema(parameters)
    except Exception as exc:  # noqa: BLE001 - whatever the library refuses cannot be enforced: the client hears why
        raise UnsupportedParameter(f"{where} cannot be enforced: {exc}", param=where) from None


def _check_tool_choice(tool_choice: ToolChoiceField, names: list[str]) -> None:
    if tool_choice is None or tool_choice == "none":
        return
    if not names:
        raise InvalidRequest("tool_choice is only allowed when tools are given", param="tool_choice")
    if isinstance(tool_choice, NamedToolChoice):
        if tool_choice.type != "function":
            raise UnsupportedParameter(f"tool_choice.type must be \"function\", not {tool_choice.type!r}", param="tool_choice.type")
        if tool_choice.function.name not in names:
            raise InvalidRequest(f"tool_choice names {tool_choice.function.name!r}, which is not in tools", param="tool_choice")


def _check_messages(messages: list[ChatMessage]) -> None:
    calls: set[str] = set()
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if m.tool_calls and m.role != "assistant":
            raise InvalidRequest(f"{where}.tool_calls: only assistant messages carry tool calls", param=f"{where}.tool_calls")
        if m.tool_call_id is not None and m.role != "tool":
            raise InvalidRequest(f"{where}.tool_call_id: only tool messages answer a call", param=f"{where}.tool_call_id")
        if m.content is None and not (m.role == "assistant" and m.tool_calls):
            raise InvalidRequest(f"{where}.content is required", param=f"{where}.content")
        if m.role == "tool":
            if m.tool_call_id is None:
                raise InvalidRequest(f"{where}.tool_call_id is required in a tool message", param=f"{where}.tool_call_id")
            if m.tool_call_id not in calls:
                raise InvalidRequest(f"{where}.tool_call_id {m.tool_call_id!r} answers no tool call made earlier in messages",
                                     param=f"{where}.tool_call_id")
        for j, call in enumerate(m.tool_calls or ()):
            if _has_nul(call.id) or _has_nul(call.function.arguments):
                raise InvalidRequest(f"{where}.tool_calls[{j}]: {NUL_MESSAGE}", param=f"{where}.tool_calls[{j}]")
            calls.add(call.id)
        if _has_nul(m.text()) or _has_nul(m.tool_call_id):
            raise InvalidRequest(f"{where}: {NUL_MESSAGE}", param=f"{where}.content")


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def to_conversation(messages: list[ChatMessage], tools: list[ToolDefinition] | None, tool_choice: ToolChoiceField,
                    parallel_tool_calls: bool | None) -> Conversation:
    """The checked request as the internal conversation ("developer" is OpenAI's newer name for "system")."""
    names: dict[str, str] = {}  # call id -> function name, for the tool messages answering them
    converted: list[Message] = []
    for m in messages:
        calls = tuple(ToolCall(c.id, c.function.name, c.function.arguments) for c in m.tool_calls or ())
        names.update((c.id, c.name) for c in calls)
        role = "system" if m.role == "developer" else m.role
        name = (names.get(m.tool_call_id or "") or m.name) if m.role == "tool" else None
        converted.append(Message(role, m.text(), calls, m.tool_call_id if m.role == "tool" else None, name))
    function_tools = tuple(FunctionTool(t.function.name, t.function.description, _parameters(t.function.parameters),
                                        t.function.strict) for t in tools or () if t.function is not None)
    return Conversation(tuple(converted), function_tools, _tool_choice(tool_choice, parallel_tool_calls))


def _parameters(parameters: dict[str, Any] | None) -> dict[str, Any]:
    if parameters is None:
        return {"type": "object", "properties": {}}
    return parameters if "type" in parameters else {"type": "object", **parameters}


def _tool_choice(tool_choice: ToolChoiceField, parallel_tool_calls: bool | None) -> ToolChoice:
    parallel = parallel_tool_calls is not False
    if isinstance(tool_choice, NamedToolChoice):
        return ToolChoice("function", tool_choice.function.name, parallel)
    return ToolChoice(tool_choice or "auto", None, parallel)
