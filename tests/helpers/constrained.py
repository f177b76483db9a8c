"""The real SmolLM2 vocabulary for constraint tests, and generation simulated without a model.

`vocabulary()` loads the default model's vocabulary from the llama.cpp library GPT4All loads (the
model file through GPT4All once, so that the library is mapped; then a vocab-only llama model).
Two ways to drive a matcher as a decode loop would:
- `follow(matcher, text)`: at each step the longest allowed token that continues `text` (so a
  test can show that a given output is allowed, token by token);
- `wander(matcher, rng)`: at each step a random allowed token, half the time one that closes
  something (`"`, `}` or `]`), so that outputs finish within a few hundred steps. At every step it
  checks what must hold whatever the grammar: no control token is allowed, and an end id is
  allowed only when the output so far is complete (`complete(text)` says so).
"""

from __future__ import annotations

import functools
import random
from pathlib import Path
from typing import Callable

import numpy as np

from models.native.constraint import Matcher, Vocabulary

ROOT = Path(__file__).resolve().parent.parent.parent
MODEL = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


@functools.lru_cache(maxsize=1)
def vocabulary() -> Vocabulary:
    from models.native.llama_model import LlamaModel

    model = LlamaModel.load(MODEL, vocab_only=True)
    vocab = Vocabulary.from_model(model)
    vocab._keep_alive = model  # the pieces are copied, but tokenize calls into the model
    return vocab


@functools.lru_cache(maxsize=1)
def control_ids() -> np.ndarray:
    """Tokens with an empty piece that are not end ids: `<|im_start|>` and the like."""
    vocab = vocabulary()
    return np.array([i for i, p in enumerate(vocab.pieces) if not p and i not in vocab.end_ids])


@functools.lru_cache(maxsize=1)
def _closing() -> np.ndarray:
    return np.array([p[-1:] in (b'"', b"}", b"]") for p in vocabulary().pieces])


@functools.lru_cache(maxsize=1)
def _not_end() -> np.ndarray:
    return ~np.isin(np.arange(vocabulary().n_vocab), vocabulary().end_ids)


@functools.lru_cache(maxsize=1)
def _ids_by_piece() -> dict[bytes, int]:
    return {p: i for i, p in enumerate(vocabulary().pieces) if p}


def follow(matcher: Matcher, text: str | bytes) -> int:
    """Feed `text` token by token (longest allowed piece first); returns how many bytes were accepted
    before no allowed token continued it (len(text) when all were)."""
    data = text.encode() if isinstance(text, str) else text
    ids, longest = _ids_by_piece(), max(map(len, _ids_by_piece()))
    done = 0
    while done < len(data):
        allowed = matcher.allowed()
        fitting = [ids[data[done:end]] for end in range(min(len(data), done + longest), done, -1)
                   if data[done:end] in ids and allowed[ids[data[done:end]]]]
        if not fitting:
            return done
        matcher.accept(fitting[0])
        done += len(vocabulary().pieces[fitting[0]])
    return done


def wander(matcher: Matcher, rng: random.Random, complete: Callable[[bytes], bool], max_steps: int = 600) -> bytes:
    """Random allowed tokens until the matcher is done or an end id is taken; returns the output bytes."""
    vocab = vocabulary()
    out = bytearray()
    for _ in range(max_steps):
        allowed = matcher.allowed()
        assert not allowed[control_ids()].any(), f"a control token is allowed after {bytes(out)!r}"
        if matcher.done:
            return bytes(out)
        if matcher.eos_allowed:
            assert complete(bytes(out)), f"an end id is allowed after the incomplete {bytes(out)!r}"
            if rng.random() < 0.3:
                matcher.accept(vocab.end_ids[0])
                assert matcher.done
                return bytes(out)
        choices = np.flatnonzero(allowed & _not_end())
        closers = np.flatnonzero(allowed & _closing())
        pick = closers if len(closers) and rng.random() < 0.5 else choices
        token = int(pick[rng.randrange(len(pick))])
        matcher.accept(token)
        out += vocab.pieces[token]
    raise AssertionError(f"no end after {max_steps} steps: {bytes(out)[:300]!r}")
