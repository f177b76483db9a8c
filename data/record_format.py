"""What a dataset line holds: a record built from an ingested example, and when two are the same.

`{"id", "prompt", "response", "meta", "created_at"[, "updated_at"][, "embedding_dtype", "embedding"]}`;
the id is the example's own, else the first 32 hex digits (128 bits) of the SHA-256 of its UTF-8
prompt. `embedding_dtype` is what the model computed the embedding in ("float32" or "bfloat16"; the
vector itself is stored as float32 numbers either way), so that a dataset mixing them can be told
apart. Records written before the field existed have none: their embeddings were all float32.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone


def example_id(prompt: str) -> str:
    """The id of an example that brings none: SHA-256 of the UTF-8 prompt, 32 hex digits."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:32]


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def same(stored: dict, new: dict) -> bool:
    return (all(stored.get(k) == new[k] for k in ("prompt", "response", "meta"))
            and ("embedding" not in new or "embedding" in stored))


def updated(stored: dict, new: dict) -> dict:
    record = dict(new, created_at=stored.get("created_at", new["created_at"]), updated_at=new["created_at"])
    for key in ("embedding_dtype", "embedding"):  # keep the documented key order: these last
        if key in record:
            record[key] = record.pop(key)
    return record


def prepare(examples: list[dict], embeddings: list | None, embedding_dtype: str = "float32") -> list[dict]:
    """Records to store. The examples' fields were checked by the request model (api/protocol_training.py)."""
    if embeddings is not None and len(embeddings) != len(examples):
        raise ValueError(f"{len(embeddings)} embeddings for {len(examples)} examples")
    stamp, records = now(), []
    for i, example in enumerate(examples):
        record = {"id": example.get("id") or example_id(example["prompt"]), "prompt": example["prompt"],
                  "response": example["response"], "meta": example.get("meta") or {}, "created_at": stamp}
        if embeddings is not None:
            record["embedding_dtype"] = embedding_dtype
            record["embedding"] = [float(x) for x in embeddings[i]]
        records.append(record)
    return records
