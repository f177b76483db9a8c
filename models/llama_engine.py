"""The chat engine: our decode loop on GPT4All's llama.cpp, with exact prefix reuse across requests.

The model is loaded once (`models/native/llama_model.py`); each cached conversation is a llama.cpp
context on it (`llama_context.py`), up to `PrefixCache.slots`. A prompt is tokenized as GPT4All
tokenizes it, placed by `models/prefix_cache.py` (which context, what it reuses), evaluated in
`n_batch` batches (each generated token alone, as GPT4All does), and sampled by `sampler.py`, masked
by the request's constraint if it has one. Counts are exact: they are the ids we evaluate.

Two behaviours of GPT4All's prompt call are deliberately not kept: its hard-coded `### Instruction`,
`### Response` (and four more) stop strings, which are GPT4All's convention and cut real Markdown
headings, and its end on EOS only: every end-of-generation token of the model (EOS, EOT) ends a reply.

Not thread-safe: one instance belongs to one thread (the scheduler's worker for it).
"""

from __future__ import annotations

import codecs
import logging
import time
from pathlib import Path
from typing import Callable

from errors import ContextLengthExceeded, InvalidRequest
from models.interfaces import Constraint, GenerationOutcome, PrefixCache, SamplingParams, TokenLogprobs
from models.native import devices
from models.native.llama_context import LlamaContext
from models.native.llama_model import LlamaModel
from models.native.sampler import Sampler, TokenLogprob
from models.prefix_cache import CachedContext, batches, ends_alone, plan

log = logging.getLogger("models.engine")
MAX_BATCH = 512  # llama.cpp's physical batch (n_ubatch): larger batches would be split, some into batches of one


class LlamaEngine:
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
        path = Path(path)
        self.name = path.name
        self.n_ctx = n_ctx
        self.n_batch = max(1, min(n_batch, MAX_BATCH))
        placement = devices.resolve(device, path.name)
        self.model = LlamaModel.load(path, backend=placement.backend, gpu=placement.gpu)
        self._n_threads = n_threads
        # An empty prompt continues from the start of a new document, as OpenAI's and llama.cpp's servers do.
        self.document_start = document_start.encode("utf-8")
        self.reuse, self.share, self.exact = prefix_cache.enabled, prefix_cache.share, prefix_cache.exact
        self.max_contexts = 1
        if prefix_cache.enabled:
            per_context = self.model.kv_bytes_per_token() * n_ctx
            fitting = prefix_cache.max_mb * 2**20 // per_context if per_context else prefix_cache.slots
            self.max_contexts = max(1, min(prefix_cache.slots, fitting))
        self._slots = [self._open(0)]
        self._vocabulary = None  # the constraint library's view of the vocabulary, built on first use
        self.last_reply: list[int] = []  # the token ids the last generation sampled (for tests)
        self._pieces: dict[int, bytes] = {}

    @property
    def contexts(self) -> list[CachedContext]:
        """What each open context holds (for tests and /metrics)."""
        return [slot.cache for slot in self._slots]

    def generate(
        self,
        prompt: str,
        params: SamplingParams,
        on_text: Callable[..., bool],
        *,
        scope: str | None = None,
        keep_going: Callable[[], bool] | None = None,
    ) -> GenerationOutcome:
        full = self._prompt_ids(prompt)
        self._check_fits(len(full), params.max_tokens)
        outside = [token for token, _ in params.logit_bias if token >= self.model.n_vocab]
        if outside:
            raise InvalidRequest(f"logit_bias names token {outside[0]}, but this model's vocabulary has "
                                 f"{self.model.n_vocab} tokens (0 to {self.model.n_vocab - 1})", param="logit_bias")
        matcher = self._matcher(params.constraint)  # a schema that fails to compile is refused before evaluation
        slot, keep = self._place(full, scope)
        try:
            if not self._evaluate(slot, full[keep:], len(full), keep_going):
                return GenerationOutcome(len(full), 0, "stop", cached_tokens=keep)
            completion, finish, limit = self._sample(slot, params, on_text, matcher)
        finally:
            self._remember(slot, full, scope)
        return GenerationOutcome(len(full), completion, finish, limit, keep)

    # ---- the prompt --------------------------------------------------------------------------

    def _prompt_ids(self, prompt: str) -> list[int]:
        text = prompt.encode("utf-8")
        full = self.model.tokenize(text) if text else []
        if not full:
            # Nothing to evaluate: sampling would read whatever logits an earlier request left (or none).
            full = self.model.tokenize(self.document_start) if self.document_start else []
            if not full:
                raise InvalidRequest("the prompt is empty and the model names no start-of-document token", param="prompt")
        return full

    def _place(self, full: list[int], scope: str | None) -> tuple["_Slot", int]:
        """The context to run in, holding the prompt's first `keep` tokens (see models/prefix_cache.py)."""
        if not self.reuse:
            self._slots[0].context.truncate(0)
            return self._slots[0], 0
        chosen = plan(self.contexts, full, scope, can_open=len(self._slots) < self.max_contexts,
                      n_batch=self.n_batch, exact=self.exact, share=self.share)
        if chosen.target is None:
            self._slots.append(self._open(len(self._slots)))
        slot = self._slots[-1 if chosen.target is None else chosen.target]
        if chosen.source is None:
            slot.context.truncate(0)
        elif chosen.source == slot.cache.index:
            slot.context.truncate(chosen.keep)
        else:
            slot.context.copy_from(self._slots[chosen.source].context, chosen.keep)
        slot.cache.exact_tokens = min(slot.cache.exact_tokens, chosen.keep) if chosen.source == slot.cache.index else chosen.keep
        return slot, chosen.keep

    def _evaluate(self, slot: "_Slot", rest: list[int], length: int, keep_going: Callable[[], bool] | None) -> bool:
        """Evaluate the prompt's `rest` after what `slot` holds; False if `keep_going` stopped it between batches."""
        last_alone = ends_alone(length if self.exact else len(rest), self.n_batch)
        sizes = batches(len(rest), self.n_batch, last_alone)
        if sizes is None:  # the planner never keeps such a cut; evaluate everything rather than guess
            raise RuntimeError(f"no exact batches for {len(rest)} of {length} tokens")
        done = 0
        for size in sizes:
            slot.context.evaluate(rest[done : done + size])
            done += size
            if size > 1 or self.n_batch == 1:
                slot.cache.exact_tokens = len(slot.context.tokens)
            if keep_going is not None and not keep_going():
                return False
        return True

    def _check_fits(self, prompt_tokens: int, limit: int | None) -> None:
        """Refuse, before any evaluation, what the window cannot hold (the reply needs one token of room at least)."""
        if prompt_tokens >= self.n_ctx:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {self.n_ctx} tokens, and the prompt alone exceeds it "
                f"(the prompt has {prompt_tokens} tokens). Shorten the messages or the prompt.",
                param=None,  # the service that knows the request names its field (`messages` or `prompt`)
            )
        if limit is not None and prompt_tokens + limit > self.n_ctx:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {self.n_ctx} tokens. However, you requested "
                f"{prompt_tokens + limit} tokens ({prompt_tokens} in the prompt, {limit} for the completion). "
                "Reduce the prompt or max_tokens.",
                param="max_tokens",
            )

    # ---- the reply ---------------------------------------------------------------------------

    def _sample(self, slot: "_Slot", params: SamplingParams, on_text: Callable[..., bool], matcher) -> tuple[int, str, str | None]:
        """Generate until an end token, the constraint's end, `max_tokens`, a full window or `on_text` says stop."""
        context, model = slot.context, self.model
        sampler = Sampler(model.lib, context.pointer, params, model.n_vocab)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        produced, self.last_reply = 0, []
        while True:
            allowed = matcher.allowed() if matcher is not None else None
            token, logprob = sampler.pick(context.logits(), context.tokens, allowed)
            if model.ends_generation(token):
                return produced, "stop", None
            if matcher is not None:
                matcher.accept(token)
            produced += 1
            self.last_reply.append(token)
            piece = self._piece(token)
            entry = self._logprobs(token, logprob) if logprob is not None else None
            if not on_text(decoder.decode(piece), entry) or (matcher is not None and matcher.done):
                return produced, "stop", None
            if produced == params.max_tokens:  # the last token is never evaluated: nothing would read its logits
                return produced, "length", "max_tokens"
            if len(context.tokens) + 1 >= self.n_ctx:  # prompt + reply fill the window
                return produced, "length", "context"
            context.evaluate([token])

    def _piece(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            piece = self._pieces[token] = self.model.piece(token)
        return piece

    def _logprobs(self, token: int, logprob: TokenLogprob) -> TokenLogprobs:
        top = tuple((_shown(self._piece(t)), self._piece(t), value) for t, value in logprob.top)
        return TokenLogprobs(_shown(self._piece(token)), self._piece(token), logprob.logprob, top)

    def _matcher(self, constraint: Constraint | None):
        if constraint is None:
            return None
        from models.native import constraint as constraints  # the mask library loads on the first constrained request

        if self._vocabulary is None:
            self._vocabulary = constraints.Vocabulary.from_model(self.model)
        return constraints.compile(constraint, self._vocabulary).matcher()

    # ---- the cache between requests ----------------------------------------------------------

    def _remember(self, slot: "_Slot", full: list[int], scope: str | None) -> None:
        cache, held = slot.cache, slot.context.tokens
        cache.tokens, cache.scope, cache.last_used = list(held), scope, time.monotonic()
        cache.prompt_tokens = min(len(full), len(held)) if held[: len(full)] == full[: len(held)] else 0
        cache.exact_tokens = min(cache.exact_tokens, len(held))

    def settle(self, keep_going: Callable[[], bool] | None = None) -> int:
        """Between jobs: evaluate each context's last reply again, in batches, so that its next turn keeps it.

        A reply was evaluated one token at a time as it was generated; a full evaluation of the next
        turn's prompt evaluates it in a batch, with other arithmetic (models/prefix_cache.py).
        Evaluated again here in batches of two or more, it becomes reusable exactly. The most
        recently used context goes first. Returns the tokens evaluated; 0 when there is nothing to
        do. `keep_going` is asked after each batch: a waiting job stops it there.
        """
        if not (self.reuse and self.exact):
            return 0
        evaluated = 0
        for slot in sorted(self._slots, key=lambda s: s.cache.last_used, reverse=True):
            if keep_going is not None and not keep_going():
                break
            evaluated += self._settle(slot, keep_going)
        return evaluated

    def _settle(self, slot: "_Slot", keep_going: Callable[[], bool] | None) -> int:
        cache, tokens = slot.cache, list(slot.context.tokens)
        start = cache.exact_tokens
        if start >= len(tokens):
            return 0
        sizes = batches(len(tokens) - start, self.n_batch, False)
        if sizes is None:
            start -= 1  # one token more (an exact one, evaluated again to the same bytes) makes a batch of two
            if start < 0:
                return 0
            sizes = batches(len(tokens) - start, self.n_batch, False)
        slot.context.truncate(start)
        done = start
        for size in sizes:
            slot.context.evaluate(tokens[done : done + size])
            done += size
            cache.exact_tokens = done
            if keep_going is not None and not keep_going():
                break
        cache.tokens = list(slot.context.tokens)
        return done - start

    def _open(self, index: int) -> "_Slot":
        context = LlamaContext(self.model, n_ctx=self.n_ctx, n_threads=self._n_threads, max_batch=self.n_batch)
        return _Slot(CachedContext(index), context)

    def close(self) -> None:
        for slot in self._slots:
            slot.context.close()
        self._slots = []
        self.model.close()


class _Slot:
    """One llama.cpp context and the planner's view of what it holds."""

    def __init__(self, cache: CachedContext, context: LlamaContext):
        self.cache, self.context = cache, context


def _shown(piece: bytes) -> str:
    """A token's text as OpenAI shows it: itself, or `bytes:\\xe2\\x80` where it is not whole UTF-8."""
    try:
        return piece.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in piece)
