"""Reply parsers: text deltas in, text and tool calls out, the same however the deltas are split.

Every case is fed whole, one character at a time, and split in two at every position (which cuts
every trigger, every escape and every surrogate pair somewhere), and must give the same reply.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest

from models.conversation import CallArguments, CallStart, Conversation, FunctionTool, Message, TextDelta, ToolChoice
from models.tool_formats import GENERIC, HERMES, LLAMA3, MISTRAL, ToolFormat
from models.tool_parser import PlainParser, new_call_id, parser_for

WEATHER = FunctionTool("get_weather", "Weather in a city.", {"type": "object", "properties": {"city": {"type": "string"}}})
CONVERSATION = Conversation((Message("user", "Weather in Paris?"),), (WEATHER, FunctionTool("get_time")))
PARIS = '{"city": "Paris"}'


def splits(text: str):
    yield [text]
    yield list(text)
    for i in range(1, len(text)):
        yield [text[:i], text[i:]]


def parse(fmt: ToolFormat, deltas: list[str], conversation: Conversation = CONVERSATION):
    parser = parser_for(conversation, fmt)
    events = []
    for delta in deltas:
        events += parser.feed(delta)
    events += parser.finish()
    return summary(events), parser.calls


def summary(events) -> list[tuple]:
    """Neighbouring text merged; each call as (index, name, arguments), checked to come in order."""
    out: list = []
    ids = set()
    for event in events:
        if isinstance(event, TextDelta):
            assert event.text, "an empty text delta"
            if out and out[-1][0] == "text":
                out[-1] = ("text", out[-1][1] + event.text)
            else:
                out.append(("text", event.text))
        elif isinstance(event, CallStart):
            assert re.fullmatch(r"call_[A-Za-z0-9]{24}", event.id) and event.id not in ids
            ids.add(event.id)
            assert event.index == sum(1 for item in out if item[0] == "call")
            out.append(("call", event.index, event.name, ""))
        else:
            assert isinstance(event, CallArguments)
            kind, index, name, arguments = out[-1]  # a call's fragments follow its start, nothing between
            assert kind == "call" and index == event.index
            out[-1] = ("call", index, name, arguments + event.fragment)
    return out


def same_for_every_split(fmt: ToolFormat, text: str, conversation: Conversation = CONVERSATION):
    results = {json.dumps(parse(fmt, deltas, conversation)) for deltas in splits(text)}
    assert len(results) == 1, results
    return parse(fmt, [text], conversation)


def call(index: int, name: str, arguments: str) -> tuple:
    return ("call", index, name, arguments)


# ---- hermes / Qwen2.5 -----------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected, calls", [
    ("Hello, world! a < b, <tool and <tool_cal", [("text", "Hello, world! a < b, <tool and <tool_cal")], 0),
    (f'Let me check.\n<tool_call>\n{{"name": "get_weather", "arguments": {PARIS}}}\n</tool_call>',
     [("text", "Let me check."), call(0, "get_weather", PARIS)], 1),
    (f'<tool_call>\n{{"name": "get_weather", "arguments": {PARIS}}}\n</tool_call>\n'
     '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>\n\nBoth asked.',
     [call(0, "get_weather", PARIS), call(1, "get_time", "{}"), ("text", "Both asked.")], 2),
    # braces, quotes, escapes and the end marker inside the arguments' strings do not end the call
    ('<tool_call>{"name": "get_weather", "arguments": {"city": "P}a]r{i\\"s </tool_call>", "n": [1, {"x": null}], "ok": true}}</tool_call>',
     [call(0, "get_weather", '{"city": "P}a]r{i\\"s </tool_call>", "n": [1, {"x": null}], "ok": true}')], 1),
    # Hermes 2 Pro's template teaches the arguments first: they wait for the name
    ('<tool_call>\n{"arguments": {"city": "Oslo"}, "name": "get_weather"}\n</tool_call>', [call(0, "get_weather", '{"city": "Oslo"}')], 1),
    # arguments written as a JSON string: its text
    ('<tool_call>{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}</tool_call>', [call(0, "get_weather", PARIS)], 1),
    # no arguments at all: "{}", so that the arguments always parse
    ('<tool_call>{"name": "get_time"}</tool_call>', [call(0, "get_time", "{}")], 1),
    ('Ünïcödé 😀 <tool_call>{"name": "get_weather", "arguments": {"city": "Zürich 🏔"}}</tool_call>',
     [("text", "Ünïcödé 😀"), call(0, "get_weather", '{"city": "Zürich 🏔"}')], 1),
])
def test_hermes_calls_and_text(text, expected, calls):
    assert same_for_every_split(HERMES, text) == (expected, calls)


def test_a_trigger_not_followed_by_a_call_is_text_with_its_space():
    text = "Use a <tool_call> tag, then <tool_call>{not json</tool_call> and <tool_call>{} too."
    assert same_for_every_split(HERMES, text) == ([("text", text)], 0)


def test_whitespace_is_kept_in_text_and_dropped_next_to_calls():
    text = 'A  b\n\n<tool_call>{"name": "get_time", "arguments": {}}</tool_call>  \n c d \n'
    assert same_for_every_split(HERMES, text) == ([("text", "A  b"), call(0, "get_time", "{}"), ("text", "c d")], 1)
    assert same_for_every_split(HERMES, "  plain reply \n") == ([("text", "  plain reply \n")], 0)


def test_a_call_cut_short_keeps_what_it_has_and_one_cut_before_its_name_is_dropped():
    assert same_for_every_split(HERMES, 'Hm <tool_call>{"name": "get_weather", "arguments": {"ci') == (
        [("text", "Hm"), call(0, "get_weather", '{"ci')], 1)
    assert same_for_every_split(HERMES, 'Hm <tool_call>\n{"name": "get_wea') == ([("text", "Hm")], 0)


def test_an_unfinished_end_marker_is_text():
    text = '<tool_call>{"name": "get_time", "arguments": {}}</tool_cat and more'
    assert same_for_every_split(HERMES, text) == ([call(0, "get_time", "{}"), ("text", "</tool_cat and more")], 1)


# ---- llama3 -----------------------------------------------------------------------------------------


def test_llama3_json_call_with_parameters():
    text = '{"name": "get_weather", "parameters": {"city": "Paris"}}'
    assert same_for_every_split(LLAMA3, text) == ([call(0, "get_weather", PARIS)], 1)


def test_llama3_text_then_call_and_json_that_is_not_a_call():
    text = 'Sure: {"name": "get_time", "parameters": {}}'
    assert same_for_every_split(LLAMA3, text) == ([("text", "Sure:"), call(0, "get_time", "{}")], 1)
    # an object whose name is not a string is no call: text
    assert same_for_every_split(LLAMA3, 'A record: {"name": 3} and {"age": 3}.') == (
        [("text", 'A record: {"name": 3} and {"age": 3}.')], 0)


# ---- mistral ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt, text", [
    (MISTRAL, f'[TOOL_CALLS] [{{"name": "get_weather", "arguments": {PARIS}}}, {{"name": "get_time", "arguments": {{}}}}]'),
    (replace(MISTRAL, opening="["), f'[TOOL_CALLS][{{"name": "get_weather", "arguments": {PARIS}}},{{"name": "get_time", "arguments": {{}}}}]'),
])
def test_mistral_array_of_calls(fmt, text):
    assert same_for_every_split(fmt, text) == ([call(0, "get_weather", PARIS), call(1, "get_time", "{}")], 2)


# ---- generic ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected, calls", [
    ('{"content": "Hello!"}', [("text", "Hello!")], 0),
    # every escape, a surrogate pair and a lone surrogate, however split
    ('  {"content": "a\\nb\\t\\"q\\" \\\\ \\/ \\u00e9 \\ud83d\\ude00 \\ud800x"}',
     [("text", 'a\nb\t"q" \\ / é 😀 \ufffdx')], 0),
    (f'{{"tool_calls": [{{"name": "get_weather", "arguments": {PARIS}}}, {{"name": "get_time", "arguments": {{}}}}]}}',
     [call(0, "get_weather", PARIS), call(1, "get_time", "{}")], 2),
    ('{"tool_calls": []}', [], 0),
    ('{"content": ""}', [], 0),
])
def test_generic_reply_object(text, expected, calls):
    assert same_for_every_split(GENERIC, text) == (expected, calls)


def test_generic_output_that_is_not_the_object_is_text():
    assert same_for_every_split(GENERIC, "Just words {x}") == ([("text", "Just words {x}")], 0)
    assert same_for_every_split(GENERIC, '{"content": 5, oops') == ([("text", '{"content": 5, oops')], 0)


def test_generic_content_streams_before_the_object_ends():
    parser = parser_for(CONVERSATION, GENERIC)
    assert parser.feed('{"content": "Hel') == [TextDelta("Hel")]
    assert parser.feed('lo \\u00') == [TextDelta("lo ")]
    assert parser.feed('e9"}') == [TextDelta("é")]
    assert parser.finish() == []


def test_a_call_starts_as_soon_as_its_name_is_complete():
    parser = parser_for(CONVERSATION, HERMES)
    assert parser.feed('Hi <tool_call>\n{"name": "get_wea') == [TextDelta("Hi")]
    [start] = parser.feed('ther"')
    assert isinstance(start, CallStart) and start.name == "get_weather"
    assert parser.feed(', "arguments": {"ci') == [CallArguments(0, '{"ci')]


# ---- no tools ---------------------------------------------------------------------------------------------


def test_without_tools_or_with_tool_choice_none_every_delta_is_text():
    for conversation in (Conversation(CONVERSATION.messages),
                         Conversation(CONVERSATION.messages, CONVERSATION.tools, ToolChoice("none"))):
        parser = parser_for(conversation, HERMES)
        assert isinstance(parser, PlainParser)
        assert parser.feed("<tool_call>{") == [TextDelta("<tool_call>{")] and parser.finish() == []


def test_call_ids_are_openai_shaped_and_distinct():
    ids = {new_call_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(re.fullmatch(r"call_[A-Za-z0-9]{24}", i) for i in ids)


def test_long_replies_pass_in_slices_not_one_step_per_character():
    # Plain text, a content string and a call's arguments go to the events in slices, joined once:
    # 400,000 characters in milliseconds (character by character, with a copy per merge, took seconds).
    import time

    long = "x" * 400_000
    cases = [(HERMES, long), (GENERIC, f'{{"content": "{long}"}}'),
             (HERMES, f'<tool_call>{{"name": "get_time", "arguments": {{"a": "{long}", "b": [{{}}]}}}}</tool_call>')]
    for fmt, text in cases:
        started = time.perf_counter()
        parsed = parse(fmt, [text])
        assert time.perf_counter() - started < 1.0
        assert long in json.dumps(parsed)
