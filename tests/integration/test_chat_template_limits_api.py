"""Chat templates cannot hang the server, over real HTTP: the real app (routes, scheduler, registry,
template sandbox) on the scriptable fake engine, with model files whose templates loop, fill memory
or are slow on long messages. Each is answered with a clear error while other requests keep being
served.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.helpers.fake_server import write_fake_gguf
from tests.helpers.launch import start_fake_server
from tests.unit.test_chat_template_limits import HUGE_STRING, NESTED_RANGE, SLACK_S, SLOW_ON_LONG, TIME_LIMIT_S, write_gguf

CHAT = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("templates")
    models = write_fake_gguf(tmp / "models").parent  # fake-chat.gguf: a plain ChatML template, the default
    for name, template in [("nested-range.gguf", NESTED_RANGE), ("huge-string.gguf", HUGE_STRING), ("slow-on-long.gguf", SLOW_ON_LONG)]:
        write_gguf(models, name, template)
    server = start_fake_server(tmp, MODELS_DIR=str(models), MODEL_NAME="fake-chat.gguf")
    yield server
    assert server.stop() == 0, server.log()[-3000:]


def chat(server, model: str, messages=HELLO, timeout: float = 30) -> httpx.Response:
    with httpx.Client(base_url=server.base_url, headers=server.headers(), timeout=timeout) as client:
        return client.post(CHAT, json={"model": model, "messages": messages, "max_tokens": 2})


def error_of(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


@pytest.mark.parametrize("name, reason", [("nested-range.gguf", "within 2 s"), ("huge-string.gguf", "memory")])
def test_a_runaway_template_is_refused_with_a_clear_500_while_other_requests_are_served(server, name, reason):
    with ThreadPoolExecutor(1) as pool:
        refused = pool.submit(chat, server, name)
        served = 0
        while not refused.done() or not served:
            assert chat(server, "fake-chat.gguf", timeout=5).status_code == 200
            served += 1
    error = error_of(refused.result(), 500)
    assert error["code"] == "model_load_failed" and name in error["message"] and reason in error["message"], error
    started = time.monotonic()  # the verdict is kept: no second render
    again = error_of(chat(server, name), 500)["message"]
    assert again.split(" (request ")[0] == error["message"].split(" (request ")[0]  # a 5xx names its own request id
    assert time.monotonic() - started < 1.0
    assert httpx.get(server.base_url + "/health").status_code == 200


def test_a_slow_but_legal_render_is_a_clear_400_at_the_time_limit(server):
    assert chat(server, "slow-on-long.gguf", [{"role": "user", "content": "short"}]).status_code == 200
    started = time.monotonic()
    error = error_of(chat(server, "slow-on-long.gguf", [{"role": "user", "content": "y" * 12000}]), 400)
    assert time.monotonic() - started < TIME_LIMIT_S + SLACK_S
    assert error["code"] == "chat_template_limit" and error["param"] == "messages" and "within 2 s" in error["message"], error
    assert chat(server, "slow-on-long.gguf", [{"role": "user", "content": "short"}]).status_code == 200
    assert chat(server, "fake-chat.gguf").status_code == 200
