"""A chat request's plan on one model: the template's inputs, the output constraint, the reply parsers.

The one entry point for a conversation with (or without) tools; chat completions and the
Responses API both call it, after the request is validated:

    plan = plan_chat(conversation, chat_format)
    prompt = await sandbox.render_async(chat_format, plan.messages, plan.tools)
    params = replace(params, constraint=plan.constraint)
    parser = plan.parser()  # one per choice: text deltas in, ReplyEvents out
"""

from __future__ import annotations

from dataclasses import dataclass, field

from models.chat_template import ChatFormat
from models.conversation import Conversation
from models.interfaces import Constraint
from models.tool_constraint import constraint_for
from models.tool_formats import ToolFormat, detect_format, takes_system_role
from models.tool_parser import ReplyParser, parser_for
from models.tool_render import template_inputs


@dataclass(frozen=True)
class ChatPlan:
    format: ToolFormat
    messages: list[dict]  # the template's `messages`
    tools: list[dict] | None  # the template's `tools`: a native format offering tools; else None
    constraint: Constraint | None  # for SamplingParams.constraint (None: unconstrained)
    conversation: Conversation = field(repr=False)

    def parser(self) -> ReplyParser:
        """A fresh parser for one choice's reply."""
        return parser_for(self.conversation, self.format)


def plan_chat(conversation: Conversation, chat_format: ChatFormat) -> ChatPlan:
    fmt = detect_format(chat_format)
    messages, tools = template_inputs(conversation, fmt, system_role=takes_system_role(chat_format))
    return ChatPlan(fmt, messages, tools, constraint_for(conversation, fmt), conversation)
