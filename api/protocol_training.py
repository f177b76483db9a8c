"""Request and response bodies of `/v1/training/*`: every bound a client can hit is declared here."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_META_DEPTH = 32
MAX_PAGE = 1000  # records in one page of a dataset


class TrainingExample(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str | None = Field(None, min_length=1, max_length=128, description="Stable key; a hash of the prompt when absent.")
    prompt: str = Field(..., min_length=1)
    response: str = Field(..., min_length=1)
    meta: dict[str, Any] | None = Field(None, description=f"Any JSON object, nested at most {MAX_META_DEPTH} levels.")

    @field_validator("meta")
    @classmethod
    def _not_too_deep(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        # The JSONL writer (orjson) refuses documents nested past ~250 levels; say so here, as a 400.
        stack = [(value, 1)] if value is not None else []
        while stack:
            node, depth = stack.pop()
            if depth > MAX_META_DEPTH:
                raise ValueError(f"meta must not be nested more than {MAX_META_DEPTH} levels deep")
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
        return value


class IngestRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "dataset": "my-support-faq",
                    "upsert": True,
                    "store_embeddings": True,
                    "examples": [
                        {
                            "prompt": "How do I reset my password?",
                            "response": "Go to Settings > Account > Reset Password and follow the instructions.",
                            "meta": {"source": "faq", "lang": "en"},
                        }
                    ],
                }
            ]
        },
    )

    dataset: str = Field(..., description="Letters, digits, `._-`, at most 64 characters.")
    examples: list[TrainingExample] = Field(..., min_length=1)
    upsert: bool = Field(False, description="Replace stored examples with the same key instead of skipping them.")
    store_embeddings: bool = Field(False, description="Store an embedding of prompt + newline + response.")


class PageQuery(BaseModel):
    """`GET /v1/training/datasets/<name>?offset=&limit=`: the bounds of one page."""

    model_config = ConfigDict(extra="forbid")

    offset: int = Field(0, ge=0, le=2**31, description="Records to skip.")
    limit: int = Field(100, ge=1, le=MAX_PAGE, description="Records in the page.")


class IngestResponse(BaseModel):
    object: Literal["training.ingest"] = "training.ingest"
    dataset: str
    inserted: int
    updated: int
    skipped: int
    size: int


class DatasetInfo(BaseModel):
    name: str
    examples: int
    bytes: int
    updated_at: str | None
    has_embeddings: bool
    corrupt_lines: int


class DatasetList(BaseModel):
    object: Literal["list"] = "list"
    data: list[DatasetInfo]


class DatasetPage(BaseModel):
    object: Literal["list"] = "list"
    dataset: str
    data: list[dict[str, Any]]
    total: int
    offset: int
    limit: int
    corrupt_lines: list[int]
