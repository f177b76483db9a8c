"""Picking the next token from the logits: GPT4All's chain, plus what OpenAI's API adds.

GPT4All's `llama_sample_top_p_top_k` (gpt4all-backend/llamamodel.cpp, tag python-v2.8.2), in its order:
the repeat penalty over the context's last `repeat_last_n` tokens (prompt included), then greedy at
temperature 0, else top-k, tail-free (z 1, off), typical (p 1, off), top-p, min-p, temperature and a
draw from the context's RNG. The same `llama_sample_*` calls run here, in that order, on a candidate
array of all `n_vocab` tokens, so greedy output is GPT4All's token for token. (Greedy with nothing else
to do is the argmax of the logits, which is what that chain computes then.)

Added, each only when asked (a request without them runs exactly GPT4All's chain):
- `logit_bias`: added to the logits first, as OpenAI does;
- `frequency_penalty` / `presence_penalty`: OpenAI's definitions, `logit -= count * frequency +
  (count > 0) * presence`, over the tokens generated so far (not the prompt), after the repeat penalty;
- the constraint's mask: only allowed tokens stay candidates (their order kept, so greedy still takes
  the first maximum);
- `seed`: the context's RNG is seeded before the first draw, so a seed, prompt and parameters give the
  same text on this build; without one, a fresh random seed each generation;
- `logprobs`: the chosen token's log-probability and the top alternatives under the model's own
  distribution (log-softmax of the raw logits: before bias, penalties, mask and temperature), as
  vLLM reports by default. It says what the model thought, not what the sampler was allowed to do.
"""

from __future__ import annotations

import ctypes
import os
from collections import Counter
from dataclasses import dataclass

import numpy as np

from models.interfaces import SamplingParams
from models.native.llama_api import TokenDataArray

CANDIDATE = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])  # llama_token_data
TOP_K_ALL = 1 << 30  # GPT4All's "no top-k"
NEAR_PEAK = 8.0  # logits this close to the maximum hold the top alternatives, unless fewer than asked for


@dataclass(frozen=True)
class TokenLogprob:
    """A chosen token's log-probability and, best first, the top alternatives (`(id, logprob)`)."""

    logprob: float
    top: tuple[tuple[int, float], ...] = ()


class Sampler:
    """One generation's sampling state: `pick` is called once per token with the context's logits."""

    def __init__(self, lib: ctypes.CDLL, context_pointer, params: SamplingParams, n_vocab: int):
        self._lib, self._ctx, self.params = lib, context_pointer, params
        self._ids = np.arange(n_vocab, dtype=np.int32)
        self._bias = _bias_vector(params.logit_bias, n_vocab)
        self._generated: Counter[int] = Counter()
        # Greedy with no bias and no penalty (llama.cpp's repeat penalty returns at once at 1.0): the chain is
        # an argmax (over the allowed tokens), taken on the logits themselves rather than on a candidate array
        # built for each token (100 µs a token on SmolLM2's 49,152 against 7).
        self._plain_greedy = (params.temperature == 0 and self._bias is None and params.repeat_penalty == 1.0
                              and not params.frequency_penalty and not params.presence_penalty)
        seed = params.seed if params.seed is not None else int.from_bytes(os.urandom(4), "little")
        lib.llama_set_rng_seed(context_pointer, seed & 0xFFFFFFFF)

    def pick(self, logits: np.ndarray, recent: list[int], allowed: np.ndarray | None = None) -> tuple[int, TokenLogprob | None]:
        """The next token from `logits` (read, never written), with `recent` the context's ids so far
        and `allowed` the constraint's mask (a boolean array over the vocabulary), if any."""
        params = self.params
        if self._plain_greedy:  # the chain with nothing to do: llama.cpp's greedy takes the first maximum too
            token = int(np.argmax(logits)) if allowed is None else _masked_argmax(logits, allowed)
        else:
            token = self._chain(logits, recent, allowed)
        logprob = token_logprob(logits, token, params.logprobs) if params.logprobs is not None else None
        self._generated[token] += 1
        return token, logprob

    def _chain(self, logits: np.ndarray, recent: list[int], allowed: np.ndarray | None) -> int:
        params = self.params
        candidates = np.empty(len(logits), CANDIDATE)
        candidates["id"] = self._ids
        candidates["logit"] = logits if self._bias is None else logits + self._bias
        candidates["p"] = 0.0
        array = _array(candidates)
        window = recent[-params.repeat_last_n:] if params.repeat_last_n > 0 else []
        tokens = (ctypes.c_int32 * len(window))(*window)
        self._lib.llama_sample_repetition_penalties(None, array, tokens, len(window), params.repeat_penalty, 0.0, 0.0)
        if self._generated and (params.frequency_penalty or params.presence_penalty):
            penalise(candidates["logit"], self._generated, params.frequency_penalty, params.presence_penalty)
        if allowed is not None:
            candidates = candidates[allowed]  # still in id order: nothing above reorders them
            if not len(candidates):
                raise RuntimeError("the constraint allows no token")
            array = _array(candidates)
        return self._select(array)

    def _select(self, array: ctypes.pointer) -> int:
        params, lib, ctx = self.params, self._lib, self._ctx
        if params.temperature == 0:
            return lib.llama_sample_token_greedy(ctx, array)
        lib.llama_sample_top_k(ctx, array, params.top_k if params.top_k > 0 else TOP_K_ALL, 1)
        lib.llama_sample_tail_free(ctx, array, 1.0, 1)
        lib.llama_sample_typical(ctx, array, 1.0, 1)
        lib.llama_sample_top_p(ctx, array, params.top_p, 1)
        lib.llama_sample_min_p(ctx, array, params.min_p, 1)
        lib.llama_sample_temp(ctx, array, params.temperature)
        return lib.llama_sample_token(ctx, array)


def penalise(logits: np.ndarray, generated: Counter, frequency: float, presence: float) -> None:
    """OpenAI's penalties, in place, on logits indexed by token id: `count * frequency + presence` off
    every token generated so far."""
    ids = np.fromiter(generated.keys(), np.int64, len(generated))
    counts = np.fromiter(generated.values(), np.float32, len(generated))
    logits[ids] -= counts * np.float32(frequency) + np.float32(presence)


def token_logprob(logits: np.ndarray, token: int, top: int) -> TokenLogprob:
    """log-softmax of the raw logits at `token`, and the `top` most likely tokens (ties: lower id first).

    The exponentials in float32 (the logits' own precision), their sum in float64: half the time of
    float64 throughout, to the same logprobs within 1e-6. The top tokens are looked for first among
    those within `NEAR_PEAK` of the maximum (usually a few dozen), the whole vocabulary only if too few are."""
    peak = float(logits.max())
    log_total = peak + float(np.log(np.exp(logits - np.float32(peak)).sum(dtype=np.float64)))
    best: tuple[tuple[int, float], ...] = ()
    if top:
        ids = np.flatnonzero(logits >= np.float32(peak - NEAR_PEAK))
        if len(ids) < top or len(ids) > 4096:
            ids = np.argpartition(logits, len(logits) - top)[-top:]
        ids = ids[np.lexsort((ids, -logits[ids]))][:top]
        best = tuple((int(i), float(logits[i]) - log_total) for i in ids)
    return TokenLogprob(float(logits[token]) - log_total, best)


def _masked_argmax(logits: np.ndarray, allowed: np.ndarray) -> int:
    """The first maximum among the allowed tokens: greedy over the candidates the mask keeps, in id order."""
    token = int(np.argmax(np.where(allowed, logits, np.float32(-np.inf))))
    if not allowed[token]:
        raise RuntimeError("the constraint allows no token")
    return token


def _bias_vector(logit_bias: tuple[tuple[int, float], ...], n_vocab: int) -> np.ndarray | None:
    if not logit_bias:
        return None
    bias = np.zeros(n_vocab, np.float32)
    for token, value in logit_bias:
        bias[token] = value
    return bias


def _array(candidates: np.ndarray) -> ctypes.pointer:
    return ctypes.pointer(TokenDataArray(candidates.ctypes.data, len(candidates), False))
