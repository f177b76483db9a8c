"""Chat prompts rendered from the model file's own `tokenizer.chat_template`.

The prompt is tokenized with special tokens parsed (as GPT4All does), so a user who types `<|im_end|>`
could close their turn and open a system turn. Message contents are therefore defused first: a
zero-width joiner goes after the first character of every control-token text the model file
declares, so it is read as ordinary characters and never as the control token. That is one pass of
one regex (a trie of the token texts, so each position costs about one token's length however many
tokens there are: a Llama-3 vocabulary has 256), not one scan of the content per token.

Templates come from model files, so they run in jinja2's immutable sandbox, which keeps them from
Python's internals but not from looping for hours or building 8 GiB strings: the server renders
through `models.template_sandbox`, which adds time and memory limits. `render` here streams the
output and stops past `max_chars`. A file without a template falls back to ChatML
(`<|im_start|>role ... <|im_end|>`), the format most small instruction-tuned GGUF models were
trained on; the README documents this fallback.

Templates that know tools (models/tool_formats.py) get what Hugging Face's `apply_chat_template`
passes them: `tools` as OpenAI-style `{"type": "function", "function": {...}}` dicts, assistant
messages with `tool_calls` (content None) and `tool` messages with `tool_call_id` and `name`. Every
string in them is defused, tool results, call arguments and tool descriptions included, since each
comes from the client. A file may carry a second template for tools (GGUF
`tokenizer.chat_template.tool_use`, as Hermes 3 does): it renders any conversation that has tools or
tool messages. `tojson` is Hugging Face's (keys in their order, no HTML escaping), not jinja2's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
import json
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

FALLBACK_CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


ZWJ = "\u200d"
MAX_CHARS = 16 * 2**20  # the server passes 4 x MAX_BODY_BYTES
DEFUSE_PREFIX = 64  # characters of a token the pattern compares; a longer near miss is defused too, harmlessly
# Rendered once when a model loads: alternating roles starting with the user, which chat templates expect.
TRIAL_MESSAGES = (
    {"role": "user", "content": "Hello!"},
    {"role": "assistant", "content": "Hi, how can I help?"},
    {"role": "user", "content": "What is 2 + 2?"},
)


class ChatTemplateError(ValueError):
    """The template refused the conversation (e.g. roles that must alternate) or is broken."""


class ChatTemplateLimit(ChatTemplateError):
    """The template overran a limit: its output size here; time and memory in the sandbox."""


@dataclass(frozen=True)
class ChatFormat:
    template: str
    bos_token: str = ""
    eos_token: str = ""
    from_file: bool = True
    control_tokens: tuple[str, ...] = ()
    tool_template: str | None = None  # GGUF `tokenizer.chat_template.tool_use`, when the file has one

    def defuse(self, text: str) -> str:
        if not self.control_tokens:
            return text
        return _defuse_pattern(self.control_tokens).sub(_joined, text)

    def defuse_inputs(self, messages: list[dict], tools: list[dict] | None = None) -> tuple[list[dict], list[dict] | None]:
        """Every string the client wrote, defused: contents, call ids and arguments, tool results, tool definitions."""
        safe = [{key: value if key == "role" else self._defused(value) for key, value in m.items()} for m in messages]
        return safe, None if tools is None else [self._defused(tool) for tool in tools]

    def _defused(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.defuse(value)
        if isinstance(value, dict):
            return {self.defuse(str(k)): self._defused(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._defused(item) for item in value]
        return value

    def template_for(self, messages: list[dict], tools: list[dict] | None) -> str:
        """The tool template for a conversation with tools or tool messages, when the file has one."""
        if self.tool_template and (tools is not None or any("tool_calls" in m or m.get("role") == "tool" for m in messages)):
            return self.tool_template
        return self.template

    def render(self, messages: list[dict], max_chars: int = MAX_CHARS, tools: list[dict] | None = None) -> str:
        """Render in this process: no time or memory limit, so only for trusted templates (tests, benchmarks)."""
        safe, safe_tools = self.defuse_inputs(messages, tools)
        return self.render_defused(self.template_for(messages, tools), safe, safe_tools, max_chars)

    def render_defused(self, template: str, messages: list[dict], tools: list[dict] | None, max_chars: int = MAX_CHARS) -> str:
        """`template` on inputs already defused (the sandbox's worker calls this)."""
        context: dict[str, Any] = {"messages": messages, "add_generation_prompt": True,
                                   "bos_token": self.bos_token, "eos_token": self.eos_token}
        if tools is not None:  # absent, not None, without tools: templates test `tools is defined` as often as `if tools`
            context["tools"] = tools
        parts: list[str] = []
        size = 0
        try:
            for part in _compile(template).generate(**context):
                size += len(part)
                if size > max_chars:
                    raise ChatTemplateLimit(f"wrote more than {max_chars} characters")
                parts.append(part)
        except TemplateError as exc:
            raise ChatTemplateError(str(exc)) from None
        return "".join(parts)


def _joined(match: re.Match) -> str:
    return match[0] + ZWJ  # a callable: Python 3.11 expands a `\g<0>` template in Python, 2.5x slower


@lru_cache(maxsize=16)
def _defuse_pattern(tokens: tuple[str, ...]) -> re.Pattern:
    """Matches the first character of every place a token starts (overlapping ones too, so none stays whole).

    A trie: `<(?=\\|(?:eot_id\\|>|reserved_special_token_(?:0\\|>|1...)))`. A plain alternation of 256
    escaped tokens compares up to 250 of them in full at every `<|reserved_special_token_` (measured:
    4 MiB of those took 6 s; the trie, 40 ms).
    """
    trie: dict = {}
    for token in filter(None, tokens):
        node = trie
        for char in token[:DEFUSE_PREFIX]:
            node = node.setdefault(char, {})
        node.clear()
        node[""] = {}  # a token ends here: what follows does not matter

    def rest(node: dict) -> str:
        if "" in node:
            return ""
        branches = [re.escape(char) + rest(child) for char, child in sorted(node.items())]
        return branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"

    starts = [re.escape(char) + (f"(?={rest(child)})" if "" not in child else "") for char, child in sorted(trie.items())]
    return re.compile("|".join(starts), re.DOTALL)


def _raise_exception(message: str) -> None:
    raise TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now(timezone.utc).strftime(fmt)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators=None, sort_keys: bool = False) -> str:
    # Hugging Face's filter, which chat templates are written against: jinja2's own sorts keys and
    # escapes `<`, `>`, `&` and `'` for HTML, so a tool's JSON would not read as the model was trained on.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


@lru_cache(maxsize=16)
def _compile(template: str):
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now)
    env.filters["tojson"] = _tojson
    return env.from_string(template)
