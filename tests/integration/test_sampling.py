"""Sampling on the real model: the temperature chain draws from GPT4All's distribution; seed, logit_bias,
penalties and logprobs do what OpenAI's API says. The engine runs in-process (no HTTP: the API's
shapes are tested in test_openai_api.py)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from scipy.stats import chi2_contingency, chisquare

from models import gpt4all_native
from models.interfaces import PrefixCache, SamplingParams
from models.llama_engine import LlamaEngine
from models.registry import ModelRegistry
from tests.conftest import ROOT

MODEL = ModelRegistry(ROOT / "models").default()
PROMPT = "<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n"
COUNTING = "<|im_start|>user\nCount from 1 to 30.<|im_end|>\n<|im_start|>assistant\n1, 2, 3,"
CHAIN = {"temperature": 1.0, "top_k": 40, "top_p": 0.95}
DRAWS = 300


@pytest.fixture(scope="module")
def engine():
    engine = LlamaEngine(MODEL.path, n_ctx=512, n_threads=2, n_batch=32, prefix_cache=PrefixCache(slots=1))
    yield engine
    engine.close()


def generate(engine, prompt=PROMPT, **params) -> tuple[list[int], list]:
    """The generated token ids and the logprob entries."""
    entries = []
    engine.generate(prompt, SamplingParams(**params), lambda _text, entry=None: entries.append(entry) or True)
    return engine.last_reply, entries


def first_token(engine, **params) -> int:
    return generate(engine, **params)[0][0]


def chain_distribution(logits: np.ndarray) -> dict[int, float]:
    """llama.cpp's top-k 40, then top-p 0.95 (softmax at temperature 1), then the draw's softmax."""
    top = np.argsort(-logits, kind="stable")[: CHAIN["top_k"]]
    p = np.exp(logits[top] - logits[top].max())
    p /= p.sum()
    keep = int(np.searchsorted(np.cumsum(p), CHAIN["top_p"]) + 1)
    kept = top[:keep]
    q = np.exp(logits[kept] - logits[kept].max())
    return dict(zip(kept.tolist(), (q / q.sum()).tolist()))


def test_a_temperature_draws_from_gpt4alls_distribution(engine):
    generate(engine, max_tokens=1, temperature=0)
    logits = np.array(engine._slots[0].context.logits(), np.float64)  # the prompt's next-token logits
    expected = chain_distribution(logits)
    ours = Counter(first_token(engine, max_tokens=1, seed=seed, **CHAIN) for seed in range(DRAWS))
    raw_model = gpt4all_native.load(MODEL.path, n_ctx=512, n_threads=2, device="cpu")
    try:
        params = SamplingParams(max_tokens=1, **CHAIN)
        theirs = Counter(gpt4all_native.reply(raw_model.model, PROMPT, params, n_batch=32).ids[0] for _ in range(DRAWS))
    finally:
        raw_model.model.close()
    assert set(ours) <= set(expected) and set(theirs) <= set(expected)  # nothing outside top-k / top-p
    common = sorted(expected, key=lambda t: -expected[t])
    frequent = [t for t in common if expected[t] * DRAWS >= 5]
    def binned(counts: Counter) -> list[int]:
        return [counts[t] for t in frequent] + [sum(counts[t] for t in common if t not in frequent)]
    expected_counts = [expected[t] * DRAWS for t in frequent] + [DRAWS * sum(expected[t] for t in common if t not in frequent)]
    # our draws (seeds 0..299: the same every run) fit the chain's distribution ...
    assert chisquare(binned(ours), expected_counts).pvalue > 1e-3
    # ... and GPT4All's own (its RNG seeded by the clock) are the same distribution as ours
    assert chi2_contingency([binned(ours), binned(theirs)]).pvalue > 1e-4


def test_a_seed_gives_the_same_text_at_any_temperature(engine):
    params = {"max_tokens": 16, "temperature": 1.2, "top_k": 0}
    first, _ = generate(engine, seed=42, **params)
    again, _ = generate(engine, seed=42, **params)
    others = {tuple(generate(engine, seed=seed, **params)[0]) for seed in (1, 2, 3)}
    assert first == again
    assert len(others | {tuple(first)}) >= 3


def test_logit_bias_bans_and_forces_tokens(engine):
    greedy = first_token(engine, max_tokens=1, temperature=0)
    banned = first_token(engine, max_tokens=1, temperature=0, logit_bias=((greedy, -100.0),))
    assert banned != greedy
    forced = engine.model.tokenize(b" zebra", at_start=False, insert_space=False)[0]
    assert first_token(engine, max_tokens=1, temperature=1.0, seed=5, logit_bias=((forced, 100.0),)) == forced


def test_penalties_lower_what_was_generated(engine):
    plain, _ = generate(engine, COUNTING, max_tokens=24, temperature=0)
    penalised, _ = generate(engine, COUNTING, max_tokens=24, temperature=0, presence_penalty=2.0, frequency_penalty=1.0)
    assert penalised != plain
    assert max(Counter(penalised).values()) < max(Counter(plain).values())


def test_logprobs_name_the_chosen_token_and_at_temperature_zero_it_is_the_most_likely(engine):
    ids, entries = generate(engine, max_tokens=8, temperature=0, logprobs=5)
    entries = [e for e in entries if e is not None]
    assert len(entries) == 8
    for entry in entries:
        assert entry.top[0][0] == entry.token and entry.top[0][2] == entry.logprob <= 0
        assert [lp for _, _, lp in entry.top] == sorted((lp for _, _, lp in entry.top), reverse=True)
        assert sum(np.exp(lp) for _, _, lp in entry.top) <= 1.0 + 1e-6
    assert b"".join(e.bytes for e in entries) == b"".join(engine.model.piece(t) for t in ids)
