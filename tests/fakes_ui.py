"""A scriptable fake `ChatBackend` for UI tests: streams words slowly and records what it saw."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from errors import AuthenticationFailed, ServerError
from gradio_ui.backend import CutShort


@dataclass
class FakeChatBackend:
    key: str = "sk-test"
    models: list[str] = field(default_factory=lambda: ["fake-chat-1", "fake-chat-2"])
    words: list[str] = field(default_factory=lambda: [f"word{i}" for i in range(200)])
    delay_s: float = 0.05
    fail_with: ServerError | None = None  # raised instead of streaming, once
    report_cut_short: bool = False  # end a reply cut at max_tokens with CutShort, as the real backend does
    requests: list[dict] = field(default_factory=list)  # what stream_chat was asked
    stopped_at: list[float] = field(default_factory=list)  # monotonic time of each early stop
    finished: int = 0
    active: int = 0

    def chat_models(self) -> list[str]:
        return list(self.models)

    def default_model(self) -> str:
        return self.models[0]

    def check_key(self, key: str) -> None:
        if key != self.key:
            raise AuthenticationFailed("Incorrect API key provided." if key else "Missing API key.")

    async def stream_chat(self, *, api_key, model, messages, temperature, max_tokens):
        self.check_key(api_key)
        self.requests.append(
            {"model": model, "messages": messages, "temperature": temperature, "max_tokens": max_tokens}
        )
        if self.fail_with is not None:
            exc, self.fail_with = self.fail_with, None
            raise exc
        self.active += 1
        done = False
        try:
            for word in self.words[:max_tokens]:
                await asyncio.sleep(self.delay_s)
                yield word + " "
            if self.report_cut_short and len(self.words) > max_tokens:
                yield CutShort("max_tokens", max_tokens)
            done = True
        finally:
            self.active -= 1
            if done:
                self.finished += 1
            else:  # closed or cancelled by the consumer
                self.stopped_at.append(time.monotonic())
