"""The decode loop and its prefix cache on the real model: greedy output is raw GPT4All's token for
token, with reuse or without, in every corner; `cached_tokens` is what was really kept; memory and
keys are bounded.

Reuse keeps only tokens evaluated in a batch of two or more, and evaluates the rest so that its last
token is alone exactly when a full evaluation's is (models/prefix_cache.py says why). Besides greedy
replies, the engine's whole computed state (logits and KV cache) is compared with a full evaluation's.
"""

from __future__ import annotations

import psutil
import pytest

from errors import ContextLengthExceeded
from models import gpt4all_native
from models.interfaces import PrefixCache, SamplingParams
from models.llama_engine import LlamaEngine
from models.registry import ModelRegistry
from tests.conftest import ROOT
from tests.helpers.kv_state import computed_state

REGISTRY = ModelRegistry(ROOT / "models")
MODEL = REGISTRY.default()
FORMAT = REGISTRY.chat_format(MODEL)
SYSTEM = "You are a patient tutor. Answer in one or two short sentences, plainly, without lists. " * 8
N_CTX = 1024
N_BATCH = 128


def make_engine(cache: PrefixCache, n_ctx: int = N_CTX, n_batch: int = N_BATCH) -> LlamaEngine:
    return LlamaEngine(MODEL.path, n_ctx=n_ctx, n_threads=2, n_batch=n_batch, prefix_cache=cache)


def kept_at_least(outcome, shared: int) -> None:
    """Nearly all of the `shared` tokens were kept (an exact cut gives back at most two)."""
    assert shared - 2 <= outcome.cached_tokens <= shared, (outcome.cached_tokens, shared)


@pytest.fixture(scope="module")
def raw():
    """Raw GPT4All, evaluating every prompt in full: the reference."""
    model = gpt4all_native.load(MODEL.path, n_ctx=N_CTX, n_threads=2, device="cpu")
    yield model
    model.model.close()


@pytest.fixture(scope="module")
def off():
    engine = make_engine(PrefixCache(enabled=False))
    yield engine
    engine.close()


@pytest.fixture()
def on():
    engine = make_engine(PrefixCache(slots=4))
    yield engine
    engine.close()


def run(engine, messages, *, scope="k", max_tokens=20, stop_after=None, **params):
    pieces: list[str] = []

    def on_text(piece: str, _logprobs=None) -> bool:
        pieces.append(piece)
        return stop_after is None or len(pieces) < stop_after

    outcome = engine.generate(
        FORMAT.render(messages), SamplingParams(max_tokens=max_tokens, temperature=0, **params), on_text, scope=scope
    )
    return "".join(pieces), outcome


def raw_reply(raw, messages, max_tokens=20) -> str:
    return gpt4all_native.reply(raw.model, FORMAT.render(messages), SamplingParams(max_tokens=max_tokens, temperature=0),
                                n_batch=N_BATCH).text


def conversation(engine, questions, *, system=SYSTEM, scope="k", settle=False):
    """Each turn resends the history with the reply as generated; returns (replies, outcomes)."""
    messages, replies, outcomes = [{"role": "system", "content": system}], [], []
    for question in questions:
        messages.append({"role": "user", "content": question})
        reply, outcome = run(engine, messages, scope=scope)
        messages.append({"role": "assistant", "content": reply})
        replies.append(reply)
        outcomes.append(outcome)
        if settle:
            engine.settle()
    return replies, outcomes


CONVERSATIONS = [
    ["What is the capital of France?", "And of Germany?", "Which of the two is larger?"],
    ["Say hello.", "Now say it in French.", "Thanks! Count to five.", "Backwards, please."],
]


@pytest.mark.parametrize("questions", CONVERSATIONS)
def test_reuse_gives_raw_gpt4alls_replies_over_whole_conversations(on, raw, questions):
    got, outcomes = conversation(on, questions)
    messages = [{"role": "system", "content": SYSTEM}]
    for question, reply in zip(questions, got):
        messages.append({"role": "user", "content": question})
        assert reply == raw_reply(raw, messages)
        messages.append({"role": "assistant", "content": reply})
    assert outcomes[0].cached_tokens == 0
    for previous, outcome in zip(outcomes, outcomes[1:]):
        # the previous prompt is kept; its reply (generated one token at a time) and the new text are evaluated
        kept_at_least(outcome, previous.prompt_tokens)


def test_greedy_token_ids_and_counts_are_raw_gpt4alls(off, raw):
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Tell me a story about a dragon."}]
    prompt = FORMAT.render(messages)
    reference = gpt4all_native.reply(raw.model, prompt, SamplingParams(max_tokens=64, temperature=0), n_batch=N_BATCH)
    ids: list[int] = []
    outcome = off.generate(prompt, SamplingParams(max_tokens=64, temperature=0), lambda *_: True)
    ids = off.contexts[0].tokens[outcome.prompt_tokens:]
    assert outcome.prompt_tokens == reference.prompt_tokens
    assert ids == reference.ids[: len(ids)] and len(ids) == 63  # the last token is sampled, never evaluated
    assert outcome.completion_tokens == len(reference.ids) == 64


def test_with_settling_a_turn_keeps_the_whole_previous_turn_and_the_state_is_a_full_evaluations(off):
    engine = make_engine(PrefixCache(slots=1), n_batch=32)
    plain = make_engine(PrefixCache(enabled=False), n_batch=32)
    try:
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Describe a forest in detail."}]
        for turn in range(3):
            text, outcome = run(engine, messages, max_tokens=30)
            assert text == run(plain, messages, max_tokens=30)[0]
            assert computed_state(engine) == computed_state(plain)
            context = engine.contexts[0]
            before = len(context.tokens)
            assert context.exact_tokens < before  # the reply was generated one token at a time
            assert engine.settle() > 0
            assert context.exact_tokens == len(context.tokens) == before  # all of it, evaluated again in batches
            messages += [{"role": "assistant", "content": text}, {"role": "user", "content": f"Go on ({turn})."}]
            _, following = run(engine, messages, max_tokens=1)
            kept_at_least(following, before)
            run(plain, messages, max_tokens=1)
            assert computed_state(engine) == computed_state(plain)
            engine.settle()
    finally:
        engine.close()
        plain.close()


def test_an_edited_conversation_branches_and_both_branches_stay_exact(on, off):
    questions = ["What is 2 + 2?", "And 3 + 3?", "And 4 + 4?"]
    replies, outcomes = conversation(on, questions)
    edited = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": questions[0]},
              {"role": "assistant", "content": replies[0]}, {"role": "user", "content": "Edited: and 5 + 5?"}]
    text, outcome = run(on, edited)
    assert text == run(off, edited)[0]
    assert computed_state(on) == computed_state(off)
    assert outcome.cached_tokens >= outcomes[0].prompt_tokens - 2  # the first turn, copied into another context
    assert len(on.contexts) == 2
    # the original branch kept its context: its next turn continues it
    original = [{"role": "system", "content": SYSTEM}]
    for question, reply in zip(questions, replies):
        original += [{"role": "user", "content": question}, {"role": "assistant", "content": reply}]
    original.append({"role": "user", "content": "Thanks."})
    text, outcome = run(on, original)
    assert text == run(off, original)[0]
    kept_at_least(outcome, outcomes[-1].prompt_tokens)


def test_a_reply_cut_by_a_stop_sequence_or_by_the_client_leaves_a_usable_prefix(on, off):
    base = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Describe the sea in a few words."}]
    for cut in ({"stop_after": 3}, {"max_tokens": 4}):
        text, _ = run(on, base, **cut)
        follow = base + [{"role": "assistant", "content": text.rstrip()}, {"role": "user", "content": "Go on."}]
        got, outcome = run(on, follow)
        assert outcome.cached_tokens > 0 and got == run(off, follow)[0]


def test_prompt_evaluation_stops_within_a_batch_when_told_to(on, off):
    messages = [{"role": "system", "content": SYSTEM * 6}, {"role": "user", "content": "Hi"}]
    calls = []

    def keep_going() -> bool:
        calls.append(1)
        return False

    outcome = on.generate(FORMAT.render(messages), SamplingParams(max_tokens=8, temperature=0), lambda *_: True,
                          scope="k", keep_going=keep_going)
    assert outcome.completion_tokens == 0 and len(calls) == 1
    assert max(len(c.tokens) for c in on.contexts) <= N_BATCH  # one batch evaluated, not the whole prompt
    text, again = run(on, messages)
    assert text == run(off, messages)[0] and again.cached_tokens > 0  # what it left is a usable prefix


def test_the_window_is_checked_before_any_evaluation_and_reached_exactly():
    engine = make_engine(PrefixCache(slots=2), n_ctx=256)
    try:
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Tell a long story."}]
        _, first = run(engine, messages, max_tokens=None)
        assert (first.finish_reason, first.limit) == ("length", "context")
        assert first.prompt_tokens + first.completion_tokens == 256
        _, again = run(engine, messages, max_tokens=None)  # with reuse, the window still ends exactly there
        assert again.cached_tokens > 0 and again.prompt_tokens + again.completion_tokens == 256
        with pytest.raises(ContextLengthExceeded, match=rf"requested {first.prompt_tokens + 250} tokens"):
            run(engine, messages, max_tokens=250)
        with pytest.raises(ContextLengthExceeded, match="prompt alone"):
            run(engine, [{"role": "user", "content": "word " * 300}])
        with pytest.raises(ValueError):  # llama.cpp's tokenizer would abort the process on text that is not UTF-8
            engine.model.tokenize("😀".encode()[:2])
    finally:
        engine.close()


def test_cached_prefixes_stay_within_one_key_unless_sharing_is_on(off):
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Name a fruit."}]
    expected = run(off, messages)[0]
    for share in (False, True):
        engine = make_engine(PrefixCache(slots=2, share=share))
        try:
            run(engine, messages, scope="alice")
            text, outcome = run(engine, messages, scope="bob")
            assert text == expected
            assert (outcome.cached_tokens > 0) == share
        finally:
            engine.close()


def test_memory_stays_within_prefix_cache_mb():
    probe = make_engine(PrefixCache(enabled=False))
    per_context_mb = probe.model.kv_bytes_per_token() * N_CTX / 2**20
    probe.close()
    budget_mb = int(per_context_mb * 2) + 1  # room for two contexts, not three
    process = psutil.Process()
    engine = make_engine(PrefixCache(slots=8, max_mb=budget_mb))
    try:
        assert engine.max_contexts == 2
        before = process.memory_full_info().uss
        for name in ("Ann", "Bob", "Cy", "Dee"):
            conversation(engine, [f"Hi, I am {name}. " * 40, "Who am I?"])
        assert len(engine.contexts) == 2
        grown_mb = (process.memory_full_info().uss - before) / 2**20
        assert grown_mb <= budget_mb * 1.5, f"USS grew {grown_mb:.1f} MB with a {budget_mb} MB budget"
    finally:
        engine.close()
