"""The sampler's own arithmetic (OpenAI's penalties, logprobs, the greedy shortcut), checked against plain definitions
and llama.cpp's own greedy call."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from scipy.special import log_softmax

from models.native import llama_api
from models.native.sampler import CANDIDATE, _array, _masked_argmax, penalise, token_logprob


def test_frequency_and_presence_penalties_follow_openais_definition():
    logits = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    penalise(logits, Counter({1: 3, 3: 1}), frequency=0.5, presence=0.25)
    # mu[j] - c[j] * alpha_frequency - (c[j] > 0) * alpha_presence
    assert logits.tolist() == [1.0, 2.0 - 1.5 - 0.25, 3.0, 4.0 - 0.5 - 0.25]


def test_negative_penalties_raise_what_was_generated():
    logits = np.zeros(3, np.float32)
    penalise(logits, Counter({2: 2}), frequency=-1.0, presence=-0.5)
    assert logits.tolist() == [0.0, 0.0, 2.5]


def test_logprobs_are_the_log_softmax_of_the_raw_logits_and_the_top_are_the_most_likely():
    rng = np.random.default_rng(7)
    logits = rng.normal(0, 3, 49152).astype(np.float32)
    expected = log_softmax(logits.astype(np.float64))
    entry = token_logprob(logits, 123, 20)
    assert abs(entry.logprob - expected[123]) < 1e-5
    best = np.argsort(-expected, kind="stable")[:20]
    assert [token for token, _ in entry.top] == best.tolist()
    assert all(abs(value - expected[token]) < 1e-5 for token, value in entry.top)
    assert sum(np.exp(value) for _, value in entry.top) <= 1.0


def test_tied_logits_list_the_lower_id_first_and_no_top_is_an_empty_list():
    logits = np.array([0.0, 5.0, 5.0, 1.0], np.float32)
    assert [token for token, _ in token_logprob(logits, 2, 2).top] == [1, 2]
    assert token_logprob(logits, 2, 0).top == ()


def test_plain_greedy_is_llama_cpps_greedy_over_the_candidates_ties_included():
    """The sampler's shortcut (an argmax on the logits, masked or not) against llama.cpp's own greedy call
    on the candidate array the chain builds, on logits full of ties."""
    lib = llama_api.library()
    rng = np.random.default_rng(3)
    for _ in range(200):
        logits = np.round(rng.normal(0, 2, 4096), 0).astype(np.float32)  # integers: many tokens tie at the top
        allowed = rng.random(4096) < 0.3
        candidates = np.empty(len(logits), CANDIDATE)
        candidates["id"], candidates["logit"], candidates["p"] = np.arange(len(logits)), logits, 0.0
        assert int(np.argmax(logits)) == lib.llama_sample_token_greedy(None, _array(candidates))
        kept = candidates[allowed[candidates["id"]]]
        assert _masked_argmax(logits, allowed) == lib.llama_sample_token_greedy(None, _array(kept))
    with pytest.raises(RuntimeError):
        _masked_argmax(np.zeros(4, np.float32), np.zeros(4, bool))
