"""The tools, `tool_choice` and `text.format` of a `/v1/responses` request, each checked by hand so
that a refusal names its field (`tools[2].name`, `text.format.name`).

Function tools become the conversation's tools; other tools (web_search, local_shell, custom...)
are kept as they came, to be named as ignored. A `tool_choice` that forces a built-in tool is
refused: that tool never runs here.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.responses_items import validate_as
from errors import InvalidRequest, UnsupportedParameter

NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class FunctionToolParam(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    type: Literal["function"]
    name: str = Field(pattern=NAME.pattern, description="Letters, digits, `_` and `-`; at most 64.")
    description: str | None = None
    parameters: dict[str, Any] | None = Field(None, description="JSON Schema of the arguments object.")
    strict: bool | None = None
    allowed_callers: list[str] | None = Field(None, description="Ignored.")
    defer_loading: bool | None = Field(None, description="Ignored.")
    output_schema: dict[str, Any] | None = Field(None, description="Ignored.")
    async_: bool | None = Field(None, alias="async", description="Ignored.")


class OtherTool(BaseModel):
    """A tool this server does not run (web_search, local_shell, custom...): accepted and ignored, named."""

    model_config = ConfigDict(extra="allow")
    type: str


class FormatText(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]


class FormatJsonObject(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["json_object"]


class FormatJsonSchema(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    type: Literal["json_schema"]
    name: str = Field(pattern=NAME.pattern)
    schema_: dict[str, Any] = Field(alias="schema", description="The JSON Schema the output must satisfy.")
    description: str | None = None
    strict: bool | None = None


TextFormat = Annotated[FormatText | FormatJsonObject | FormatJsonSchema, Field(discriminator="type")]
FORMATS: dict[str, type[BaseModel]] = {"text": FormatText, "json_object": FormatJsonObject, "json_schema": FormatJsonSchema}


class TextConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = Field(None, description="Ignored.")


class ResponsesToolChoiceFunction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["function"]
    name: str


class ToolChoiceAllowed(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["allowed_tools"]
    mode: Literal["auto", "required"]
    tools: list[dict[str, Any]] = Field(description="`{\"type\": \"function\", \"name\": ...}` entries.")


def parse_tools(raw: Any) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InvalidRequest("tools must be a list", param="tools")
    for index, tool in enumerate(raw):
        if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
            raise InvalidRequest(f"tools[{index}] must be an object with a string `type`", param=f"tools[{index}]")
        if tool["type"] == "function":
            validate_as(FunctionToolParam, tool, f"tools[{index}]")
    return raw


def parse_tool_choice(raw: Any) -> str | dict[str, Any]:
    if raw is None:
        return "auto"
    if isinstance(raw, str):
        if raw not in ("none", "auto", "required"):
            raise InvalidRequest("tool_choice must be none, auto, required or an object", param="tool_choice")
        return raw
    if not isinstance(raw, dict):
        raise InvalidRequest("tool_choice must be none, auto, required or an object", param="tool_choice")
    if raw.get("type") == "function":
        validate_as(ResponsesToolChoiceFunction, raw, "tool_choice")
    elif raw.get("type") == "allowed_tools":
        validate_as(ToolChoiceAllowed, raw, "tool_choice")
    else:  # a built-in tool (web_search_preview, custom, mcp...): it would force a tool that never runs here
        raise UnsupportedParameter(f"tool_choice: {str(raw.get('type'))[:64]!r} forces a tool this server does not "
                                   "run; only function tools", param="tool_choice")
    return raw


def parse_text(raw: Any) -> TextConfig | None:
    if raw is None:
        return None
    if isinstance(raw, dict) and isinstance(raw.get("format"), dict):
        kind = raw["format"].get("type")
        if not isinstance(kind, str) or kind not in FORMATS:
            raise InvalidRequest(f"text.format.type must be text, json_object or json_schema, not {str(kind)[:64]!r}",
                                 param="text.format.type")
        validate_as(FORMATS[kind], raw["format"], "text.format")  # its own errors name text.format.<field>
    return validate_as(TextConfig, raw, "text")
