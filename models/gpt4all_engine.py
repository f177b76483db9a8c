"""The GPT4All chat engine: run one fully rendered prompt, count tokens exactly, reuse the KV cache.

It calls `llmodel_prompt` directly (`models/gpt4all_native.py`) so that our own callbacks count
every prompt token and every sampled token: the bindings' decoder swallows tokens that end mid
UTF-8 character, and its prompt callback is a no-op. Which context a prompt runs in, and how much
of it is kept, is `models/prefix_cache.py`'s decision.

Not thread-safe: one instance belongs to one thread (the scheduler's worker for it).
"""

from __future__ import annotations

import codecs
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from errors import ContextLengthExceeded, InvalidRequest
from models import gpt4all_native, llama_tokenizer
from models.interfaces import GenerationOutcome, PrefixCache, SamplingParams
from models.llama_tokenizer import LlamaTokenizer
from models.prefix_cache import CachedContext, Cut, choose_context, ends_alone, evaluates_as, plan_cut
from models.registry import kv_bytes_per_token

log = logging.getLogger("models.gpt4all")
MAX_SETTLE_TRIES = 4  # tokens tried as the start of `settle`'s evaluation, from the first inexact one back



@dataclass
class _Run:
    """One `generate` call's progress, written by GPT4All's callbacks on the engine's thread."""

    prompt: int  # prompt tokens in the context, the kept ones included
    completion: int = 0
    finish: str = "stop"
    limit: str | None = None  # what ended it at "length": "max_tokens" or "context"
    overflow: str | None = None  # the window was exceeded (GPT4All's message, or ours)
    error: BaseException | None = None  # raised by `on_text`: re-raised once GPT4All has returned


class GPT4AllEngine:
    def __init__(
        self,
        path: Path,
        *,
        n_ctx: int,
        n_threads: int,
        n_batch: int,
        device: str = "cpu",
        prefix_cache: PrefixCache = PrefixCache(enabled=False),
        document_start: str = "",
    ):
        os.environ.setdefault("GPT4ALL_NO_UPDATE_CHECK", "1")
        path = Path(path)
        self.name = path.name
        self.n_ctx = n_ctx
        self.n_batch = min(n_batch, gpt4all_native.MAX_PROMPT_BATCH)  # the batches GPT4All really evaluates
        # An empty prompt continues from the start of a new document, as OpenAI's and llama.cpp's servers do.
        self.document_start = document_start.encode("utf-8")
        self._open = lambda: gpt4all_native.load(path, n_ctx=n_ctx, n_threads=n_threads, device=device)
        self._contexts = [_Context(CachedContext(0), self._open())]
        self._tokenizer: LlamaTokenizer | None = None
        self.max_contexts = 1
        self.share = prefix_cache.share
        self.exact = prefix_cache.exact
        if prefix_cache.enabled:
            self._tokenizer = llama_tokenizer.load(path)
            per_context = kv_bytes_per_token(path) * n_ctx
            fitting = prefix_cache.max_mb * 2**20 // per_context if per_context else prefix_cache.slots
            self.max_contexts = max(1, min(prefix_cache.slots, fitting))

    @property
    def contexts(self) -> list[CachedContext]:
        """What each open context holds (for tests and /metrics)."""
        return [c.cache for c in self._contexts]

    def generate(
        self,
        prompt: str,
        params: SamplingParams,
        on_text: Callable[[str], bool],
        *,
        scope: str | None = None,
        keep_going: Callable[[], bool] | None = None,
    ) -> GenerationOutcome:
        text = prompt.encode("utf-8")
        full = self._tokenize(text)
        if (full is not None and not full) or not text:
            # Nothing to evaluate: GPT4All would sample from whatever logits an earlier request left (or none).
            text = self.document_start
            full = self._tokenize(text)
            if (full is not None and not full) or not text:
                raise InvalidRequest("the prompt is empty and the model names no start-of-document token", param="prompt")
        limit = params.max_tokens
        if full is not None:
            self._check_fits(len(full), limit)
        context, cut = self._choose(full, text, scope)
        run = _Run(prompt=cut.keep)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

        def on_prompt_token(_token_id: int) -> bool:
            run.prompt += 1
            return keep_going is None or keep_going()

        def on_response_token(token_id: int, piece: bytes) -> bool:
            if token_id == -1:  # GPT4All reports a prompt over the window this way
                run.overflow = piece.decode("utf-8", "replace")
                return False
            if run.completion == 0 and limit is not None and run.prompt + limit > self.n_ctx:
                run.overflow = "prompt + max_tokens"
                return False
            run.completion += 1
            try:
                decoded = decoder.decode(piece)
                going = on_text(decoded) if decoded else True
            except BaseException as exc:  # never let an exception unwind through C frames
                run.error = exc
                return False
            if run.prompt + run.completion >= self.n_ctx:
                run.finish, run.limit = "length", "context"  # the window is full; GPT4All would shift context
                return False
            return going

        try:
            gpt4all_native.prompt(
                context.llmodel,
                text[cut.offset :],
                params,
                n_past=cut.keep,  # GPT4All keeps the first `keep` tokens and evaluates after them
                n_predict=limit if limit is not None else self.n_ctx,
                n_batch=self.n_batch,
                on_prompt_token=on_prompt_token,
                on_response_token=on_response_token,
            )
        finally:
            self._remember(context, full, cut.keep, scope)
        if run.error is not None:
            raise run.error
        if run.overflow is not None:
            raise self._overflow(run.prompt, limit)
        if limit is not None and run.completion >= limit:
            run.finish, run.limit = "length", "max_tokens"
        prompt_tokens = len(full) if full is not None else run.prompt
        return GenerationOutcome(prompt_tokens, run.completion, run.finish, run.limit, cut.keep)

    def _tokenize(self, text: bytes) -> list[int] | None:
        return self._tokenizer.tokenize(text, at_start=True, insert_space=True) if self._tokenizer else None

    def _choose(self, full: list[int] | None, text: bytes, scope: str | None) -> tuple["_Context", Cut]:
        """The context to run in, and how much of it to keep (see models/prefix_cache.py)."""
        if full is None:
            return self._contexts[0], Cut(0, 0)
        cache, _shared = choose_context(
            self.contexts, full, None if self.share else scope, can_open=len(self._contexts) < self.max_contexts
        )
        if cache is None:
            self._contexts.append(_Context(CachedContext(len(self._contexts)), self._open()))
            return self._contexts[-1], Cut(0, 0)
        context = self._contexts[cache.index]
        readable = self.share or cache.scope in (None, scope)
        return context, plan_cut(cache, full, text, self._tokenizer, self.n_batch if self.exact else None) if readable else Cut(0, 0)

    def settle(self, keep_going: Callable[[], bool] | None = None) -> int:
        """Between jobs: evaluate each context's last reply again, in a batch, so that its next turn keeps it.

        A reply was evaluated one token at a time as it was generated; a full evaluation of the next
        turn's prompt evaluates it in a batch, with other arithmetic (models/prefix_cache.py).
        Evaluated again here in batches of two or more, it becomes reusable exactly. The most
        recently used context goes first. Returns the tokens evaluated; 0 when there is nothing to
        do. `keep_going` is asked after each batch: a waiting job stops it there.
        """
        if not self.exact or self._tokenizer is None:
            return 0
        evaluated = 0
        for context in sorted(self._contexts, key=lambda c: c.cache.last_used, reverse=True):
            if keep_going is not None and not keep_going():
                break
            evaluated += self._settle(context, keep_going)
        return evaluated

    def _settle(self, context: "_Context", keep_going: Callable[[], bool] | None) -> int:
        cache, tokens = context.cache, context.cache.tokens
        first = cache.exact_tokens
        if first >= len(tokens):
            return 0
        # GPT4All takes text: a span whose text tokenizes into these very ids (a reply cut inside a
        # character ends in bytes that are no text: a few tokens less are tried)
        spans = ((start, end) for end in range(len(tokens), max(first, len(tokens) - MAX_SETTLE_TRIES), -1)
                 for start in range(first, max(-1, first - MAX_SETTLE_TRIES), -1))
        for start, end in spans:
            if ends_alone(end - start, self.n_batch):
                continue  # its last token would be evaluated alone again
            text = b"".join(self._tokenizer.piece(t) for t in tokens[start:end])
            if evaluates_as(self._tokenizer, text, tokens[:end], start):
                break
        else:
            return 0
        gpt4all_native.prompt(context.llmodel, text, SamplingParams(temperature=0), n_past=start, n_predict=0,
                              n_batch=self.n_batch, on_prompt_token=lambda _id: keep_going is None or keep_going(),
                              on_response_token=lambda *_: False)
        held = _held(context)
        if held != tokens[: len(held)]:  # not what it held before: forget it
            cache.tokens, cache.scope, cache.prompt_tokens, cache.exact_tokens = [], None, 0, 0
        else:  # stopped early or not, every batch evaluated had two tokens or more
            cache.tokens, cache.exact_tokens = held, len(held)
        return max(0, len(held) - start)

    def _remember(self, context: "_Context", full: list[int] | None, kept: int, scope: str | None) -> None:
        """Record what the KV cache holds now, and check our tokenizer against what GPT4All evaluated."""
        tokens = _held(context)
        cache = context.cache
        cache.tokens, cache.scope, cache.last_used = tokens, scope, time.monotonic()
        cache.prompt_tokens = len(full) if full is not None else len(tokens)
        # the prompt was evaluated from `kept` on in batches of n_batch; its last token alone if that left one
        exact = cache.prompt_tokens - (1 if ends_alone(cache.prompt_tokens - kept, self.n_batch) else 0)
        cache.exact_tokens = len(tokens) if self.n_batch == 1 else min(exact, len(tokens))
        if full is not None and len(tokens) >= len(full) and tokens[: len(full)] != full:
            log.error("llama.cpp's tokenizer disagrees with GPT4All's evaluation of %s; prefix reuse is off", self.name)
            self._tokenizer = None
            for other in self._contexts:
                other.cache.tokens, other.cache.scope, other.cache.exact_tokens = [], None, 0

    def _check_fits(self, prompt_tokens: int, limit: int | None) -> None:
        """Refuse, before any evaluation, what the window cannot hold (GPT4All needs 4 tokens of room)."""
        if prompt_tokens > self.n_ctx - 4 or (limit is not None and prompt_tokens + limit > self.n_ctx):
            raise self._overflow(prompt_tokens, limit, counted=True)

    def _overflow(self, prompt_tokens: int, limit: int | None, *, counted: bool = False) -> ContextLengthExceeded:
        if limit is None or prompt_tokens == 0 or (counted and prompt_tokens > self.n_ctx - 4):
            # refused before evaluation: the prompt alone is too long
            detail = f" (the prompt has {prompt_tokens} tokens)" if counted else ""
            return ContextLengthExceeded(
                f"This model's maximum context length is {self.n_ctx} tokens, and the prompt alone exceeds it{detail}. "
                "Shorten the messages or the prompt.",
                param=None,  # the service that knows the request names its field (`messages` or `prompt`)
            )
        return ContextLengthExceeded(
            f"This model's maximum context length is {self.n_ctx} tokens. However, you requested "
            f"{prompt_tokens + limit} tokens ({prompt_tokens} in the prompt, {limit} for the completion). "
            "Reduce the prompt or max_tokens.",
            param="max_tokens",
        )

    def close(self) -> None:
        for context in self._contexts:
            context.llmodel.close()
        self._contexts = []
        if self._tokenizer is not None:
            self._tokenizer.close()
            self._tokenizer = None


class _Context:
    """One GPT4All instance: its own KV cache for N_CTX tokens, and what that cache holds."""

    def __init__(self, cache: CachedContext, model):
        self.cache = cache
        self.model = model  # the GPT4All object, kept alive with its low-level LLModel
        self.llmodel = model.model


def _held(context: _Context) -> list[int]:
    """The token ids in a context's KV cache, as GPT4All left them (its vector may run past `n_past`)."""
    ctx = context.llmodel.context
    held = min(ctx.n_past, ctx.tokens_size)
    return list(ctx.tokens[:held]) if held else []
