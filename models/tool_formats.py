"""Which tool-call format a chat template teaches, and the one entry point for a chat with tools.

A model calls tools in the format its chat template shows it. Known formats, detected from the
template's own text (the tool template, GGUF `tokenizer.chat_template.tool_use`, when the file has one):

| format  | templates (examples)                     | a call, as the model writes it                                  |
|---------|------------------------------------------|-----------------------------------------------------------------|
| hermes  | Qwen2.5-Instruct, Hermes 2 Pro, Hermes 3 | `<tool_call>\\n{"name": "f", "arguments": {...}}\\n</tool_call>` |
| llama3  | Llama 3.1 / 3.2 / 3.3 Instruct           | `{"name": "f", "parameters": {...}}`                            |
| mistral | Mistral-7B-Instruct-v0.3, Nemo, Large    | `[TOOL_CALLS] [{"name": "f", "arguments": {...}}]`              |
| generic | any other (SmolLM2's, the ChatML fallback) | the whole reply is `{"tool_calls": [...]}` or `{"content": "..."}` |

A template of a known format renders the tools and the history itself (models/tool_render.py);
the generic format describes the tools in the system prompt. models/chat_plan.py gathers what a
request needs: the template's inputs, the output constraint (models/tool_constraint.py) and a reply
parser per choice (models/tool_parser.py).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from typing import Literal

from models.chat_template import ChatFormat

FormatName = Literal["hermes", "llama3", "mistral", "generic"]


@dataclass(frozen=True)
class ToolFormat:
    """How one family of templates writes a call: `marker`, then `opening`, the call object, `closing`."""

    name: FormatName
    trigger: str = ""  # what starts a call in free text; "" for generic (the whole reply is JSON)
    marker: str = ""  # the literal a call block starts with ("" for llama3: the call object itself)
    opening: str = ""  # between the marker and the call object, as the template writes it
    closing: str = ""  # after the call object
    end_marker: str = ""  # the literal closing a block, past any array or object ("</tool_call>")
    arguments_key: str = "arguments"
    separator: str = ""  # between calls when the reply is only calls
    parallel: bool = True  # False: one call per reply (Llama 3.1's template refuses two in one message)
    short_ids: bool = False  # Mistral's templates refuse call ids that are not 9 alphanumerics

    @property
    def native(self) -> bool:
        return self.name != "generic"

    def tag_begin(self, name: str) -> str:
        """The text every call of `name` starts with, up to its arguments' JSON."""
        return f'{self.marker}{self.opening}{{"name": {json.dumps(name, ensure_ascii=False)}, "{self.arguments_key}": '

    def tag_end(self) -> str:
        return "}" + self.closing


HERMES = ToolFormat("hermes", trigger="<tool_call>", marker="<tool_call>", opening="\n", closing="\n</tool_call>",
                    end_marker="</tool_call>", separator="\n")
# The trigger is the call object's own start: Llama 3.x writes the JSON alone, with no marker token.
LLAMA3 = ToolFormat("llama3", trigger='{"name": ', arguments_key="parameters", parallel=False)
MISTRAL = ToolFormat("mistral", trigger="[TOOL_CALLS]", marker="[TOOL_CALLS]", opening=" [", closing="]", short_ids=True)
GENERIC = ToolFormat("generic")

# Llama 3.1's wording for custom tools (3.2 and 3.3 keep it): 'Respond in the format {"name": function
# name, "parameters": dictionary of argument name and its value}.'
_LLAMA3_WORDING = re.compile(r'"parameters": dictionary of argument name')


def detect_format(chat_format: ChatFormat) -> ToolFormat:
    """The format the model's template teaches; generic when it teaches none (or the file has no template)."""
    if not chat_format.from_file:
        return GENERIC
    template = chat_format.tool_template or chat_format.template
    if "tools" not in template:  # it never renders the tools: a model never shown them, whatever it mentions
        return GENERIC
    if "[TOOL_CALLS]" in template:
        # v0.3 writes `[TOOL_CALLS] [`, Nemo's "tekken" templates `[TOOL_CALLS][`: the model learned the one it saw.
        return MISTRAL if "[TOOL_CALLS] [" in template else replace(MISTRAL, opening="[")
    if "<tool_call>" in template:
        return HERMES
    if _LLAMA3_WORDING.search(template):
        return LLAMA3
    return GENERIC


def takes_system_role(chat_format: ChatFormat) -> bool:
    """Whether the template takes a system message. One that never says "system" but refuses roles
    (Mistral v0.1's: "Only user and assistant roles are supported!") does not; one that never says it
    and refuses nothing writes any role's name (ChatML)."""
    template = chat_format.tool_template or chat_format.template
    return "system" in template or "raise_exception" not in template
