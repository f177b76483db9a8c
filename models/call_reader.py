"""Call objects read out of a reply's JSON, as ReplyEvents: the part every tool format shares.

`Events` collects what a reply parser found (neighbouring text merged, calls numbered); `read_call`
reads one call object `{"name": ..., "arguments": ...}`, members in any order, into it, as the
characters come (models/json_stream.py's readers, one character at a time): `CallStart` as soon as
the name is complete, then the arguments' JSON in fragments exactly as generated.
"""

from __future__ import annotations

import secrets
import string

from models.conversation import CallArguments, CallStart, ReplyEvent, TextDelta
from models.json_stream import JsonSyntax, Reader, Skip, after_member, read_object_key, read_raw_value, read_string, skip_whitespace

ID_ALPHABET = string.ascii_letters + string.digits


def new_call_id() -> str:
    """OpenAI's shape: `call_` and 24 letters or digits."""
    return "call_" + "".join(secrets.choice(ID_ALPHABET) for _ in range(24))


class Events:
    """Collects events until `take()`, neighbouring pieces of one text or one call's arguments as one
    event (joined once: a whole reply fed at once is not copied again for every character)."""

    def __init__(self) -> None:
        self.calls = 0
        self.emitted = False  # any event at all, taken or not
        self._events: list[ReplyEvent] = []
        self._kind: str | int | None = None  # "text", or the call whose arguments `_parts` holds
        self._parts: list[str] = []

    def text(self, text: str) -> None:
        if text:
            self.emitted = True
            self._extend("text", text)

    def start(self, name: str) -> int:
        index, self.calls = self.calls, self.calls + 1
        self.emitted = True
        self._flush()
        self._events.append(CallStart(index, new_call_id(), name))
        return index

    def arguments(self, index: int, fragment: str) -> None:
        self._extend(index, fragment)

    def take(self) -> list[ReplyEvent]:
        self._flush()
        events, self._events = self._events, []
        return events

    def _extend(self, kind: str | int, piece: str) -> None:
        if kind != self._kind:
            self._flush()
            self._kind = kind
        self._parts.append(piece)

    def _flush(self) -> None:
        if self._parts:
            joined = "".join(self._parts)
            self._events.append(TextDelta(joined) if self._kind == "text" else CallArguments(self._kind, joined))
        self._kind, self._parts = None, []


class _Call:
    """One call object being read: its arguments wait for its name."""

    def __init__(self, out: Events):
        self.out = out
        self.index: int | None = None
        self.held: list[str] = []
        self.has_arguments = False

    def named(self, name: str) -> None:
        if self.index is None:
            self.index = self.out.start(name)
            if self.held:
                self.out.arguments(self.index, "".join(self.held))

    def arguments(self, fragment: str) -> None:
        self.has_arguments = True
        if self.index is None:
            self.held.append(fragment)
        else:
            self.out.arguments(self.index, fragment)

    def close(self) -> None:
        if self.index is None:
            raise JsonSyntax("an object without a name is not a call")
        if not self.has_arguments:
            self.out.arguments(self.index, "{}")


def read_call(c: str | None, out: Events, argument_keys: tuple[str, ...], skip: Skip | None = None) -> Reader:
    """One call object `{"name": ..., "arguments": ...}` (any member order) starting at `c`."""
    if c != "{":
        raise JsonSyntax(f"expected a call object, found {c!r}")
    call = _Call(out)
    c = yield from skip_whitespace((yield))
    if c == "}":
        call.close()
    while c is not None:
        key: list[str] = []
        c = yield from read_object_key(c, key)
        if key == ["name"] and c == '"':
            name: list[str] = []
            c = yield from read_string(c, name.append, lambda: call.named("".join(name)))
        elif key[0] in argument_keys and c == '"':  # arguments written as a JSON string: its text
            c = yield from read_string(c, call.arguments)
        elif key[0] in argument_keys:
            c = yield from read_raw_value(c, call.arguments, skip)
        else:
            c = yield from read_raw_value(c, ignore)
        c = yield from after_member(c, "}")
        if c == "":
            call.close()
            return (yield)
    return None


def read_calls(c: str | None, out: Events, argument_keys: tuple[str, ...], skip: Skip | None = None) -> Reader:
    """A JSON array of call objects starting at `c` ("[")."""
    c = yield from skip_whitespace((yield))
    if c == "]":
        return (yield)
    while c is not None:
        c = yield from read_call(c, out, argument_keys, skip)
        c = yield from after_member(c, "]")
        if c == "":
            return (yield)
    return None


def ignore(_: str) -> None:
    pass
