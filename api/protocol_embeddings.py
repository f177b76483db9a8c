"""Request and response bodies of `/v1/embeddings`, with OpenAI's names."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator




class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"model": "all-MiniLM-L6-v2", "input": ["A quick brown fox", "jumps over the lazy dog"]}]},
    )

    # StrictInt: lax ints would turn a JSON `true` or `1.0` into token id 1.
    input: str | list[str] | list[StrictInt] | list[list[StrictInt]] = Field(
        ..., description="Text, texts, token ids, or lists of token ids (decoded with the model's tokenizer)."
    )
    model: str | None = Field(None, description="The embedding model; the configured one when absent.")
    encoding_format: Literal["float", "base64"] = Field("float", description="`base64` is little-endian float32.")
    dimensions: int | None = Field(None, ge=1, description="Only the model's own dimension count is accepted.")
    user: str | None = Field(None, max_length=256)

    @field_validator("input")
    @classmethod
    def _not_empty(cls, value: Any) -> Any:
        if value == "" or value == []:
            raise ValueError("input must not be empty")
        if isinstance(value, list) and any(item == "" or item == [] for item in value):
            raise ValueError("input must not contain empty strings or empty token lists")
        return value

    def items(self) -> list[str] | list[list[int]]:
        """Every input as text or as one list of token ids."""
        if isinstance(self.input, str):
            return [self.input]
        if self.input and isinstance(self.input[0], int):
            return [self.input]  # one list of token ids
        return self.input


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage
