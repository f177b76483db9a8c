"""Incremental JSON readers, one character at a time, for reply parsers that must stream.

Each reader is a generator driven by `send(char)` (`None` is the end of the input) and used with
`yield from`. A reader is called with the character that starts its token, which it consumes; it
returns the next character it read past its token and did not consume (None at the end of the
input), so readers chain without a peek. Decoded text goes out through callbacks as it arrives:
a JSON string's characters reach the caller before its closing quote, escapes (`\\n`, `\\u00e9`,
surrogate pairs) decoded whatever deltas they were split across.

Malformed input raises `JsonSyntax`; a reply parser then decides what the text was.
"""

from __future__ import annotations

import re
from typing import Callable, Generator

Reader = Generator[None, "str | None", "str | None"]
Emit = Callable[[str], None]
# `skip(pattern, emit)`: the driver may pass every character before a match of `pattern` to `emit`
# at once instead of one by one (`skip(None)`: no longer); see tool_parser._Driven.
Skip = Callable[["re.Pattern | None", "Emit | None"], None]

WHITESPACE = " \t\n\r"
ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
SCALAR_ENDS = ",}]" + WHITESPACE
REPLACEMENT = "\ufffd"  # for a lone surrogate: it could not be encoded as UTF-8
PLAIN_STRING = re.compile(r'["\\\x00-\x1f]')  # what ends a run of characters that stand for themselves
RAW_STRING = re.compile(r'["\\]')
RAW_CONTAINER = re.compile(r'["{}\[\]]')


class JsonSyntax(ValueError):
    """The text is not the JSON the reader expected."""


def skip_whitespace(c: str | None) -> Reader:
    while c is not None and c in WHITESPACE:
        c = yield
    return c


def read_string(c: str | None, emit: Emit, done: Callable[[], None] | None = None, skip: Skip | None = None) -> Reader:
    """A JSON string starting at its quote `c`: each decoded character to `emit`, `done()` at its close."""
    _expect(c, '"')
    high: int | None = None  # a high surrogate waiting for its low half
    while True:
        if skip is not None and high is None:
            skip(PLAIN_STRING, emit)
        c = yield
        if skip is not None:
            skip(None, None)
        if c is None:
            return None
        if c == '"':
            if high is not None:
                emit(REPLACEMENT)
            if done is not None:
                done()
            return (yield)
        if c == "\\":
            code = yield from _escape()
            if code is None:
                return None
        elif c < " ":
            raise JsonSyntax("a control character inside a string")
        else:
            code = ord(c)
        high = _decoded(code, high, emit)


def _escape() -> Generator[None, "str | None", int | None]:
    """After a backslash: the code point it stands for (None at the end of the input)."""
    c = yield
    if c is None:
        return None
    if c == "u":
        return (yield from _hex4())
    if c not in ESCAPES:
        raise JsonSyntax(f"invalid escape \\{c}")
    return ord(ESCAPES[c])


def _decoded(code: int, high: int | None, emit: Emit) -> int | None:
    """Emit `code`, pairing surrogates (`\\ud83d\\ude00` is one emoji); returns a high half left waiting."""
    if 0xD800 <= code < 0xDC00:
        if high is not None:
            emit(REPLACEMENT)
        return code
    if 0xDC00 <= code < 0xE000:
        emit(chr(0x10000 + ((high - 0xD800) << 10) + (code - 0xDC00)) if high is not None else REPLACEMENT)
        return None
    if high is not None:
        emit(REPLACEMENT)
    emit(chr(code))
    return None


def _hex4() -> Generator[None, "str | None", int | None]:
    digits = ""
    for _ in range(4):
        c = yield
        if c is None:
            return None
        digits += c
    try:
        return int(digits, 16)
    except ValueError:
        raise JsonSyntax(f"invalid \\u escape {digits!r}") from None


def read_raw_value(c: str | None, emit: Emit, skip: Skip | None = None) -> Reader:
    """One JSON value of any kind starting at `c`, passed to `emit` as written (its structure checked
    only as far as finding where it ends)."""
    if c is None:
        return None
    if c in "{[":
        return (yield from _raw_container(c, emit, skip or _no_skip))
    if c == '"':
        return (yield from _raw_string(c, emit, skip or _no_skip))
    if c in SCALAR_ENDS or c == ":":
        raise JsonSyntax(f"a value cannot start with {c!r}")
    while c is not None and c not in SCALAR_ENDS:  # a number, true, false or null
        emit(c)
        c = yield
    return c


def _raw_container(c: str, emit: Emit, skip: Skip) -> Reader:
    closers = ["}" if c == "{" else "]"]
    emit(c)
    while closers:
        skip(RAW_CONTAINER, emit)
        c = yield
        skip(None, None)
        if c is None:
            return None
        if c == '"':
            if not (yield from _raw_string_body(emit, skip)):
                return None
            continue
        emit(c)
        if c in "{[":
            closers.append("}" if c == "{" else "]")
        elif c in "}]":
            if c != closers.pop():
                raise JsonSyntax(f"unbalanced {c!r}")
    return (yield)


def _raw_string(c: str, emit: Emit, skip: Skip) -> Reader:
    if not (yield from _raw_string_body(emit, skip)):
        return None
    return (yield)


def _raw_string_body(emit: Emit, skip: Skip) -> Generator[None, "str | None", bool]:
    """After an opening quote (not yet emitted): the string as written, through its closing quote
    (True), or to the end of the input (False)."""
    emit('"')
    escaped = False
    while True:
        if not escaped:
            skip(RAW_STRING, emit)
        c = yield
        skip(None, None)
        if c is None:
            return False
        emit(c)
        if escaped:
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == '"':
            return True


def _no_skip(pattern: re.Pattern | None, emit: Emit | None) -> None:
    pass


def read_object_key(c: str | None, into: list[str]) -> Reader:
    """A key string at `c`, decoded into `into` (one string), then its colon: returns the value's first character."""
    parts: list[str] = []
    c = yield from read_string(c, parts.append)
    into.append("".join(parts))
    c = yield from skip_whitespace(c)
    if c is None:
        return None
    _expect(c, ":")
    return (yield from skip_whitespace((yield)))


def after_member(c: str | None, close: str) -> Reader:
    """After an object member or array element: the first character of the next one (past the comma),
    "" when `close` ended the container (the closer consumed), None at the end of the input."""
    c = yield from skip_whitespace(c)
    if c is None:
        return None
    if c == ",":
        return (yield from skip_whitespace((yield)))
    _expect(c, close)
    return ""


def _expect(c: str | None, wanted: str) -> None:
    if c != wanted:
        raise JsonSyntax(f"expected {wanted!r}, found {c!r}")
