"""The chat UI's backend on the real server: the same key check, model list and scheduler as the API.

UI chats are jobs of the same generation scheduler (same queue, limits and metrics; `origin="ui"`),
so a busy server is fair between UI users and API clients.
"""

from __future__ import annotations

from contextlib import aclosing
from typing import TYPE_CHECKING, AsyncIterator

from api import auth
from gradio_ui.backend import CutShort
from models.conversation import text_conversation
from models.interfaces import SamplingParams

if TYPE_CHECKING:
    from server import AppContext


class SchedulerChatBackend:
    def __init__(self, ctx: AppContext):
        self.ctx = ctx

    def chat_models(self) -> list[str]:
        return [m.id for m in self.ctx.registry.list()]

    def default_model(self) -> str:
        return self.ctx.default_model or ""

    def check_key(self, key: str) -> None:
        settings = self.ctx.settings
        auth.check_key(settings.api_keys, settings.require_api_key, key or None)

    async def stream_chat(
        self, *, api_key: str, model: str, messages: list[dict], temperature: float, max_tokens: int
    ) -> AsyncIterator[str | CutShort]:
        self.check_key(api_key)
        service = self.ctx.generation
        chosen = service.resolve_model(model or None)
        prompt, _ = await service.chat_prompt(chosen, text_conversation(messages))
        params = SamplingParams(max_tokens=max_tokens, temperature=temperature)
        jobs = service.submit(chosen, [prompt], params, 1, origin="ui", scope=auth.cache_scope(api_key or None))
        # Closed explicitly (not left to the garbage collector) when the UI stops reading early, so
        # that `events` cancels the job at once.
        async with aclosing(service.events(jobs)) as events:
            async for event in events:
                if event.text:
                    yield event.text
                if event.finish is not None and event.finish.finish_reason == "length":
                    yield CutShort(event.finish.limit, max_tokens)
