"""A model's tokens as the constraint library sees them, and the cache of constraints compiled for them.

The pieces are llama.cpp's `llama_token_to_piece(model, id, lstrip=0, special=False)`: raw bytes,
byte-level BPE already decoded, and control tokens (`<|im_start|>`, `<|endoftext|>`...) empty, so
that no grammar can ever allow one: an empty piece matches nothing. (Built instead from the
GGUF's token texts, read as byte-level, 16 of SmolLM2's control tokens became allowed inside JSON
strings: DESIGN.md.) The end-of-generation ids (EOS, and EOT where there is one) are the only
empty pieces the library allows, and only where the grammar is complete.

One `Vocabulary` per loaded model, shared by every thread: the llguidance tokenizer is built once
(about 0.15 s for SmolLM2's 49,152 tokens; on first use, so a server that never constrains never
pays it), and up to `cache_size` compiled constraints are kept, least recently used first out.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Iterable, Sequence

import llguidance


class Vocabulary:
    """Token pieces, end-of-generation ids and a tokenizer (for the library's forced text) of one model."""

    def __init__(
        self,
        pieces: Sequence[bytes],
        end_ids: Iterable[int],
        tokenize: Callable[[bytes], list[int]],
        *,
        cache_size: int = 64,
    ):
        """`tokenize(utf8) -> ids`: plain text, no BOS, special tokens not parsed (always given valid UTF-8)."""
        self.pieces = tuple(bytes(p) for p in pieces)
        self.n_vocab = len(self.pieces)
        self.end_ids = tuple(dict.fromkeys(end_ids))
        if not self.end_ids or not all(0 <= i < self.n_vocab for i in self.end_ids):
            raise ValueError(f"end-of-generation ids {self.end_ids} are not in a vocabulary of {self.n_vocab}")
        self._tokenize = tokenize
        self._tokenizer: llguidance.LLTokenizer | None = None
        self._lock = threading.Lock()
        self._cache: OrderedDict[object, object] = OrderedDict()
        self.cache_size = cache_size
        self.cache_hits = 0
        self.cache_misses = 0

    @classmethod
    def from_model(cls, model, **kwargs) -> Vocabulary:
        """From a loaded `models.native.llama_model.LlamaModel` (or any object with its three methods)."""
        return cls(
            model.raw_pieces(),
            model.end_of_generation(),
            lambda text: model.tokenize(text, at_start=False, insert_space=False, special=False),
            **kwargs,
        )

    def llguidance_tokenizer(self) -> llguidance.LLTokenizer:
        with self._lock:
            if self._tokenizer is None:
                self._tokenizer = llguidance.LLTokenizer(
                    llguidance.TokenizerWrapper(_Pieces(self)), eos_token=list(self.end_ids)
                )
            return self._tokenizer

    def cached(self, key: object, build: Callable[[], object]) -> object:
        """`build()`'s result for `key`, from the LRU cache when there. Built outside the lock: two
        threads compiling one new schema at once both compile it; the cache keeps one."""
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                self.cache_hits += 1
                return self._cache[key]
            self.cache_misses += 1
        value = build()
        with self._lock:
            self._cache[key] = value
            self._cache.move_to_end(key)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return value


class _Pieces:
    """What `llguidance.TokenizerWrapper` reads: tokens, EOS, BOS, special ids, and a tokenize call."""

    def __init__(self, vocabulary: Vocabulary):
        self.tokens = list(vocabulary.pieces)
        self.eos_token_id = vocabulary.end_ids[0]
        self.bos_token_id = None
        # None marked special: their pieces are already empty, which no grammar can match.
        self.special_token_ids: list[int] = []
        self._tokenize = vocabulary._tokenize

    def __call__(self, text: bytes) -> list[int]:
        return self._tokenize(text)
