"""A scriptable `ReplySource` (api/responses_run.py): parsed reply events, no engine, no parser.

    source = ScriptedReplies(); app.ctx.responses.source = source
    source.enqueue([TextDelta("Hi"), CallStart(0, "call_1", "f"), CallArguments(0, "{}"), outcome(3)])
    source.calls   # (model, conversation, params, scope) of every reply asked for

A float in a script is a pause of that many seconds; an exception is raised there. With nothing
queued the reply is "ok" and a stop. `closed` counts replies that ended (fully or closed early),
`stopped_early` those closed before their script ran out.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import AsyncIterator

from errors import ModelNotFound
from models.conversation import Conversation, ReplyEvent, TextDelta
from models.interfaces import GenerationOutcome, SamplingParams


def outcome(completion_tokens: int, *, prompt_tokens: int = 10, cached: int = 0, cut: bool = False) -> GenerationOutcome:
    return GenerationOutcome(prompt_tokens, completion_tokens, "length" if cut else "stop",
                             "max_tokens" if cut else None, cached)


class ScriptedReplies:
    def __init__(self, models: tuple[str, ...] = ("fake-chat.gguf",)):
        self.models = models
        self.scripts: deque[list] = deque()
        self.calls: list[tuple[str, Conversation, SamplingParams, str]] = []
        self.closed = 0
        self.stopped_early = 0

    def enqueue(self, script: list) -> None:
        self.scripts.append(list(script))

    def model_id(self, name: str | None) -> str:
        if name is not None and name not in self.models:
            raise ModelNotFound(f"The model `{name}` does not exist", param="model")
        return name or self.models[0]

    async def reply(self, model: str, conversation: Conversation, params: SamplingParams, *,
                    scope: str) -> AsyncIterator[ReplyEvent | GenerationOutcome]:
        self.calls.append((model, conversation, params, scope))
        script = self.scripts.popleft() if self.scripts else [TextDelta("ok"), outcome(1)]
        finished = False
        try:
            for item in script:
                if isinstance(item, float):
                    await asyncio.sleep(item)
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield item
            finished = True
        finally:
            self.closed += 1
            self.stopped_early += not finished
