"""A reply's text deltas, as they come, into ReplyEvents: text, and tool calls in the model's format.

    parser = parser_for(conversation, fmt)      # one per choice
    events = parser.feed(delta)                 # as often as text arrives
    events += parser.finish()                   # once, at the end
    parser.calls                                # calls started (finish_reason "tool_calls" when > 0)

- A native format: plain text until the format's trigger (`<tool_call>`, `[TOOL_CALLS]`, Llama 3's
  `{"name": `). Text that may be the start of a trigger is held back until the next delta decides
  (as scheduler/stop_filter.py does for stop sequences). After the trigger come one call object
  (or, for Mistral, an array of them) and the format's end marker; then text again. Whitespace
  between text and a call is dropped.
- The generic format: the whole reply is one JSON object. Its `content` string streams out as text,
  decoded (escapes too, however split); each of its `tool_calls` becomes a call.

A call: `CallStart(index, id, name)` as soon as its name is complete, then `CallArguments`
fragments that concatenate to its arguments' JSON exactly as generated (a model that wrote
`arguments` before `name` has them held until the name comes; one that wrote them as a JSON
string gets that string's decoded text). The call's own text never reaches the text.

The engine's constraint makes every started call well formed. Unconstrained output that is not
what it seemed is kept: a trigger followed by anything but a call object is text; a cut-off call
(max_tokens) keeps the fragments it has, and a call cut before its name was known is dropped.
"""

from __future__ import annotations

import re
from typing import Callable, Protocol

from models.call_reader import Events, ignore, new_call_id, read_call, read_calls
from models.conversation import Conversation, ReplyEvent, TextDelta
from models.json_stream import (WHITESPACE, JsonSyntax, Reader, after_member, read_object_key, read_raw_value, read_string,
                                skip_whitespace)
from models.tool_formats import ToolFormat

ARGUMENT_KEYS = ("arguments", "parameters")  # a call's arguments, under either name (Llama 3 writes `parameters`)

__all__ = ["GenericParser", "NativeParser", "PlainParser", "ReplyParser", "new_call_id", "parser_for"]

class ReplyParser(Protocol):
    calls: int

    def feed(self, text: str) -> list[ReplyEvent]: ...

    def finish(self) -> list[ReplyEvent]: ...


def parser_for(conversation: Conversation, fmt: ToolFormat) -> ReplyParser:
    if not conversation.calls_tools:
        return PlainParser()
    return NativeParser(fmt) if fmt.native else GenericParser()


class PlainParser:
    """No tools: every delta is text."""

    calls = 0

    def feed(self, text: str) -> list[ReplyEvent]:
        return [TextDelta(text)] if text else []

    def finish(self) -> list[ReplyEvent]:
        return []


class _Driven(Events):
    """Feeds characters to the `_run` generator, which may read text again (`_push_back`) and may say
    that, until a character matching a pattern, every character goes unchanged to one sink (`_skip`):
    plain text and plain string content then pass in slices, not one generator step per character."""

    def __init__(self) -> None:
        super().__init__()
        self._buffer, self._at = "", 0
        self._fast: tuple[re.Pattern, Callable[[str], None]] | None = None
        self._done = False
        self._run_gen = self._run()
        next(self._run_gen)

    def feed(self, text: str) -> list[ReplyEvent]:
        self._buffer, self._at = self._buffer[self._at:] + text, 0
        self._pump()
        return self.take()

    def finish(self) -> list[ReplyEvent]:
        self._pump()
        self._send(None)
        return self.take()

    def _pump(self) -> None:
        while self._at < len(self._buffer):
            if self._fast is not None:
                pattern, sink = self._fast
                found = pattern.search(self._buffer, self._at)
                end = found.start() if found else len(self._buffer)
                if end > self._at:
                    piece, self._at = self._buffer[self._at:end], end
                    self._seen(piece)
                    sink(piece)
                    continue
            self._at += 1
            self._send(self._buffer[self._at - 1])

    def _push_back(self, text: str) -> None:
        self._buffer, self._at = text + self._buffer[self._at:], 0

    def _skip(self, pattern: re.Pattern | None, sink: Callable[[str], None] | None) -> None:
        self._fast = None if pattern is None else (pattern, sink)

    def _send(self, c: str | None) -> None:
        if self._done:
            return
        if c is not None:
            self._seen(c)
        try:
            self._run_gen.send(c)
        except StopIteration:
            self._done = True

    def _seen(self, text: str) -> None:
        pass

    def _run(self) -> Reader:
        raise NotImplementedError


class NativeParser(_Driven):
    def __init__(self, fmt: ToolFormat):
        self.fmt = fmt
        self._raw: list[str] | None = None  # the current call block's text, in case it is not a call
        self._held_space = ""  # whitespace not yet known to be text (it is dropped next to a call)
        self._space_before = ""  # what was held when a trigger came
        self._trigger_start = re.compile(re.escape(fmt.trigger[0]))
        self._after_call = False
        super().__init__()

    def _seen(self, text: str) -> None:
        if self._raw is not None:
            self._raw.append(text)

    def _run(self) -> Reader:
        c = yield
        while True:
            if not (yield from self._text_until_trigger(c)):
                if not self.calls:
                    self.text(self._held_space)
                return None
            before, self._raw, space = self.calls, [self.fmt.marker], self._space_before
            try:
                c = yield from self._block((yield))
            except JsonSyntax:
                raw, self._raw = "".join(self._raw), None
                if self.calls == before:  # not a call after all: it was text, and so was the space before it
                    self._held_space = space
                    self._text(raw)
                c = yield
                continue
            self._raw = None
            self._after_call = True
            if c is None:
                return None

    def _text_until_trigger(self, c: str | None) -> Reader:
        """Text up to the trigger (True, its call text pushed back), or to the end (False)."""
        trigger, pending = self.fmt.trigger, ""
        while c is not None:
            candidate = pending + c
            if trigger.startswith(candidate):
                pending = candidate
                if pending == trigger:
                    self._space_before, self._held_space = self._held_space, ""
                    self._push_back(trigger[len(self.fmt.marker):])
                    return True
            else:
                keep = _partial_trigger(candidate, trigger)
                self._text(candidate[: len(candidate) - keep])
                pending = candidate[len(candidate) - keep:]
            if not pending:  # up to the trigger's first character, all is text
                self._skip(self._trigger_start, self._text)
            c = yield
            self._skip(None, None)
        self._text(pending)
        return False

    def _block(self, c: str | None) -> Reader:
        """After the marker: one call object or an array of them, then the end marker."""
        c = yield from skip_whitespace(c)
        if c == "[":
            c = yield from read_calls(c, self, ARGUMENT_KEYS, self._skip)
        else:
            c = yield from read_call(c, self, ARGUMENT_KEYS, self._skip)
        if not self.fmt.end_marker or c is None:
            return c
        c = yield from skip_whitespace(c)
        for number, expected in enumerate(self.fmt.end_marker):
            if c != expected:  # not the end marker: what came is text
                self._push_back(self.fmt.end_marker[:number] + (c or ""))
                return (yield)
            c = yield
        return c

    def _text(self, text: str) -> None:
        body = text.rstrip(WHITESPACE)
        if not body:
            self._held_space += text
            return
        if self._after_call:
            body, self._after_call = body.lstrip(WHITESPACE), False
        else:
            body = self._held_space + body
        self.text(body)
        self._held_space = text[len(text.rstrip(WHITESPACE)):]


def _partial_trigger(text: str, trigger: str) -> int:
    """The length of the longest end of `text` that is a start of `trigger`."""
    for length in range(min(len(trigger) - 1, len(text)), 0, -1):
        if text.endswith(trigger[:length]):
            return length
    return 0


class GenericParser(_Driven):
    """The generic format's JSON reply: `{"content": "..."}` or `{"tool_calls": [...]}`."""

    def __init__(self) -> None:
        self._raw: list[str] = []
        super().__init__()

    def _seen(self, text: str) -> None:
        if not self.emitted:  # only read while nothing went out (the reply is then shown as text)
            self._raw.append(text)

    def _run(self) -> Reader:
        c = yield from skip_whitespace((yield))
        if c == "{":
            try:
                c = yield from self._reply(c)
                c = yield from skip_whitespace(c)
            except JsonSyntax:
                if not self.emitted:
                    self.text("".join(self._raw).lstrip(WHITESPACE))
                c = yield
        while c is not None:  # not JSON (no constraint): plain text
            self.text(c)
            c = yield
        return None

    def _reply(self, c: str) -> Reader:
        c = yield from skip_whitespace((yield))
        if c == "}":
            return (yield)
        while c is not None:
            key: list[str] = []
            c = yield from read_object_key(c, key)
            if key == ["content"] and c == '"':
                c = yield from read_string(c, self.text, skip=self._skip)
            elif key == ["tool_calls"] and c == "[":
                c = yield from read_calls(c, self, ("arguments",), self._skip)
            else:
                c = yield from read_raw_value(c, ignore)
            c = yield from after_member(c, "}")
            if c == "":
                return (yield)
        return None
