"""check_schema: a JSON Schema is either one llguidance enforces exactly, or a 400 naming the keyword.

No vocabulary here: the check runs before anything is evaluated. The tables in schema_check are
checked against the library itself, so that an upgrade that changes what it supports shows here.
"""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from errors import SchemaRefused
from models.native import schema_check
from models.native.constraint import MAX_DEPTH, MAX_SCHEMA_BYTES, check_schema

PARAM = "response_format.json_schema.schema"


def _nested(levels: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


REFUSALS = [  # (schema, keyword, path)
    ({"type": "object", "properties": {"a": {"not": {"type": "string"}}}}, "not", "/properties/a"),
    ({"if": {"type": "string"}, "then": {"minLength": 1}}, "if", "/"),
    ({"type": "array", "uniqueItems": True}, "uniqueItems", "/"),
    ({"type": "array", "items": {"type": "array", "contains": {"const": 1}}}, "contains", "/items"),
    ({"type": "object", "patternProperties": {"(?=x)": {}}}, "patternProperties", "/"),
    ({"type": "object", "dependentSchemas": {"a": {"required": ["b"]}}}, "dependentSchemas", "/"),
    ({"type": "object", "propertyNames": {"maxLength": 3}}, "propertyNames", "/"),
    ({"type": "object", "unevaluatedProperties": False}, "unevaluatedProperties", "/"),
    ({"$dynamicRef": "#meta"}, "$dynamicRef", "/"),
    ({"type": "string", "format": "uri-reference"}, "format", "/"),
    ({"type": "integer", "format": "int32"}, "format", "/"),  # the library would ignore it on an integer
    ({"type": "string", "pattern": "^(?=a)a+$"}, "pattern", "/"),
    ({"type": "string", "pattern": "(unclosed"}, "pattern", "/"),
    ({"type": "string", "pattern": 5}, "pattern", "/"),
    ({"$ref": "https://example.com/schema.json"}, "$ref", "/"),
    ({"$ref": "#/$defs/missing"}, "$ref", ""),
    ({"$ref": "#"}, "$ref", ""),
    ({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}, "$ref", ""),
    ({"anyOf": [{"type": "string"}, 3]}, "anyOf", "/anyOf/1"),
    ({"type": "string", "nullable": True}, "nullable", "/"),
    ({"type": "object", "properties": {"a": {"type": "strin"}}}, "type", "/properties/a"),
    ({"enum": []}, "enum", "/"),
    ({"x-guidance": {"lenient": True}, "not": {}}, "x-guidance", "/"),
    ({"$schema": "http://json-schema.org/draft-04/schema#", "const": 1}, "const", "/"),
    ({"$schema": "http://example.com/my-draft"}, "$schema", ""),
    ({"oneOf": [{"type": "number"}, {"type": "integer"}]}, "oneOf", ""),
    ({"type": "integer", "minimum": 5, "maximum": 1}, "minimum", ""),
    ({"type": "object", "properties": {"a": {}}, "additionalProperties": True, "minProperties": 1}, "minProperties", ""),
    (_nested(MAX_DEPTH + 1), "properties", "/properties/a" * (MAX_DEPTH + 1)),
    ({"const": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}, "const", "/"),
]


@pytest.mark.parametrize("schema, keyword, path", REFUSALS, ids=[f"{k}@{p[:20] or '-'}" for _, k, p in REFUSALS])
def test_a_refusal_names_the_keyword_and_where_it_is(schema, keyword, path):
    with pytest.raises(SchemaRefused) as refused:
        check_schema(schema, param=PARAM)
    error = refused.value
    assert (error.keyword, error.path) == (keyword, path)
    assert f"'{keyword}'" in error.message and (path in error.message)
    assert error.status == 400 and error.param == PARAM
    assert error.body()["error"] == {"message": error.message, "type": "invalid_request_error", "param": PARAM,
                                     "code": "unsupported_schema"}


@pytest.mark.parametrize("schema, reason", [
    ([{"type": "string"}], "an array"), ("string", "a string"), (3, "a number"), (None, "null"),
    (False, "allows no value"),
])
def test_what_is_not_a_usable_schema_is_refused(schema, reason):
    with pytest.raises(SchemaRefused, match=reason):
        check_schema(schema, param=PARAM)


def test_an_over_large_schema_is_refused_by_its_size_alone():
    huge = {"type": "object", "properties": {f"p{i}": {"type": "string", "description": "x" * 1000} for i in range(2000)}}
    with pytest.raises(SchemaRefused, match=f"limit is {MAX_SCHEMA_BYTES} bytes"):
        check_schema(huge)


@pytest.mark.parametrize("schema, reason", [
    ({"const": 10**30}, "64-bit"), ({"description": _nested(300)}, "Recursion limit"),
])
def test_json_the_library_cannot_read_is_refused(schema, reason):
    with pytest.raises(SchemaRefused, match=reason):
        check_schema(schema)


def test_nesting_up_to_the_limit_is_fine():
    check_schema(_nested(MAX_DEPTH))


class Item(BaseModel):
    name: str
    price: float
    tags: list[str] = []


class Order(BaseModel):
    id: int
    items: list[Item]
    note: str | None = None
    status: str = "new"


ACCEPTED = {
    "pydantic": Order.model_json_schema(),
    "json_object": {"type": "object"},
    "anything": True,
    "recursive": {"$defs": {"n": {"type": "object", "properties": {"next": {"anyOf": [{"$ref": "#/$defs/n"}, {"type": "null"}]}}}},
                  "$ref": "#/$defs/n"},
    "recursive to the root": {"type": "object", "properties": {"children": {"type": "array", "items": {"$ref": "#"}}}},
    "zod draft-07": {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                     "properties": {"a": {"type": "string", "format": "date-time"}}, "required": ["a"],
                     "additionalProperties": False, "definitions": {}},
    "annotations and vendor keys": {"type": "string", "title": "t", "description": "d", "examples": ["e"],
                                    "default": "e", "deprecated": False, "x-order": 1, "$comment": "c"},
    "discriminated union": {"oneOf": [{"type": "object", "properties": {"k": {"const": "a"}}, "required": ["k"]},
                                      {"type": "object", "properties": {"k": {"const": "b"}}, "required": ["k"]}],
                            "discriminator": {"propertyName": "k"}},
    "patterns and formats": {"type": "object", "patternProperties": {"^x-": {"type": "string", "pattern": "\\d+"}},
                             "properties": {"u": {"type": "string", "format": "uuid"}}},
}


@pytest.mark.parametrize("name", list(ACCEPTED))
def test_schemas_clients_send_are_accepted(name):
    check_schema(ACCEPTED[name], param=PARAM)


@pytest.mark.parametrize("keyword", sorted(k for k in schema_check.REFUSED if k != "x-guidance"))
def test_every_keyword_we_refuse_is_refused_by_the_library_too(keyword):
    """Our table is the library's verdict, not a guess: without our walk, the library refuses each one."""
    assert "Unimplemented keys" in schema_check._library_error({keyword: {}})


@pytest.mark.parametrize("keyword, value", [
    ("type", "string"), ("enum", [1]), ("const", 1), ("anyOf", [{}]), ("oneOf", [{"type": "null"}]), ("allOf", [{}]),
    ("$ref", "#/$defs/a"), ("items", {}), ("prefixItems", [{}]), ("additionalItems", {}), ("minItems", 1), ("maxItems", 1),
    ("properties", {}), ("additionalProperties", {}), ("patternProperties", {"a": {}}), ("required", []),
    ("minProperties", 0), ("maxProperties", 3), ("minLength", 1), ("maxLength", 1), ("pattern", "a"),
    ("format", "date"), ("minimum", 0), ("maximum", 1), ("exclusiveMinimum", 0), ("exclusiveMaximum", 1), ("multipleOf", 2),
])
def test_every_keyword_we_accept_compiles(keyword, value):
    assert keyword in schema_check.ENFORCED
    check_schema({keyword: value, "$defs": {"a": {"type": "string"}}})


def test_the_accepted_keywords_are_exactly_those_tested():
    tested = {k for k, _ in test_every_keyword_we_accept_compiles.pytestmark[0].args[1]}
    assert tested == set(schema_check.ENFORCED)
