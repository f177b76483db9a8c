"""Chat prompts rendered from the model file's own `tokenizer.chat_template`.

GPT4All parses special tokens in the whole rendered prompt, so a user who types `<|im_end|>`
could close their turn and open a system turn. Message contents are therefore defused first: a
zero-width joiner goes after the first character of every control-token text the model file
declares, so it is read as ordinary characters and never as the control token.

Templates come from model files, so they run in jinja2's immutable sandbox. A file without a
template falls back to ChatML (`<|im_start|>role ... <|im_end|>`), the format most small
instruction-tuned GGUF models were trained on; the README documents this fallback.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

FALLBACK_CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


ZWJ = "\u200d"


class ChatTemplateError(ValueError):
    """The template refused the conversation (e.g. roles that must alternate) or is broken."""


@dataclass(frozen=True)
class ChatFormat:
    template: str
    bos_token: str = ""
    eos_token: str = ""
    from_file: bool = True
    control_tokens: tuple[str, ...] = ()

    def defuse(self, text: str) -> str:
        for token in self.control_tokens:
            if token in text:
                text = text.replace(token, token[0] + ZWJ + token[1:])
        return text

    def render(self, messages: list[dict[str, str]]) -> str:
        safe = [{**m, "content": self.defuse(m["content"])} for m in messages]
        try:
            return _compile(self.template).render(
                messages=safe,
                add_generation_prompt=True,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
            )
        except TemplateError as exc:
            raise ChatTemplateError(str(exc)) from None


def _raise_exception(message: str) -> None:
    raise TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now(timezone.utc).strftime(fmt)


@lru_cache(maxsize=16)
def _compile(template: str):
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now)
    return env.from_string(template)
