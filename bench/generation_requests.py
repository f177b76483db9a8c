"""One measured generation request: raw GPT4All in this process, or a streamed chat over HTTP.

Both return a `Sample` with the client-side times of the first and last text piece and the exact
token counts (raw: GPT4All's own callbacks; servers: `stream_options.include_usage`). The prompts
and the greedy sampling are shared by every system, so their outputs can be compared.
"""

from __future__ import annotations

import codecs
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.servers import ServerProcess
from models import gpt4all_native
from models.interfaces import SamplingParams

try:
    import orjson

    _loads = orjson.loads
except ImportError:  # pragma: no cover - orjson is in requirements.txt
    import json

    _loads = json.loads

SYSTEM_MESSAGE = "You are a helpful assistant."
# Prompts chosen so greedy SmolLM2-135M writes long answers (no early end of text at 256 tokens).
PROMPTS = [
    "Write a long, detailed story about a lighthouse keeper and a storm.",
    "Explain in detail how a steam engine works, step by step.",
    "Write a long essay about the history of the printing press.",
    "Describe a journey across a desert in a long, vivid story.",
    "Write a detailed guide to growing tomatoes in a small garden.",
    "Write a long story about a dragon who learns to bake bread.",
    "Write a long story about a robot who wants to become a painter.",
    "Explain in detail how the human heart works.",
]
# The sampling both sides use: greedy, no repeat penalty (the server's defaults but temperature).
SAMPLING = {"temperature": 0.0, "top_k": 40, "top_p": 1.0, "min_p": 0.0, "repeat_penalty": 1.0}
REPEAT_LAST_N = 64  # the server's SamplingParams default
RAW = "raw gpt4all"  # the label of raw GPT4All's samples


# ---- one measured request --------------------------------------------------------------------


@dataclass
class Sample:
    system: str
    prompt_index: int
    started: float  # perf_counter() when the request was sent / the call made
    first: float | None = None  # first non-empty text piece
    last: float | None = None  # last text piece
    ended: float | None = None  # call returned / stream closed
    completion_tokens: int = 0
    prompt_tokens: int | None = None
    text: str = ""
    exact_count: bool = True  # False when the count comes from chunks (no usage in the stream)
    cached_tokens: int | None = None  # usage.prompt_tokens_details.cached_tokens, when the server reports it
    server_ttft_ms: float | None = None  # x-time-to-first-token header (our server)
    server_queue_ms: float | None = None
    pair: int | None = None  # (round, prompt) slot: samples of one pair ran back to back
    cpu_s: float | None = None  # CPU the system used for this request (raw: this process; server: its process)
    client_cpu_s: float | None = None  # CPU this process used as the HTTP client
    pieces: list[str] = field(default_factory=list, repr=False)

    def add_text(self, text: str) -> None:
        """A non-empty text piece arrived now."""
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        self.last = now
        self.pieces.append(text)

    def finish(self) -> "Sample":
        """The stream ended: join the text; without a usage count, count the text pieces (marked inexact)."""
        self.ended = time.perf_counter()
        if self.prompt_tokens is None and not self.completion_tokens:
            self.completion_tokens, self.exact_count = len(self.pieces), False
        self.text = "".join(self.pieces)
        return self

    @property
    def ttft(self) -> float | None:
        return None if self.first is None else self.first - self.started

    @property
    def decode_time(self) -> float:
        return 0.0 if self.first is None or self.last is None else self.last - self.first

    @property
    def wall(self) -> float:
        end = self.last if self.last is not None else self.ended
        return (end or self.started) - self.started


# ---- raw GPT4All ---------------------------------------------------------------------------


class RawGPT4All:
    """The model loaded in this process exactly as the server's engine loads it, driven directly."""

    def __init__(self, path: Path, *, n_threads: int, n_ctx: int, n_batch: int):
        os.environ.setdefault("GPT4ALL_NO_UPDATE_CHECK", "1")
        self.n_batch = n_batch
        self.gpt4all = gpt4all_native.load(path, n_ctx=n_ctx, n_threads=n_threads, device="cpu")
        self.lm = self.gpt4all.model

    def generate(self, prompt_index: int, prompt: str, max_tokens: int) -> Sample:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        counts = [0, 0]
        sample = Sample(RAW, prompt_index, 0.0)
        clock = time.perf_counter

        def on_prompt(_token_id: int) -> bool:
            counts[0] += 1
            return True

        def on_response(token_id: int, piece: bytes) -> bool:
            if token_id == -1:
                raise_later.append(piece.decode("utf-8", "replace"))
                return False
            counts[1] += 1
            text = decoder.decode(piece)
            if text:
                sample.add_text(text)
            return True

        raise_later: list[str] = []
        params = SamplingParams(max_tokens=max_tokens, temperature=SAMPLING["temperature"], top_p=SAMPLING["top_p"],
                                top_k=SAMPLING["top_k"], min_p=SAMPLING["min_p"], repeat_penalty=SAMPLING["repeat_penalty"],
                                repeat_last_n=REPEAT_LAST_N)
        sample.started = clock()
        gpt4all_native.prompt(self.lm, prompt.encode("utf-8"), params, n_past=0, n_predict=max_tokens, n_batch=self.n_batch,
                              on_prompt_token=on_prompt, on_response_token=on_response)  # exactly the server's call
        sample.ended = clock()
        if raise_later:
            raise RuntimeError(f"raw GPT4All refused the prompt: {raise_later[0]}")
        tail = decoder.decode(b"", final=True)
        if tail:
            sample.pieces.append(tail)
        sample.prompt_tokens, sample.completion_tokens, sample.text = counts[0], counts[1], "".join(sample.pieces)
        return sample

    def close(self) -> None:
        self.lm.close()


# ---- streaming clients for the servers -------------------------------------------------------


class ChatStreamer:
    """Streams one chat completion and times it from the client's side."""

    def __init__(self, server: ServerProcess, system: str, model: str | None, max_tokens: int, client_kind: str, extra: dict):
        self.server, self.system, self.model, self.max_tokens = server, system, model, max_tokens
        self.client_kind, self.extra = client_kind, extra
        self._httpx: httpx.AsyncClient | None = None
        self._openai = None

    async def __aenter__(self) -> "ChatStreamer":
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        if self.client_kind == "openai":
            import openai

            self._openai = openai.AsyncOpenAI(
                base_url=self.server.base_url + "/v1", api_key=self.server.api_key, max_retries=0, timeout=600,
                http_client=httpx.AsyncClient(limits=limits, timeout=600),
            )
        else:
            self._httpx = httpx.AsyncClient(base_url=self.server.base_url, headers=self.server.headers(), timeout=600, limits=limits)
        return self

    async def __aexit__(self, *exc) -> None:
        if self._httpx is not None:
            await self._httpx.aclose()
        if self._openai is not None:
            await self._openai.close()

    def _body(self, prompt: str) -> dict:
        return self._messages_body([{"role": "system", "content": SYSTEM_MESSAGE}, {"role": "user", "content": prompt}])

    def _messages_body(self, messages: list[dict]) -> dict:
        body = {
            "messages": messages,
            "max_tokens": self.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
            **SAMPLING,
            **self.extra,
        }
        if self.model:
            body["model"] = self.model
        return body

    async def run(self, prompt_index: int) -> Sample:
        if self._openai is not None:
            return await self._run_openai(prompt_index)
        return await self._run_httpx(prompt_index)

    async def run_messages(self, messages: list[dict], index: int = 0) -> Sample:
        """Streams a chat of any `messages` (e.g. a whole conversation); `index` labels the sample."""
        body = self._messages_body(messages)
        sample = Sample(self.system, index, time.perf_counter())
        if self._openai is not None:
            return await self._stream_openai(sample, body)
        return await self._stream_httpx(sample, body)

    async def _run_httpx(self, prompt_index: int) -> Sample:
        sample = Sample(self.system, prompt_index, time.perf_counter())
        return await self._stream_httpx(sample, self._body(PROMPTS[prompt_index]))

    async def _stream_httpx(self, sample: Sample, body: dict) -> Sample:
        async with self._httpx.stream("POST", "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                raise RuntimeError(f"{self.system} answered {response.status_code}: {(await response.aread())[:500]!r}")
            sample.server_ttft_ms = _float_header(response, "x-time-to-first-token")
            sample.server_queue_ms = _float_header(response, "x-queue-time")
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                event = _loads(data)
                if "error" in event:
                    raise RuntimeError(f"{self.system} sent an error event: {event['error']}")
                for choice in event.get("choices") or ():
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        sample.add_text(content)
                usage = event.get("usage")
                if usage:
                    sample.completion_tokens = usage["completion_tokens"]
                    sample.prompt_tokens = usage.get("prompt_tokens")
                    sample.cached_tokens = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
        return sample.finish()

    async def _run_openai(self, prompt_index: int) -> Sample:
        body = self._body(PROMPTS[prompt_index])
        sample = Sample(self.system, prompt_index, time.perf_counter())
        return await self._stream_openai(sample, body)

    async def _stream_openai(self, sample: Sample, body: dict) -> Sample:
        standard = {k: body.pop(k) for k in ("messages", "max_tokens", "stream", "stream_options", "temperature", "top_p") if k in body}
        model = body.pop("model", None) or "default"
        stream = await self._openai.chat.completions.create(model=model, extra_body=body, **standard)
        async for chunk in stream:
            for choice in chunk.choices:
                if choice.delta and choice.delta.content:
                    sample.add_text(choice.delta.content)
            if chunk.usage:
                sample.completion_tokens = chunk.usage.completion_tokens
                sample.prompt_tokens = chunk.usage.prompt_tokens
                details = getattr(chunk.usage, "prompt_tokens_details", None)
                sample.cached_tokens = getattr(details, "cached_tokens", None) if details else None
        return sample.finish()


def _float_header(response: httpx.Response, name: str) -> float | None:
    try:
        return float(response.headers[name])
    except (KeyError, ValueError):
        return None
