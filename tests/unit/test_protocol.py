"""Request validation: out-of-range values and parameters GPT4All cannot honour are refused, naming `param`."""

from __future__ import annotations

from types import SimpleNamespace

import orjson
import pytest

from api.http import parse_body
from api.protocol import ChatCompletionRequest, CompletionRequest
from api.protocol_responses import ChatChunkChoice, ChatCompletionChunk, DeltaMessage
from errors import InvalidRequest, UnsupportedParameter
from models.interfaces import SamplingParams

MESSAGES = [{"role": "user", "content": "Hi"}]


def parse(model, body) -> object:
    """Parse like the routes do: raw bytes through `parse_body`."""
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return parse_body(SimpleNamespace(body=raw, headers={"content-type": "application/json"}), model)


def chat(**fields):
    return parse(ChatCompletionRequest, {"messages": MESSAGES, **fields})


def completion(**fields):
    return parse(CompletionRequest, {"prompt": "Hi", **fields})


def refused(call, **fields) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        call(**fields)
    error = info.value
    assert error.status == 400
    assert error.body()["error"]["type"] == "invalid_request_error"
    return error


# ---- out-of-range values -------------------------------------------------------------------


@pytest.mark.parametrize("call", [chat, completion])
@pytest.mark.parametrize(
    "field, value",
    [
        ("temperature", -1),
        ("temperature", 2.5),
        ("max_tokens", 0),
        ("max_tokens", -5),
        ("max_tokens", 10**9),
        ("top_p", 0),
        ("top_p", 1.5),
        ("top_k", -1),
        ("min_p", 2),
        ("n", 0),
        ("n", 100),
        ("max_tokens", "many"),
        ("temperature", "hot"),
    ],
)
def test_out_of_range_or_wrong_type_is_400_naming_the_param(call, field, value):
    error = refused(call, **{field: value})
    assert error.param == field
    assert field in error.message
    assert error.code == "invalid_request"


def test_max_completion_tokens_out_of_range_names_it():
    assert refused(chat, max_completion_tokens=0).param == "max_completion_tokens"
    assert refused(chat, max_completion_tokens=10**9).param == "max_completion_tokens"


@pytest.mark.parametrize("call", [chat, completion])
def test_more_than_four_stop_sequences_are_refused(call):
    error = refused(call, stop=["a", "b", "c", "d", "e"])
    assert error.param == "stop"
    assert "at most 4" in error.message
    assert call(stop=["a", "b", "c", "d"]).stop == ["a", "b", "c", "d"]


def test_stop_may_be_a_string_or_list_and_becomes_a_tuple_for_the_engine():
    assert chat(stop="\n").to_sampling_params(5).stop == ("\n",)
    assert chat(stop=["x", "y"]).to_sampling_params(5).stop == ("x", "y")
    assert chat().to_sampling_params(5).stop == ()
    assert refused(chat, stop=[""]).param == "stop"
    assert refused(chat, stop=5).param == "stop"


# ---- what GPT4All cannot honour --------------------------------------------------------------


@pytest.mark.parametrize(
    "fields, param",
    [
        ({"top_logprobs": 3}, "top_logprobs"),  # without logprobs: true
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"function_call": "auto"}, "function_call"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),  # without stream: true
        ({"max_tokens": 5, "max_completion_tokens": 6}, "max_completion_tokens"),
    ],
)
def test_chat_refuses_what_cannot_be_honoured_naming_the_param(fields, param):
    error = refused(chat, **fields)
    assert isinstance(error, UnsupportedParameter)
    assert error.param == param
    assert error.code == "unsupported_parameter"
    assert error.body() == {
        "error": {"message": error.message, "type": "invalid_request_error", "param": param, "code": "unsupported_parameter"}
    }


@pytest.mark.parametrize(
    "fields, param",
    [
        ({"logprobs": 2, "echo": True}, "echo"),  # the prompt's own logprobs are not computed
        ({"suffix": "end"}, "suffix"),
        ({"best_of": 3}, "best_of"),
    ],
)
def test_completion_refuses_what_cannot_be_honoured_naming_the_param(fields, param):
    error = refused(completion, **fields)
    assert isinstance(error, UnsupportedParameter)
    assert error.param == param


def test_what_can_be_honoured_is_accepted():
    request = chat(
        seed=7,
        temperature=0,
        frequency_penalty=0,
        presence_penalty=0.0,
        logprobs=False,
        tool_choice="none",
        response_format={"type": "text"},
        logit_bias={},
        user="alice",
        stream=True,
        stream_options={"include_usage": True},
        max_completion_tokens=9,
    )
    assert request.include_usage
    assert request.token_limit == 9
    assert request.sampling_params() == SamplingParams(max_tokens=9, temperature=0.0, seed=7)


def test_the_parameters_that_need_the_logits_become_engine_values():
    params = chat(seed=7, temperature=0.8, frequency_penalty=0.5, presence_penalty=-1, logit_bias={"2": -100, "15": 5.5},
                  logprobs=True, top_logprobs=3).sampling_params()
    assert (params.seed, params.temperature, params.frequency_penalty, params.presence_penalty) == (7, 0.8, 0.5, -1.0)
    assert params.logit_bias == ((2, -100.0), (15, 5.5)) and params.logprobs == 3
    assert chat(logprobs=True).sampling_params().logprobs == 0
    assert chat(logprobs=False, top_logprobs=None).sampling_params().logprobs is None
    assert completion(logprobs=5).sampling_params().logprobs == 5


@pytest.mark.parametrize("call", [chat, completion])
@pytest.mark.parametrize(
    "fields, param",
    [
        ({"logit_bias": {"abc": 1}}, "logit_bias"),
        ({"logit_bias": {"-3": 1}}, "logit_bias"),
        ({"logit_bias": {"5": 101}}, "logit_bias"),
        ({"logit_bias": {str(i): 1 for i in range(1025)}}, "logit_bias"),
        ({"frequency_penalty": 2.5}, "frequency_penalty"),
        ({"presence_penalty": -3}, "presence_penalty"),
        ({"seed": "7"}, "seed"),
        ({"response_format": {"type": "json_schema"}}, "response_format"),
        ({"response_format": {"type": "xml"}}, "response_format.type"),
    ],
)
def test_bad_values_of_the_logit_parameters_are_refused_naming_them(call, fields, param):
    assert refused(call, **fields).param == param


def test_top_logprobs_is_bounded_as_openai_bounds_it():
    assert refused(chat, logprobs=True, top_logprobs=21).param == "top_logprobs"
    assert refused(completion, logprobs=6).param == "logprobs"


def test_nulls_mean_defaults():
    request = chat(temperature=None, top_p=None, top_k=None, n=None, stream=None)
    assert (request.temperature, request.top_p, request.top_k, request.n, request.stream) == (1.0, 1.0, 40, 1, False)


@pytest.mark.parametrize("call", [chat, completion])
def test_unknown_field_is_refused_naming_it(call):
    error = refused(call, frobnicate=True)
    assert error.param == "frobnicate"
    assert "Extra inputs are not permitted" in error.message


# ---- messages and prompts --------------------------------------------------------------------


def test_messages_accept_text_parts_and_developer_role():
    request = parse(
        ChatCompletionRequest,
        {
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}]},
            ]
        },
    )
    messages = request.to_conversation().messages
    assert [(m.role, m.content) for m in messages] == [("system", "Be brief."), ("user", "Hello")]


def test_response_format_and_tools_together_are_refused_naming_response_format():
    tools = [{"type": "function", "function": {"name": "f"}}]
    assert refused(chat, tools=tools, response_format={"type": "json_object"}).param == "response_format"
    assert chat(tools=tools, tool_choice="none", response_format={"type": "json_object"}).sampling_params().constraint


@pytest.mark.parametrize(
    "messages, param_prefix",
    [
        ([], "messages"),
        ([{"role": "tool", "content": "x"}], "messages[0].tool_call_id"),
        ([{"role": "function", "content": "x"}], "messages.0.role"),
        ([{"role": "user"}], "messages[0].content"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}], "messages.0.content"),
        ("hello", "messages"),
    ],
)
def test_bad_messages_are_refused_naming_where(messages, param_prefix):
    error = refused(lambda **f: parse(ChatCompletionRequest, f), messages=messages)
    assert error.param.startswith(param_prefix)


def test_missing_messages_or_prompt_is_refused():
    assert refused(lambda: parse(ChatCompletionRequest, {"model": "x"})).param == "messages"
    assert refused(lambda: parse(CompletionRequest, {"max_tokens": 3})).param == "prompt"


def test_prompt_string_or_list_gives_prompts_and_empty_list_is_refused():
    assert completion().prompts == ["Hi"]
    assert completion(prompt=["a", "b"]).prompts == ["a", "b"]
    assert refused(completion, prompt=[]).param == "prompt"
    assert completion().max_tokens == 16  # OpenAI's default for /v1/completions
    assert chat().token_limit is None


@pytest.mark.parametrize(
    "raw, words",
    [
        (b"", "empty"),
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'"text"', "JSON object"),
    ],
)
def test_body_that_is_not_a_json_object_is_400(raw, words):
    with pytest.raises(InvalidRequest) as info:
        parse(ChatCompletionRequest, raw)
    assert words in info.value.message


# ---- response shapes -------------------------------------------------------------------------


def test_delta_omits_unset_keys_like_openai():
    chunk = ChatCompletionChunk(
        id="c", model="m", choices=[ChatChunkChoice(index=0, delta=DeltaMessage(content="x"))]
    ).model_dump(mode="json")
    assert chunk["choices"][0]["delta"] == {"content": "x"}
    assert DeltaMessage().model_dump() == {}
    assert DeltaMessage(role="assistant", content="").model_dump() == {"role": "assistant", "content": ""}
