"""/v1/responses in-process: plain and streamed on the chat engine (fake), stored responses and their
key scope, previous_response_id, refusals, and tool calls through a scripted reply source."""

from __future__ import annotations

import json
import logging
import re
import sqlite3

import pytest
import pytest_asyncio

from api.responses_request import ResponseCreateRequest
from errors import ContextLengthExceeded, EngineFailure
from models.conversation import CallArguments, CallStart, Message, TextDelta, ToolCall
from tests.helpers.fake_replies import ScriptedReplies, outcome
from tests.helpers.in_process import API_KEY, served_app
from tests.helpers.sse import assert_envelope, response_events

pytestmark = pytest.mark.asyncio(loop_scope="module")

OTHER_KEY = "sk-other-key"
RESPONSES = "/v1/responses"
WEATHER = {"type": "function", "name": "get_weather", "description": "Weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def served(tmp_path_factory):
    async with served_app(tmp_path_factory.mktemp("responses"), API_KEYS=f"{API_KEY},{OTHER_KEY}") as app:
        app.engine_source = app.app.ctx.responses.source
        yield app


@pytest.fixture()
def scripted(served):
    """The reply source swapped for a scripted one, for this test only."""
    source = ScriptedReplies(models=("fake-chat.gguf",))
    served.app.ctx.responses.source = source
    yield source
    served.app.ctx.responses.source = served.engine_source


async def post(served, body: dict, key: str = API_KEY, status: int = 200) -> dict:
    response = await served.client.post(RESPONSES, json=body, headers=served.headers(key))
    assert response.status_code == status, response.text
    return response.json()


async def stream(served, body: dict) -> tuple[dict, list[dict]]:
    async with served.client.stream("POST", RESPONSES, json={**body, "stream": True}, headers=served.headers()) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        return dict(response.headers), response_events((await response.aread()).decode())


def normalised(body: dict) -> dict:
    """A response with its made-up parts (ids, times) replaced: what two runs of one reply share."""
    text = re.sub(r'"(resp|msg|fc)_[0-9a-f]{48}"', r'"\1_ID"', json.dumps(body, sort_keys=True))
    return {**json.loads(text), "created_at": 0, "completed_at": 0}


async def test_a_plain_response_on_the_chat_engine_with_exact_usage(served):
    served.chat.enqueue(["Hel", "lo!"])
    body = await post(served, {"input": "hello there", "instructions": "Be brief.", "max_output_tokens": 16})
    assert body["object"] == "response" and body["id"].startswith("resp_") and body["status"] == "completed"
    assert body["model"] == "fake-chat.gguf" and body["instructions"] == "Be brief." and body["store"] is True
    (message,) = body["output"]
    assert message["type"] == "message" and message["role"] == "assistant" and message["status"] == "completed"
    assert message["content"] == [{"type": "output_text", "text": "Hello!", "annotations": [], "logprobs": []}]
    prompt = served.chat.prompts[-1]
    assert prompt.index("Be brief.") < prompt.index("hello there")  # instructions first, as the system message
    assert body["usage"] == {"input_tokens": len(prompt.split()), "output_tokens": 2,
                             "total_tokens": len(prompt.split()) + 2,
                             "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                             "output_tokens_details": {"reasoning_tokens": 0}}


async def test_a_stored_response_reads_back_lists_its_items_and_deletes(served):
    served.chat.enqueue(["fine"])
    body = await post(served, {"input": [{"role": "developer", "content": "Be kind."},
                                         {"role": "user", "content": [{"type": "input_text", "text": "how are you?"}]}]})
    path = f"{RESPONSES}/{body['id']}"
    assert (await served.client.get(path, headers=served.headers())).json() == body
    items = (await served.client.get(f"{path}/input_items", headers=served.headers())).json()
    assert items["object"] == "list" and not items["has_more"]
    assert [(i["type"], i["role"]) for i in items["data"]] == [("message", "user"), ("message", "developer")]  # newest first
    assert (items["first_id"], items["last_id"]) == (items["data"][0]["id"], items["data"][1]["id"])
    page = (await served.client.get(f"{path}/input_items?limit=1&order=asc", headers=served.headers())).json()
    assert [i["role"] for i in page["data"]] == ["developer"] and page["has_more"]
    rest = (await served.client.get(f"{path}/input_items?order=asc&after={page['last_id']}", headers=served.headers())).json()
    assert [i["role"] for i in rest["data"]] == ["user"] and not rest["has_more"]
    assert_envelope(await served.client.get(f"{path}/input_items?limit=101", headers=served.headers()), 400)
    deleted = await served.client.delete(path, headers=served.headers())
    assert deleted.json() == {"id": body["id"], "object": "response.deleted", "deleted": True}
    for method in ("GET", "DELETE"):
        error = assert_envelope(await served.client.request(method, path, headers=served.headers()), 404)
        assert error["code"] == "not_found"


async def test_another_key_never_sees_a_response(served):
    body = await post(served, {"input": "secret"})
    path = f"{RESPONSES}/{body['id']}"
    for method, suffix in (("GET", ""), ("GET", "/input_items"), ("DELETE", ""), ("POST", "/cancel")):
        assert_envelope(await served.client.request(method, path + suffix, headers=served.headers(OTHER_KEY)), 404)
    error = assert_envelope(await served.client.post(RESPONSES, json={"input": "more", "previous_response_id": body["id"]},
                                                     headers=served.headers(OTHER_KEY)), 404)
    assert error["param"] == "previous_response_id"
    assert (await served.client.get(path, headers=served.headers())).status_code == 200  # still there for its key


async def test_previous_response_id_puts_the_stored_conversation_before_the_new_input(served):
    served.chat.enqueue(["Paris."])
    first = await post(served, {"input": "Capital of France?", "instructions": "Answer in one word."})
    served.chat.enqueue(["Berlin."])
    second = await post(served, {"input": "And of Germany?", "previous_response_id": first["id"]})
    prompt = served.chat.prompts[-1]
    assert prompt.index("Capital of France?") < prompt.index("Paris.") < prompt.index("And of Germany?")
    assert "Answer in one word." not in prompt  # instructions are not carried over, as OpenAI's
    assert second["previous_response_id"] == first["id"]
    items = (await served.client.get(f"{RESPONSES}/{second['id']}/input_items", headers=served.headers())).json()
    assert [part["text"] for item in items["data"] for part in item["content"]] == ["And of Germany?"]
    served.chat.enqueue(["Rome."])
    await post(served, {"input": "And Italy?", "previous_response_id": second["id"]})
    third = served.chat.prompts[-1]
    assert third.index("Paris.") < third.index("Berlin.") < third.index("And Italy?")  # the whole chain


async def test_store_false_keeps_nothing_and_cannot_be_continued(served):
    body = await post(served, {"input": "forget me", "store": False})
    assert body["store"] is False
    assert_envelope(await served.client.get(f"{RESPONSES}/{body['id']}", headers=served.headers()), 404)
    error = assert_envelope(await served.client.post(RESPONSES, json={"input": "x", "previous_response_id": body["id"]},
                                                     headers=served.headers()), 404)
    assert error["param"] == "previous_response_id" and body["id"] in error["message"]


async def test_a_cut_reply_is_incomplete_and_a_stream_says_so(served):
    served.chat.enqueue(["a", "b", "c", "d"])
    body = await post(served, {"input": "count", "max_output_tokens": 2})
    assert body["status"] == "incomplete" and body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert body["usage"]["output_tokens"] == 2 and body["output"][0]["content"][0]["text"] == "ab"
    served.chat.enqueue(["a", "b", "c", "d"])
    _, events = await stream(served, {"input": "count", "max_output_tokens": 2})
    assert events[-1]["type"] == "response.incomplete" and events[-1]["response"]["usage"]["output_tokens"] == 2


async def test_streamed_and_plain_requests_make_the_same_response(served, scripted):
    reply = [TextDelta("Checking "), TextDelta("now."), CallStart(0, "call_w", "get_weather"),
             CallArguments(0, '{"city":'), CallArguments(0, '"Oslo"}'), outcome(7, cached=4)]
    scripted.enqueue(reply)
    plain = await post(served, {"input": "weather in Oslo?", "tools": [WEATHER]})
    scripted.enqueue(reply)
    _, events = await stream(served, {"input": "weather in Oslo?", "tools": [WEATHER]})
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["type"] == "response.created" and events[-1]["type"] == "response.completed"
    streamed = events[-1]["response"]
    assert normalised(streamed) == normalised(plain)
    stored = (await served.client.get(f"{RESPONSES}/{streamed['id']}", headers=served.headers())).json()
    assert stored == streamed
    call = plain["output"][1]
    assert (call["type"], call["call_id"], call["name"], call["arguments"]) == ("function_call", "call_w", "get_weather",
                                                                                '{"city":"Oslo"}')
    assert call["id"].startswith("fc_") and plain["usage"]["input_tokens_details"]["cached_tokens"] == 4
    assert plain["tools"] == [{**WEATHER, "strict": None}]


async def test_a_function_tool_round_trip_gives_the_model_its_call_and_the_result(served, scripted):
    scripted.enqueue([CallStart(0, "call_1", "get_weather"), CallArguments(0, '{"city":"Oslo"}'), outcome(5)])
    first = await post(served, {"input": "weather in Oslo?", "tools": [WEATHER], "tool_choice": "required"})
    call = first["output"][0]
    scripted.enqueue([TextDelta("It rains in Oslo."), outcome(5)])
    second = await post(served, {"previous_response_id": first["id"], "tools": [WEATHER],
                                 "input": [{"type": "function_call_output", "call_id": call["call_id"], "output": "rain"}]})
    assert second["output"][0]["content"][0]["text"] == "It rains in Oslo."
    _, conversation, _, _ = scripted.calls[-1]
    assert conversation.messages == (
        Message("user", "weather in Oslo?"),
        Message("assistant", None, (ToolCall("call_1", "get_weather", '{"city":"Oslo"}'),)),
        Message("tool", "rain", tool_call_id="call_1", name="get_weather"))
    assert [t.name for t in conversation.tools] == ["get_weather"] and conversation.tool_choice.mode == "auto"
    _, first_conversation, _, _ = scripted.calls[-2]
    assert first_conversation.tool_choice.mode == "required"


async def test_a_codex_shaped_request_streams_to_completed_and_names_what_it_ignores(served, scripted, caplog):
    scripted.enqueue([TextDelta("Done."), outcome(2)])
    body = {
        "model": "fake-chat.gguf", "instructions": "You are a coding agent. " * 850, "store": False,
        "input": [{"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "<permissions/>"}]},
                  {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "list the files"}]}],
        "tools": [{"type": "function", "name": "shell", "description": "Runs a command", "strict": False,
                   "parameters": {"type": "object", "properties": {"command": {"type": "array", "items": {"type": "string"}}},
                                  "required": ["command"]}},
                  {"type": "local_shell"}, {"type": "web_search"}],
        "tool_choice": "auto", "parallel_tool_calls": False, "reasoning": {"effort": "medium", "summary": "auto"},
        "include": ["reasoning.encrypted_content"], "prompt_cache_key": "019a-thread", "text": {"verbosity": "medium"},
    }
    assert len(body["instructions"]) > 20_000
    with caplog.at_level(logging.INFO, logger="server.responses"):
        headers, events = await stream(served, body)
    ignored = "reasoning, prompt_cache_key, include[0], text.verbosity, tools[1], tools[2]"
    assert headers["x-ignored-params"] == ignored
    (line,) = [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()]
    assert "tools[1] (a local_shell tool" in line and "reasoning (the model does not reason)" in line
    assert events[-1]["type"] == "response.completed" and events[-1]["response"]["output"][0]["content"][0]["text"] == "Done."
    _, conversation, _, _ = scripted.calls[-1]
    assert conversation.messages[0] == Message("system", body["instructions"])
    assert [t.name for t in conversation.tools] == ["shell"] and not conversation.tool_choice.parallel
    assert_envelope(await served.client.get(f"{RESPONSES}/{events[-1]['response']['id']}", headers=served.headers()), 404)


async def test_an_error_before_the_first_event_is_plain_http_and_keeps_nothing(served, scripted):
    before = await served.app.ctx.responses.store.total_bytes()
    scripted.enqueue([ContextLengthExceeded("the input is 3000 tokens; the context window is 2048", param="messages")])
    error = assert_envelope(await served.client.post(RESPONSES, json={"input": "long"}, headers=served.headers()), 400)
    assert (error["code"], error["param"]) == ("context_length_exceeded", "input")
    scripted.enqueue([ContextLengthExceeded("too long", param="messages")])
    async with served.client.stream("POST", RESPONSES, json={"input": "long", "stream": True},
                                     headers=served.headers()) as response:
        assert response.status_code == 400 and (await response.aread())
    assert await served.app.ctx.responses.store.total_bytes() == before


async def test_a_failure_mid_stream_ends_with_response_failed_and_is_kept_failed(served, scripted):
    scripted.enqueue([TextDelta("half"), EngineFailure("The model failed.")])
    _, events = await stream(served, {"input": "go"})
    failed = events[-1]
    assert failed["type"] == "response.failed" and failed["response"]["error"] == {"code": "server_error",
                                                                                   "message": "The model failed."}
    stored = (await served.client.get(f"{RESPONSES}/{failed['response']['id']}", headers=served.headers())).json()
    assert stored["status"] == "failed" and stored["output"][0]["content"][0]["text"] == "half"
    scripted.enqueue([TextDelta("half"), EngineFailure("The model failed.")])
    assert assert_envelope(await served.client.post(RESPONSES, json={"input": "go"}, headers=served.headers()), 500)


async def test_a_client_that_leaves_stops_the_reply_and_the_response_is_kept_cancelled(served, scripted):
    scripted.enqueue([TextDelta("one"), 5.0, TextDelta("never"), outcome(2)])
    service = served.app.ctx.responses
    run = await service.create(ResponseCreateRequest.model_validate({"input": "go", "stream": True}), "scope")
    await run.open()
    events = run.events()
    kinds = [(await anext(events))["type"] for _ in range(5)]
    assert kinds[-1] == "response.output_text.delta"
    await events.aclose()  # what the route does when the client is gone
    assert scripted.stopped_early == 1
    stored = await service.store.get(run.id, "scope")
    assert stored.status == "cancelled" and stored.body["output"][0]["content"][0]["text"] == "one"
    assert run.id not in service._runs  # no more heartbeats for it


@pytest.mark.parametrize("body, param", [
    ({"input": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "user", "content": "c"},
                {"type": "image_generation_call", "id": "x"}]}, "input[3].type"),
    ({"input": [{"type": "function_call_output", "call_id": "call_x", "output": "?"}]}, "input[0].call_id"),
    ({"input": "x", "tools": [{**WEATHER, "parameters": {"type": "object", "not": {}}}]}, "tools[0].parameters"),
    ({"input": []}, "input"),
    ({"input": "x", "model": "nope.gguf"}, "model"),
])
async def test_bad_input_is_a_400_or_404_naming_the_field(served, body, param):
    response = await served.client.post(RESPONSES, json=body, headers=served.headers())
    assert assert_envelope(response, 400, 404)["param"] == param


async def test_the_endpoints_are_in_the_metrics_and_the_openapi_document(served):
    await post(served, {"input": "count me"})
    snapshot = (await served.client.get("/metrics", headers=served.headers())).json()
    assert snapshot["requests"]["by_endpoint"]["POST /v1/responses"]["by_status"]["200"] >= 1
    spec = (await served.client.get("/openapi.json")).json()
    paths = spec["paths"]
    assert set(paths["/v1/responses"]) == {"post"} and set(paths["/v1/responses/{response_id}"]) == {"get", "delete"}
    assert "get" in paths["/v1/responses/{response_id}/input_items"] and "post" in paths["/v1/responses/{response_id}/cancel"]
    create = paths["/v1/responses"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ResponseCreateRequest"}
    assert "text/event-stream" in create["responses"]["200"]["content"]
    assert "POST /v1/responses" in (await served.client.get("/")).json()["endpoints"]


async def test_only_background_responses_can_be_cancelled(served):
    body = await post(served, {"input": "x"})
    error = assert_envelope(await served.client.post(f"{RESPONSES}/{body['id']}/cancel", headers=served.headers()), 400)
    assert "background" in error["message"]
    assert_envelope(await served.client.post(f"{RESPONSES}/resp_nope/cancel", headers=served.headers()), 404)


async def test_a_locked_database_is_a_503_and_store_false_still_works(served):
    store = served.app.ctx.responses.store
    await store._run(lambda: store._db().execute("PRAGMA busy_timeout = 50"))
    holder = sqlite3.connect(served.settings.responses_db_path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        error = assert_envelope(await served.client.post(RESPONSES, json={"input": "x"}, headers=served.headers()), 503)
        assert error["code"] == "storage_unavailable" and "locked" in error["message"]
        assert (await served.client.post(RESPONSES, json={"input": "x", "store": False},
                                         headers=served.headers())).status_code == 200
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        await store._run(lambda: store._db().execute("PRAGMA busy_timeout = 5000"))
    await post(served, {"input": "x"})  # and it works again
