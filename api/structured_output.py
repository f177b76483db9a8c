"""`response_format`: OpenAI's structured output, checked and turned into a Constraint.

A schema is either enforced exactly, by the token mask of models/native/constraint.py, or refused
here with 400 naming the keyword it cannot enforce, before anything is evaluated: never accepted
and then generated freely. `strict` does not change that (OpenAI's `strict: false` is "best effort";
here every schema is enforced). The Responses API's `text.format` uses the same checks.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.interfaces import Constraint
from models.tool_constraint import schema_text

JSON_OBJECT = Constraint("json_schema", schema='{"type":"object"}')


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(..., pattern=r"^[a-zA-Z0-9_-]{1,64}$", description="The schema's name (letters, digits, `_`, `-`).")
    description: str | None = Field(None, max_length=4096, description="What the output is for (not shown to the model).")
    schema_: dict[str, Any] | None = Field(None, alias="schema", description="A JSON Schema; absent: any JSON value.")
    strict: bool | None = Field(None, description="Accepted; every schema is enforced exactly, or refused.")


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_with_its_type(self) -> "ResponseFormat":
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("`json_schema` goes with type json_schema, and only with it")
        return self

    def constraint(self) -> Constraint | None:
        if self.type == "text":
            return None
        if self.type == "json_object":
            return JSON_OBJECT
        schema = self.json_schema.schema_ if self.json_schema.schema_ is not None else {}
        return schema_constraint(schema, "response_format.json_schema.schema")


def schema_constraint(schema: Any, param: str) -> Constraint:
    """The constraint for output valid against `schema`, or InvalidRequest naming `param` and the keyword."""
    return Constraint("json_schema", schema=checked_schema(schema, param))


def checked_schema(schema: Any, param: str) -> str:
    """`schema` as canonical JSON text (its keys' order kept: properties are generated in that order),
    once the mask library has said it can enforce it; InvalidRequest naming `param` otherwise."""
    from models.native.constraint import check_schema  # the mask library loads with the first schema

    check_schema(schema, param=param)  # SchemaRefused: 400 naming `param`, the keyword and where it is
    return schema_text(schema)
