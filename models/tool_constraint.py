"""`tool_choice` as a Constraint the engine enforces with its token mask (models/interfaces.py).

| tool_choice          | native format (hermes, llama3, mistral)               | generic format (JSON reply)              |
|----------------------|-------------------------------------------------------|------------------------------------------|
| "auto"               | tags, text allowed, started at the format's trigger   | json_schema: `{content}` or `{tool_calls}` |
| "required"           | tags only, at least one                               | json_schema: `{tool_calls}`, minItems 1  |
| {"function": name}   | that tool's tag only, exactly one                     | that tool only, exactly one              |
| "none"               | the trigger forbidden (hermes, mistral); llama3: none | none: plain text                         |
| parallel_tool_calls false | at most one tag                                  | maxItems 1                               |

Each tool's tag is the format's call text with the arguments' JSON constrained by the tool's
`parameters`; the generic schema holds each tool as `{"name": const, "arguments": parameters}`.
Schemas are written as compact JSON with keys in their given order (never sorted: a mask generates
an object's properties in the schema's order, so `name` comes before `arguments`, and a tool's own
properties in the order its author gave). Every tool schema was checked by the request
(models/native/constraint.py `check_schema`) before it gets here.

"none" in a native format: the template is not shown the tools (models/tool_render.py), and the
trigger may never be written (a tags constraint with no tags and `at_most=0`), so no call can
start. Llama 3's trigger is the text `{"name": `, which an ordinary reply may contain: there the
output stays free and the parser is off, so a call the model might write anyway is plain text.
"""

from __future__ import annotations

import json
from typing import Any

from models.conversation import Conversation, FunctionTool
from models.interfaces import Constraint, Tag
from models.tool_formats import LLAMA3, ToolFormat


def constraint_for(conversation: Conversation, fmt: ToolFormat) -> Constraint | None:
    if not conversation.tools:
        return None
    choice = conversation.tool_choice
    if choice.mode == "none":
        if not fmt.native or fmt.name == LLAMA3.name:
            return None
        return Constraint(kind="tags", text=True, triggers=(fmt.trigger,), tags=(), at_most=0)
    tools = offered_tools(conversation)
    at_most = 1 if choice.mode == "function" or not choice.parallel or not fmt.parallel else None
    at_least = 0 if choice.mode == "auto" else 1
    if fmt.native:
        tags = tuple(Tag(fmt.tag_begin(t.name), schema_text(arguments_schema(t)), fmt.tag_end()) for t in tools)
        return Constraint(kind="tags", tags=tags, triggers=(fmt.trigger,), text=choice.mode == "auto",
                          at_least=at_least, at_most=at_most, separator=fmt.separator)
    return Constraint(kind="json_schema", schema=schema_text(generic_schema(tools, choice.mode == "auto", at_least, at_most)))


def offered_tools(conversation: Conversation) -> tuple[FunctionTool, ...]:
    """The tools a call may name: the one named by tool_choice, else all."""
    choice = conversation.tool_choice
    if choice.mode == "function":
        return tuple(t for t in conversation.tools if t.name == choice.name)
    return conversation.tools


def arguments_schema(tool: FunctionTool) -> dict[str, Any]:
    """The tool's `parameters`, typed as an object when they say no type (OpenAI's arguments are always an
    object; the request refuses parameters of another type)."""
    parameters = tool.parameters or {}
    return parameters if "type" in parameters else {"type": "object", **parameters}


def generic_schema(tools: tuple[FunctionTool, ...], text: bool, at_least: int, at_most: int | None) -> dict[str, Any]:
    calls: dict[str, Any] = {"type": "array", "items": _one_of([_call_schema(t) for t in tools]), "minItems": max(at_least, 1)}
    if at_most is not None:
        calls["maxItems"] = at_most
    with_calls = _object({"tool_calls": calls})
    if not text:
        return with_calls
    # anyOf, not oneOf: the branches exclude each other (different required keys), so they mean the
    # same, and mask libraries compile anyOf everywhere (xgrammar and llguidance treat oneOf as anyOf).
    return {"anyOf": [_object({"content": {"type": "string"}}), with_calls]}


def _call_schema(tool: FunctionTool) -> dict[str, Any]:
    return _object({"name": {"const": tool.name}, "arguments": arguments_schema(tool)})


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def _one_of(schemas: list[dict[str, Any]]) -> dict[str, Any]:
    return schemas[0] if len(schemas) == 1 else {"anyOf": schemas}


def schema_text(schema: dict[str, Any]) -> str:
    """Canonical JSON text of a schema: compact, keys in their given order."""
    return json.dumps(schema, ensure_ascii=False, separators=(",", ":"))
