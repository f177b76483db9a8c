"""The training routes' status codes in-process: ingest, list, read, delete, and each refusal.

Embeddings here come from the fake engine; tests/integration/test_training_api.py checks stored
embeddings against the real model, concurrency over HTTP, and kill -9.
"""

from __future__ import annotations

import pytest

from tests.helpers.sse import assert_envelope

pytestmark = pytest.mark.asyncio(loop_scope="module")

INGEST = "/v1/training/ingest"
DATASETS = "/v1/training/datasets"
EXAMPLE = {"prompt": "How do I reset my password?", "response": "Settings > Account."}


async def test_ingest_then_list_read_and_delete(served):
    client, key = served.client, served.headers()
    response = await client.post(INGEST, json={"dataset": "faq", "examples": [EXAMPLE, {**EXAMPLE, "prompt": "Other?"}]}, headers=key)
    assert response.status_code == 200, response.text
    assert response.json() == {"object": "training.ingest", "dataset": "faq", "inserted": 2, "updated": 0, "skipped": 0, "size": 2}
    again = (await client.post(INGEST, json={"dataset": "faq", "examples": [EXAMPLE], "store_embeddings": True}, headers=key)).json()
    assert (again["inserted"], again["skipped"]) == (0, 1)
    listing = (await client.get(DATASETS, headers=key)).json()
    assert [d["name"] for d in listing["data"]] == ["faq"] and listing["data"][0]["examples"] == 2
    page = (await client.get(f"{DATASETS}/faq", params={"limit": 1, "offset": 1}, headers=key)).json()
    assert page["total"] == 2 and [r["prompt"] for r in page["data"]] == ["Other?"]
    deleted = await client.delete(f"{DATASETS}/faq", headers=key)
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    assert assert_envelope(await client.get(f"{DATASETS}/faq", headers=key), 404)["code"] == "not_found"
    assert assert_envelope(await client.delete(f"{DATASETS}/faq", headers=key), 404)["code"] == "not_found"


@pytest.mark.parametrize("body, param", [
    ({"examples": [EXAMPLE]}, "dataset"),
    ({"dataset": "../etc", "examples": [EXAMPLE]}, "dataset"),
    ({"dataset": "ok", "examples": []}, "examples"),
    ({"dataset": "ok", "examples": [{"prompt": "p"}]}, "examples.0.response"),
    ({"dataset": "ok", "examples": [EXAMPLE, {**EXAMPLE, "response": 3}]}, "examples.1.response"),
    ({"dataset": "ok", "examples": [{**EXAMPLE, "meta": [1]}]}, "examples.0.meta"),
    ({"dataset": "ok", "examples": [{**EXAMPLE, "id": ""}]}, "examples.0.id"),
    ({"dataset": "ok", "examples": ["x"]}, "examples.0"),
    ({"dataset": "ok", "examples": "x"}, "examples"),
    ({"dataset": "ok", "examples": [{**EXAMPLE, "id": "x" * 300}]}, "examples.0.id"),
    ({"dataset": "ok", "examples": [EXAMPLE] * 1001}, "examples"),
    ({"dataset": "ok", "examples": [EXAMPLE], "surprise": 1}, "surprise"),
])
async def test_bad_ingests_are_400_naming_the_field_and_write_nothing(served, body, param):
    error = assert_envelope(await served.client.post(INGEST, json=body, headers=served.headers()), 400)
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert not any(served.settings.training_data_dir.glob("ok*.jsonl"))


async def test_a_name_differing_only_in_case_is_400(served):
    key = served.headers()
    assert (await served.client.post(INGEST, json={"dataset": "Notes", "examples": [EXAMPLE]}, headers=key)).status_code == 200
    error = assert_envelope(await served.client.post(INGEST, json={"dataset": "notes", "examples": [EXAMPLE]}, headers=key), 400)
    assert error["code"] == "dataset_name_conflict"
    await served.client.delete(f"{DATASETS}/Notes", headers=key)


@pytest.mark.parametrize("params, param", [({"limit": 0}, "limit"), ({"limit": 1001}, "limit"), ({"limit": "ten"}, "limit"),
                                           ({"offset": -1}, "offset"), ({"offset": "x"}, "offset")])
async def test_bad_page_parameters_are_400(served, params, param):
    key = served.headers()
    await served.client.post(INGEST, json={"dataset": "paged", "examples": [EXAMPLE]}, headers=key)
    error = assert_envelope(await served.client.get(f"{DATASETS}/paged", params=params, headers=key), 400)
    assert error["param"] == param
