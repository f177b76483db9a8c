"""/v1/responses with the real model, through the `openai` SDK: plain, streamed, stored and read back,
continued over three turns from the KV cache, a Codex-shaped request, `parse` with a pydantic
`text_format` and a function-tool round trip.
"""

from __future__ import annotations

import json
import shutil
import time

import openai
import pytest
from pydantic import BaseModel

from tests.conftest import API_KEY, start_server
from tests.helpers.readme_examples import README_KEY, readme_curl_examples, run_readme_example
from tests.helpers.sse import response_events

WEATHER = {"type": "function", "name": "get_weather", "description": "The current weather in a city.", "strict": True,
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                          "additionalProperties": False}}
CONTEXT = "You are a helpful geography assistant. Answer briefly and precisely, in one sentence. " * 12
CODEX_INSTRUCTIONS = ("You are Codex, a coding agent running in a terminal. Read files before you change them, keep "
                      "changes small, run the tests, and explain what you did in a few lines. ") * 122  # 20 KB


@pytest.fixture(scope="module")
def wide_server(tmp_path_factory):
    """A context of 8192 tokens (Codex's 20 KB of instructions, evaluated in batches of 128: GPT4All's
    largest, 1.6x faster than the default on long prompts), and the README's key."""
    server = start_server(tmp_path_factory.mktemp("responses-wide"), N_CTX="8192", N_BATCH="128",
                          API_KEYS=f"{API_KEY},{README_KEY}")
    yield server
    server.stop()


def usage_adds_up(response) -> None:
    usage = response.usage
    assert usage.input_tokens > 0 and usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.output_tokens_details.reasoning_tokens == 0
    assert 0 <= usage.input_tokens_details.cached_tokens < usage.input_tokens


def test_create_plain_then_retrieve_it(openai_client, default_model):
    response = openai_client.responses.create(model=default_model, input="What is the capital of France?",
                                              instructions="Answer in one short sentence.", temperature=0,
                                              max_output_tokens=16)
    assert response.id.startswith("resp_") and response.status in ("completed", "incomplete")
    assert response.output_text.strip() and response.usage.output_tokens <= 16
    usage_adds_up(response)
    if response.status == "incomplete":
        assert response.incomplete_details.reason == "max_output_tokens" and response.usage.output_tokens == 16
    assert openai_client.responses.retrieve(response.id).to_dict() == response.to_dict()


def test_create_streamed_sends_openais_events_and_the_helper_assembles_them(openai_client, default_model):
    with openai_client.responses.stream(model=default_model, input="Name three colors.", temperature=0,
                                        max_output_tokens=16) as stream:
        events = list(stream)
        final = stream.get_final_response() if events[-1].type == "response.completed" else events[-1].response
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] in ("response.completed",
                                                                                       "response.incomplete")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == final.output_text and deltas.strip()
    usage_adds_up(final)
    stored = openai_client.responses.retrieve(final.id)
    assert stored.output_text == final.output_text and stored.usage == final.usage


def test_input_items_then_delete(openai_client, default_model):
    response = openai_client.responses.create(
        model=default_model, max_output_tokens=8, temperature=0,
        input=[{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Say hi."}])
    items = openai_client.responses.input_items.list(response.id, order="asc")
    assert [(item.type, item.role) for item in items.data] == [("message", "developer"), ("message", "user")]
    assert all(item.id.startswith("msg_") for item in items.data) and not items.has_more
    first = openai_client.responses.input_items.list(response.id, limit=1)
    assert [item.role for item in first.data] == ["user"] and first.has_more  # newest first
    deleted = openai_client.responses.delete(response.id)
    assert deleted is None or getattr(deleted, "deleted", True)
    with pytest.raises(openai.NotFoundError):
        openai_client.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        openai_client.responses.create(model=default_model, input="And?", previous_response_id=response.id)


def test_three_turns_with_previous_response_id_reuse_the_cached_prefix(openai_client, default_model):
    def turn(text: str, previous: str | None = None, **extra):
        return openai_client.responses.create(model=default_model, input=text, previous_response_id=previous,
                                              temperature=0, max_output_tokens=12, **extra)

    first = turn([{"role": "developer", "content": CONTEXT}, {"role": "user", "content": "Name a big city in Japan."}])
    second = turn("How many people live there?", first.id)
    third = turn("Name its most famous tower.", second.id)
    for earlier, later in ((first, second), (second, third)):
        assert later.usage.input_tokens > earlier.usage.input_tokens + earlier.usage.output_tokens
        # the earlier prompt at least (its reply too once the worker settled it) came from the KV cache
        assert later.usage.input_tokens_details.cached_tokens >= earlier.usage.input_tokens - 4
    assert third.previous_response_id == second.id


def test_a_chain_over_the_context_window_is_refused_with_exact_counts(openai_client, default_model):
    client = openai_client.with_options(timeout=600)  # one long prompt evaluation (seconds; more on a loaded machine)
    long = "The river flows past the old mill and the quiet village. " * 86  # just over half of the 2048 window
    first = client.responses.create(model=default_model, input=long, max_output_tokens=2, temperature=0)
    assert 1024 < first.usage.input_tokens < 1100
    with pytest.raises(openai.BadRequestError) as info:  # refused before anything is evaluated
        client.responses.create(model=default_model, input=long, previous_response_id=first.id, max_output_tokens=2)
    assert info.value.code == "context_length_exceeded" and info.value.param == "input"
    assert "2048" in info.value.message
    assert client.responses.create(model=default_model, input="ok?", max_output_tokens=2).status  # still healthy


def test_a_streaming_client_that_leaves_stops_the_generation_and_it_is_kept_cancelled(openai_client, http,
                                                                                     default_model):
    body = {"model": default_model, "input": "Count from 1 to 1000: 1, 2, 3, 4,", "max_output_tokens": 1500,
            "temperature": 0, "stream": True}
    with http.stream("POST", "/v1/responses", json=body) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        created = json.loads(next(line for line in lines if line.startswith("data: "))[len("data: "):])
        deltas = 0
        for line in lines:
            deltas += '"response.output_text.delta"' in line
            if deltas == 3:
                break
    started = time.monotonic()
    after = openai_client.responses.create(model=default_model, input="hello", max_output_tokens=2, store=False)
    assert after.status in ("completed", "incomplete") and time.monotonic() - started < 30  # the model was freed
    deadline = time.monotonic() + 30
    while (kept := openai_client.responses.retrieve(created["response"]["id"])).status == "in_progress":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert kept.status == "cancelled" and kept.output_text and kept.usage is None


def test_parse_with_a_pydantic_text_format(openai_client, default_model):
    class City(BaseModel):
        name: str
        country: str

    parsed = openai_client.responses.parse(model=default_model, input="Name a big city and its country.",
                                           text_format=City, temperature=0, max_output_tokens=64)
    assert isinstance(parsed.output_parsed, City)
    assert json.loads(parsed.output_text) == parsed.output_parsed.model_dump()


def test_a_function_tool_round_trip(openai_client, default_model):
    asked = openai_client.responses.create(model=default_model, input="What is the weather in Oslo?", tools=[WEATHER],
                                           tool_choice="required", temperature=0, max_output_tokens=64)
    (call,) = [item for item in asked.output if item.type == "function_call"]
    assert call.name == "get_weather" and call.call_id.startswith("call_") and "city" in json.loads(call.arguments)
    answered = openai_client.responses.create(
        model=default_model, previous_response_id=asked.id, tools=[WEATHER], temperature=0, max_output_tokens=32,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": '{"weather": "rain, 8 C"}'}])
    assert answered.status in ("completed", "incomplete") and answered.output
    usage_adds_up(answered)


def test_a_codex_shaped_request_streams_to_completed(wide_server, default_model):
    """Codex sends 20 KB of instructions, the whole history with store: false, reasoning, include,
    prompt_cache_key, its own shell tool as a function and tools that are not functions."""
    # ~4,500 prompt tokens before the first event: half a minute on two quiet cores, minutes on busy ones
    client = openai.OpenAI(base_url=wide_server.base_url + "/v1", api_key=API_KEY, max_retries=0, timeout=900)
    shell = {"type": "function", "name": "shell", "description": "Runs a shell command.", "strict": False,
             "parameters": {"type": "object", "properties": {"command": {"type": "array", "items": {"type": "string"}}},
                            "required": ["command"]}}
    tools = [shell, {"type": "local_shell"}, {"type": "web_search"}]
    assert len(CODEX_INSTRUCTIONS) >= 20_000
    with client.responses.with_streaming_response.create(
            model=default_model, instructions=CODEX_INSTRUCTIONS, store=False, stream=True, tools=tools,
            tool_choice="auto", parallel_tool_calls=False, reasoning={"effort": "medium", "summary": "auto"},
            include=["reasoning.encrypted_content"], prompt_cache_key="thread-1", max_output_tokens=24,
            input=[{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "List the files."}]}],
    ) as raw:
        ignored = raw.headers["x-ignored-params"]
        events = list(raw.parse())
    assert {"reasoning", "include[0]", "prompt_cache_key"} <= set(ignored.split(", "))
    assert events[-1].type in ("response.completed", "response.incomplete"), events[-1]
    assert events[-1].response.usage.input_tokens > 4000  # the instructions were all read


@pytest.mark.skipif(not shutil.which("curl"), reason="needs curl")
def test_readme_responses_examples_work_as_written(wide_server, default_model):
    examples = readme_curl_examples("/v1/responses")
    assert {e.stream for e in examples} == {False, True}
    for example in examples:
        output = run_readme_example(example, wide_server.base_url)
        if example.stream:
            events = response_events(output)
            assert events[-1]["type"] in ("response.completed", "response.incomplete")
            assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta").strip()
            continue
        body = json.loads(output)
        assert body["object"] == "response" and body["model"] == default_model
        assert body["status"] in ("completed", "incomplete") and body["output"][0]["content"][0]["text"].strip()
        assert body["usage"]["output_tokens"] <= example.body["max_output_tokens"]
