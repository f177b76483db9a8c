"""`/metrics` on the real server: counters move by exactly what known requests did, the Prometheus
text parses with prometheus-client's own parsers, and the endpoint needs a key.

The live server is shared with other tests, so every check compares two snapshots taken around
the requests of the test itself (and counts the `/metrics` calls between them too).
"""

from __future__ import annotations

import json
import random
import threading
import time

import httpx
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import start_server

CHAT = "POST /v1/chat/completions"
SHORT_CHAT = {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 3, "temperature": 0}


def snapshot(http: httpx.Client) -> dict:
    response = http.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


def requests_of(snap: dict, endpoint: str, status: int) -> int:
    return snap["requests"]["by_endpoint"].get(endpoint, {}).get("by_status", {}).get(str(status), 0)


def tokens_of(snap: dict, model: str, kind: str) -> int:
    return snap["tokens"]["by_model"].get(model, {}).get(kind, 0)


def test_counters_move_by_exactly_what_was_asked(http, default_model):
    before = snapshot(http)
    plain = http.post("/v1/chat/completions", json=SHORT_CHAT)
    assert plain.status_code == 200
    assert {"x-queue-time", "x-time-to-first-token", "x-generation-time"} <= set(plain.headers)
    usages = [plain.json()["usage"]]
    with http.stream("POST", "/v1/chat/completions",
                     json={**SHORT_CHAT, "stream": True, "stream_options": {"include_usage": True}}) as stream:
        assert stream.status_code == 200
        assert "x-queue-time" in stream.headers
        events = [line[6:] for line in stream.iter_lines() if line.startswith("data: ") and line != "data: [DONE]"]
    usages.append(json.loads(events[-1])["usage"])
    assert http.post("/v1/chat/completions", json={"messages": []}).status_code == 400
    assert http.get("/no/such/path/42").status_code == 404
    after = snapshot(http)

    assert requests_of(after, CHAT, 200) - requests_of(before, CHAT, 200) == 2  # the stream counts too
    assert requests_of(after, CHAT, 400) - requests_of(before, CHAT, 400) == 1
    assert requests_of(after, "GET unmatched", 404) - requests_of(before, "GET unmatched", 404) == 1
    assert not any("/no/such" in name for name in after["requests"]["by_endpoint"])  # templates, not raw paths
    assert requests_of(after, "GET /metrics", 200) - requests_of(before, "GET /metrics", 200) == 1  # `before` itself
    assert after["requests"]["total"] - before["requests"]["total"] == 5
    for kind in ("prompt", "completion"):
        assert tokens_of(after, default_model, kind) - tokens_of(before, default_model, kind) == sum(
            u[f"{kind}_tokens"] for u in usages
        )
    assert after["tokens"]["prompt"] - before["tokens"]["prompt"] == sum(u["prompt_tokens"] for u in usages)
    model_before = before["models"].get(default_model, {}).get("generations", 0)
    assert after["models"][default_model]["generations"] - model_before == 2
    assert after["models"][default_model]["state"] == "ready"
    generation = after["schedulers"]["generation"]
    assert generation["completed"] - before["schedulers"]["generation"]["completed"] == 2
    assert generation["max_queue"] == 32 and generation["queue_depth"] == 0 and generation["running"] == 0
    for name in ("queue_wait_s", "time_to_first_token_s", "generation_s", "tokens_per_s"):
        assert generation[name]["count"] >= 2 and generation[name]["p50"] is not None
        assert generation[name]["p50"] <= generation[name]["p95"] <= generation[name]["max"]
    process = after["process"]
    assert process["rss_bytes"] > 10_000_000 and process["threads"] >= 1 and process["uptime_s"] > 0
    assert after["uptime_s"] > 0 and after["server_time"].endswith("Z") and after["default_model"] == default_model


def test_embedding_batches_are_counted(http):
    before = snapshot(http)["schedulers"]["embedding"]
    response = http.post("/v1/embeddings", json={"input": ["one", "two", "three"]})
    assert response.status_code == 200
    after = snapshot(http)["schedulers"]["embedding"]
    assert after["inputs"] - before["inputs"] == 3
    assert after["batches"] - before["batches"] == 1  # a lone request on an idle model is one batch
    assert after["batch_size"]["histogram"]["4"] - before["batch_size"]["histogram"]["4"] == 1  # 2 < 3 <= 4
    assert after["queue_depth"] == 0 and after["max_queue"] == 4096


def test_prometheus_text_parses_and_agrees_with_json(http, default_model):
    snap = snapshot(http)
    response = http.get("/metrics", params={"format": "prometheus"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = {family.name: family for family in text_string_to_metric_families(response.text)}
    assert families and all(name.startswith("llm_server_") for name in families)

    def value(family: str, sample: str, **labels: str) -> float:
        matches = [s.value for s in families[family].samples if s.name == sample and labels.items() <= s.labels.items()]
        assert len(matches) == 1, (family, labels, matches)
        return matches[0]

    assert value("llm_server_requests", "llm_server_requests_total", endpoint="/v1/chat/completions",
                 method="POST", status="200") == requests_of(snap, CHAT, 200)
    assert value("llm_server_prompt_tokens", "llm_server_prompt_tokens_total", model=default_model) == tokens_of(
        snap, default_model, "prompt")
    assert value("llm_server_queue_max", "llm_server_queue_max", scheduler="generation") == 32
    assert value("llm_server_queue_depth", "llm_server_queue_depth", scheduler="embedding") == 0
    assert value("llm_server_model_loaded", "llm_server_model_loaded", model=default_model, state="ready") == 1
    assert value("llm_server_process_resident_memory_bytes", "llm_server_process_resident_memory_bytes") > 10_000_000
    assert families["llm_server_generation_time_to_first_token_seconds"].type == "histogram"
    assert families["llm_server_embedding_batch_size"].type == "histogram"

    by_accept = http.get("/metrics", headers={"Accept": "text/plain"})
    assert by_accept.headers["content-type"].startswith("text/plain")
    assert list(text_string_to_metric_families(by_accept.text))
    openmetrics = http.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert any(f.name == "llm_server_requests" for f in openmetrics_families(openmetrics.text))


def test_metrics_needs_a_key(live_server, http):
    before = snapshot(http)
    for headers, params in (({}, {}), (live_server.headers("sk-wrong"), {}), ({}, {"format": "prometheus"})):
        response = httpx.get(live_server.base_url + "/metrics", headers=headers, params=params)
        assert response.status_code == 401
        assert response.headers["content-type"].startswith("application/json")
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error" and error["code"] == "invalid_api_key" and error["message"]
    after = snapshot(http)
    assert requests_of(after, "GET /metrics", 401) - requests_of(before, "GET /metrics", 401) == 3


def test_unknown_methods_are_counted_as_other(live_server, http):
    """`curl -X M$RANDOM`, without a key, must not add a label value per method (section 6 of issue 11)."""
    methods = [f"M{random.randrange(10**8, 10**9)}" for _ in range(2)]
    for method, path in zip(methods, ("/v1/models", "/no/such/path")):
        response = httpx.request(method, live_server.base_url + path)  # no key
        assert response.status_code < 500, response.text
    text = http.get("/metrics", params={"format": "prometheus"}).text
    for method in methods:
        assert method not in text
    requests = [s for f in text_string_to_metric_families(text) if f.name == "llm_server_requests" for s in f.samples
                if s.name == "llm_server_requests_total"]
    assert {s.labels["method"] for s in requests} <= {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS",
                                                      "TRACE", "CONNECT", "OTHER"}
    assert sum(s.value for s in requests if s.labels["method"] == "OTHER") >= 2
    assert 'method="OTHER"' in text


def test_a_client_that_leaves_is_counted_as_a_cancellation(live_server, http):
    before = snapshot(http)["schedulers"]["generation"]["cancelled"]
    body = {"messages": [{"role": "user", "content": "Count from one to one hundred."}], "max_tokens": 400, "stream": True}
    with httpx.Client(base_url=live_server.base_url, headers=live_server.headers(), timeout=120) as client:
        with client.stream("POST", "/v1/chat/completions", json=body) as stream:
            assert stream.status_code == 200
            next(stream.iter_lines())  # the first chunk: generation is running; now leave
    deadline = time.monotonic() + 60
    after = snapshot(http)
    while (after["schedulers"]["generation"]["cancelled"] == before or after["schedulers"]["generation"]["running"]) \
            and time.monotonic() < deadline:
        time.sleep(0.5)
        after = snapshot(http)
    assert after["schedulers"]["generation"]["cancelled"] - before == 1
    assert after["schedulers"]["generation"]["running"] == 0


@pytest.fixture(scope="module")
def tiny_queue_server(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("tiny-queue"), MAX_QUEUE="1")
    yield server
    server.stop()


def test_429s_are_counted_exactly(tiny_queue_server):
    server = tiny_queue_server
    statuses: list[int] = []

    def ask() -> None:
        with httpx.Client(base_url=server.base_url, headers=server.headers(), timeout=300) as client:
            statuses.append(client.post("/v1/chat/completions", json={**SHORT_CHAT, "max_tokens": 8}).status_code)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    # One job runs and one waits (MAX_QUEUE=1), so of four at once at least two are refused.
    assert statuses.count(429) >= 2 and set(statuses) <= {200, 429}
    snap = httpx.get(server.base_url + "/metrics", headers=server.headers()).json()
    generation = snap["schedulers"]["generation"]
    assert generation["rejected"] == statuses.count(429)
    assert requests_of(snap, CHAT, 429) == statuses.count(429)
    assert requests_of(snap, CHAT, 200) == statuses.count(200) == generation["completed"]
    assert generation["max_queue"] == 1 and generation["queue_depth"] == 0
    text = httpx.get(server.base_url + "/metrics?format=prometheus", headers=server.headers()).text
    rejected = [s for f in text_string_to_metric_families(text) if f.name == "llm_server_queue_rejected" for s in f.samples
                if s.labels == {"scheduler": "generation"}]
    assert [s.value for s in rejected] == [statuses.count(429)]
