"""Chat and text completions in-process, on the scripted fake engine: usage with `n` and several
prompts, the order of SSE events, and an engine failure before and during a stream.

The fake engine counts a prompt's words as its tokens and each piece as one completion token, so
every usage figure here is known exactly.
"""

from __future__ import annotations

import json

import pytest

from tests.helpers.sse import DONE, assert_error_event, sse_events

pytestmark = pytest.mark.asyncio(loop_scope="module")

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
MESSAGES = [{"role": "user", "content": "hello there"}]


async def stream(served, path: str, body: dict) -> list:
    async with served.client.stream("POST", path, json={**body, "stream": True}, headers=served.headers()) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        return sse_events((await response.aread()).decode())


async def test_n_choices_of_several_prompts_count_each_prompt_once(served):
    for _ in range(4):
        served.chat.enqueue(["a", "b", "c"])
    body = {"prompt": ["one two", "three four five"], "n": 2, "max_tokens": 8}
    response = await served.client.post(COMPLETIONS, json=body, headers=served.headers())
    assert response.status_code == 200, response.text
    answer = response.json()
    assert [c["index"] for c in answer["choices"]] == [0, 1, 2, 3]  # prompt 1's two choices, then prompt 2's
    assert [c["text"] for c in answer["choices"]] == ["abc"] * 4
    assert answer["usage"] == {"prompt_tokens": 2 + 3, "completion_tokens": 4 * 3, "total_tokens": 5 + 12,
                               "prompt_tokens_details": {"cached_tokens": 0}}
    assert served.chat.prompts[-4:] == ["one two", "one two", "three four five", "three four five"]


async def test_chat_n_two_counts_the_prompt_once_and_each_choice_finishes(served):
    served.chat.enqueue(["x", "y"])
    served.chat.enqueue(["z"])
    answer = (await served.client.post(CHAT, json={"messages": MESSAGES, "n": 2}, headers=served.headers())).json()
    assert [c["message"]["content"] for c in answer["choices"]] == ["xy", "z"]
    prompt_words = len(served.chat.prompts[-1].split())
    assert answer["usage"]["prompt_tokens"] == prompt_words and answer["usage"]["completion_tokens"] == 3
    assert [c["finish_reason"] for c in answer["choices"]] == ["stop", "stop"]


async def test_a_chat_stream_is_role_then_content_then_finish_then_usage_then_done(served):
    served.chat.enqueue(["Hel", "lo"])
    events = await stream(served, CHAT, {"messages": MESSAGES, "stream_options": {"include_usage": True}})
    assert events[-1] == DONE and events.count(DONE) == 1
    chunks = events[:-1]
    assert len({c["id"] for c in chunks}) == 1 and all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["choices"][0]["delta"].get("content") for c in chunks[1:3]] == ["Hel", "lo"]
    assert chunks[3]["choices"][0]["finish_reason"] == "stop" and chunks[3]["usage"] is None
    assert chunks[4]["choices"] == [] and chunks[4]["usage"]["completion_tokens"] == 2
    assert len(chunks) == 5


async def test_a_text_completion_stream_of_two_choices_keeps_each_choice_in_order(served):
    served.chat.enqueue(["a", "b"])
    served.chat.enqueue(["c"])
    events = await stream(served, COMPLETIONS, {"prompt": "go on", "n": 2})
    choices = [c["choices"][0] for c in events[:-1]]
    assert [(c["index"], c["text"], c["finish_reason"]) for c in choices] == [
        (0, "a", None), (0, "b", None), (0, "", "stop"), (1, "c", None), (1, "", "stop")]
    assert events[-1] == DONE


async def test_a_failure_mid_stream_sends_the_pieces_then_an_error_event_then_done(served):
    served.chat.enqueue(["one", " two", RuntimeError("boom")])
    events = await stream(served, CHAT, {"messages": MESSAGES})
    assert events[-1] == DONE
    error = assert_error_event(events[-2])
    assert (error["type"], error["code"]) == ("server_error", "engine_error") and "boom" not in json.dumps(error)
    pieces = [c["choices"][0]["delta"].get("content") for c in events[1:-2]]
    assert pieces == ["one", " two"]
    assert not any(c["choices"][0]["finish_reason"] for c in events[:-2])  # never presented as finished


async def test_a_failure_before_the_first_piece_is_a_plain_500_envelope(served):
    served.chat.enqueue([RuntimeError("at once")])
    response = await served.client.post(COMPLETIONS, json={"prompt": "x", "stream": True}, headers=served.headers())
    assert response.status_code == 500 and response.json()["error"]["code"] == "engine_error"
    assert served.chat.active == 0
