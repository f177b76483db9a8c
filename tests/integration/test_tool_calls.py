"""Tool calling on the real model, through the `openai` SDK and LangChain.

Two models: the default SmolLM2 (its template knows no tools: the generic JSON format) and a copy of
it whose GGUF carries Qwen2.5's template (the hermes format: `<tool_call>` tags), made here with
gguf-new-metadata, as scripts/prepare_models.py makes the default. A 135M model answers badly; what
is checked is that the answer has the right shape, that every call names an offered tool and that
its arguments validate (the token mask makes sure of both), and that each tool_choice is honoured.

With `parallel_tool_calls` (the default), this model keeps adding calls until `max_tokens` when it
must call (the mask allows an end after each call; the model does not take it): such answers end
with "length", and every call but the cut last one validates.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Literal

import openai
import pytest

from tests.conftest import ROOT, start_server

HERMES_MODEL = "SmolLM2-hermes-tools.gguf"
QWEN_TEMPLATE = ROOT / "tests" / "unit" / "chat_templates" / "qwen2.5-instruct.jinja"
QUESTION = [{"role": "user", "content": "What is the weather in Paris? Use the tool."}]
CITIES = ["Paris", "Oslo", "Rome"]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city.", "strict": True,
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "enum": CITIES},
                                                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {"name": "get_time", "description": "The current time.",
                                         "parameters": {"type": "object", "properties": {}, "additionalProperties": False}}}
TOOLS = [WEATHER, TIME]
MAX_TOKENS = 80


# ---- servers and models ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tool_server(tmp_path_factory, default_model):
    """A server with both models: the default one (generic format) and its hermes-template copy."""
    folder = tmp_path_factory.mktemp("tool-models")
    models = folder / "models"
    models.mkdir()
    os.symlink(ROOT / "models" / default_model, models / default_model)
    new_metadata = Path(sys.executable).with_name("gguf-new-metadata")
    subprocess.run([str(new_metadata), "--chat-template-file", str(QWEN_TEMPLATE), "--force",
                    str(ROOT / "models" / default_model), str(models / HERMES_MODEL)], check=True, stdout=subprocess.DEVNULL)
    server = start_server(folder, MODELS_DIR=str(models), MODEL_NAME=default_model)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(tool_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=tool_server.base_url + "/v1", api_key=tool_server.api_key, max_retries=0, timeout=300)


@pytest.fixture(params=["generic", "hermes"])
def model(request, default_model) -> str:
    return default_model if request.param == "generic" else HERMES_MODEL


def ask(client: openai.OpenAI, model: str, **fields):
    fields = {"messages": QUESTION, "tools": TOOLS, "temperature": 0, "max_tokens": MAX_TOKENS, **fields}
    return client.chat.completions.create(model=model, **fields).choices[0]


def valid_calls(message, names=("get_weather", "get_time"), *, cut: bool = False) -> list[tuple[str, dict]]:
    """Each call well formed: an OpenAI id, a named offered tool, arguments valid against its parameters
    (`cut`: the answer ended at max_tokens, so the last call's arguments may be incomplete)."""
    calls = []
    for call in (message.tool_calls or [])[: -1 if cut else None]:
        assert call.id.startswith("call_") and call.type == "function"
        assert call.function.name in names
        arguments = json.loads(call.function.arguments)
        if call.function.name == "get_weather":
            assert set(arguments) == {"city", "unit"} and arguments["city"] in CITIES
            assert arguments["unit"] in ("celsius", "fahrenheit")
        else:
            assert arguments == {}
        calls.append((call.function.name, arguments))
    return calls


# ---- every tool_choice ---------------------------------------------------------------------------------


def test_required_makes_valid_calls(client, model):
    choice = ask(client, model, tool_choice="required")
    assert choice.finish_reason in ("tool_calls", "length") and choice.message.content is None
    assert len(valid_calls(choice.message, cut=choice.finish_reason == "length")) >= 1


def test_a_named_function_is_called_exactly_once(client, model):
    choice = ask(client, model, tool_choice={"type": "function", "function": {"name": "get_time"}})
    assert choice.finish_reason == "tool_calls"
    assert valid_calls(choice.message, names=("get_time",)) == [("get_time", {})]


def test_parallel_tool_calls_false_is_one_call_at_most(client, model):
    choice = ask(client, model, tool_choice="required", parallel_tool_calls=False)
    assert len(valid_calls(choice.message)) == 1


def test_auto_answers_in_text_or_in_valid_calls(client, model):
    choice = ask(client, model, tool_choice="auto")
    if choice.message.tool_calls:
        assert choice.finish_reason in ("tool_calls", "length")
        assert valid_calls(choice.message, cut=choice.finish_reason == "length")
    else:
        assert isinstance(choice.message.content, str) and choice.finish_reason in ("stop", "length")
    assert "<tool_call>" not in (choice.message.content or "") and '"tool_calls"' not in (choice.message.content or "")


def test_none_never_calls(client, model):
    choice = ask(client, model, tool_choice="none", max_tokens=24)
    assert not choice.message.tool_calls and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")


def test_the_stream_helper_accumulates_the_same_message_as_the_whole_answer(client, model):
    fields = {"messages": QUESTION, "tools": TOOLS, "temperature": 0, "max_tokens": MAX_TOKENS, "tool_choice": "required",
              "parallel_tool_calls": False}
    whole = client.chat.completions.create(model=model, **fields).choices[0]
    with client.chat.completions.stream(model=model, **fields) as stream:
        indexes = [call.index for event in stream if event.type == "chunk" and event.chunk.choices
                   for call in event.chunk.choices[0].delta.tool_calls or []]
        streamed = stream.get_final_completion().choices[0]
    assert streamed.finish_reason == whole.finish_reason == "tool_calls"
    assert streamed.message.content == whole.message.content
    assert valid_calls(streamed.message) == valid_calls(whole.message)  # greedy: the same calls (ids differ)
    assert indexes == sorted(indexes) and set(indexes) == set(range(len(whole.message.tool_calls)))
    for call in streamed.message.tool_calls:  # strict tools: the SDK parsed the arguments itself
        if call.function.name == "get_weather":
            assert call.function.parsed_arguments == json.loads(call.function.arguments)


def test_a_round_trip_call_result_answer(client, model):
    first = ask(client, model, tool_choice={"type": "function", "function": {"name": "get_weather"}})
    [call] = first.message.tool_calls
    history = QUESTION + [first.message.model_dump(exclude_none=True),
                          {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 21, "sky": "clear"})}]
    final = ask(client, model, messages=history, tool_choice="none", max_tokens=32)
    assert isinstance(final.message.content, str) and not final.message.tool_calls
    assert final.finish_reason in ("stop", "length")
    again = ask(client, model, messages=history, tool_choice="auto")  # may call again: if so, validly
    assert again.message.tool_calls is None or valid_calls(again.message)


# ---- LangChain ----------------------------------------------------------------------------------------


def chat_model(tool_server, model: str):
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(model=model, base_url=tool_server.base_url + "/v1", api_key=tool_server.api_key,
                      temperature=0, max_tokens=MAX_TOKENS, max_retries=0, timeout=300)


def test_langchain_bind_tools(tool_server, model):
    from langchain_core.tools import tool

    @tool
    def get_weather(city: Literal["Paris", "Oslo", "Rome"], unit: Literal["celsius", "fahrenheit"]) -> str:
        """The current weather in a city."""
        return "21"

    reply = chat_model(tool_server, model).bind_tools([get_weather], tool_choice="required", parallel_tool_calls=False) \
        .invoke(QUESTION[0]["content"])
    assert reply.tool_calls and not reply.invalid_tool_calls
    for call in reply.tool_calls:
        assert call["name"] == "get_weather" and call["args"]["city"] in CITIES and call["id"].startswith("call_")


def test_langchain_structured_output_by_function_calling(tool_server, model):
    from pydantic import BaseModel

    class Weather(BaseModel):
        """Weather asked about."""

        city: Literal["Paris", "Oslo", "Rome"]
        unit: Literal["celsius", "fahrenheit"]

    answer = chat_model(tool_server, model).with_structured_output(Weather, method="function_calling").invoke(QUESTION[0]["content"])
    assert isinstance(answer, Weather) and answer.city in CITIES


# ---- refusals (400 naming the parameter) ------------------------------------------------------------------


@pytest.mark.parametrize("fields, param", [
    ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"tools": [{"type": "function", "function": {"name": "get weather"}}]}, "tools[0].function.name"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}]}, "tools[0].function.parameters"),
    ({"tool_choice": "required"}, "tool_choice"),  # without tools
    ({"messages": QUESTION + [{"role": "tool", "tool_call_id": "call_x", "content": "1"}]}, "messages[1].tool_call_id"),
    ({"functions": [{"name": "f", "parameters": {"type": "object"}}]}, "functions"),
])
def test_refusals_need_no_generation(openai_client, default_model, fields, param):
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.chat.completions.create(model=default_model, **{"messages": QUESTION, **fields})
    assert info.value.status_code == 400 and info.value.param == param
    assert info.value.type == "invalid_request_error"


@pytest.mark.parametrize("fields, param", [
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    # a conditional schema: no mask library compiles if/then (models/native/constraint.py names the keyword)
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"a": {"type": "string"}}, "if": {"required": ["a"]}, "then": {"properties": {"b": {}}}}}}]},
     "tools[0].function.parameters"),
])
def test_refusals_of_tool_requests(client, default_model, fields, param):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=default_model, **{"messages": QUESTION, **fields})
    assert info.value.status_code == 400 and info.value.param == param
