"""The prefix cache through HTTP: OpenAI's `cached_tokens` (plain and streamed), /metrics, keys, and the switch."""

from __future__ import annotations

import json

import httpx
import pytest

from models.registry import ModelRegistry
from tests.conftest import ROOT, start_server

SYSTEM = "You are a concise assistant. Keep every answer under twenty words and never use lists. " * 8


def assert_exact_cut(usage, least: int, most: int) -> None:
    """Kept: between `least` and `most` tokens (an exact cut gives back at most two: models/prefix_cache.py)."""
    assert 0 < least <= cached(usage) <= most


@pytest.fixture()
def chat(openai_client, default_model):
    def send(messages: list[dict], **extra):
        return openai_client.chat.completions.create(model=default_model, messages=messages, max_tokens=12, temperature=0, **extra)

    return send


def two_turns(chat, first_question: str):
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": first_question}]
    first = chat(messages)
    messages += [{"role": "assistant", "content": first.choices[0].message.content}, {"role": "user", "content": "Why?"}]
    return first, messages


def cached(usage) -> int:
    return usage.prompt_tokens_details.cached_tokens


def test_a_second_turn_reports_the_reused_tokens_plain_and_streamed(chat):
    first, messages = two_turns(chat, "Name a big city.")
    assert cached(first.usage) == 0 or cached(first.usage) < first.usage.prompt_tokens
    second = chat(messages)
    # the first prompt, and (when the worker settled the reply before this turn) the reply too
    assert_exact_cut(second.usage, first.usage.prompt_tokens - 4, first.usage.prompt_tokens + first.usage.completion_tokens)
    assert second.usage.prompt_tokens > cached(second.usage)  # prompt_tokens stays the whole prompt
    chunks = list(chat(messages, stream=True, stream_options={"include_usage": True}))
    streamed = chunks[-1].usage
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)  # (not compared: see the README on greedy text)
    assert streamed.prompt_tokens == second.usage.prompt_tokens
    assert_exact_cut(streamed, streamed.prompt_tokens - 4, streamed.prompt_tokens - 1)  # the same prompt again: never its last token


def test_completions_reuse_a_shared_prompt_prefix(http):
    start = "The history of the printing press begins in the fifteenth century, when " * 12
    first = http.post("/v1/completions", json={"prompt": start, "max_tokens": 4, "temperature": 0}).json()
    longer = http.post("/v1/completions", json={"prompt": start + " Gutenberg", "max_tokens": 4, "temperature": 0}).json()
    kept = longer["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert first["usage"]["prompt_tokens"] - 4 <= kept <= first["usage"]["prompt_tokens"]


def test_metrics_count_cached_and_evaluated_prompt_tokens_and_the_hit_ratio(http, chat):
    before = http.get("/metrics").json()["tokens"]
    first, messages = two_turns(chat, "Name a river.")
    second = chat(messages)
    after = http.get("/metrics").json()["tokens"]
    assert after["prompt"] - before["prompt"] == first.usage.prompt_tokens + second.usage.prompt_tokens
    assert after["prompt_cached"] - before["prompt_cached"] == cached(first.usage) + cached(second.usage)
    assert after["prompt_evaluated"] == after["prompt"] - after["prompt_cached"]
    assert after["cache_hit_ratio"] == round(after["prompt_cached"] / after["prompt"], 4)
    text = http.get("/metrics", params={"format": "prometheus"}).text
    assert "llm_server_prompt_tokens_cached_total{" in text


def test_n_choices_reuse_the_prompt(http):
    before = http.get("/metrics").json()["tokens"]["prompt_cached"]
    body = http.post("/v1/chat/completions", json={
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Pick a number between one and ten."}],
        "n": 2, "max_tokens": 4, "temperature": 0,
    }).json()
    after = http.get("/metrics").json()["tokens"]["prompt_cached"]
    assert len(body["choices"]) == 2
    assert after - before >= body["usage"]["prompt_tokens"] - 4 > 0  # choice 2 reused choice 1's prompt


@pytest.fixture(scope="module")
def two_key_server(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("two-keys"), API_KEYS="sk-alice,sk-bob")
    yield server
    server.stop()


def test_cached_prefixes_are_never_shared_across_keys(two_key_server):
    body = {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hello"}], "max_tokens": 4, "temperature": 0}
    url = two_key_server.base_url + "/v1/chat/completions"
    alice = [httpx.post(url, json=body, headers=two_key_server.headers("sk-alice"), timeout=120).json() for _ in range(2)]
    bob = httpx.post(url, json=body, headers=two_key_server.headers("sk-bob"), timeout=120).json()
    assert alice[1]["usage"]["prompt_tokens_details"]["cached_tokens"] > 0
    assert bob["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert bob["choices"] == alice[0]["choices"]


def test_prefix_cache_false_turns_reuse_off(tmp_path):
    server = start_server(tmp_path, PREFIX_CACHE="false")
    try:
        url = server.base_url + "/v1/chat/completions"
        body = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4, "temperature": 0,
                "stream": True, "stream_options": {"include_usage": True}}
        for _ in range(2):
            with httpx.stream("POST", url, json=body, headers=server.headers(), timeout=120) as response:
                events = [line[6:] for line in response.iter_lines() if line.startswith("data: {")]
            usage = json.loads(events[-1])["usage"]
            assert usage["prompt_tokens_details"] == {"cached_tokens": 0}
    finally:
        server.stop()


def test_an_empty_prompt_starts_a_new_document_whatever_ran_before(http):
    # No tokens of its own: GPT4All would sample from logits an earlier request left behind, or crash on
    # none. Like OpenAI's and llama.cpp's servers, the server continues from the start-of-document token.
    registry = ModelRegistry(ROOT / "models", "")
    chat_format = registry.chat_format(registry.default())
    document_start = chat_format.bos_token or chat_format.eos_token
    body = {"max_tokens": 4, "temperature": 0}
    explicit = http.post("/v1/completions", json={**body, "prompt": document_start}).json()
    answers = []
    for before in ("Hello", "The capital of France is"):
        assert http.post("/v1/completions", json={**body, "prompt": before}).status_code == 200
        response = http.post("/v1/completions", json={**body, "prompt": [""]})
        assert response.status_code == 200, response.text
        answers.append(response.json())
    assert [a["choices"][0]["text"] for a in answers] == [explicit["choices"][0]["text"]] * 2
    assert all(a["usage"]["prompt_tokens"] == explicit["usage"]["prompt_tokens"] == 1 for a in answers)
