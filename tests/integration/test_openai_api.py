"""The OpenAI chat and text completion API on the real default model, over real HTTP.

Clients are the official `openai` SDK, httpx (raw JSON and raw SSE) and curl (the README's
examples). Requests are greedy (`temperature: 0`) wherever a test compares texts, so the same
request gives the same text and usage every time; `max_tokens` stays small to keep the suite fast.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gguf
import httpx
import openai
import pytest

from tests.conftest import API_KEY, ROOT, start_server
from tests.helpers.readme_examples import README_KEY, all_curl_examples, readme_curl_examples, run_readme_example

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
COUNTING = "1, 2, 3, 4,"  # greedy SmolLM2 keeps counting: long, predictable output
CHAT_FIELDS = {"id", "object", "created", "model", "choices", "usage", "system_fingerprint"}


# ---- helpers -------------------------------------------------------------------------------


def sse_payloads(raw: str) -> list[str]:
    """The `data:` payloads of an SSE body, checking the framing on the way."""
    assert raw.endswith("\n\n"), "every event ends with a blank line"
    events = raw[:-2].split("\n\n")
    assert all(event.startswith("data: ") and "\n" not in event for event in events), events
    return [event[len("data: ") :] for event in events]


def stream_raw(http: httpx.Client, path: str, body: dict) -> tuple[httpx.Response, list[str]]:
    with http.stream("POST", path, json={**body, "stream": True}) as response:
        raw = response.read().decode()
    return response, sse_payloads(raw) if response.status_code == 200 else [raw]


def chat_once(http: httpx.Client, **extra) -> dict:
    response = http.post("/v1/chat/completions", json={"messages": QUESTION, "temperature": 0, **extra})
    assert response.status_code == 200, response.text
    return response.json()


def counts(usage: dict) -> dict:
    """Usage without `prompt_tokens_details`: a repeated prompt is served from the prefix cache, with the same counts."""
    return {k: v for k, v in usage.items() if k != "prompt_tokens_details"}


def error_body(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert "Traceback" not in response.text
    return body["error"]


def metrics_of(server) -> dict:
    return httpx.get(server.base_url + "/metrics", headers=server.headers(), timeout=30).json()["schedulers"]["generation"]


def wait_for_idle_scheduler(server, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        generation = metrics_of(server)
        if generation["running"] == 0 and generation["queue_depth"] == 0:
            return generation
        assert time.monotonic() < deadline, f"scheduler never went idle: {generation}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def answer(http_module) -> dict:
    """The greedy answer to QUESTION with 16 tokens: the reference for stop, streaming and n tests."""
    return chat_once(http_module, max_tokens=16)


@pytest.fixture(scope="module")
def http_module(live_server):
    with httpx.Client(base_url=live_server.base_url, headers=live_server.headers(), timeout=180) as client:
        yield client


# ---- models ----------------------------------------------------------------------------------


def test_models_list_is_the_openai_list_of_every_gguf(http, openai_client, default_model):
    response = http.get("/v1/models")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"object", "data"}
    assert body["object"] == "list"
    for card in body["data"]:
        assert set(card) == {"id", "object", "created", "owned_by"}
        assert card["object"] == "model"
        assert isinstance(card["created"], int) and card["created"] > 1_600_000_000
        assert isinstance(card["owned_by"], str) and card["owned_by"]
    on_disk = sorted(p.name for p in (ROOT / "models").glob("*.gguf"))
    chat_ids = [card["id"] for card in body["data"] if card["id"].endswith(".gguf")]
    assert chat_ids == on_disk
    assert default_model in on_disk
    sdk_ids = [model.id for model in openai_client.models.list().data]
    assert sdk_ids == [card["id"] for card in body["data"]]


def test_root_and_health_describe_the_server(live_server, default_model):
    root = httpx.get(live_server.base_url + "/").json()
    assert root["default_model"] == default_model
    assert "POST /v1/chat/completions" in root["endpoints"] and "POST /v1/completions" in root["endpoints"]
    health = httpx.get(live_server.base_url + "/health")
    assert health.status_code == 200
    assert health.json()["model"] == default_model and health.json()["model_state"] == "ready"


# ---- chat ------------------------------------------------------------------------------------


def test_chat_plain_through_the_sdk(openai_client, default_model, answer):
    completion = openai_client.chat.completions.create(
        model=default_model, messages=QUESTION, max_tokens=16, temperature=0
    )
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == default_model
    assert abs(completion.created - time.time()) < 600
    [choice] = completion.choices
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert choice.message.content == answer["choices"][0]["message"]["content"]  # greedy: same text
    assert choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    usage = completion.usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert counts(usage.model_dump(exclude_none=True)) == counts(answer["usage"])
    if choice.finish_reason == "length":
        assert usage.completion_tokens == 16


def test_chat_raw_json_has_exactly_openais_fields(answer, default_model):
    assert set(answer) == CHAT_FIELDS
    assert answer["object"] == "chat.completion"
    assert answer["model"] == default_model
    assert set(answer["choices"][0]) == {"index", "message", "finish_reason", "logprobs"}
    assert answer["choices"][0]["message"]["role"] == "assistant"
    assert set(answer["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens", "prompt_tokens_details"}
    assert set(answer["usage"]["prompt_tokens_details"]) == {"cached_tokens"}


def test_chat_without_model_uses_the_default_and_content_parts_equal_a_string(http, answer, default_model):
    parts = [{"role": "user", "content": [{"type": "text", "text": "What is the capital "}, {"type": "text", "text": "of France?"}]}]
    response = http.post("/v1/chat/completions", json={"messages": parts, "max_tokens": 16, "temperature": 0})
    body = response.json()
    assert body["model"] == default_model
    assert body["choices"] == answer["choices"]
    assert counts(body["usage"]) == counts(answer["usage"])


def test_chat_streaming_through_the_sdk(openai_client, default_model, answer):
    stream = openai_client.chat.completions.create(
        model=default_model, messages=QUESTION, max_tokens=16, temperature=0, stream=True
    )
    chunks = list(stream)
    assert len(chunks) >= 3
    assert {chunk.id for chunk in chunks} == {chunks[0].id}
    assert chunks[0].id.startswith("chatcmpl-")
    assert all(chunk.object == "chat.completion.chunk" and chunk.model == default_model for chunk in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(chunk.choices[0].delta.role is None for chunk in chunks[1:])
    reasons = [chunk.choices[0].finish_reason for chunk in chunks]
    assert reasons[:-1] == [None] * (len(chunks) - 1)
    assert reasons[-1] == answer["choices"][0]["finish_reason"]
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    assert text == answer["choices"][0]["message"]["content"]
    assert all(chunk.usage is None for chunk in chunks)


def test_chat_streaming_raw_sse(http, answer):
    response, payloads = stream_raw(http, "/v1/chat/completions", {"messages": QUESTION, "max_tokens": 16, "temperature": 0})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert payloads[-1] == "[DONE]"
    assert "[DONE]" not in payloads[:-1]
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert chunks[0]["choices"] == [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None, "logprobs": None}]
    for chunk in chunks[1:-1]:
        [choice] = chunk["choices"]
        assert set(choice["delta"]) == {"content"} and choice["finish_reason"] is None
    assert chunks[-1]["choices"] == [
        {"index": 0, "delta": {}, "finish_reason": answer["choices"][0]["finish_reason"], "logprobs": None}
    ]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == answer["choices"][0]["message"]["content"]


def test_include_usage_adds_a_last_chunk_with_the_exact_usage(http, openai_client, default_model, answer):
    response, payloads = stream_raw(
        http,
        "/v1/chat/completions",
        {"messages": QUESTION, "max_tokens": 16, "temperature": 0, "stream_options": {"include_usage": True}},
    )
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert payloads[-1] == "[DONE]"
    assert chunks[-1]["choices"] == []
    assert counts(chunks[-1]["usage"]) == counts(answer["usage"])
    assert all(chunk["usage"] is None for chunk in chunks[:-1])
    assert chunks[-2]["choices"][0]["finish_reason"] == answer["choices"][0]["finish_reason"]
    # and the SDK sees the same
    sdk_chunks = list(
        openai_client.chat.completions.create(
            model=default_model, messages=QUESTION, max_tokens=16, temperature=0, stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert sdk_chunks[-1].choices == []
    assert counts(sdk_chunks[-1].usage.model_dump(exclude_none=True)) == counts(answer["usage"])


def test_max_completion_tokens_is_max_tokens(http, answer):
    short = chat_once(http, max_completion_tokens=3)
    assert short["choices"][0]["finish_reason"] == "length"
    assert short["usage"]["completion_tokens"] == 3
    assert answer["choices"][0]["message"]["content"].startswith(short["choices"][0]["message"]["content"])


def test_n_two_gives_two_choices_and_counts_the_prompt_once(http, answer):
    body = chat_once(http, max_tokens=5, n=2)
    assert [choice["index"] for choice in body["choices"]] == [0, 1]
    first = body["choices"][0]["message"]["content"]
    assert answer["choices"][0]["message"]["content"].startswith(first) and first
    for choice in body["choices"]:
        assert choice["message"] == {"role": "assistant", "content": first}  # greedy: both the same
        assert choice["finish_reason"] == "length"
    usage = body["usage"]
    assert usage["prompt_tokens"] == answer["usage"]["prompt_tokens"]
    assert usage["completion_tokens"] == 2 * 5
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_n_two_streamed_sends_each_choice_with_its_role_and_finish(http, answer):
    _, payloads = stream_raw(http, "/v1/chat/completions", {"messages": QUESTION, "max_tokens": 5, "temperature": 0, "n": 2})
    chunks = [json.loads(p)["choices"][0] for p in payloads[:-1]]
    assert [c["index"] for c in chunks] == sorted(c["index"] for c in chunks)  # choice 0, then choice 1
    texts = []
    for index in (0, 1):
        mine = [c for c in chunks if c["index"] == index]
        assert mine[0]["delta"] == {"role": "assistant", "content": ""}
        assert mine[-1]["finish_reason"] == "length"
        assert [c["finish_reason"] for c in mine[:-1]] == [None] * (len(mine) - 1)
        texts.append("".join(c["delta"].get("content", "") for c in mine))
    assert texts[0] == texts[1] and answer["choices"][0]["message"]["content"].startswith(texts[0])


def test_n_above_max_n_is_refused(openai_client, default_model):
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.chat.completions.create(model=default_model, messages=QUESTION, max_tokens=2, n=5)
    assert info.value.param == "n"


# ---- stop sequences --------------------------------------------------------------------------


def stop_cases(text: str) -> tuple[str, str]:
    """A stop string from the middle of a known output, and the text that must come back."""
    middle = len(text) // 2
    stop = text[middle : middle + 3]
    assert len(stop) == 3, text
    return stop, text[: text.find(stop)]


def test_stop_sequence_cuts_the_text_before_it(http, openai_client, default_model, answer):
    stop, expected = stop_cases(answer["choices"][0]["message"]["content"])
    completion = openai_client.chat.completions.create(
        model=default_model, messages=QUESTION, max_tokens=16, temperature=0, stop=stop
    )
    assert completion.choices[0].message.content == expected
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.completion_tokens < answer["usage"]["completion_tokens"]
    # several stops: the earliest in the text wins, whatever its place in the list
    content = answer["choices"][0]["message"]["content"]
    early = content[1:3]
    both = chat_once(http, max_tokens=16, stop=[stop, early])
    assert both["choices"][0]["message"]["content"] == content[: min(content.find(stop), content.find(early))]
    assert both["choices"][0]["finish_reason"] == "stop"


def test_stop_sequence_in_streaming_never_reaches_the_client(http, answer):
    stop, expected = stop_cases(answer["choices"][0]["message"]["content"])
    _, payloads = stream_raw(http, "/v1/chat/completions", {"messages": QUESTION, "max_tokens": 16, "temperature": 0, "stop": [stop]})
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == expected
    assert stop not in text
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_stop_sequence_on_text_completions_streamed_and_not(http):
    plain = http.post("/v1/completions", json={"prompt": COUNTING, "max_tokens": 12, "temperature": 0}).json()
    text = plain["choices"][0]["text"]
    stop, expected = stop_cases(text)
    body = {"prompt": COUNTING, "max_tokens": 12, "temperature": 0, "stop": stop}
    stopped = http.post("/v1/completions", json=body).json()
    assert stopped["choices"][0]["text"] == expected
    assert stopped["choices"][0]["finish_reason"] == "stop"
    _, payloads = stream_raw(http, "/v1/completions", body)
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks) == expected
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


# ---- text completions ------------------------------------------------------------------------


def test_completion_plain_through_the_sdk(openai_client, default_model):
    completion = openai_client.completions.create(model=default_model, prompt=COUNTING, max_tokens=6, temperature=0)
    assert completion.object == "text_completion"
    assert completion.id.startswith("cmpl-")
    assert completion.model == default_model
    [choice] = completion.choices
    assert choice.index == 0
    assert choice.finish_reason == "length"
    assert completion.usage.completion_tokens == 6  # finish_reason length: exactly max_tokens
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 6
    assert choice.text.startswith(" 5")  # greedy SmolLM2 goes on counting


def test_completion_streamed_equals_plain(http, openai_client, default_model):
    plain = http.post("/v1/completions", json={"prompt": COUNTING, "max_tokens": 6, "temperature": 0}).json()
    chunks = list(
        openai_client.completions.create(model=default_model, prompt=COUNTING, max_tokens=6, temperature=0, stream=True)
    )
    assert all(chunk.object == "text_completion" and chunk.id == chunks[0].id for chunk in chunks)
    assert "".join(chunk.choices[0].text for chunk in chunks) == plain["choices"][0]["text"]
    assert [chunk.choices[0].finish_reason for chunk in chunks][-1] == "length"
    assert all(chunk.choices[0].finish_reason is None for chunk in chunks[:-1])
    _, payloads = stream_raw(
        http, "/v1/completions",
        {"prompt": COUNTING, "max_tokens": 6, "temperature": 0, "stream_options": {"include_usage": True}},
    )
    assert payloads[-1] == "[DONE]"
    last = json.loads(payloads[-2])
    assert last["choices"] == [] and counts(last["usage"]) == counts(plain["usage"])


def test_prompt_list_gives_one_choice_per_prompt_in_order(http):
    prompts = [COUNTING, "The capital of France is", "Once upon a time"]
    singles = [
        http.post("/v1/completions", json={"prompt": p, "max_tokens": 5, "temperature": 0}).json() for p in prompts
    ]
    body = http.post("/v1/completions", json={"prompt": prompts, "max_tokens": 5, "temperature": 0}).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert [c["text"] for c in body["choices"]] == [s["choices"][0]["text"] for s in singles]
    for field in ("prompt_tokens", "completion_tokens", "total_tokens"):
        assert body["usage"][field] == sum(s["usage"][field] for s in singles)


def test_echo_puts_the_prompt_before_the_completion(http):
    plain = http.post("/v1/completions", json={"prompt": COUNTING, "max_tokens": 4, "temperature": 0}).json()
    echoed = http.post("/v1/completions", json={"prompt": COUNTING, "max_tokens": 4, "temperature": 0, "echo": True}).json()
    assert echoed["choices"][0]["text"] == COUNTING + plain["choices"][0]["text"]
    assert counts(echoed["usage"]) == counts(plain["usage"])
    _, payloads = stream_raw(http, "/v1/completions", {"prompt": COUNTING, "max_tokens": 4, "temperature": 0, "echo": True})
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert chunks[0]["choices"][0]["text"].startswith(COUNTING)
    assert "".join(c["choices"][0]["text"] for c in chunks) == echoed["choices"][0]["text"]


def test_usage_is_exact_and_consistent(http):
    runs = [
        http.post("/v1/completions", json={"prompt": COUNTING, "max_tokens": n, "temperature": 0}).json()
        for n in (1, 4)
    ]
    assert len({run["usage"]["prompt_tokens"] for run in runs}) == 1  # same prompt, same count
    for n, run in zip((1, 4), runs):
        assert run["choices"][0]["finish_reason"] == "length"
        assert run["usage"]["completion_tokens"] == n
    # each shorter greedy text is a prefix of the longer one
    assert runs[1]["choices"][0]["text"].startswith(runs[0]["choices"][0]["text"])
    # "hello" is one token for SmolLM2's tokenizer: the count holds no template or suffix tokens
    one = http.post("/v1/completions", json={"prompt": "hello", "max_tokens": 1, "temperature": 0}).json()
    assert counts(one["usage"]) == {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    # a prompt given twice is two prompts: it counts twice (only the n choices of one prompt share it)
    twice = http.post("/v1/completions", json={"prompt": ["hello", "hello"], "max_tokens": 1, "temperature": 0}).json()
    assert counts(twice["usage"]) == {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4}
    assert twice["choices"][0]["text"] == twice["choices"][1]["text"] == one["choices"][0]["text"]
    longer = http.post("/v1/completions", json={"prompt": COUNTING + " 5, 6, 7,", "max_tokens": 1, "temperature": 0}).json()
    assert longer["usage"]["prompt_tokens"] > runs[0]["usage"]["prompt_tokens"]
    chats = [chat_once(http, max_tokens=n) for n in (1, 2)]
    assert chats[0]["usage"]["prompt_tokens"] == chats[1]["usage"]["prompt_tokens"]


# ---- errors ----------------------------------------------------------------------------------


def test_missing_and_wrong_keys_are_authentication_errors(live_server, default_model):
    for key in ("", "sk-wrong"):
        client = openai.OpenAI(base_url=live_server.base_url + "/v1", api_key=key or "unused", max_retries=0)
        if not key:
            client = client.with_options(default_headers={"Authorization": ""})
        with pytest.raises(openai.AuthenticationError) as info:
            client.chat.completions.create(model=default_model, messages=QUESTION, max_tokens=1)
        assert info.value.status_code == 401
        assert info.value.code == "invalid_api_key"
        assert info.value.type == "invalid_request_error"
    error = error_body(httpx.get(live_server.base_url + "/v1/models"), 401)
    assert error["code"] == "invalid_api_key" and "Missing API key" in error["message"]
    error = error_body(httpx.get(live_server.base_url + "/v1/models", headers={"Authorization": f"Basic {API_KEY}"}), 401)
    assert error["code"] == "invalid_api_key"
    error = error_body(httpx.get(live_server.base_url + "/v1/models", headers={"Authorization": "Bearer sk-nope"}), 401)
    assert error["message"] == "Incorrect API key provided."


def test_unknown_model_is_not_found(openai_client, http):
    with pytest.raises(openai.NotFoundError) as info:
        openai_client.chat.completions.create(model="no-such-model.gguf", messages=QUESTION, max_tokens=1)
    assert info.value.code == "model_not_found"
    assert info.value.param == "model"
    assert "no-such-model.gguf" in info.value.message
    with pytest.raises(openai.NotFoundError):
        openai_client.completions.create(model="no-such-model", prompt="x", max_tokens=1)
    response, _ = stream_raw(http, "/v1/chat/completions", {"model": "nope", "messages": QUESTION})
    assert error_body(response, 404)["code"] == "model_not_found"


def test_model_without_gguf_suffix_is_found(http, default_model):
    body = chat_once(http, model=default_model.removesuffix(".gguf"), max_tokens=1)
    assert body["model"] == default_model


def test_prompt_longer_than_the_context_is_context_length_exceeded(openai_client, http, default_model):
    long_text = "hello world " * 1200  # about 2400 tokens, N_CTX is 2048
    started = time.monotonic()
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.chat.completions.create(
            model=default_model, messages=[{"role": "user", "content": long_text}], max_tokens=4
        )
    assert info.value.code == "context_length_exceeded"
    assert info.value.param == "messages"
    assert "2048" in info.value.message
    assert "ERROR" not in info.value.message  # GPT4All's own text never passes as output
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.completions.create(model=default_model, prompt=long_text, max_tokens=4)
    assert info.value.code == "context_length_exceeded"
    assert info.value.param == "prompt"  # this route's own field, not chat's `messages`
    # streamed: known before the first token, so a plain HTTP error rather than an SSE event
    response, _ = stream_raw(http, "/v1/completions", {"prompt": long_text, "max_tokens": 4})
    assert error_body(response, 400)["code"] == "context_length_exceeded"
    assert error_body(response, 400)["param"] == "prompt"
    assert time.monotonic() - started < 60


def test_gpt4alls_reverse_prompts_are_not_stop_strings_here(http):
    """GPT4All's prompt call ends a reply at `### Human`, `### Response`... (its convention, not the
    model's); our decode loop does not, so Markdown headings come through (README: what the API honours)."""
    response = http.post("/v1/completions", json={
        "prompt": "Human: hi\n### Human: hello\n### Human: hey\n### Human: yo\n### Human: hi\n###", "max_tokens": 12,
        "temperature": 0})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["choices"][0]["finish_reason"] == "length" and body["usage"]["completion_tokens"] == 12
    assert "Human" in body["choices"][0]["text"]  # GPT4All would have held it back and stopped


def test_prompt_plus_max_tokens_past_the_context_is_refused(openai_client, http, default_model):
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.completions.create(model=default_model, prompt="hello", max_tokens=2048)
    assert info.value.code == "context_length_exceeded"
    assert info.value.param == "max_tokens"
    assert "2049 tokens (1 in the prompt, 2048 for the completion)" in info.value.message
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.chat.completions.create(model=default_model, messages=QUESTION, max_tokens=2040)
    assert info.value.code == "context_length_exceeded"
    response, _ = stream_raw(http, "/v1/chat/completions", {"messages": QUESTION, "max_tokens": 2040})
    assert error_body(response, 400)["code"] == "context_length_exceeded"
    assert chat_once(http, max_tokens=1)["usage"]["completion_tokens"] == 1  # and the server carries on


@pytest.mark.parametrize(
    "extra, param",
    [
        ({"temperature": -1}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 10**9}, "max_tokens"),
        ({"top_p": 0}, "top_p"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"top_logprobs": 2}, "top_logprobs"),  # without logprobs
        ({"tools": [{"type": "code_interpreter"}]}, "tools[0].type"),
        ({"response_format": {"type": "yaml"}}, "response_format.type"),
        ({"seed": "one"}, "seed"),
        ({"frequency_penalty": 2.5}, "frequency_penalty"),
        ({"presence_penalty": -3}, "presence_penalty"),
        ({"logit_bias": {"one": 5}}, "logit_bias"),
        ({"logit_bias": {"99999999": 5}}, "logit_bias"),  # outside the vocabulary: the engine says so
        ({"extra_body": {"frobnicate": 1}}, "frobnicate"),
    ],
)
def test_bad_parameters_are_bad_request_naming_the_param(openai_client, default_model, extra, param):
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.chat.completions.create(model=default_model, messages=QUESTION, **extra)
    assert info.value.status_code == 400
    assert info.value.param == param
    assert info.value.type == "invalid_request_error"


def test_bad_parameters_on_completions(openai_client, default_model):
    for extra, param in (({"max_tokens": 0}, "max_tokens"), ({"suffix": "x"}, "suffix"), ({"logprobs": 6}, "logprobs"),
                         ({"logprobs": 1, "echo": True}, "echo")):
        with pytest.raises(openai.BadRequestError) as info:
            openai_client.completions.create(model=default_model, prompt="x", **extra)
        assert info.value.param == param


def test_seed_with_greedy_sampling_is_accepted_and_holds(http, answer):
    assert chat_once(http, max_tokens=16, seed=123)["choices"] == answer["choices"]


def test_unknown_routes_and_methods_get_the_openai_envelope(live_server, http):
    error = error_body(http.get("/v1/nothing-here"), 404)
    assert error["code"] == "not_found" and error["type"] == "invalid_request_error"
    error = error_body(httpx.get(live_server.base_url + "/definitely/not/here"), 404)
    assert error["code"] == "not_found"
    error = error_body(http.delete("/v1/models"), 405)
    assert error["code"] == "method_not_allowed"
    error = error_body(http.get("/v1/chat/completions"), 405)
    assert error["code"] == "method_not_allowed"


def test_body_over_max_body_bytes_is_413(http):
    body = json.dumps({"prompt": "x" * (4 * 1024 * 1024 + 10), "max_tokens": 1})
    error = error_body(http.post("/v1/completions", content=body, headers={"content-type": "application/json"}), 413)
    assert error["code"] == "payload_too_large"
    assert chat_once(http, max_tokens=1)["usage"]["completion_tokens"] == 1


@pytest.mark.parametrize(
    "content, words, param",
    [
        (b"{not json", "not valid JSON", None),
        (b"", "empty", None),
        (b"[1, 2]", "JSON object", None),
        (b'{"messages": "hi"}', "messages", "messages"),
        (b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": "ten"}', "max_tokens", "max_tokens"),
    ],
)
def test_malformed_bodies_are_400(http, content, words, param):
    response = http.post("/v1/chat/completions", content=content, headers={"content-type": "application/json"})
    error = error_body(response, 400)
    assert words in error["message"]
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"


# ---- concurrency and disconnects -------------------------------------------------------------


def test_eight_concurrent_streaming_clients_all_get_their_full_answers(live_server, http, default_model):
    questions = ["What is the capital of France?", "Name a primary color."]
    expected = {
        q: chat_once(http, messages=[{"role": "user", "content": q}], max_tokens=8)["choices"][0]["message"]["content"]
        for q in questions
    }
    start = threading.Barrier(8)

    def client(index: int) -> tuple[str, str, str | None]:
        question = questions[index % 2]
        sdk = openai.OpenAI(base_url=live_server.base_url + "/v1", api_key=live_server.api_key, max_retries=0, timeout=300)
        start.wait()
        chunks = list(
            sdk.chat.completions.create(
                messages=[{"role": "user", "content": question}], max_tokens=8, temperature=0, stream=True,
                model=default_model,
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks)
        return question, text, chunks[-1].choices[0].finish_reason

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(client, range(8)))
    assert len(results) == 8
    for question, text, reason in results:
        assert text == expected[question]
        assert reason in ("stop", "length")
    assert wait_for_idle_scheduler(live_server)["running"] == 0


def test_streaming_client_that_leaves_frees_the_worker_at_once(live_server, http):
    with http.stream("POST", "/v1/completions", json={"prompt": COUNTING, "max_tokens": 2000, "temperature": 0, "stream": True}) as response:
        assert response.status_code == 200
        seen = 0
        for line in response.iter_lines():
            seen += line.startswith("data: ")
            if seen == 3:
                break
    # the long generation (2000 tokens) would hold the model for a long while if it went on
    started = time.monotonic()
    after = http.post("/v1/completions", json={"prompt": "hello", "max_tokens": 2, "temperature": 0})
    assert after.status_code == 200
    assert float(after.headers["x-queue-time"]) < 5000
    assert time.monotonic() - started < 15
    idle = wait_for_idle_scheduler(live_server)
    assert idle["running"] == 0 and idle["queue_depth"] == 0
    # and the worker serves normally afterwards
    assert chat_once(http, max_tokens=2)["usage"]["completion_tokens"] == 2


def test_non_streaming_client_that_leaves_frees_the_worker(live_server, http):
    with pytest.raises(httpx.TimeoutException):
        http.post("/v1/completions", json={"prompt": COUNTING, "max_tokens": 2000, "temperature": 0}, timeout=1.5)
    started = time.monotonic()
    after = http.post("/v1/completions", json={"prompt": "hello", "max_tokens": 2, "temperature": 0})
    assert after.status_code == 200
    assert float(after.headers["x-queue-time"]) < 5000
    assert time.monotonic() - started < 15
    wait_for_idle_scheduler(live_server)


@pytest.fixture(scope="module")
def one_slot_server(tmp_path_factory):
    """MAX_QUEUE=1, and the README's own key, for the queue bound and the README examples."""
    server = start_server(tmp_path_factory.mktemp("one-slot"), API_KEYS=f"{API_KEY},{README_KEY}", MAX_QUEUE="1")
    yield server
    server.stop()


def test_full_queue_is_rate_limit_error_with_retry_after(one_slot_server, default_model):
    start = threading.Barrier(6)

    def client(_):
        sdk = openai.OpenAI(base_url=one_slot_server.base_url + "/v1", api_key=API_KEY, max_retries=0, timeout=300)
        start.wait()
        began = time.monotonic()
        try:
            result = sdk.completions.create(model=default_model, prompt=COUNTING, max_tokens=24, temperature=0)
        except openai.RateLimitError as exc:
            return exc, time.monotonic() - began
        return result, time.monotonic() - began

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(client, range(6)))
    refused = [(r, t) for r, t in results if isinstance(r, openai.RateLimitError)]
    served = [r for r, _ in results if not isinstance(r, openai.RateLimitError)]
    assert 1 <= len(served) <= 3 and len(refused) == 6 - len(served)  # 1 running + 1 waiting (+1 if it started first)
    for error, elapsed in refused:
        assert error.status_code == 429
        assert error.code == "queue_full" and error.type == "rate_limit_error"
        assert re.fullmatch(r"[1-9][0-9]*", error.response.headers["retry-after"])
        assert elapsed < 5  # refused at once, not after waiting
    texts = {r.choices[0].text for r in served}
    assert len(texts) == 1 and all(r.usage.completion_tokens == 24 for r in served)
    wait_for_idle_scheduler(one_slot_server)


@pytest.mark.skipif(not shutil.which("curl"), reason="needs curl")
def test_readme_curl_examples_work_as_written(one_slot_server, default_model):
    """The project README's chat and text completion curl examples (streamed ones too), run as written."""
    examples = readme_curl_examples("/v1/chat/completions", "/v1/completions")
    kinds = {(e.path, e.stream) for e in examples}
    assert ("/v1/chat/completions", False) in kinds and ("/v1/completions", False) in kinds, kinds
    for example in examples:
        sent = example.body
        model = sent.get("model") or default_model
        max_tokens = sent.get("max_tokens")
        output = run_readme_example(example, one_slot_server.base_url)
        chat = example.path == "/v1/chat/completions"
        if example.stream:
            payloads = sse_payloads(output)
            assert payloads[-1] == "[DONE]"
            chunks = [json.loads(p) for p in payloads[:-1]]
            assert all(c["object"] == ("chat.completion.chunk" if chat else "text_completion") for c in chunks)
            assert all(c["model"] == model for c in chunks)
            finished = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
            assert finished[-1] in ("stop", "length")
            if chat:
                assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
                assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]).strip()
            continue
        body = json.loads(output)
        assert body["object"] == ("chat.completion" if chat else "text_completion") and body["model"] == model
        choice = body["choices"][0]
        assert choice["finish_reason"] in ("stop", "length")
        if chat:
            assert choice["message"]["role"] == "assistant" and choice["message"]["content"].strip()
        else:  # sampled (the README sets no temperature), so the text may be anything, even empty; its shape may not
            assert isinstance(choice["text"], str)
        usage = body["usage"]
        assert usage["prompt_tokens"] > 0 and usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        assert max_tokens is None or usage["completion_tokens"] <= max_tokens


@pytest.mark.skipif(not shutil.which("curl"), reason="needs curl")
def test_readme_info_and_metrics_examples_work_as_written(one_slot_server, default_model):
    """The project README's other GET examples: server info, health, the model list and /metrics."""
    expected = {"/": ("default_model", default_model), "/health": ("status", "ok"), "/v1/models": ("object", "list")}
    examples = [e for e in all_curl_examples() if e.method == "GET" and e.path in {*expected, "/metrics"}]
    assert {e.path for e in examples} >= {"/health", "/v1/models"}, [e.path for e in examples]
    for example in examples:
        body = json.loads(run_readme_example(example, one_slot_server.base_url))
        assert "error" not in body, body
        if example.path == "/metrics":
            assert body["requests"]["total"] > 0 and body["default_model"] == default_model
        else:
            key, value = expected[example.path]
            assert body[key] == value, body
    models = json.loads(run_readme_example(next(e for e in examples if e.path == "/v1/models"), one_slot_server.base_url))
    assert default_model in [m["id"] for m in models["data"]]


# ---- model files -----------------------------------------------------------------------------


def write_gguf_without_tokenizer(path: Path) -> None:
    """A valid GGUF header that llama.cpp refuses: a llama model with no vocabulary."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(128)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_broken_gguf_files_give_a_clear_500_and_the_server_stays_up(tmp_path, default_model):
    models = tmp_path / "models"
    models.mkdir()
    real = ROOT / "models" / default_model
    os.symlink(real, models / default_model)
    with real.open("rb") as source:
        (models / "truncated.gguf").write_bytes(source.read(2_000_000))
    (models / "notes.gguf").write_text("this is not a model\n")
    write_gguf_without_tokenizer(models / "novocab.gguf")
    server = start_server(tmp_path, MODELS_DIR=str(models), MODEL_NAME=default_model)
    try:
        with httpx.Client(base_url=server.base_url, headers=server.headers(), timeout=180) as client:
            listed = [card["id"] for card in client.get("/v1/models").json()["data"]]
            assert {"truncated.gguf", "notes.gguf", "novocab.gguf", default_model} <= set(listed)
            cases = [
                ("truncated.gguf", "/v1/chat/completions", "not a readable GGUF file"),
                ("truncated.gguf", "/v1/completions", "not a readable GGUF file"),
                ("notes.gguf", "/v1/completions", "GGUF magic"),
                ("novocab.gguf", "/v1/completions", "tokenizer.ggml.tokens"),  # llama.cpp's own reason
            ]
            for name, path, reason in cases:
                body = {"model": name, "max_tokens": 2}
                body.update({"messages": QUESTION} if "chat" in path else {"prompt": "hi"})
                error = error_body(client.post(path, json=body), 500)
                assert error["code"] == "model_load_failed", error
                assert name in error["message"] and reason in error["message"], error
                # still up, and the default model still answers
                assert client.post("/v1/completions", json={"prompt": "hello", "max_tokens": 2}).status_code == 200
            assert httpx.get(server.base_url + "/health").status_code == 200
            assert server.process.poll() is None
    finally:
        server.stop()


def test_several_models_without_model_name_is_a_clear_503_on_health(tmp_path, default_model):
    models = tmp_path / "models"
    models.mkdir()
    real = ROOT / "models" / default_model
    for name in ("first.gguf", "second.gguf"):
        os.symlink(real, models / name)
    server = start_server(tmp_path, wait_healthy=False, MODELS_DIR=str(models), MODEL_NAME="")
    try:
        health = httpx.get(server.base_url + "/health")
        assert health.status_code == 503
        body = health.json()
        assert body["status"] == "failed"
        # public: a short, stable reason without the folder; the names and the path are in /metrics (test_leaks.py)
        assert "MODEL_NAME" in body["error"] and str(models) not in health.text
        with httpx.Client(base_url=server.base_url, headers=server.headers(), timeout=180) as client:
            # no model named: a clear 400 listing the choices, not an anonymous 500
            error = error_body(client.post("/v1/completions", json={"prompt": "hi", "max_tokens": 1}), 400)
            assert error["param"] == "model" and "first.gguf" in error["message"] and "second.gguf" in error["message"]
            # naming one works
            named = client.post("/v1/completions", json={"model": "second.gguf", "prompt": "hello", "max_tokens": 1})
            assert named.status_code == 200 and named.json()["model"] == "second.gguf"
    finally:
        server.stop()
