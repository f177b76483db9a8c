"""Every tool_choice as the Constraint the engine enforces, per format."""

from __future__ import annotations

import json

import pytest

from models.conversation import Conversation, FunctionTool, Message, ToolChoice
from models.interfaces import Constraint, Tag
from models.tool_constraint import constraint_for
from models.tool_formats import GENERIC, HERMES, LLAMA3, MISTRAL

WEATHER_PARAMS = {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["C", "F"]}}, "required": ["city"]}
TOOLS = (FunctionTool("get_weather", "Weather.", WEATHER_PARAMS), FunctionTool("get_time", None, {"properties": {}}))
MESSAGES = (Message("user", "hi"),)


def conversation(mode="auto", name=None, parallel=True, tools=TOOLS) -> Conversation:
    return Conversation(MESSAGES, tools, ToolChoice(mode, name, parallel))


HERMES_TAGS = (
    Tag('<tool_call>\n{"name": "get_weather", "arguments": ', json.dumps(WEATHER_PARAMS, separators=(",", ":")), "}\n</tool_call>"),
    Tag('<tool_call>\n{"name": "get_time", "arguments": ', '{"type":"object","properties":{}}', "}\n</tool_call>"),
)


@pytest.mark.parametrize("choice, expected", [
    (conversation(), Constraint("tags", tags=HERMES_TAGS, triggers=("<tool_call>",), text=True, separator="\n")),
    (conversation("required"), Constraint("tags", tags=HERMES_TAGS, triggers=("<tool_call>",), text=False, at_least=1, separator="\n")),
    (conversation("function", "get_time"),
     Constraint("tags", tags=HERMES_TAGS[1:], triggers=("<tool_call>",), text=False, at_least=1, at_most=1, separator="\n")),
    (conversation(parallel=False), Constraint("tags", tags=HERMES_TAGS, triggers=("<tool_call>",), text=True, at_most=1, separator="\n")),
    (conversation("none"), Constraint("tags", tags=(), triggers=("<tool_call>",), text=True, at_most=0)),
])
def test_hermes_constraints(choice, expected):
    assert constraint_for(choice, HERMES) == expected


def test_each_tag_is_the_call_text_the_template_shows_and_every_tag_begins_with_a_trigger():
    for fmt in (HERMES, LLAMA3, MISTRAL):
        constraint = constraint_for(conversation(), fmt)
        assert all(tag.begin.startswith(trigger) for tag in constraint.tags for trigger in constraint.triggers)
    assert constraint_for(conversation(), LLAMA3).tags[0].begin == '{"name": "get_weather", "parameters": '
    assert constraint_for(conversation(), MISTRAL).tags[0] == Tag(
        '[TOOL_CALLS] [{"name": "get_weather", "arguments": ', json.dumps(WEATHER_PARAMS, separators=(",", ":")), "}]")


def test_llama3_allows_one_call_and_leaves_none_unconstrained():
    assert constraint_for(conversation(), LLAMA3).at_most == 1  # its template refuses two calls in one message
    assert constraint_for(conversation("none"), LLAMA3) is None


def test_no_tools_or_generic_none_is_unconstrained():
    assert constraint_for(Conversation(MESSAGES), HERMES) is None
    assert constraint_for(Conversation(MESSAGES), GENERIC) is None
    assert constraint_for(conversation("none"), GENERIC) is None


def generic_schema(choice: Conversation) -> dict:
    constraint = constraint_for(choice, GENERIC)
    assert constraint.kind == "json_schema" and not constraint.tags
    return json.loads(constraint.schema)


def call_schema(name: str, arguments: dict) -> dict:
    return {"type": "object", "properties": {"name": {"const": name}, "arguments": arguments},
            "required": ["name", "arguments"], "additionalProperties": False}


def test_generic_auto_is_content_or_calls_with_each_tool_named_and_its_arguments_checked():
    calls = {"type": "array", "items": {"anyOf": [call_schema("get_weather", WEATHER_PARAMS),
                                                  call_schema("get_time", {"type": "object", "properties": {}})]},
             "minItems": 1}
    assert generic_schema(conversation()) == {"anyOf": [
        {"type": "object", "properties": {"content": {"type": "string"}}, "required": ["content"], "additionalProperties": False},
        {"type": "object", "properties": {"tool_calls": calls}, "required": ["tool_calls"], "additionalProperties": False},
    ]}


def test_generic_required_named_and_not_parallel():
    required = generic_schema(conversation("required"))
    assert list(required["properties"]) == ["tool_calls"] and required["properties"]["tool_calls"]["minItems"] == 1
    named = generic_schema(conversation("function", "get_weather"))["properties"]["tool_calls"]
    assert named == {"type": "array", "items": call_schema("get_weather", WEATHER_PARAMS), "minItems": 1, "maxItems": 1}
    assert generic_schema(conversation(parallel=False))["anyOf"][1]["properties"]["tool_calls"]["maxItems"] == 1


def test_schemas_keep_their_key_order_so_name_comes_before_arguments():
    text = constraint_for(conversation("required"), GENERIC).schema
    assert text.index('"name"') < text.index('"arguments"')
    assert constraint_for(conversation(), HERMES).tags[0].schema.index('"city"') < HERMES_TAGS[0].schema.index('"unit"')


def test_a_json_mask_accepts_the_generic_replies_and_refuses_others():
    from models.native.constraint import compile
    from tests.helpers.constrained import follow, vocabulary

    def accepts(choice, text: str) -> bool:
        matcher = compile(constraint_for(choice, GENERIC), vocabulary()).matcher()
        return follow(matcher, text) == len(text.encode()) and matcher.done

    auto, named = conversation(parallel=False), conversation("function", "get_time")
    assert accepts(auto, '{"content": "Hello"}')
    assert accepts(auto, '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "C"}}]}')
    assert not accepts(auto, '{"tool_calls": [{"name": "get_weather", "arguments": {"unit": "C"}}]}')  # city required
    assert not accepts(auto, '{"tool_calls": [{"name": "get_time", "arguments": {}}, {"name": "get_time", "arguments": {}}]}')
    assert not accepts(auto, '{"tool_calls": [{"name": "nope", "arguments": {}}]}')
    assert accepts(named, '{"tool_calls": [{"name": "get_time", "arguments": {}}]}')
    assert not accepts(named, '{"content": "no"}')