"""An embedding model computing in bfloat16, in-process: what /metrics, /health, /v1/models, the
embeddings route and stored training records say about it (the fake engine set to bfloat16)."""

from __future__ import annotations

import asyncio
import base64

import numpy as np
import orjson
import pytest
import pytest_asyncio

from models.fake_embedding import FakeEmbeddingEngine
from tests.helpers.in_process import served_app

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bf16(tmp_path_factory):
    async with served_app(tmp_path_factory.mktemp("bf16"), embedding=FakeEmbeddingEngine(dtype="bfloat16")) as app:
        for _ in range(200):  # the model loads in the background, even a fake one
            if app.app.ctx.embeddings.state == "ready":
                break
            await asyncio.sleep(0.01)
        yield app


async def test_metrics_and_the_health_detail_say_which_dtype_runs_and_why(bf16):
    key = bf16.headers()
    snapshot = (await bf16.client.get("/metrics", headers=key)).json()
    assert snapshot["schedulers"]["embedding"]["dtype"] == "bfloat16"
    assert snapshot["health"]["embedding_dtype"] == "bfloat16"
    assert snapshot["health"]["embedding_dtype_reason"] == "fake engine set to bfloat16"
    text = (await bf16.client.get("/metrics", params={"format": "prometheus"}, headers=key)).text
    assert 'llm_server_embedding_dtype{dtype="bfloat16"} 1.0' in text and 'dtype="float32"' not in text


async def test_the_model_keeps_its_name_and_vectors_stay_float32(bf16):
    key, name = bf16.headers(), bf16.settings.embedding_model
    listed = [m["id"] for m in (await bf16.client.get("/v1/models", headers=key)).json()["data"]]
    assert name in listed and not any("bf16" in m or "bfloat16" in m for m in listed)
    body = (await bf16.client.post("/v1/embeddings", json={"input": "one two", "encoding_format": "base64"},
                                   headers=key)).json()
    row = np.frombuffer(base64.b64decode(body["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_array_equal(row, bf16.embedding.vector("one two"))
    assert body["model"] == name and body["usage"]["prompt_tokens"] == 4


async def test_stored_embeddings_record_their_dtype(bf16):
    example = {"prompt": "p", "response": "r"}
    response = await bf16.client.post("/v1/training/ingest", headers=bf16.headers(),
                                      json={"dataset": "mixed", "examples": [example], "store_embeddings": True})
    assert response.status_code == 200, response.text
    path = bf16.settings.training_data_dir / "mixed.jsonl"
    record = orjson.loads(path.read_bytes().splitlines()[0])
    assert list(record)[-2:] == ["embedding_dtype", "embedding"] and record["embedding_dtype"] == "bfloat16"
    page = (await bf16.client.get("/v1/training/datasets/mixed", headers=bf16.headers())).json()
    assert page["data"][0]["embedding_dtype"] == "bfloat16"
