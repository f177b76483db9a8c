"""Input items of `/v1/responses`: validated one by one, stored with ids, and turned into a `Conversation`.

Items are checked here by hand (with a small pydantic model per type) so that a refusal names the
exact field, `input[3].type` or `input[1].content[0].type`. A valid item is kept in the shape
`GET /v1/responses/{id}/input_items` lists (content as parts, an `id` on every item); output items
of a stored response have the same shapes, so a `previous_response_id` chain is one list of items.

Conversion: `developer` is `system`; consecutive `function_call` items are one assistant message's
tool calls (joined to the assistant text just before them, as the reply that made them); each
`function_call_output` is a `tool` message, and must answer a call made earlier.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from api.protocol_chat import NUL_MESSAGE
from api.responses_objects import new_id
from errors import InvalidRequest, UnsupportedParameter
from models.conversation import Message, ToolCall

ItemState = Literal["in_progress", "completed", "incomplete"]
UNSUPPORTED_PARTS = {"input_image": "images", "input_file": "files", "input_audio": "audio"}
# Item types of OpenAI's API that this server never produces, so never needs back.
FOREIGN_ITEMS = {
    "reasoning", "item_reference", "file_search_call", "computer_call", "computer_call_output", "web_search_call",
    "image_generation_call", "code_interpreter_call", "local_shell_call", "local_shell_call_output", "shell_call",
    "shell_call_output", "apply_patch_call", "apply_patch_call_output", "mcp_list_tools", "mcp_approval_request",
    "mcp_approval_response", "mcp_call", "custom_tool_call", "custom_tool_call_output", "compaction",
    "tool_search_call", "tool_search_output", "additional_tools", "program", "program_output",
}
TAGS = {"input_text", "output_text", "refusal", "str", "list", "dict", "function-after", "function-plain"}


class InputTextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["input_text"]
    text: str
    prompt_cache_breakpoint: dict[str, Any] | None = Field(None, description="Ignored: the KV cache is automatic.")


class OutputTextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["output_text"]
    text: str
    annotations: list[dict[str, Any]] | None = None
    logprobs: list[dict[str, Any]] | None = None


class RefusalPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["refusal"]
    refusal: str


ContentPart = Annotated[InputTextPart | OutputTextPart | RefusalPart, Field(discriminator="type")]


class MessageItem(BaseModel):
    """A message: `content` is text, or `input_text` / `output_text` (/ `refusal`) parts."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer", "assistant"]
    content: str | list[ContentPart]
    id: str | None = Field(None, max_length=128)
    status: ItemState | None = None
    phase: Literal["commentary", "final_answer"] | None = None


class FunctionCallItem(BaseModel):
    """A call the model made earlier (an output item sent back)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["function_call"]
    call_id: str = Field(min_length=1, max_length=128)
    name: str = Field(min_length=1, max_length=128)
    arguments: str
    id: str | None = Field(None, max_length=128)
    status: ItemState | None = None


class FunctionCallOutputItem(BaseModel):
    """The result of running a call: `call_id` names a `function_call` earlier in the conversation."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1, max_length=128)
    output: str | list[ContentPart]
    id: str | None = Field(None, max_length=128)
    status: ItemState | None = None
    name: str | None = None


InputItem = Annotated[MessageItem | FunctionCallItem | FunctionCallOutputItem, Field(discriminator="type")]
ITEM_MODELS: dict[str, type[BaseModel]] = {"message": MessageItem, "function_call": FunctionCallItem,
                                           "function_call_output": FunctionCallOutputItem}


def field_path(prefix: str, loc: tuple) -> str:
    """pydantic's error location as a parameter path: `input[3].content[0].text`."""
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part not in TAGS and "[" not in part:
            path += f".{part}"
    return path


def validate_as(model: type[BaseModel], raw: Any, param: str) -> Any:
    """`raw` as `model` (strict, as every request body), or a 400 naming the first wrong field under `param`."""
    try:
        return model.model_validate(raw, strict=True)
    except ValidationError as exc:
        problems = exc.errors(include_url=False)
        # An unknown field is the clearest cause; else the deepest problem: for `str | list[part]` given a list,
        # the part's missing field, not "should be a valid string".
        first = next((p for p in problems if p["type"] == "extra_forbidden"), max(problems, key=lambda p: len(p["loc"])))
        where = field_path(param, first["loc"])
        raise InvalidRequest(f"{where}: {first['msg']}", param=where) from None


def parse_items(raw: str | list, param: str = "input") -> list[dict[str, Any]]:
    """The request's `input` as stored items: a string is one user message."""
    if isinstance(raw, str):
        raw = [{"type": "message", "role": "user", "content": raw}]
    if not isinstance(raw, list):
        raise InvalidRequest(f"{param} must be a string or a list of items", param=param)
    return [_parse_item(item, f"{param}[{index}]") for index, item in enumerate(raw)]


def _parse_item(raw: Any, param: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{param} must be an object (an input item)", param=param)
    kind = raw.get("type", "message" if "role" in raw else None)
    kind = kind if isinstance(kind, str) else None  # a list or an object is no type (and cannot be looked up)
    if kind not in ITEM_MODELS:
        if kind in FOREIGN_ITEMS:
            raise UnsupportedParameter(f"{param}.type: `{kind}` items are not supported by this server (it never "
                                       "produces them)", param=f"{param}.type")
        shown = repr(kind[:64]) if kind else "missing or not a string"
        raise InvalidRequest(f"{param}.type: unknown item type ({shown}); use message, function_call or "
                             "function_call_output", param=f"{param}.type")
    for key in ("content", "output"):
        if isinstance(raw.get(key), list):
            _check_part_types(raw[key], f"{param}.{key}")
    item = validate_as(ITEM_MODELS[kind], {**raw, "type": kind}, param)
    _check_no_nul(item, param)
    return _stored(item)


def _check_part_types(parts: list, param: str) -> None:
    for index, part in enumerate(parts):
        kind = part.get("type") if isinstance(part, dict) else None
        if isinstance(kind, str) and kind in UNSUPPORTED_PARTS:
            raise UnsupportedParameter(f"{param}[{index}].type: {UNSUPPORTED_PARTS[kind]} ({kind}) are not supported by "
                                       "this server's text models", param=f"{param}[{index}].type")


def _check_no_nul(item: BaseModel, param: str) -> None:
    # The engine takes text as C strings: a NUL would cut it there (api/generation.py says the same for chat).
    if _has_nul(item.model_dump()):
        raise InvalidRequest(f"{param}: {NUL_MESSAGE}", param=param)


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(v) for v in value.values())
    return isinstance(value, list) and any(_has_nul(v) for v in value)


def _stored(item: BaseModel) -> dict[str, Any]:
    """The item as input_items lists it: parts for content, an id, a status."""
    if isinstance(item, MessageItem):
        part = "output_text" if item.role == "assistant" else "input_text"
        content = ([{"type": part, "text": item.content}] if isinstance(item.content, str)
                   else [p.model_dump(exclude_none=True) for p in item.content])
        if item.role == "assistant":
            content = [{"annotations": [], "logprobs": [], **p} if p["type"] == "output_text" else p for p in content]
        return {"id": item.id or new_id("msg"), "type": "message", "role": item.role, "status": "completed",
                "content": content}
    if isinstance(item, FunctionCallItem):
        return {"id": item.id or new_id("fc"), "type": "function_call", "call_id": item.call_id, "name": item.name,
                "arguments": item.arguments, "status": "completed"}
    output = item.output if isinstance(item.output, str) else [p.model_dump(exclude_none=True) for p in item.output]
    return {"id": item.id or new_id("fco"), "type": "function_call_output", "call_id": item.call_id,
            "output": output, "status": "completed"}


def part_text(parts: str | list[dict[str, Any]]) -> str:
    if isinstance(parts, str):
        return parts
    return "".join(p.get("text", p.get("refusal", "")) for p in parts)


def to_messages(items: list[dict[str, Any]], first_new: int = 0, param: str = "input") -> list[Message]:
    """Stored items as conversation messages; items from `first_new` on are the request's (`param`[i])."""
    messages: list[Message] = []
    calls: dict[str, str] = {}  # call_id -> function name, of the calls made so far
    for index, item in enumerate(items):
        kind = item["type"]
        if kind == "message":
            role = "system" if item["role"] == "developer" else item["role"]
            messages.append(Message(role=role, content=part_text(item["content"])))
        elif kind == "function_call":
            call = ToolCall(id=item["call_id"], name=item["name"], arguments=item["arguments"])
            calls[call.id] = call.name
            last = messages[-1] if messages else None
            if last is not None and last.role == "assistant":  # the reply that made the call: one assistant turn
                messages[-1] = Message("assistant", last.content, last.tool_calls + (call,))
            else:
                messages.append(Message("assistant", None, (call,)))
        else:
            if item["call_id"] not in calls:
                where = f"{param}[{index - first_new}].call_id" if index >= first_new else param
                raise InvalidRequest(f"{where}: no function_call with call_id {item['call_id']!r} comes before this "
                                     "function_call_output", param=where)
            messages.append(Message("tool", part_text(item["output"]), tool_call_id=item["call_id"],
                                    name=calls[item["call_id"]]))
    return messages
