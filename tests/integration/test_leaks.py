"""Small leaks, over real HTTP on the fake engine (`tests/helpers/fake_server.py`): what the public
`/health` and error bodies may say, and the request id that leads from an answer to the log.

* `/health` is public: states and short, stable reasons only; the paths and loader errors are in
  the log and in `/metrics` (behind the key, `health`).
* An engine failure is a stable message naming the request id; the exception is in the log under
  that id. Every response carries `X-Request-ID` (the server's own, never the client's).
"""

from __future__ import annotations

import time

import httpx
import pytest

from tests.conftest import start_server
from tests.helpers.fake_server import write_fake_gguf
from tests.helpers.launch import FAKE_SERVER, start_fake_server
from tests.helpers.sse import DONE, assert_envelope, assert_error_event, sse_events

CHAT = [{"role": "user", "content": "hello there"}]
ENGINE_MESSAGE = "the model failed during generation; see the server log for request "


def health_when(server, done, timeout: float = 60) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.get(server.base_url + "/health", timeout=10)
        if done(response.json()) or time.monotonic() > deadline:
            return response
        time.sleep(0.1)


def health_detail(server) -> dict:
    response = httpx.get(server.base_url + "/metrics", headers=server.headers(), timeout=10)
    assert response.status_code == 200
    return response.json()["health"]


# ---- /health -------------------------------------------------------------------------------------


def test_a_model_that_fails_to_load_shows_a_stable_reason_and_no_path_on_health(tmp_path):
    models = write_fake_gguf(tmp_path / "secret-place" / "models").parent
    loader_error = f"failed to open {models}/fake-chat.gguf: errno 13 (permission denied)"
    server = start_server(tmp_path, wait_healthy=False, script=FAKE_SERVER, MODELS_DIR=str(models), MODEL_NAME="",
                          FAKE_LOAD_ERROR=loader_error)
    try:
        health = health_when(server, lambda body: body["model_state"] != "loading")
        assert health.status_code == 503, health.text
        assert health.json() == {
            "status": "failed", "model": "fake-chat.gguf", "model_state": "failed",
            "error": "the default model failed to load",
            "embedding_model": "all-MiniLM-L6-v2", "embedding_state": "ready",
        }
        detail = health_detail(server)  # behind the key: the whole story
        assert detail["model_state"] == "failed" and loader_error in detail["model_error"]
        assert httpx.get(server.base_url + "/metrics", timeout=10).status_code == 401
        assert loader_error in server.log()
    finally:
        server.stop()


def test_no_default_model_shows_a_stable_reason_without_the_folder(tmp_path):
    models = tmp_path / "secret-place" / "models"
    write_fake_gguf(models, "first.gguf")
    write_fake_gguf(models, "second.gguf")
    server = start_server(tmp_path, wait_healthy=False, script=FAKE_SERVER, MODELS_DIR=str(models), MODEL_NAME="")
    try:
        health = health_when(server, lambda body: body["embedding_state"] != "loading")
        assert health.status_code == 503
        body = health.json()
        assert body["status"] == "failed" and body["model"] is None and body["model_state"] == "failed"
        assert body["error"] == "several .gguf models in MODELS_DIR and no MODEL_NAME to choose one"
        assert "secret-place" not in health.text
        detail = health_detail(server)["model_error"]
        assert str(models) in detail and "first.gguf" in detail and "MODEL_NAME" in detail
    finally:
        server.stop()


# ---- engine failures and the request id ----------------------------------------------------------


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    server = start_fake_server(tmp_path_factory.mktemp("leaks"))
    yield server
    assert server.stop() == 0, server.log()[-3000:]


def queue_script(server, script: list) -> None:
    assert httpx.post(server.base_url + "/_fake/scripts", json={"scripts": [script]}, timeout=10).status_code == 200


def log_line(server, request_id: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in server.log().splitlines() if request_id in line]
        if lines or time.monotonic() > deadline:
            assert lines, f"request {request_id} not in the log"
            return lines[0]
        time.sleep(0.05)


@pytest.mark.parametrize("path, body", [
    ("/v1/chat/completions", {"messages": CHAT}),
    ("/v1/completions", {"prompt": "hello there"}),
])
def test_an_engine_failure_says_a_stable_message_and_the_log_has_the_detail_under_its_request_id(fake, path, body):
    queue_script(fake, ["a", "b", {"raise": "cannot read /srv/secret/weights.bin at 0x7f00"}])
    with httpx.Client(base_url=fake.base_url, headers=fake.headers(), timeout=30) as client:
        response = client.post(path, json=body)
    error = assert_envelope(response, 500)
    request_id = response.headers["x-request-id"]
    assert error["code"] == "engine_error" and error["message"] == ENGINE_MESSAGE + request_id
    assert "/srv/secret" not in response.text and "EngineFailed" not in response.text
    assert "cannot read /srv/secret/weights.bin" in log_line(fake, request_id)


def test_an_engine_failure_mid_stream_names_the_request_id_of_the_stream(fake):
    queue_script(fake, ["Hel", "lo", {"raise": "segfault-ish in /srv/secret/lib.so"}])
    with httpx.Client(base_url=fake.base_url, headers=fake.headers(), timeout=30) as client:
        with client.stream("POST", "/v1/chat/completions", json={"messages": CHAT, "stream": True}) as response:
            raw = response.read().decode()
    assert response.status_code == 200
    events = sse_events(raw)
    assert events[-1] == DONE
    request_id = response.headers["x-request-id"]
    error = assert_error_event(events[-2])
    assert error["code"] == "engine_error" and error["message"] == ENGINE_MESSAGE + request_id
    assert "/srv/secret" not in raw
    assert "/srv/secret/lib.so" in log_line(fake, request_id)


def test_every_response_has_its_own_request_id_and_never_the_clients(fake):
    spoofed = {"X-Request-ID": "client-chosen-id"}
    with httpx.Client(base_url=fake.base_url, timeout=30) as client:
        responses = [
            client.get("/health", headers=spoofed),
            client.get("/"),
            client.get("/v1/models"),  # 401
            client.get("/v1/models", headers=fake.headers()),
            client.get("/no/such/path", headers=fake.headers()),  # 404
            client.post("/v1/completions", headers=fake.headers(), json={"prompt": "hi", "no_such_field": 1}),  # 400
            client.post("/v1/completions", headers=fake.headers(), json={"prompt": "hi", "max_tokens": 2}),
        ]
    assert [r.status_code for r in responses] == [200, 200, 401, 200, 404, 400, 200]
    ids = [r.headers.get("x-request-id") for r in responses]
    assert all(ids) and len(set(ids)) == len(ids) and "client-chosen-id" not in ids, ids
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
