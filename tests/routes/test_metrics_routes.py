"""/metrics in-process: the schedulers' listeners and live stats are wired (server.py), JSON and Prometheus."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_a_generation_and_an_embedding_batch_reach_both_formats(served):
    key = served.headers()
    served.chat.enqueue(["a", "b", "c"])
    assert (await served.client.post("/v1/completions", json={"prompt": "one two"}, headers=key)).status_code == 200
    assert (await served.client.post("/v1/embeddings", json={"input": ["x", "y"]}, headers=key)).status_code == 200
    snapshot = (await served.client.get("/metrics", headers=key)).json()
    generation, embedding = snapshot["schedulers"]["generation"], snapshot["schedulers"]["embedding"]
    assert generation["completed"] == 1 and generation["queue_depth"] == 0 and generation["max_queue"] == served.settings.max_queue
    assert snapshot["tokens"]["prompt"] == 2 and snapshot["tokens"]["completion"] == 3
    assert snapshot["models"]["fake-chat.gguf"]["state"] == "ready"
    assert embedding["batches"] == 1 and embedding["inputs"] == 2 and embedding["queue_wait_s"]["count"] == 1
    assert embedding["dtype"] == snapshot["health"]["embedding_dtype"] == "float32"
    text = (await served.client.get("/metrics", params={"format": "prometheus"}, headers=key)).text
    assert 'llm_server_queue_depth{scheduler="generation"} 0.0' in text
    assert 'llm_server_queue_depth{scheduler="embedding"} 0.0' in text
    assert 'llm_server_model_loaded{model="fake-chat.gguf",state="ready"} 1.0' in text
    assert 'llm_server_embedding_dtype{dtype="float32"} 1.0' in text
    assert 'llm_server_completion_tokens_total{model="fake-chat.gguf"} 3.0' in text
