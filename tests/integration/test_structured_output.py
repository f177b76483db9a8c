"""Structured output on the real model, through the `openai` SDK: a schema is enforced, streamed or not,
or refused with 400 naming the keyword; never answered unconstrained.

A 135M model writes poor content; what is checked is that every output parses and validates. The
schemas bound their strings and arrays so that greedy output ends well within `max_tokens`.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

import httpx
import jsonschema_rs
import openai
import pytest
from pydantic import BaseModel, Field

QUESTION = [{"role": "user", "content": "Describe a person called Ann who lives in Oslo, as JSON."}]
SCHEMA_PARAM = "response_format.json_schema.schema"


class Address(BaseModel):
    city: str = Field(max_length=20)
    postcode: str | None = Field(max_length=8)


class Person(BaseModel):
    name: str = Field(max_length=20)
    age: int = Field(ge=0, le=120)
    height_m: float
    role: Literal["admin", "user", "guest"]
    tags: list[Annotated[str, Field(max_length=12)]] = Field(max_length=3)
    address: Address


def json_schema_format(schema: dict, name: str = "answer") -> dict:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


PERSON_SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["name", "age", "pets"],
    "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"},
                   "pets": {"type": "array", "maxItems": 2, "items": {"enum": ["cat", "dog", "fish"]}}},
}


def test_the_sdks_parse_gives_a_validated_model_with_nested_objects_arrays_enums_optionals_and_numbers(openai_client, default_model):
    completion = openai_client.chat.completions.parse(
        model=default_model, messages=QUESTION, response_format=Person, temperature=0, max_tokens=300)
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert isinstance(choice.message.parsed, Person)
    assert Person.model_validate_json(choice.message.content) == choice.message.parsed


def test_json_object_is_any_json_object(openai_client, default_model):
    reply = openai_client.chat.completions.create(
        model=default_model, messages=QUESTION, response_format={"type": "json_object"}, temperature=0.7, seed=3,
        max_tokens=200).choices[0]
    if reply.finish_reason == "stop":
        assert isinstance(json.loads(reply.message.content), dict)
    else:
        assert reply.message.content.startswith("{")


def test_a_streamed_schema_output_concatenates_to_valid_json(openai_client, default_model):
    stream = openai_client.chat.completions.create(
        model=default_model, messages=QUESTION, response_format=json_schema_format(PERSON_SCHEMA), temperature=0,
        max_tokens=200, stream=True)
    chunks = [chunk.choices[0] for chunk in stream if chunk.choices]
    text = "".join(choice.delta.content or "" for choice in chunks)
    assert chunks[-1].finish_reason == "stop"
    jsonschema_rs.validate(PERSON_SCHEMA, json.loads(text))


def test_text_completions_take_a_schema_too(openai_client, default_model):
    choice = openai_client.completions.create(
        model=default_model, prompt="A pet as JSON: ", max_tokens=60, temperature=0,
        extra_body={"response_format": json_schema_format({"type": "object", "required": ["kind"], "additionalProperties": False,
                                                           "properties": {"kind": {"enum": ["cat", "dog"]}}})}).choices[0]
    assert choice.finish_reason == "stop" and json.loads(choice.text)["kind"] in ("cat", "dog")


def test_a_cut_output_ends_with_length_and_is_incomplete(openai_client, default_model):
    choice = openai_client.chat.completions.create(
        model=default_model, messages=QUESTION, response_format=json_schema_format(PERSON_SCHEMA), temperature=0,
        max_tokens=5).choices[0]
    assert choice.finish_reason == "length" and choice.message.content.startswith("{")
    with pytest.raises(json.JSONDecodeError):
        json.loads(choice.message.content)


@pytest.mark.parametrize("schema, keyword", [
    ({"type": "object", "properties": {"a": {"type": "string"}}, "not": {"required": ["a"]}}, "not"),
    ({"type": "array", "uniqueItems": True}, "uniqueItems"),
    ({"type": "object", "properties": {"a": {"$ref": "https://example.com/a.json"}}}, "$ref"),
    ({"type": "string", "pattern": "(?=a)b"}, "pattern"),
    ({"type": "string", "format": "hostname-idn"}, "format"),
])
def test_a_schema_that_cannot_be_enforced_is_refused_naming_the_keyword(openai_client, default_model, schema, keyword):
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.chat.completions.create(model=default_model, messages=QUESTION, response_format=json_schema_format(schema))
    assert info.value.param == SCHEMA_PARAM and info.value.code == "unsupported_schema"
    assert keyword in info.value.message


def nested(depth: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


@pytest.mark.parametrize("schema", [
    nested(40),  # deeper than the limit
    {"type": "object", "properties": {f"p{i}": {"type": "string", "description": "x" * 200} for i in range(10_000)}},  # 2 MB
    {"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/a"}}},  # a $ref loop that never reaches a schema
], ids=["deep", "2MB", "ref-loop"])
def test_oversized_deep_or_looping_schemas_are_refused_and_the_server_stays_healthy(http, live_server, schema):
    response = http.post("/v1/chat/completions", json={"messages": QUESTION, "response_format": json_schema_format(schema)})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == SCHEMA_PARAM
    assert httpx.get(live_server.base_url + "/health").json()["status"] == "ok"


def test_a_recursive_schema_is_enforced(openai_client, default_model):
    # pydantic models that nest themselves (and OpenAI's strict mode) produce recursive $refs: they are followed
    tree = {"$ref": "#/$defs/node", "$defs": {"node": {
        "type": "object", "additionalProperties": False, "required": ["label", "children"],
        "properties": {"label": {"type": "string", "maxLength": 8},
                       "children": {"type": "array", "maxItems": 1, "items": {"$ref": "#/$defs/node"}}}}}}
    choice = openai_client.chat.completions.create(
        model=default_model, messages=[{"role": "user", "content": "A tiny tree as JSON."}], temperature=0,
        response_format=json_schema_format(tree), max_tokens=300).choices[0]
    if choice.finish_reason == "stop":
        jsonschema_rs.validate(tree, json.loads(choice.message.content))
    else:  # a model may nest to the end of max_tokens; what it wrote is still on the way to a valid tree
        assert choice.message.content.startswith('{"label"') or choice.message.content.startswith("{")
