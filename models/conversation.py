"""One conversation model for every protocol, and what a parsed reply is made of.

Chat completions' messages and the Responses API's input items both become a `Conversation`:
messages (with the assistant's tool calls and the tools' results), the function tools on offer
and the caller's `tool_choice`. The chat template renders it (models/tool_formats.py decides how
tools are written for a template), the engine generates, and the reply's text is parsed back into
`ReplyEvent`s: text, and tool calls whose arguments arrive in fragments. Chat completions and
Responses are two thin protocol layers over this one path.

Nothing here knows HTTP or pydantic: plain frozen values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Mapping

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True)
class ToolCall:
    """A call the assistant made: `arguments` is the JSON text of the arguments object, as generated."""

    id: str  # "call_..."
    name: str
    arguments: str


@dataclass(frozen=True)
class Message:
    role: Role
    content: str | None = None  # None: an assistant turn with only tool calls
    tool_calls: tuple[ToolCall, ...] = ()  # assistant only
    tool_call_id: str | None = None  # tool only: the call this result answers
    name: str | None = None  # tool: the function's name (filled from the call it answers)


@dataclass(frozen=True, eq=False)
class FunctionTool:
    name: str
    description: str | None = None
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None


@dataclass(frozen=True)
class ToolChoice:
    """OpenAI's `tool_choice` and `parallel_tool_calls`, normalised."""

    mode: Literal["none", "auto", "required", "function"] = "auto"
    name: str | None = None  # mode "function": the one function to call
    parallel: bool = True  # False: at most one call


@dataclass(frozen=True, eq=False)
class Conversation:
    messages: tuple[Message, ...]
    tools: tuple[FunctionTool, ...] = ()
    tool_choice: ToolChoice = ToolChoice()

    @property
    def calls_tools(self) -> bool:
        """Whether the reply may contain tool calls."""
        return bool(self.tools) and self.tool_choice.mode != "none"


def text_conversation(messages: Iterable[Mapping[str, Any]]) -> Conversation:
    """Plain `{"role", "content"}` dicts (the chat page's history) as a conversation without tools.

    "developer" is "system"; a message of another role than system, user or assistant is left out
    (a tool result is nothing without the call it answers, which plain dicts do not carry), and a
    missing content is empty text."""
    kept: list[Message] = []
    for m in messages:
        role = "system" if m.get("role") == "developer" else m.get("role")
        if role in ("system", "user", "assistant"):
            kept.append(Message(role, m.get("content") or ""))
    return Conversation(tuple(kept))


# ---- a reply, parsed: what the protocol layers turn into chunks or events -----------------------


@dataclass(frozen=True)
class TextDelta:
    """Plain reply text (never a tool call's own text)."""

    text: str


@dataclass(frozen=True)
class CallStart:
    """A tool call begins: its position among the reply's calls (0, 1, ...), id and function name."""

    index: int
    id: str
    name: str


@dataclass(frozen=True)
class CallArguments:
    """The next fragment of call `index`'s arguments JSON; a call's fragments concatenate to its whole JSON."""

    index: int
    fragment: str


ReplyEvent = TextDelta | CallStart | CallArguments
