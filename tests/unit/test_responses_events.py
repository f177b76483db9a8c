"""The Responses event sequence, read by the `openai` SDK's own stream helper: order, sequence numbers,
and the same Response streamed as plain (no server: the SDK talks to a mock transport)."""

from __future__ import annotations

import itertools
import json

import httpx2
import openai
import pytest

import api.responses_events as events_module
from api.responses_events import ResponseBuilder, sse_event
from api.responses_objects import ResponseObject
from errors import EngineFailure
from models.conversation import CallArguments, CallStart, TextDelta
from models.interfaces import GenerationOutcome

TEXT_THEN_CALLS = [
    TextDelta("Let me "), TextDelta("check."),
    CallStart(0, "call_a", "get_weather"), CallArguments(0, '{"city": '), CallArguments(0, '"Paris"}'),
    CallStart(1, "call_b", "get_time"), CallArguments(1, "{}"),
]
STOP = GenerationOutcome(prompt_tokens=12, completion_tokens=9, finish_reason="stop", cached_tokens=5)
CUT = GenerationOutcome(prompt_tokens=12, completion_tokens=4, finish_reason="length", limit="max_tokens")


def build(reply: list, outcome: GenerationOutcome | None, monkeypatch) -> tuple[list[dict], dict]:
    """Every event of one reply, and the Response the builder ends with (ids made deterministic)."""
    counter = itertools.count()
    monkeypatch.setattr(events_module, "new_id", lambda prefix: f"{prefix}_{next(counter)}")
    builder = ResponseBuilder(ResponseObject(id="resp_1", created_at=1, status="in_progress", model="m"))
    out = builder.begin()
    for event in reply:
        out += builder.add(event)
    out += builder.finish(outcome) if outcome is not None else builder.fail(EngineFailure("boom"))
    body = builder.response.model_dump(mode="json")
    body["completed_at"] = body["completed_at"] and 2  # the clock: the same in both runs
    for event in out:
        if "response" in event and event["response"]["completed_at"]:
            event["response"]["completed_at"] = 2
    return out, body


def sdk_client(sse: bytes, body: dict) -> openai.OpenAI:
    def answer(request: httpx2.Request) -> httpx2.Response:
        if json.loads(request.content).get("stream"):
            return httpx2.Response(200, content=sse, headers={"content-type": "text/event-stream"})
        return httpx2.Response(200, json=body)

    return openai.OpenAI(base_url="http://test/v1", api_key="k", max_retries=0,
                         http_client=httpx2.Client(transport=httpx2.MockTransport(answer)))


def test_the_events_come_in_openais_order_with_increasing_sequence_numbers(monkeypatch):
    events, _ = build(TEXT_THEN_CALLS, STOP, monkeypatch)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events] == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.completed"]
    assert sse_event(events[0]).startswith(b"event: response.created\ndata: {")


def test_the_sdk_stream_helper_assembles_the_plain_response(monkeypatch):
    events, _ = build(TEXT_THEN_CALLS, STOP, monkeypatch)
    _, plain = build(TEXT_THEN_CALLS, STOP, monkeypatch)  # a second, non-streamed run of the same reply
    client = sdk_client(b"".join(sse_event(e) for e in events), plain)
    with client.responses.stream(model="m", input="weather?") as stream:
        seen = list(stream)
        streamed = stream.get_final_response()
    parsed = client.responses.parse(model="m", input="weather?")
    assert streamed.to_dict() == parsed.to_dict()
    assert streamed.output_text == "Let me check."
    message, weather, time_call = streamed.output
    assert message.status == "completed" and weather.status == "completed"
    assert (weather.call_id, weather.name, weather.arguments) == ("call_a", "get_weather", '{"city": "Paris"}')
    assert (time_call.call_id, time_call.arguments) == ("call_b", "{}")
    usage = streamed.usage
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (12, 9, 21)
    assert usage.input_tokens_details.cached_tokens == 5 and usage.output_tokens_details.reasoning_tokens == 0
    # the helper's own accumulation of the deltas agrees with the final response
    text_deltas = [e for e in seen if e.type == "response.output_text.delta"]
    assert text_deltas[-1].snapshot == message.content[0].text
    argument_deltas = [e for e in seen if e.type == "response.function_call_arguments.delta"]
    assert argument_deltas[1].snapshot == weather.arguments


def test_a_reply_cut_by_max_tokens_is_incomplete_with_its_reason(monkeypatch):
    events, plain = build([TextDelta("one two")], CUT, monkeypatch)
    assert events[-1]["type"] == "response.incomplete"
    assert plain["status"] == "incomplete" and plain["incomplete_details"] == {"reason": "max_output_tokens"}
    assert plain["output"][0]["status"] == "incomplete" and plain["completed_at"] is None
    client = sdk_client(b"".join(sse_event(e) for e in events), plain)
    with client.responses.stream(model="m", input="count") as stream:
        kinds = [e.type for e in stream]
    assert kinds[-1] == "response.incomplete"
    assert client.responses.create(model="m", input="count").output_text == "one two"


def test_a_failure_mid_reply_ends_with_response_failed_and_what_was_made(monkeypatch):
    events, plain = build([TextDelta("half")], None, monkeypatch)
    assert [e["type"] for e in events][-2:] == ["response.output_text.delta", "response.failed"]
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["error"] == {"code": "server_error", "message": "boom"}
    assert failed["output"][0]["status"] == "incomplete" and failed["output"][0]["content"][0]["text"] == "half"
    client = sdk_client(b"".join(sse_event(e) for e in events), plain)
    with client.responses.stream(model="m", input="x") as stream:
        assert [e.type for e in stream][-1] == "response.failed"
        with pytest.raises(RuntimeError):
            stream.get_final_response()  # the SDK's way of saying there is none


def test_an_empty_reply_has_no_output_items(monkeypatch):
    events, plain = build([TextDelta("")], STOP, monkeypatch)
    assert [e["type"] for e in events] == ["response.created", "response.in_progress", "response.completed"]
    assert plain["output"] == [] and plain["status"] == "completed"
