"""A `ReplySource` on today's generation service: plain-text conversations only.

Until the lead wires `/v1/responses` to the native engine (tool calls, `text.format`), this one
renders the conversation with the model's chat template and streams the text back as
`TextDelta`s, through the same scheduler as chat (fair queue, per-key limits, prefix cache).
A conversation with tools, tool calls or tool results, or a JSON `text.format`, is refused with a
400 that names the parameter.
"""

from __future__ import annotations

from typing import AsyncIterator

from api.generation import GenerationService
from errors import UnsupportedParameter
from models.conversation import Conversation, ReplyEvent, TextDelta
from models.interfaces import GenerationOutcome, SamplingParams

NOT_YET = "needs the native engine, which /v1/responses is not wired to yet"


class GenerationServiceReplies:
    def __init__(self, service: GenerationService):
        self.service = service

    def model_id(self, name: str | None) -> str:
        return self.service.resolve_model(name).id

    async def reply(self, model: str, conversation: Conversation, params: SamplingParams, *,
                    scope: str) -> AsyncIterator[ReplyEvent | GenerationOutcome]:
        if conversation.tools:
            raise UnsupportedParameter(f"function tools {NOT_YET}", param="tools")
        if any(m.role == "tool" or m.tool_calls for m in conversation.messages):
            raise UnsupportedParameter(f"function_call items {NOT_YET}", param="input")
        if params.constraint is not None:
            raise UnsupportedParameter(f"a JSON text.format {NOT_YET}", param="text.format")
        model_file = self.service.resolve_model(model)
        messages = [{"role": m.role, "content": m.content or ""} for m in conversation.messages]
        prompt = await self.service.chat_prompt(model_file, messages)
        jobs = self.service.submit(model_file, [prompt], params, 1, scope=scope)
        events = self.service.events(jobs, "input")
        try:
            async for event in events:
                if event.finish is not None:
                    yield event.finish
                elif event.text:
                    yield TextDelta(event.text)
        finally:
            await events.aclose()  # at once, not when collected: it cancels the job (a client that left)
