"""OpenAI's `logprobs` shapes: chat's (one entry per token, with bytes and top alternatives) and text
completions' legacy parallel lists. Built from the engine's TokenLogprobs, which are the model's own
distribution (log-softmax of the raw logits; models/native/sampler.py)."""

from __future__ import annotations

from pydantic import BaseModel

from models.interfaces import TokenLogprobs

Entries = tuple[TokenLogprobs, ...] | list[TokenLogprobs]


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class ChatTokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    """Chat's `logprobs`: one entry per generated token of the content, in order."""

    content: list[ChatTokenLogprob] | None
    refusal: list[ChatTokenLogprob] | None = None

    @classmethod
    def of(cls, entries: Entries) -> "ChoiceLogprobs":
        return cls(content=[
            ChatTokenLogprob(token=e.token, logprob=e.logprob, bytes=list(e.bytes),
                             top_logprobs=[TopLogprob(token=t, logprob=lp, bytes=list(b)) for t, b, lp in e.top])
            for e in entries
        ])


class CompletionLogprobs(BaseModel):
    """Text completions' `logprobs`: parallel lists, and where each token starts in the choice's text."""

    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]

    @classmethod
    def of(cls, entries: Entries, offset: int) -> "CompletionLogprobs":
        offsets = []
        for entry in entries:
            offsets.append(offset)
            offset += len(entry.bytes.decode("utf-8", "replace"))
        return cls(tokens=[e.token for e in entries], token_logprobs=[e.logprob for e in entries],
                   top_logprobs=[{t: lp for t, _, lp in e.top} for e in entries], text_offset=offsets)
