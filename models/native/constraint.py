"""Structured output as a token mask: what the decode loop calls, per generation and per token.

    check_schema(schema, param=...)          # API layer, before anything is evaluated: 400 or nothing
    compiled = compile(constraint, vocab)    # engine thread, before the prompt: cached (LRU, per vocabulary)
    matcher = compiled.matcher()             # one per generation; not thread-safe
    each step:  allowed = matcher.allowed()  # a bool array over the vocabulary: what the grammar allows next
                token = sample(logits, allowed)  # an end id (EOS/EOT) is only ever allowed when complete
                matcher.accept(token)        # never aborts: a refused token raises ConstraintFailed
                if matcher.done: stop        # the output is complete; no EOS is needed after it

Built on llguidance (1.9.1), chosen over xgrammar (0.2.9) by measurement (bench/decode_masks.py):
- it refuses what it cannot enforce (`not`, `if`, `uniqueItems`, unknown formats, lookarounds,
  overlapping `oneOf`) with a clear message, where xgrammar accepted each of those and ignored it
  (a lookahead with a warning on stderr), so our refusals are the library's own;
- it installs a 7.6 MB wheel with no dependencies, where xgrammar pulls torch, transformers,
  triton (about 1 GB) and apache-tvm-ffi, and takes 2.6 s to import;
- per token (mask computed and applied to the logits, token accepted) it is somewhat slower than
  xgrammar, which precomputes masks at compile time: a median of 70-100 µs against 60-65 µs on
  SmolLM2's vocabulary, the two alternating token by token on a loaded 2-core machine (means of
  135-430 against 115-190 µs, swollen by single 4-12 ms steps where the scheduler preempted us);
  either is about 1-3 % of a ~10 ms decode step, well within the 0.9 goal. (DESIGN.md's probe
  found 313 µs; llguidance's own numpy helper for applying a mask, `apply_token_bitmask_inplace`,
  takes 535 µs here, np.unpackbits and one masked copy 24 µs.) In exchange: vocabulary setup
  0.5-0.8 s against xgrammar's 4-6 s (its import included), and a new schema compiles in 1-8 ms
  against 70-95 ms;
- tool-call tags map onto its Lark grammars with lazy triggers, and recursive `$ref`s compile.

A matcher never calls into the library with a token it refuses (llguidance would only enter an
error state, but llama.cpp's own grammar would abort the process): `accept` checks the mask first.
When `max_tokens` cuts the output, the matcher is simply dropped: the JSON is then incomplete, and
the finish reason is "length".
"""

from __future__ import annotations

import threading

import llguidance
import numpy as np

from errors import ConstraintFailed
from models.interfaces import Constraint
from models.native.grammar import grammar_for
from models.native.schema_check import MAX_DEPTH, MAX_SCHEMA_BYTES, check_schema, library_refusal
from models.native.vocabulary import Vocabulary

__all__ = ["MAX_DEPTH", "MAX_SCHEMA_BYTES", "CompiledConstraint", "Matcher", "Vocabulary", "check_schema", "compile"]

def compile(constraint: Constraint, vocabulary: Vocabulary) -> CompiledConstraint:  # noqa: A001 - the verb is the API
    """`constraint` compiled for `vocabulary`'s tokens, from its LRU cache when it has been compiled before.

    SchemaRefused for a schema the library cannot enforce (check_schema's verdict, or a limit only
    the tokenizer-bound compile finds); ValueError for a malformed Constraint."""
    return vocabulary.cached(constraint, lambda: CompiledConstraint(constraint, vocabulary))


class CompiledConstraint:
    """A grammar bound to a vocabulary, shared by every thread; `matcher()` starts one generation."""

    def __init__(self, constraint: Constraint, vocabulary: Vocabulary):
        self.vocabulary = vocabulary
        # The library drops the GIL while it builds the parser; errors do not raise, they leave the
        # matcher in an error state, read here once.
        self._template = llguidance.LLMatcher(vocabulary.llguidance_tokenizer(), grammar_for(constraint), log_level=0)
        first = self._template.deep_copy()
        if not first.is_error():
            first.compute_bitmask()  # some grammars compile, then fail at once (check_schema tries this too)
        if first.is_error():
            raise library_refusal(first.get_error())
        self._lock = threading.Lock()

    def matcher(self) -> Matcher:
        with self._lock:  # a copy of the untouched template (microseconds), never the template itself
            return Matcher(self._template.deep_copy(), self.vocabulary)


class Matcher:
    """Where one generation stands in the grammar. One per generation, used from one thread."""

    def __init__(self, matcher: llguidance.LLMatcher, vocabulary: Vocabulary):
        self._matcher = matcher
        self.n_vocab = vocabulary.n_vocab
        self.end_ids = vocabulary.end_ids
        self._bits = np.zeros((self.n_vocab + 31) // 32, dtype=np.int32)
        self._allowed: np.ndarray | None = None  # for the current state; None once a token moves it on
        self.tokens = 0

    def allowed(self) -> np.ndarray:
        """A bool array of n_vocab: which tokens the grammar allows next (read-only; valid until `accept`)."""
        if self._allowed is None:
            self._matcher.unsafe_compute_mask_ptr(self._bits.ctypes.data, self._bits.nbytes)
            self._raise_on_error()
            allowed = np.unpackbits(self._bits.view(np.uint8), count=self.n_vocab, bitorder="little").view(bool)
            allowed.flags.writeable = False
            self._allowed = allowed
        return self._allowed

    def accept(self, token: int) -> None:
        """Move on by `token`; ConstraintFailed, with the state untouched, for a token the grammar refuses."""
        if not 0 <= token < self.n_vocab or not self.allowed()[token]:
            raise ConstraintFailed("the decode loop chose a token the output constraint refuses",
                                   detail=f"token {token} after {self.tokens} tokens")
        if not self._matcher.consume_token(token):
            self._raise_on_error()
        self._allowed = None
        self.tokens += 1

    @property
    def done(self) -> bool:
        """The output is complete and nothing more can follow: end the generation (no EOS needed)."""
        self._raise_on_error()
        return self._matcher.is_stopped()

    @property
    def eos_allowed(self) -> bool:
        """The output could end here (an end-of-generation id is allowed now)."""
        allowed = self.allowed()
        return any(allowed[i] for i in self.end_ids)

    def _raise_on_error(self) -> None:
        if self._matcher.is_error():
            raise ConstraintFailed("the output constraint failed", detail=self._matcher.get_error()[:2000])
