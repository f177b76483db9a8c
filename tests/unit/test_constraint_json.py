"""JSON Schema constraints on SmolLM2's real vocabulary: what comes out always parses and validates.

Generation is simulated (tests/helpers/constrained.py): random allowed tokens, seeded, stand in for
a model at its worst; `follow` shows that a given valid output is allowed token by token. Validation
is jsonschema_rs's (with formats), not the constraint library's own idea of the schema.
"""

from __future__ import annotations

import json
import random
import threading
from enum import Enum
from typing import Literal, Optional, Union

import jsonschema_rs
import numpy as np
import pytest
from pydantic import BaseModel, Field

from errors import ConstraintFailed, SchemaRefused
from models.interfaces import Constraint
from models.native.constraint import Vocabulary, compile
from tests.helpers.constrained import control_ids, follow, vocabulary, wander


class Colour(str, Enum):
    red = "red"
    green = "green"


class Address(BaseModel):
    street: str
    zip: str = Field(pattern=r"^[0-9]{5}$")


class Cat(BaseModel):
    kind: Literal["cat"]
    lives: int = Field(ge=0, le=9)


class Dog(BaseModel):
    kind: Literal["dog"]
    good: bool


class Person(BaseModel):  # what client.chat.completions.parse(response_format=Person) sends, less strictness
    name: str
    age: int = Field(ge=0, lt=150)
    height_m: float
    colour: Colour
    nickname: Optional[str] = None
    tags: list[str] = Field(max_length=3)
    address: Address
    pet: Union[Cat, Dog] = Field(discriminator="kind")


TREE = {
    "$defs": {"node": {"type": "object", "properties": {"value": {"type": "integer"},
                                                        "children": {"type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 2}},
                       "required": ["value", "children"], "additionalProperties": False}},
    "$ref": "#/$defs/node",
}
SCHEMAS = {
    "pydantic person": Person.model_json_schema(),
    "json_object": {"type": "object"},
    "recursive tree": TREE,
    "numbers": {"type": "object", "properties": {
        "i": {"type": "integer", "minimum": -5, "maximum": 5}, "m": {"type": "integer", "multipleOf": 3},
        "x": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}, "n": {"type": ["number", "null"]}},
        "required": ["i", "m", "x", "n"], "additionalProperties": False},
    "strings and formats": {"type": "object", "properties": {
        "short": {"type": "string", "minLength": 2, "maxLength": 4}, "day": {"type": "string", "format": "date"},
        "id": {"type": "string", "format": "uuid"}, "code": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]+$"},
        "word": {"enum": ["a\"b", "c\\d", "é\n"]}}, "required": ["short", "day", "id", "code", "word"]},
    "tuple and const": {"type": "array", "prefixItems": [{"const": "x"}, {"type": "boolean"}], "items": False, "minItems": 2},
    "draft-04 exclusiveMinimum": {"$schema": "http://json-schema.org/draft-04/schema#", "type": "number",
                                  "minimum": 0, "exclusiveMinimum": True, "maximum": 1},
    "top-level integer": {"type": "integer"},
}


def _constraint(schema) -> Constraint:
    return Constraint(kind="json_schema", schema=json.dumps(schema))


def _validator(schema):
    return jsonschema_rs.validator_for(schema, validate_formats=True)


def _complete(validator):
    def complete(text: bytes) -> bool:
        try:
            return validator.is_valid(json.loads(text))
        except ValueError:
            return False
    return complete


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_random_outputs_parse_and_validate(name):
    schema = SCHEMAS[name]
    compiled = compile(_constraint(schema), vocabulary())
    validator = _validator(schema)
    for seed in range(6):
        out = wander(compiled.matcher(), random.Random(seed), _complete(validator))
        value = json.loads(out)  # the whole output, no leading or trailing bytes
        assert validator.is_valid(value), f"{name}, seed {seed}: {out!r}"


@pytest.mark.parametrize("text", [
    '{"name": "Al\\"ice \\\\ \\n \\u00e9 é 日本", "age": 42, "height_m": 1.7e0, "colour": "green", "nickname": null, '
    '"tags": ["a"], "address": {"street": "Main St.", "zip": "12345"}, "pet": {"kind": "cat", "lives": 9}}',
    '{\n  "name": "Bo",\n  "age": 0,\n  "height_m": -0.5,\n  "colour": "red",\n  "tags": [],\n'
    '  "address": {"street": "", "zip": "00000"},\n  "pet": {"kind": "dog", "good": true}\n}',
])
def test_a_valid_output_is_allowed_and_done_exactly_at_its_end(text):
    matcher = compile(_constraint(Person.model_json_schema()), vocabulary()).matcher()
    assert follow(matcher, text[:-1]) == len(text.encode()) - 1
    assert not matcher.done and not matcher.eos_allowed
    assert follow(matcher, "}") == 1
    assert matcher.done and matcher.eos_allowed
    assert set(np.flatnonzero(matcher.allowed())) == set(vocabulary().end_ids)


def test_invalid_outputs_are_blocked_where_they_go_wrong():
    compiled = compile(_constraint(Person.model_json_schema()), vocabulary())
    for bad, stops_at in [('{"name": 5', len('{"name": ')), ('{"age": 1', len('{"')), (' {', 0),
                          ('{"name": "a", "age": 150', len('{"name": "a", "age": 15')),
                          ('{"name": "a", "age": 1, "height_m": 1, "colour": "blue"', len('{"name": "a", "age": 1, "height_m": 1, "colour": "'))]:
        assert follow(compiled.matcher(), bad) == stops_at, bad


def test_a_pattern_is_searched_for_as_json_schema_says_not_matched_whole():
    compiled = compile(_constraint({"type": "string", "pattern": "[A-Z]{2}-[0-9]+"}), vocabulary())
    assert follow(compiled.matcher(), '"see AB-12 here"') == len('"see AB-12 here"')
    assert follow(compiled.matcher(), '"see A-12"') == len('"see A-12')


def test_no_control_token_is_ever_allowed_inside_json():
    matcher = compile(_constraint({"type": "object"}), vocabulary()).matcher()
    assert vocabulary().pieces[1] == b"" and len(control_ids()) == 15  # <|im_start|> ... <empty_output>
    for prefix in ['{', '"', 'key', '": "', 'some text <|im_', 'start|> ', '"', ', "n": [1']:
        follow(matcher, prefix)
        assert not matcher.allowed()[control_ids()].any(), prefix
        assert not matcher.eos_allowed


def test_a_top_level_number_ends_at_an_end_id_not_by_itself():
    matcher = compile(_constraint({"type": "integer"}), vocabulary()).matcher()
    follow(matcher, "42")
    assert matcher.eos_allowed and not matcher.done
    matcher.accept(vocabulary().end_ids[0])
    assert matcher.done


def test_a_refused_token_raises_and_leaves_the_matcher_usable():
    matcher = compile(_constraint({"type": "integer"}), vocabulary()).matcher()
    x = vocabulary().pieces.index(b"x")
    for token in (x, 1, -1, vocabulary().n_vocab):
        with pytest.raises(ConstraintFailed):
            matcher.accept(token)
    assert follow(matcher, "7") == 1 and matcher.eos_allowed


def test_the_mask_allows_exactly_the_tokens_that_can_start_the_output():
    matcher = compile(_constraint({"type": "boolean"}), vocabulary()).matcher()
    allowed = matcher.allowed()
    assert allowed.dtype == bool and len(allowed) == vocabulary().n_vocab and not allowed.flags.writeable
    shown = {vocabulary().pieces[t] for t in np.flatnonzero(allowed)}
    assert {b"t", b"f"} <= shown <= {b"t", b"tr", b"tru", b"true", b"f", b"fa", b"fal", b"false"}


def test_a_cut_output_is_just_dropped():
    """max_tokens may end a generation anywhere: the matcher needs no closing call."""
    matcher = compile(_constraint({"type": "object"}), vocabulary()).matcher()
    follow(matcher, '{"a": "unfinish')
    assert not matcher.done and not matcher.eos_allowed


def test_compiling_the_same_schema_again_hits_the_cache():
    vocab = vocabulary()
    schema = {"type": "object", "properties": {"cache": {"type": "string"}}}
    hits = vocab.cache_hits
    first = compile(_constraint(schema), vocab)
    again = compile(Constraint(kind="json_schema", schema="".join(json.dumps(schema))), vocab)  # an equal, new object
    assert again is first and vocab.cache_hits == hits + 1
    assert compile(_constraint({"type": "array"}), vocab) is not first


def test_the_cache_keeps_the_most_recently_used():
    small = Vocabulary(vocabulary().pieces, vocabulary().end_ids, vocabulary()._tokenize, cache_size=2)
    a, b, c = (_constraint({"const": n}) for n in range(3))
    first_a = compile(a, small)
    compile(b, small)
    assert compile(a, small) is first_a  # a is now the most recent
    compile(c, small)  # evicts b
    assert compile(a, small) is first_a
    misses = small.cache_misses
    compile(b, small)
    assert small.cache_misses == misses + 1


def test_compile_refuses_what_check_schema_refuses():
    with pytest.raises(SchemaRefused) as refused:
        compile(_constraint({"type": "array", "uniqueItems": True}), vocabulary())
    assert refused.value.keyword == "uniqueItems"


def test_matchers_of_one_compiled_constraint_run_on_several_threads():
    compiled = compile(_constraint(SCHEMAS["recursive tree"]), vocabulary())
    text = '{"value": 1, "children": [{"value": 2, "children": []}, {"value": 3, "children": []}]}'
    results = []

    def run():
        for _ in range(5):
            matcher = compiled.matcher()
            results.append(follow(matcher, text) == len(text) and matcher.done)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [True] * 15


def test_an_object_that_lists_its_properties_gets_no_others_unless_the_schema_allows_them():
    from models.native.schema_check import closed

    schema = {"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {}}},
                                               "properties": {"type": "string"}},
              "$defs": {"x": {"properties": {"c": {}}}}, "allOf": [{"properties": {"d": {}}}]}
    result = closed(schema)
    assert result["additionalProperties"] is False and result["properties"]["a"]["additionalProperties"] is False
    assert "additionalProperties" not in result["properties"]["properties"]  # a property named "properties"
    assert result["$defs"]["x"]["additionalProperties"] is False
    assert "additionalProperties" not in result["allOf"][0]  # another branch may list more
    open_object = {"type": "object", "properties": {"a": {}}, "additionalProperties": {"type": "integer"}}
    assert closed(open_object) == open_object and closed({"type": "object"}) == {"type": "object"}
    assert "additionalProperties" not in schema  # the input is untouched
