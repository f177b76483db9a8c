"""Every error the server can give, in OpenAI's envelope with the right status, in-process.

Each exception type of `errors.py` is raised where it would be (by the engine, or by the request
itself), and the route answers with that type's status, `type` and `code`. 413 and 431 come from
Sanic's own HTTP parser, which the ASGI client skips: test_http_limits.py has them.
"""

from __future__ import annotations

import inspect

import pytest

import errors
from tests.helpers.in_process import served_app
from tests.helpers.sse import assert_envelope

CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "hello there"}]
pytestmark = pytest.mark.asyncio(loop_scope="module")
ERROR_TYPES = [cls for _, cls in inspect.getmembers(errors, inspect.isclass) if issubclass(cls, errors.ServerError)]


def _raised(cls: type[errors.ServerError]) -> errors.ServerError:
    return cls("raised for the test", retry_after_s=3) if cls is errors.QueueFull else cls("raised for the test")


@pytest.mark.parametrize("cls", ERROR_TYPES, ids=lambda cls: cls.__name__)
async def test_each_error_type_from_the_engine_keeps_its_status_type_and_code(served, cls):
    served.chat.enqueue(["a", _raised(cls)])
    response = await served.client.post(CHAT, json={"messages": MESSAGES}, headers=served.headers())
    error = assert_envelope(response, cls.status)
    assert (error["type"], error["code"]) == (cls.type, cls.code)
    assert response.headers["x-request-id"]
    if cls.status >= 500:
        assert response.headers["x-request-id"] in error["message"]  # a report leads to the log line
    if cls is errors.QueueFull:
        assert response.headers["retry-after"] == "3"


async def test_an_unexpected_engine_exception_is_a_stable_500_that_names_the_request(served):
    served.chat.enqueue(["a", RuntimeError("native detail /home/user/model.gguf")])
    response = await served.client.post(CHAT, json={"messages": MESSAGES}, headers=served.headers())
    error = assert_envelope(response, 500)
    assert (error["type"], error["code"]) == ("server_error", "engine_error")
    assert "native detail" not in response.text and response.headers["x-request-id"] in error["message"]


async def test_request_errors_from_the_request_itself(served):
    post = served.client.post
    key = served.headers()
    cases = [
        (await post(CHAT, content=b"{not json", headers={**key, "content-type": "application/json"}), 400, "invalid_request", None),
        (await post(CHAT, json={"messages": MESSAGES, "temperature": 9}, headers=key), 400, "invalid_request", "temperature"),
        (await post(CHAT, json={"messages": MESSAGES, "model": "nope"}, headers=key), 404, "model_not_found", "model"),
        (await served.client.get("/v1/nothing", headers=key), 404, "not_found", None),
        (await served.client.delete("/v1/models", headers=key), 405, "method_not_allowed", None),
        (await post(CHAT, content=b"{}", headers={**key, "content-type": "text/plain"}), 415, "unsupported_media_type", None),
        (await post(CHAT, json={"messages": MESSAGES}, headers={**key, "host": "evil.example"}), 421, "host_not_allowed", None),
    ]
    for response, status, code, param in cases:
        error = assert_envelope(response, status)
        assert (error["code"], error["param"]) == (code, param), error
    assert "GET" in cases[4][0].headers["allow"]


@pytest.mark.parametrize("path, method", [("/v1/nothing", "get"), ("/v1/models", "delete"), ("/v1/training/datasets/x", "get")])
async def test_a_missing_key_is_401_before_any_404_or_405(served, path, method):
    response = await getattr(served.client, method)(path)
    assert assert_envelope(response, 401)["code"] == "invalid_api_key"
    wrong = await getattr(served.client, method)(path, headers=served.headers("sk-wrong"))
    assert assert_envelope(wrong, 401)["code"] == "invalid_api_key"


async def test_a_request_bigger_than_the_queue_is_refused_whole_with_retry_after(tmp_path):
    async with served_app(tmp_path, MAX_QUEUE="2") as served:
        body = {"prompt": ["one", "two"], "n": 2, "max_tokens": 2}
        error = assert_envelope(await served.client.post("/v1/completions", json=body, headers=served.headers()), 429)
        assert error["code"] == "queue_full"
        assert served.chat.prompts == []  # nothing of it ran


@pytest.mark.parametrize("path, body, param", [(CHAT, {"messages": MESSAGES}, "messages"), ("/v1/completions", {"prompt": "x"}, "prompt")])
async def test_a_prompt_over_the_window_names_the_field_that_held_it(served, path, body, param):
    served.chat.enqueue([errors.ContextLengthExceeded("the prompt alone exceeds the window")])  # the engine names no field
    for stream in (False, True):
        if stream:
            served.chat.enqueue([errors.ContextLengthExceeded("the prompt alone exceeds the window")])
        response = await served.client.post(path, json={**body, "stream": stream}, headers=served.headers())
        error = assert_envelope(response, 400)
        assert (error["code"], error["param"]) == ("context_length_exceeded", param)
