"""Chat requests with tools: what is accepted, each refusal (400 naming where), and the answer's
shape, streamed and whole, as the `openai` SDK reads and accumulates it."""

from __future__ import annotations

import itertools
import sys
import types

import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion as SdkCompletion
from openai.types.chat import ChatCompletionChunk as SdkChunk

import models.call_reader
from api.protocol import ChatCompletionRequest
from api.generation import ChoiceResult
from api.protocol_responses import ChatChoiceStream, UsageInfo, chat_completion
from errors import InvalidRequest, UnsupportedParameter
from models.conversation import Conversation, FunctionTool, Message, ToolCall, ToolChoice
from models.interfaces import GenerationOutcome
from models.tool_formats import GENERIC, HERMES
from models.tool_parser import parser_for
from tests.unit.test_protocol import parse, refused

USER = {"role": "user", "content": "Weather in Paris?"}
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather.",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
CALLED = {"role": "assistant", "content": None,
          "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]}
RESULT = {"role": "tool", "tool_call_id": "call_1", "content": "21 C"}


class MaskRefusal(ValueError):
    pass


def fake_check_schema(schema: dict) -> None:
    """Stands in for models/native/constraint.py until it lands: refuses one keyword, naming it."""
    if "patternProperties" in str(schema):
        raise MaskRefusal("unsupported keyword 'patternProperties'")


@pytest.fixture(autouse=True)
def mask_library(monkeypatch):
    native = types.ModuleType("models.native")
    constraint = types.ModuleType("models.native.constraint")
    constraint.check_schema = fake_check_schema
    monkeypatch.setitem(sys.modules, "models.native", native)
    monkeypatch.setitem(sys.modules, "models.native.constraint", constraint)


def chat(messages=(USER,), **fields) -> ChatCompletionRequest:
    return parse(ChatCompletionRequest, {"messages": list(messages), **fields})


# ---- accepted ---------------------------------------------------------------------------------------


def test_a_round_trip_becomes_the_conversation():
    request = chat([{"role": "developer", "content": "Be brief."}, USER, CALLED, RESULT],
                   tools=[WEATHER, {"type": "function", "function": {"name": "now"}}],
                   tool_choice={"type": "function", "function": {"name": "get_weather"}}, parallel_tool_calls=False)
    conversation = request.to_conversation()
    assert conversation.messages == (
        Message("system", "Be brief."), Message("user", "Weather in Paris?"),
        Message("assistant", None, (ToolCall("call_1", "get_weather", '{"city": "Paris"}'),)),
        Message("tool", "21 C", tool_call_id="call_1", name="get_weather"))
    assert conversation.tool_choice == ToolChoice("function", "get_weather", parallel=False)
    weather, now = conversation.tools
    assert (weather.name, weather.description, weather.parameters) == ("get_weather", "Weather.", WEATHER["function"]["parameters"])
    assert (now.name, now.parameters) == ("now", {"type": "object", "properties": {}})


@pytest.mark.parametrize("fields, mode", [({}, "auto"), ({"tool_choice": "auto"}, "auto"), ({"tool_choice": "required"}, "required"),
                                          ({"tool_choice": "none"}, "none")])
def test_tool_choice_strings(fields, mode):
    assert chat(tools=[WEATHER], **fields).to_conversation().tool_choice == ToolChoice(mode)


def test_what_sdks_send_back_is_accepted():
    # LangChain and the SDK send the assistant's message back with content "" or null, tool_calls null on text replies.
    chat([USER, {**CALLED, "content": ""}, RESULT, {"role": "assistant", "content": "21 C.", "tool_calls": None}], tools=[WEATHER])
    chat(tool_choice="none")  # nothing to honour: accepted without tools, as it always was


# ---- refused -------------------------------------------------------------------------------------------


def params(**changes) -> dict:
    return {"type": "function", "function": {**WEATHER["function"], **changes}}


@pytest.mark.parametrize("fields, param, error", [
    ({"tools": [WEATHER, {"type": "web_search"}]}, "tools[1].type", UnsupportedParameter),
    ({"tools": [{"type": "function"}]}, "tools[0].function", InvalidRequest),
    ({"tools": [params(name="get weather")]}, "tools[0].function.name", InvalidRequest),
    ({"tools": [params(name="x" * 65)]}, "tools[0].function.name", InvalidRequest),
    ({"tools": [WEATHER, WEATHER]}, "tools[1].function.name", InvalidRequest),
    ({"tools": [params(parameters={"type": "string"})]}, "tools[0].function.parameters", InvalidRequest),
    ({"tools": [params(parameters={"type": "object", "patternProperties": {"^a": {}}})]}, "tools[0].function.parameters",
     UnsupportedParameter),
    ({"tools": [params(description="a\x00b")]}, "tools[0].function", InvalidRequest),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice", InvalidRequest),
    ({"tools": [WEATHER], "tool_choice": {"type": "custom", "function": {"name": "get_weather"}}}, "tool_choice.type",
     UnsupportedParameter),
    ({"tool_choice": "auto"}, "tool_choice", InvalidRequest),
    ({"tool_choice": "required"}, "tool_choice", InvalidRequest),
    ({"tools": [WEATHER], "tool_choice": "any"}, "tool_choice", InvalidRequest),
    ({"functions": [{"name": "f"}]}, "functions", UnsupportedParameter),
    ({"function_call": {"name": "f"}}, "function_call", UnsupportedParameter),
])
def test_tool_refusals_name_the_parameter(fields, param, error):
    failure = refused(chat, **fields)
    assert type(failure) is error and failure.param == param
    if "patternProperties" in str(fields):
        assert "patternProperties" in failure.message


@pytest.mark.parametrize("messages, param", [
    ([USER, RESULT], "messages[1].tool_call_id"),  # answers no call
    ([USER, CALLED, {**RESULT, "tool_call_id": "call_2"}], "messages[2].tool_call_id"),
    ([USER, {**RESULT, "tool_call_id": None}], "messages[1].tool_call_id"),
    ([RESULT, CALLED], "messages[0].tool_call_id"),  # a call made later is no answer
    ([{**USER, "tool_calls": CALLED["tool_calls"]}], "messages[0].tool_calls"),
    ([{**USER, "tool_call_id": "call_1"}], "messages[0].tool_call_id"),
    ([USER, {"role": "assistant", "content": None}], "messages[1].content"),
    ([USER, CALLED, {**RESULT, "content": None}], "messages[2].content"),
    ([USER, {**CALLED, "tool_calls": [{**CALLED["tool_calls"][0], "function": {"name": "f", "arguments": "\x00"}}]}],
     "messages[1].tool_calls[0]"),
])
def test_history_refusals_name_the_message(messages, param):
    assert refused(lambda: chat(messages, tools=[WEATHER])).param == param


def test_without_the_mask_library_tools_are_refused(monkeypatch):
    monkeypatch.setitem(sys.modules, "models.native.constraint", None)  # import fails
    failure = refused(lambda: chat(tools=[WEATHER]))
    assert isinstance(failure, UnsupportedParameter) and failure.param == "tools"


# ---- the answer: whole and streamed --------------------------------------------------------------------


TOOLS = (FunctionTool("get_weather"), FunctionTool("get_time"))
CONVERSATION = Conversation((Message("user", "hi"),), TOOLS)
STOP, LENGTH = GenerationOutcome(5, 9, "stop"), GenerationOutcome(5, 9, "length")
REPLIES = [
    (HERMES, 'On it.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
             '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>'),
    (HERMES, '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'),
    (HERMES, "Just text, no call."),
    (GENERIC, '{"tool_calls": [{"name": "get_time", "arguments": {}}]}'),
    (GENERIC, '{"content": "Hello \\"you\\""}'),
    (GENERIC, ""),
]


@pytest.fixture()
def ids(monkeypatch):
    """Call ids from a counter, restarted for each way of answering, so that both give the same ids."""
    def restart():
        counter = itertools.count()
        monkeypatch.setattr(models.call_reader, "new_call_id", lambda: f"call_{next(counter):024d}")
    return restart


def whole(fmt, text, outcome=STOP) -> SdkCompletion:
    answer = chat_completion("chatcmpl-1", "m", [ChoiceResult(text, outcome, [])], UsageInfo(), parsers=lambda: parser_for(CONVERSATION, fmt))
    return SdkCompletion.model_validate(answer.model_dump(mode="json"))


def streamed(fmt, text, outcome=STOP, piece=3) -> list[dict]:
    stream = ChatChoiceStream("chatcmpl-1", "m", 0, parser_for(CONVERSATION, fmt))
    chunks = []
    for start in range(0, len(text), piece):
        chunks += stream.chunks(text[start:start + piece])
    chunks += stream.chunks("", finish=outcome)
    return [chunk.model_dump(mode="json") for chunk in chunks]


@pytest.mark.parametrize("fmt, text", REPLIES)
def test_the_sdk_accumulates_the_stream_into_the_whole_answer(ids, fmt, text):
    ids()
    expected = whole(fmt, text)
    ids()
    state = ChatCompletionStreamState()
    for chunk in streamed(fmt, text):
        state.handle_chunk(SdkChunk.model_validate(chunk))
    got = state.get_final_completion().choices[0]
    assert got.finish_reason == expected.choices[0].finish_reason
    assert got.message.content == expected.choices[0].message.content
    assert calls(got.message) == calls(expected.choices[0].message)


def calls(message) -> list[tuple]:
    return [(c.id, c.type, c.function.name, c.function.arguments) for c in message.tool_calls or []]


def test_the_whole_answer_has_calls_null_content_and_finish_reason_tool_calls(ids):
    ids()
    answer = whole(*REPLIES[1]).choices[0]
    assert answer.finish_reason == "tool_calls" and answer.message.content is None
    assert calls(answer.message) == [
        ("call_" + "0" * 24, "function", "get_weather", '{"city": "Oslo"}')]
    mixed = whole(*REPLIES[0]).choices[0].message
    assert mixed.content == "On it." and [c.function.name for c in mixed.tool_calls] == ["get_weather", "get_time"]
    plain = chat_completion("c", "m", [ChoiceResult("Hi", STOP, [])], UsageInfo(), parsers=lambda: parser_for(CONVERSATION, HERMES))
    assert plain.model_dump(mode="json")["choices"][0]["message"] == {"role": "assistant", "content": "Hi"}
    assert whole(*REPLIES[1], outcome=LENGTH).choices[0].finish_reason == "length"  # cut short: not "tool_calls"


def test_streamed_call_deltas_are_shaped_as_openai_sends_them(ids):
    ids()
    deltas = [c["choices"][0]["delta"] for c in streamed(*REPLIES[0], piece=1)]
    finish = [c["choices"][0]["finish_reason"] for c in streamed(*REPLIES[0])]
    assert deltas[0] == {"role": "assistant", "content": ""} and deltas[1]["content"] == "O"
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert all(set(d) == {"tool_calls"} and len(d["tool_calls"]) == 1 for d in deltas if "tool_calls" in d)
    firsts = [c for c in calls if "id" in c]
    assert firsts == [{"index": 0, "id": "call_" + "0" * 24, "type": "function", "function": {"name": "get_weather", "arguments": ""}},
                      {"index": 1, "id": "call_" + "0" * 23 + "1", "type": "function", "function": {"name": "get_time", "arguments": ""}}]
    later = [c for c in calls if "id" not in c]
    assert all(set(c) == {"index", "function"} and set(c["function"]) == {"arguments"} for c in later)
    assert "".join(c["function"]["arguments"] for c in later if c["index"] == 0) == '{"city": "Paris"}'
    assert finish[-1] == "tool_calls" and set(finish[:-1]) == {None}


def test_a_reply_of_calls_only_streams_its_role_with_the_first_call(ids):
    ids()
    first = streamed(*REPLIES[1])[0]["choices"][0]["delta"]
    assert first["role"] == "assistant" and "content" not in first and first["tool_calls"][0]["function"]["name"] == "get_weather"
    assert streamed(GENERIC, "")[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
