"""A conversation as its chat template takes it: `messages` (and `tools`) for the model's format.

- A native format (hermes, llama3, mistral): the template renders the tools and the history itself,
  given what Hugging Face's `apply_chat_template` gives it: `tools` as OpenAI-style function dicts,
  assistant messages with `tool_calls` whose `arguments` is a dict (templates apply `tojson` to it),
  and `tool` messages with `tool_call_id` and `name`. Mistral's templates refuse call ids that are not
  9 alphanumerics, so ids are mapped to 9 hex digits there (the same id always maps the same way);
  Llama 3.1's refuse two calls in one message, so each call gets its own assistant message.
- The generic format: the tools are described in the system message (appended to the caller's),
  with the instruction to answer with one JSON object. A template with no system role (Mistral
  v0.1's refuses it) gets the system text, and the description, first in the first user message.
  Earlier calls are rendered as the JSON the model would have written, and tool results as user
  messages (every template takes "user"; many refuse "tool"), merged with a neighbouring user
  message so that templates that want alternating roles still get them.

With `tool_choice: "none"` a native template is not shown the tools (a model shown tools but
forbidden to call them writes broken calls as text), and the generic description is left out.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from models.conversation import Conversation, FunctionTool, Message, ToolCall
from models.tool_formats import ToolFormat


def template_inputs(conversation: Conversation, fmt: ToolFormat, *, system_role: bool = True) -> tuple[list[dict], list[dict] | None]:
    """The template's `messages`, and its `tools` (None: not passed, as for a chat without tools)."""
    if fmt.native:
        tools = [tool_dict(t) for t in conversation.tools] if conversation.calls_tools else None
        return _native_messages(conversation.messages, fmt), tools
    return _generic_messages(conversation, system_role), None


def tool_dict(tool: FunctionTool) -> dict:
    # `description` always present: Hermes' templates concatenate it as a string.
    return {"type": "function",
            "function": {"name": tool.name, "description": tool.description or "", "parameters": tool.parameters}}


def arguments_value(arguments: str) -> Any:
    """A call's arguments for a template: the object (templates `tojson` it), or the text if it is not one."""
    try:
        value = json.loads(arguments)
    except ValueError:
        return arguments
    return value if isinstance(value, dict) else arguments


def short_id(call_id: str) -> str:
    return hashlib.sha256(call_id.encode("utf-8", "surrogatepass")).hexdigest()[:9]


# ---- native -----------------------------------------------------------------------------------


def _native_messages(messages: tuple[Message, ...], fmt: ToolFormat) -> list[dict]:
    out: list[dict] = []
    for m in messages:
        if m.role == "assistant" and m.tool_calls:
            calls = [_call_dict(call, fmt) for call in m.tool_calls]
            groups = [calls] if fmt.parallel else [[call] for call in calls]
            for number, group in enumerate(groups):
                out.append({"role": "assistant", "content": m.content if number == 0 else None, "tool_calls": group})
        elif m.role == "tool":
            call_id = m.tool_call_id or ""
            out.append({"role": "tool", "tool_call_id": short_id(call_id) if fmt.short_ids else call_id,
                        "name": m.name or "", "content": m.content or ""})
        else:
            out.append({"role": m.role, "content": m.content or ""})
    return out


def _call_dict(call: ToolCall, fmt: ToolFormat) -> dict:
    return {"id": short_id(call.id) if fmt.short_ids else call.id, "type": "function",
            "function": {"name": call.name, "arguments": arguments_value(call.arguments)}}


# ---- generic ----------------------------------------------------------------------------------


def _generic_messages(conversation: Conversation, system_role: bool) -> list[dict]:
    json_replies = conversation.calls_tools  # the reply will be JSON: so are the earlier ones, as the model sees them
    out: list[dict] = []
    after_tool = False  # the last message out holds a tool's result: a user message joins it
    for m in conversation.messages:
        if m.role == "assistant":
            out.append({"role": "assistant", "content": _assistant_json(m) if m.tool_calls or json_replies else m.content or ""})
            after_tool = False
        elif m.role == "tool":
            result = f"Result of {m.name or 'the tool'} (call {m.tool_call_id}):\n{m.content or ''}"
            _add_user_text(out, result, merge=True)
            after_tool = True
        elif m.role == "user":
            _add_user_text(out, m.content or "", merge=after_tool)
        else:
            out.append({"role": m.role, "content": m.content or ""})
            after_tool = False
    system = [m["content"] for m in out if m["role"] == "system"] if not system_role else []
    if not system_role:
        out = [m for m in out if m["role"] != "system"]
    if conversation.calls_tools:
        system.append(tools_prompt(conversation))
    if system:
        _put_system_text(out, "\n\n".join(system), system_role)
    return out


def _assistant_json(m: Message) -> str:
    reply: dict[str, Any] = {"content": m.content} if m.content else {}
    if m.tool_calls:
        reply["tool_calls"] = [{"name": c.name, "arguments": arguments_value(c.arguments)} for c in m.tool_calls]
    return json.dumps(reply or {"content": ""}, ensure_ascii=False)


def _add_user_text(out: list[dict], text: str, *, merge: bool) -> None:
    """A user message, merged into a user message just before it when either comes from a tool."""
    if merge and out and out[-1]["role"] == "user":
        out[-1]["content"] += "\n\n" + text
    else:
        out.append({"role": "user", "content": text})


def _put_system_text(out: list[dict], description: str, system_role: bool) -> None:
    if system_role:
        if out and out[0]["role"] == "system":
            out[0]["content"] = f"{out[0]['content']}\n\n{description}" if out[0]["content"] else description
        else:
            out.insert(0, {"role": "system", "content": description})
        return
    first_user = next((m for m in out if m["role"] == "user"), None)
    if first_user is None:
        out.insert(0, {"role": "user", "content": description})
    else:
        first_user["content"] = f"{description}\n\n{first_user['content']}"


def tools_prompt(conversation: Conversation) -> str:
    """The generic format's instructions: the tools, their argument schemas, and the JSON to answer with."""
    lines = ["You can call these functions. Each is given with the JSON Schema of its arguments:"]
    for tool in conversation.tools:
        about = f": {tool.description}" if tool.description else ""
        lines.append(f"- {tool.name}{about}\n  arguments: {json.dumps(tool.parameters, ensure_ascii=False)}")
    choice = conversation.tool_choice
    one = "" if choice.parallel else " (at most one call)"
    call = '{"tool_calls": [{"name": "<function name>", "arguments": {<its arguments>}}]}'
    lines.append("")
    if choice.mode == "function":
        lines.append(f'Call the function {choice.name} now. Reply with one JSON object and nothing else: '
                     f'{{"tool_calls": [{{"name": "{choice.name}", "arguments": {{<its arguments>}}}}]}}')
    elif choice.mode == "required":
        lines.append(f"Call at least one function{one}. Reply with one JSON object and nothing else: {call}")
    else:
        lines.append("Reply with one JSON object and nothing else, either")
        lines.append(f"- to call functions{one}: {call}")
        lines.append('- or to answer directly: {"content": "<your answer>"}')
    return "\n".join(lines)
