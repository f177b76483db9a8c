"""The body of POST /v1/responses: every refusal names its parameter, what is ignored is named, and
input items become the right conversation (roles, grouped calls, tool results)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from api.errors import from_validation_error

from api.responses_items import parse_items, to_messages
from api.responses_objects import page_of_items
from api.responses_request import ResponseCreateRequest
from api.responses_run import translate
from errors import ContextLengthExceeded, InvalidRequest
from models.conversation import Message, ToolCall, ToolChoice

WEATHER = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}


def parse(**body) -> ResponseCreateRequest:
    return ResponseCreateRequest.model_validate({"input": "hi", **body}, strict=True)


def refusal(**body) -> InvalidRequest:
    """What the route answers: our own error, or pydantic's mapped as every route maps it."""
    try:
        parse(**body)
    except InvalidRequest as exc:
        return exc
    except ValidationError as exc:
        return from_validation_error(exc)
    raise AssertionError(f"accepted: {body}")


@pytest.mark.parametrize("body, param", [
    ({"input": [{"role": "user", "content": "a"}, {"type": "banana"}]}, "input[1].type"),
    ({"input": [{"type": "reasoning", "summary": []}]}, "input[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_text", "text": "look"},
                                             {"type": "input_image", "image_url": "x"}]}]}, "input[0].content[1].type"),
    ({"input": [{"type": "function_call_output", "call_id": "c", "output": [{"type": "input_file"}]}]},
     "input[0].output[0].type"),
    ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
    ({"input": [{"role": "user", "content": [{"type": "input_text"}]}]}, "input[0].content[0].text"),
    ({"input": [{"role": "user", "content": "a", "colour": "red"}]}, "input[0].colour"),
    ({"input": [{"role": "user", "content": "nul\x00"}]}, "input[0]"),
    ({"input": [{"type": "function_call", "call_id": "c", "name": "f"}]}, "input[0].arguments"),
    ({"conversation": "conv_1"}, "conversation"),
    ({"prompt": {"id": "pmpt_1"}}, "prompt"),
    ({"context_management": [{"type": "compaction"}]}, "context_management"),
    ({"moderation": {"model": "omni-moderation-latest"}}, "moderation"),
    ({"truncation": "auto"}, "truncation"),
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"include": ["message.output_text.logprobs"]}, "include"),
    ({"background": True, "store": False}, "background"),
    ({"background": True, "stream": True}, "stream"),
    ({"tool_choice": {"type": "web_search_preview"}}, "tool_choice"),
    ({"tool_choice": {"type": "function", "name": "nope"}, "tools": [WEATHER]}, "tool_choice"),
    ({"tool_choice": "required", "tools": [{"type": "web_search"}]}, "tool_choice"),
    ({"tool_choice": "sometimes"}, "tool_choice"),
    ({"tools": [WEATHER, dict(WEATHER)]}, "tools[1].name"),
    ({"tools": [{"type": "web_search"}, {"type": "function", "name": "bad name!"}]}, "tools[1].name"),
    ({"text": {"format": {"type": "yaml"}}}, "text.format.type"),
    ({"text": {"format": {"type": "json_schema", "schema": {}}}}, "text.format.name"),
    ({"text": {"verbosity": "loud"}}, "text.verbosity"),
    ({"metadata": {f"k{n}": "v" for n in range(17)}}, "metadata"),
    ({"seed": 1}, "seed"),
    ({"max_output_tokens": 0}, "max_output_tokens"),
    ({"store": "yes"}, "store"),
])
def test_each_refusal_names_its_parameter(body, param):
    assert refusal(**body).param == param


def test_a_codex_shaped_request_is_accepted_and_what_it_ignores_is_named():
    body = parse(
        model="m", instructions="x" * 20_000, store=False, stream=True, parallel_tool_calls=False,
        input=[{"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "<env/>"}]},
               {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "list files"}]}],
        tools=[{"type": "function", "name": "shell", "description": "run", "strict": False,
                "parameters": {"type": "object", "properties": {"command": {"type": "array"}}}},
               {"type": "local_shell"}, {"type": "web_search"}, {"type": "custom", "name": "apply_patch", "format": {}}],
        tool_choice="auto", reasoning={"effort": "medium", "summary": "auto"}, include=["reasoning.encrypted_content"],
        prompt_cache_key="thread-1", service_tier="auto", text={"verbosity": "low"}, client_metadata={"x": "y"},
        truncation="disabled")
    assert [param for param, _ in body.ignored] == [
        "reasoning", "prompt_cache_key", "service_tier", "client_metadata", "include[0]", "text.verbosity",
        "tools[1]", "tools[2]", "tools[3]"]
    indexes, tools, choice = body.conversation_tools()
    assert indexes == [0] and [t.name for t in tools] == ["shell"] and choice == ToolChoice("auto", None, parallel=False)


def test_input_items_are_stored_with_ids_and_parts():
    items = parse_items([{"role": "user", "content": "hi"},
                         {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "yo"}]},
                         {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "f", "arguments": "{}"}])
    assert [item["id"][:4] for item in items] == ["msg_", "msg_", "fc_1"]
    assert items[0]["content"] == [{"type": "input_text", "text": "hi"}]
    assert items[1]["content"] == [{"type": "output_text", "text": "yo", "annotations": [], "logprobs": []}]
    assert all(item["status"] == "completed" for item in items)


def test_items_become_one_conversation():
    items = parse_items([
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "input_text", "text": "weather "}, {"type": "input_text", "text": "and time?"}]},
        {"role": "assistant", "content": "Checking."},
        {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": '{"city":"Oslo"}'},
        {"type": "function_call", "call_id": "call_2", "name": "time", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "rain"},
        {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "noon"}]},
        {"type": "function_call", "call_id": "call_3", "name": "time", "arguments": "{}"},
    ])
    assert to_messages(items) == [
        Message("system", "be brief"),
        Message("user", "weather and time?"),
        Message("assistant", "Checking.", (ToolCall("call_1", "weather", '{"city":"Oslo"}'), ToolCall("call_2", "time", "{}"))),
        Message("tool", "rain", tool_call_id="call_1", name="weather"),
        Message("tool", "noon", tool_call_id="call_2", name="time"),
        Message("assistant", None, (ToolCall("call_3", "time", "{}"),)),
    ]


def test_a_function_call_output_needs_its_call_earlier():
    history = parse_items([{"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"}])
    new = parse_items([{"role": "user", "content": "x"}, {"type": "function_call_output", "call_id": "call_1", "output": "ok"},
                       {"type": "function_call_output", "call_id": "call_9", "output": "?"}])
    with pytest.raises(InvalidRequest) as info:
        to_messages(history + new, first_new=len(history))
    assert info.value.param == "input[2].call_id" and "call_9" in info.value.message
    assert len(to_messages(history + new[:2], first_new=1)) == 3  # the call from the history is found


def test_text_format_becomes_the_engines_constraint_and_the_echo():
    schema = {"type": "object", "properties": {"b": {"type": "integer"}, "a": {"type": "string"}}, "required": ["a"]}
    body = parse(text={"format": {"type": "json_schema", "name": "Thing", "schema": schema, "strict": True}})
    # the keys' order is kept: properties are generated in the schema's order
    assert body.to_sampling_params().constraint.schema == (
        '{"type":"object","properties":{"b":{"type":"integer"},"a":{"type":"string"}},"required":["a"]}')
    assert body.text_echo() == {"format": {"type": "json_schema", "name": "Thing", "schema": schema, "strict": True},
                                "verbosity": "medium"}
    assert parse(text={"format": {"type": "json_object"}}).constraint().schema == '{"type":"object"}'
    assert parse().constraint() is None and parse().text_echo()["format"] == {"type": "text"}


def test_allowed_tools_narrow_the_tools_and_set_the_mode():
    body = parse(tools=[WEATHER, {**WEATHER, "name": "get_time"}],
                 tool_choice={"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "get_time"}]})
    indexes, tools, choice = body.conversation_tools()
    assert indexes == [1] and [t.name for t in tools] == ["get_time"] and choice.mode == "required"


def test_chat_parameter_names_from_the_source_are_translated():
    error = translate(ContextLengthExceeded("too long", param="messages"), [])
    assert error.param == "input"
    assert translate(InvalidRequest("x", param="tools[1].function.parameters"), [0, 3]).param == "tools[3].parameters"
    assert translate(InvalidRequest("x", param="max_tokens"), []).param == "max_output_tokens"
    assert translate(InvalidRequest("x", param="response_format.json_schema"), []).param == "text.format.json_schema"


def test_input_items_pages_follow_openais_cursor_rules():
    items = [{"id": f"i{n}"} for n in range(5)]
    page = page_of_items(items, after=None, limit=2, order="desc")
    assert [i["id"] for i in page.data] == ["i4", "i3"] and page.has_more and (page.first_id, page.last_id) == ("i4", "i3")
    page = page_of_items(items, after="i3", limit=2, order="desc")
    assert [i["id"] for i in page.data] == ["i2", "i1"] and page.has_more
    page = page_of_items(items, after="i2", limit=5, order="asc")
    assert [i["id"] for i in page.data] == ["i3", "i4"] and not page.has_more
    empty = page_of_items(items, after="i4", limit=5, order="asc")
    assert empty.data == [] and empty.first_id is None and not empty.has_more
    assert page_of_items(items, after="nope", limit=5, order="asc") is None


@pytest.mark.parametrize("body, param", [
    ({"text": {"format": {"type": {}, "name": "x", "schema": {}}}}, "text.format.type"),
    ({"input": [{"type": ["message"], "role": "user", "content": "x"}]}, "input[0].type"),
    ({"input": [{"role": "user", "content": [{"type": {"a": 1}, "text": "x"}]}]}, "input[0].content[0]"),
])
def test_a_type_that_is_not_a_string_is_a_400_not_a_crash(body, param):
    assert refusal(**body).param.startswith(param)


def test_allowed_tools_with_odd_entries_are_narrowed_not_a_crash():
    body = parse(tools=[WEATHER], tool_choice={"type": "allowed_tools", "mode": "auto",
                                               "tools": [{"type": "function", "name": {"x": 1}}, {"type": "web_search"}]})
    assert body.conversation_tools()[1] == ()
