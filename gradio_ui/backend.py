"""What the chat UI needs from the server: the `ChatBackend` interface.

The server implements it on top of the generation scheduler, so a UI chat goes through the same
queue, limits, auth and metrics as an HTTP API request. The UI never sees HTTP types.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import AsyncIterator, Protocol


@dataclass(frozen=True)
class CutShort:
    """The last item of a reply that ended at a limit rather than where the model chose.

    `limit` is "max_tokens" (then `max_tokens` says which), "context" (the model's window filled)
    or "time" (the server's GENERATION_TIMEOUT_S)."""

    limit: str
    max_tokens: int | None = None


class ChatBackend(Protocol):
    def chat_models(self) -> list[str]:
        """The chat models, as listed by `/v1/models`."""
        ...

    def default_model(self) -> str: ...

    def check_key(self, key: str) -> None:
        """Raise `errors.AuthenticationFailed` for a wrong or missing key (same check as the API)."""
        ...

    def stream_chat(
        self, *, api_key: str, model: str, messages: list[dict], temperature: float, max_tokens: int
    ) -> AsyncIterator[str | CutShort]:
        """Yield text deltas of the reply to `messages` (OpenAI-style role/content dicts), then a
        `CutShort` if the reply was cut at a limit (`finish_reason: "length"`).

        Raises `errors.ServerError` subclasses whose `.message` a user can read. When the consumer
        stops iterating (`aclose()` or a cancelled task), the generation is stopped.
        """
        ...
