"""The GPT4All chat engine: load a `.gguf`, run one fully rendered prompt, count tokens exactly.

It calls `llmodel_prompt` directly (what `LLModel.prompt_model` wraps) so that our own callbacks
count every prompt token and every sampled token: the bindings' decoder swallows tokens that end
mid UTF-8 character, and its prompt callback is a no-op. Special tokens in the prompt are parsed
(`special=True`) because the chat template writes them.

Not thread-safe: one instance belongs to one thread (the scheduler's worker for it).
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import os
import sys
import logging
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

from errors import ContextLengthExceeded, InvalidRequest, ModelLoadFailed
from models import llama_tokenizer
from models.interfaces import GenerationOutcome, PrefixCache, SamplingParams
from models.llama_tokenizer import LlamaTokenizer
from models.prefix_cache import CachedContext, Cut, choose_context, plan_cut
from models.registry import kv_bytes_per_token

log = logging.getLogger("models.gpt4all")

GGUF_MAGIC = b"GGUF"


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
        _check_header(path)
        self.name = path.name
        self.n_ctx = n_ctx
        self.n_batch = n_batch
        # An empty prompt continues from the start of a new document, as OpenAI's and llama.cpp's servers do.
        self.document_start = document_start.encode("utf-8")
        self._open = lambda: _load(path, n_ctx=n_ctx, n_threads=n_threads, device=device)
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
        from gpt4all._pyllmodel import PromptCallback, ResponseCallback, llmodel

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
        lm = context.llmodel
        counts = {"prompt": cut.keep, "completion": 0}
        state = {"finish": "stop", "limit": None, "overflow": None, "error": None}
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

        def on_prompt_token(_token_id: int) -> bool:
            counts["prompt"] += 1
            return keep_going is None or keep_going()

        def on_response_token(token_id: int, piece: bytes) -> bool:
            if token_id == -1:  # GPT4All reports a prompt over the window this way
                state["overflow"] = piece.decode("utf-8", "replace")
                return False
            if counts["completion"] == 0 and limit is not None and counts["prompt"] + limit > self.n_ctx:
                state["overflow"] = "prompt + max_tokens"
                return False
            counts["completion"] += 1
            try:
                decoded = decoder.decode(piece)
                going = on_text(decoded) if decoded else True
            except BaseException as exc:  # never let an exception unwind through C frames
                state["error"] = exc
                return False
            if counts["prompt"] + counts["completion"] >= self.n_ctx:
                state["finish"], state["limit"] = "length", "context"  # the window is full; GPT4All would shift context
                return False
            return going

        lm._set_context(
            n_predict=limit if limit is not None else self.n_ctx,
            top_k=params.top_k if params.top_k > 0 else 1 << 30,
            top_p=params.top_p,
            min_p=params.min_p,
            temp=params.temperature,
            n_batch=self.n_batch,
            repeat_penalty=params.repeat_penalty,
            repeat_last_n=params.repeat_last_n,
            reset_context=True,
        )
        lm.context.n_past = cut.keep  # GPT4All keeps the first `keep` tokens and evaluates after them
        try:
            llmodel.llmodel_prompt(
                lm.model,
                ctypes.c_char_p(text[cut.offset :]),
                # "%1%2", not "%1": with one placeholder GPT4All decodes a "\n\n" assistant suffix after the
                # reply, which calls the prompt callback again (usage off by one) and costs an extra eval.
                ctypes.c_char_p(b"%1%2"),
                PromptCallback(on_prompt_token),
                ResponseCallback(on_response_token),
                True,
                lm.context,
                True,
                ctypes.c_char_p(),
            )
        finally:
            self._remember(context, full, scope)
        if state["error"] is not None:
            raise state["error"]
        if state["overflow"] is not None:
            raise self._overflow(counts["prompt"], limit)
        if limit is not None and counts["completion"] >= limit:
            state["finish"], state["limit"] = "length", "max_tokens"
        prompt_tokens = len(full) if full is not None else counts["prompt"]
        return GenerationOutcome(prompt_tokens, counts["completion"], state["finish"], state["limit"], cut.keep)

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

    def _remember(self, context: "_Context", full: list[int] | None, scope: str | None) -> None:
        """Record what the KV cache holds now, and check our tokenizer against what GPT4All evaluated."""
        ctx = context.llmodel.context
        held = min(ctx.n_past, ctx.tokens_size)
        tokens = list(ctx.tokens[:held]) if held else []
        cache = context.cache
        cache.tokens, cache.scope, cache.last_used = tokens, scope, time.monotonic()
        cache.prompt_tokens = len(full) if full is not None else held
        if full is not None and len(tokens) >= len(full) and tokens[: len(full)] != full:
            log.error("llama.cpp's tokenizer disagrees with GPT4All's evaluation of %s; prefix reuse is off", self.name)
            self._tokenizer = None
            for other in self._contexts:
                other.cache.tokens, other.cache.scope = [], None

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
                param="messages",
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


def _load(path: Path, *, n_ctx: int, n_threads: int, device: str):
    from gpt4all import GPT4All

    failure: Exception | None = None
    with _native_stderr() as native_log:
        try:
            return GPT4All(
                path.name,
                model_path=str(path.parent),
                allow_download=False,
                n_threads=n_threads,
                n_ctx=n_ctx,
                device=device,
                verbose=False,
            )
        except Exception as exc:
            failure = exc
    raise ModelLoadFailed(f"could not load {path.name}: {_load_reason(native_log, failure)}") from None


_stderr_lock = threading.Lock()  # fd 2 is process-wide: one capture at a time


@contextlib.contextmanager
def _native_stderr() -> Iterator[list[str]]:
    """Capture what native code writes to fd 2 (and pass it on): llama.cpp says why a load failed only there."""
    captured: list[str] = []
    with _stderr_lock, tempfile.TemporaryFile() as sink:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read()
            if text:
                os.write(2, text)
            captured.append(text.decode("utf-8", "replace"))


def _load_reason(native_log: list[str], failure: Exception) -> str:
    """llama.cpp's own error line (e.g. "unknown pre-tokenizer type: 'smollm'"), else the bindings' message."""
    for line in "".join(native_log).splitlines():
        if "error" in line.lower():
            return line.split("error loading model: ")[-1].strip()
    return str(failure)


def _check_header(path: Path) -> None:
    """Refuse files llama.cpp would choke on before handing them to native code."""
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise ModelLoadFailed(f"could not read {path.name}: {exc.strerror}") from None
    if magic != GGUF_MAGIC:
        raise ModelLoadFailed(f"{path.name} is not a GGUF file (it starts with {magic!r})")
