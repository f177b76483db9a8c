"""Tool-call tags on SmolLM2's real vocabulary: free text with triggered tags (tool_choice "auto"), or
only tags (tool_choice "required" / a named function), each tag's JSON valid against its schema."""

from __future__ import annotations

import json
import random
import re

import jsonschema_rs
import pytest

from models.interfaces import Constraint, Tag
from models.native.constraint import compile
from tests.helpers.constrained import follow, vocabulary, wander

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["C", "F"]}},
           "required": ["city", "unit"], "additionalProperties": False}
TIME = {"type": "object", "properties": {"offset": {"type": "integer", "minimum": -12, "maximum": 14}},
        "required": ["offset"], "additionalProperties": False}
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME}
TAGS = tuple(Tag(begin=f'<tool_call>\n{{"name": "{name}", "arguments": ', schema=json.dumps(schema), end="}\n</tool_call>")
             for name, schema in SCHEMAS.items())
CALL = re.compile(r'<tool_call>\n\{"name": "(\w+)", "arguments": (.*?)\}\n</tool_call>', re.S)
WEATHER_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}}\n</tool_call>'


def _auto(**counts) -> Constraint:
    return Constraint(kind="tags", tags=TAGS, triggers=("<tool_call>",), text=True, **counts)


def _required(**counts) -> Constraint:
    return Constraint(kind="tags", tags=TAGS, text=False, separator="\n", **counts)


def _calls(text: str) -> list[tuple[str, object]]:
    """Every tool call in `text`, each checked against its function's schema."""
    calls = [(name, json.loads(args)) for name, args in CALL.findall(text)]
    for name, args in calls:
        assert jsonschema_rs.validator_for(SCHEMAS[name]).is_valid(args), (name, args)
    return calls


def _all_calls_complete(text: bytes) -> bool:
    decoded = text.decode("utf-8", "replace")
    return decoded.count("<tool_call>") == len(_calls(decoded))


def test_auto_allows_plain_text_and_an_end_anywhere():
    matcher = compile(_auto(), vocabulary()).matcher()
    text = "It is sunny in Paris; no tool needed. <tool_ is not a trigger."
    assert follow(matcher, text) == len(text)
    assert matcher.eos_allowed and not matcher.done


def test_auto_enforces_a_tag_from_its_trigger_to_its_end():
    compiled = compile(_auto(), vocabulary())
    for seed in range(8):
        matcher = compiled.matcher()
        assert follow(matcher, "Let me check. <tool_call>") == len("Let me check. <tool_call>")
        assert not matcher.eos_allowed  # a started tag always completes
        out = "Let me check. <tool_call>" + wander(matcher, random.Random(seed), _all_calls_complete).decode()
        assert len(_calls(out)) >= 1, out


def test_auto_blocks_a_wrong_name_and_wrong_arguments():
    compiled = compile(_auto(), vocabulary())
    wrong_name = '<tool_call>\n{"name": "get_stock'
    assert follow(compiled.matcher(), wrong_name) == len('<tool_call>\n{"name": "get_')
    wrong_args = '<tool_call>\n{"name": "get_time", "arguments": {"offset": 15'
    assert follow(compiled.matcher(), wrong_args) == len(wrong_args) - 1


def test_auto_with_at_most_one_call_allows_no_second_trigger():
    matcher = compile(_auto(at_most=1), vocabulary()).matcher()
    text = f"Sure. {WEATHER_CALL}\nAnything else? <tool_call>"
    assert follow(matcher, text) == len(text) - 1
    assert matcher.eos_allowed


def test_auto_with_at_least_one_call_ends_only_after_it():
    matcher = compile(_auto(at_least=1), vocabulary()).matcher()
    follow(matcher, "Checking.")
    assert not matcher.eos_allowed
    follow(matcher, " " + WEATHER_CALL)
    assert matcher.eos_allowed


def test_required_is_only_tags_joined_by_the_separator():
    compiled = compile(_required(at_least=1, at_most=2), vocabulary())
    assert follow(compiled.matcher(), "Sure") == 0
    for seed in range(8):
        out = wander(compiled.matcher(), random.Random(seed), _all_calls_complete).decode()
        calls = _calls(out)
        assert 1 <= len(calls) <= 2
        rebuilt = "\n".join(m.group(0) for m in CALL.finditer(out))
        assert out == rebuilt, out


def test_required_is_done_after_at_most_tags():
    matcher = compile(_required(at_least=1, at_most=2), vocabulary()).matcher()
    follow(matcher, WEATHER_CALL)
    assert matcher.eos_allowed and not matcher.done
    follow(matcher, "\n" + WEATHER_CALL)
    assert matcher.done


def test_required_at_least_two_refuses_an_end_after_one():
    matcher = compile(_required(at_least=2), vocabulary()).matcher()
    follow(matcher, WEATHER_CALL)
    assert not matcher.eos_allowed


def test_a_named_function_is_one_tag_with_its_name_forced():
    named = Constraint(kind="tags", tags=TAGS[1:], text=False, at_least=1, at_most=1)
    matcher = compile(named, vocabulary()).matcher()
    assert follow(matcher, '<tool_call>\n{"name": "get_weather"') == len('<tool_call>\n{"name": "get_')
    text = '<tool_call>\n{"name": "get_time", "arguments": {"offset": -3}}\n</tool_call>'
    matcher = compile(named, vocabulary()).matcher()
    assert follow(matcher, text) == len(text) and matcher.done


@pytest.mark.parametrize("constraint, message", [
    (Constraint(kind="tags", tags=(), text=False), "at least one tag"),
    (Constraint(kind="tags", tags=TAGS, triggers=("<call>",), text=True), "no trigger"),
    (Constraint(kind="tags", tags=TAGS, text=False, at_least=2, at_most=1), "out of order"),
    (Constraint(kind="tags", tags=TAGS, text=False, at_most=0), "no output"),
])
def test_malformed_tag_constraints_are_value_errors(constraint, message):
    with pytest.raises(ValueError, match=message):
        compile(constraint, vocabulary())


def test_a_tags_json_has_the_same_bounded_whitespace_as_json_schema():
    matcher = compile(_required(at_least=1, at_most=1), vocabulary()).matcher()
    head = '<tool_call>\n{"name": "get_time", "arguments": {"offset":'
    assert follow(matcher, head + " " * 40) == len(head) + 32


def test_no_tags_and_at_most_zero_is_free_text_that_never_writes_the_trigger():
    """tool_choice "none" on a template whose calls start with `<tool_call>`."""
    none = Constraint(kind="tags", tags=(), triggers=("<tool_call>",), text=True, at_most=0)
    matcher = compile(none, vocabulary()).matcher()
    text = "It is sunny in Oslo. <tool"
    assert follow(matcher, text) == len(text) and matcher.eos_allowed
    assert follow(matcher, "_call>") < len("_call>")  # the trigger can never be completed
