"""The prefix cache on the real engine: greedy output with reuse equals output without it, token for
token, in every corner; `cached_tokens` is what was really kept; memory and keys are bounded.

Reuse keeps only tokens evaluated in a batch of two or more, and cuts so that the rest ends in a batch
of one token exactly when a full evaluation's does (models/prefix_cache.py says why). Besides greedy
replies, the engine's whole computed state (logits and KV cache) is compared with a full evaluation's.
"""

from __future__ import annotations

import psutil
import pytest

from models.gpt4all_engine import GPT4AllEngine
from models.interfaces import PrefixCache, SamplingParams
from models.prefix_cache import ends_alone
from models.registry import ModelRegistry, kv_bytes_per_token
from tests.conftest import ROOT
from tests.helpers.kv_state import computed_state

REGISTRY = ModelRegistry(ROOT / "models")
MODEL = REGISTRY.default()
FORMAT = REGISTRY.chat_format(MODEL)
SYSTEM = "You are a patient tutor. Answer in one or two short sentences, plainly, without lists. " * 8
N_CTX = 1024
N_BATCH = 128


def make_engine(cache: PrefixCache, n_ctx: int = N_CTX, n_batch: int = N_BATCH) -> GPT4AllEngine:
    return GPT4AllEngine(MODEL.path, n_ctx=n_ctx, n_threads=2, n_batch=n_batch, prefix_cache=cache)


def assert_exact_cut(outcome, shared: int, n_batch: int = N_BATCH) -> None:
    """Kept: nearly all of the `shared` tokens, cut so that the rest ends alone exactly when a full evaluation does."""
    assert shared - 4 <= outcome.cached_tokens <= shared and outcome.cached_tokens > 0
    assert ends_alone(outcome.prompt_tokens - outcome.cached_tokens, n_batch) == ends_alone(outcome.prompt_tokens, n_batch)


def last_used(engine) -> object:
    return max(engine._contexts, key=lambda c: c.cache.last_used).llmodel


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

    def on_text(piece: str) -> bool:
        pieces.append(piece)
        return stop_after is None or len(pieces) < stop_after

    outcome = engine.generate(
        FORMAT.render(messages), SamplingParams(max_tokens=max_tokens, temperature=0, **params), on_text, scope=scope
    )
    return "".join(pieces), outcome


def conversation(engine, questions, *, system=SYSTEM, scope="k"):
    """Each turn resends the history with the reply as generated; returns (replies, outcomes)."""
    messages, replies, outcomes = [{"role": "system", "content": system}], [], []
    for question in questions:
        messages.append({"role": "user", "content": question})
        reply, outcome = run(engine, messages, scope=scope)
        messages.append({"role": "assistant", "content": reply})
        replies.append(reply)
        outcomes.append(outcome)
    return replies, outcomes


CONVERSATIONS = [
    ["What is the capital of France?", "And of Germany?", "Which of the two is larger?"],
    ["Say hello.", "Now say it in French.", "Thanks! Count to five.", "Backwards, please."],
    ["Why is the sky blue?", "Explain it to a child.", "Give it a title."],
]


@pytest.mark.parametrize("questions", CONVERSATIONS)
def test_reuse_is_exact_over_whole_conversations(on, off, questions):
    expected, plain = conversation(off, questions)
    got, cached = conversation(on, questions)
    assert got == expected
    assert [o.prompt_tokens for o in cached] == [o.prompt_tokens for o in plain]
    assert [o.completion_tokens for o in cached] == [o.completion_tokens for o in plain]
    assert cached[0].cached_tokens == 0 and all(o.cached_tokens == 0 for o in plain)
    for previous, outcome in zip(cached, cached[1:]):
        # the previous prompt is kept; its reply (generated one token at a time) and the new text are evaluated
        assert_exact_cut(outcome, previous.prompt_tokens)


def test_without_exactness_a_turn_keeps_the_whole_previous_turn():
    engine = make_engine(PrefixCache(slots=1, exact=False))
    try:
        _, outcomes = conversation(engine, CONVERSATIONS[0])
        for previous, outcome in zip(outcomes, outcomes[1:]):
            assert outcome.cached_tokens == previous.prompt_tokens + previous.completion_tokens
    finally:
        engine.close()


def test_the_same_prompt_again_is_reused_but_never_its_last_token(on, off):
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Name a colour."}]
    first_text, first = run(on, messages)
    again_text, again = run(on, messages)
    assert again_text == first_text == run(off, messages)[0]
    assert_exact_cut(again, first.prompt_tokens - 1)


def test_an_edited_or_truncated_conversation_keeps_only_what_is_still_shared(off):
    engine = make_engine(PrefixCache(slots=1))  # one context: it must be cut back, not swapped
    try:
        questions = ["What is 2 + 2?", "And 3 + 3?", "And 4 + 4?"]
        replies, outcomes = conversation(engine, questions)
        edited = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "What is 5 + 5?"}]
        text, outcome = run(engine, edited)
        assert text == run(off, edited)[0]
        system_only = FORMAT.render([{"role": "system", "content": SYSTEM}])
        assert 0 < outcome.cached_tokens < outcomes[0].prompt_tokens
        system_tokens = len(engine._tokenizer.tokenize(system_only.encode(), at_start=True, insert_space=True))
        assert system_tokens - 4 <= outcome.cached_tokens  # the system prompt, and what follows it up to the edit
        assert ends_alone(outcome.prompt_tokens - outcome.cached_tokens, N_BATCH) == ends_alone(outcome.prompt_tokens, N_BATCH)
        truncated = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": questions[0]},
                     {"role": "assistant", "content": replies[0]}, {"role": "user", "content": "Thanks."}]
        text, outcome = run(engine, truncated)
        assert text == run(off, truncated)[0]
    finally:
        engine.close()


def test_a_different_system_prompt_shares_almost_nothing(off):
    engine = make_engine(PrefixCache(slots=1))
    try:
        conversation(engine, ["Hello!"])
        other = [{"role": "system", "content": "Answer only in capital letters."}, {"role": "user", "content": "Hello!"}]
        text, outcome = run(engine, other)
        assert text == run(off, other)[0]
        assert outcome.cached_tokens <= 3  # "<|im_start|>system\n" at most
    finally:
        engine.close()


def evaluated(engine, prompt_tokens: int) -> list[int]:
    """The prompt's token ids as the most recently used context holds them after a call."""
    context = max(engine.contexts, key=lambda c: c.last_used)
    return context.tokens[:prompt_tokens]


def test_a_reply_cut_by_a_stop_sequence_or_by_the_client_evaluates_the_same_tokens(on, off):
    base = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Describe the sea in a few words."}]
    for cut in ({"stop_after": 3}, {"max_tokens": 4}):
        text, _ = run(on, base, **cut)
        # the client sends back only what it received, maybe stripped: not the tokens the cache holds
        follow = base + [{"role": "assistant", "content": text.rstrip()}, {"role": "user", "content": "Go on."}]
        _, outcome = run(on, follow)
        _, plain = run(off, follow)
        assert outcome.cached_tokens > 0
        assert evaluated(on, outcome.prompt_tokens) == evaluated(off, plain.prompt_tokens)
        assert run(on, follow)[0] == run(off, follow)[0]


def test_a_cancelled_generation_leaves_no_state_that_changes_the_next_answer(on, off):
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Tell me about cats."}]
    run(on, messages, stop_after=2)  # the client left after two pieces
    assert run(on, messages)[0] == run(off, messages)[0]


def test_prompt_evaluation_stops_within_a_batch_when_told_to(on, off):
    long_system = SYSTEM * 6  # several batches of 128 tokens
    messages = [{"role": "system", "content": long_system}, {"role": "user", "content": "Hi"}]
    calls = []

    def keep_going() -> bool:
        calls.append(1)
        return False

    outcome = on.generate(FORMAT.render(messages), SamplingParams(max_tokens=8, temperature=0), lambda _: True,
                          scope="k", keep_going=keep_going)
    assert outcome.completion_tokens == 0 and len(calls) == 1
    assert max(len(c.tokens) for c in on.contexts) <= 128  # one batch evaluated, not the whole prompt
    assert run(on, messages)[0] == run(off, messages)[0]  # and what it left is a usable prefix


def test_the_window_is_checked_before_any_evaluation_and_reached_exactly():
    engine = make_engine(PrefixCache(slots=2), n_ctx=256)
    try:
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Tell a long story."}]
        _, first = run(engine, messages, max_tokens=None)
        assert (first.finish_reason, first.limit) == ("length", "context")
        assert first.prompt_tokens + first.completion_tokens == 256
        _, again = run(engine, messages, max_tokens=None)  # with reuse, the window still ends exactly there
        assert again.cached_tokens > 0 and again.prompt_tokens + again.completion_tokens == 256
        from errors import ContextLengthExceeded

        with pytest.raises(ContextLengthExceeded, match=rf"requested {first.prompt_tokens + 250} tokens"):
            run(engine, messages, max_tokens=250)
        with pytest.raises(ContextLengthExceeded, match="prompt alone"):
            run(engine, [{"role": "user", "content": "word " * 300}])
    finally:
        engine.close()


def test_cached_prefixes_stay_within_one_key_unless_sharing_is_on(off):
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Name a fruit."}]
    expected = run(off, messages)[0]
    for share, cached_for_other_key in ((False, 0), (True, None)):
        engine = make_engine(PrefixCache(slots=2, share=share))
        try:
            run(engine, messages, scope="alice")
            text, outcome = run(engine, messages, scope="bob")
            assert text == expected
            if cached_for_other_key is not None:
                assert outcome.cached_tokens == cached_for_other_key
            else:
                assert outcome.cached_tokens > 0
        finally:
            engine.close()


def test_conversations_taking_turns_each_keep_their_context(off):
    engine = make_engine(PrefixCache(slots=3))
    try:
        chats = [[{"role": "system", "content": SYSTEM}] for _ in range(3)]
        questions = [["Hi, I am Ann.", "What is my name?"], ["Hi, I am Bob.", "What is my name?"], ["Hi, I am Cy.", "What is my name?"]]
        firsts = []
        for turn in range(2):
            for index, (chat, asked) in enumerate(zip(chats, questions)):
                chat.append({"role": "user", "content": asked[turn]})
                text, outcome = run(engine, chat)
                assert text == run(off, chat)[0]
                if turn == 0:
                    firsts.append(outcome)
                else:
                    assert_exact_cut(outcome, firsts[index].prompt_tokens)
                chat.append({"role": "assistant", "content": text})
        assert len(engine.contexts) == 3
        for chat in chats:  # each context holds one conversation's last turn: none was taken over by another
            ids = engine._tokenizer.tokenize(FORMAT.render(chat[:-1]).encode(), at_start=True, insert_space=True)
            assert sum(context.tokens[: len(ids)] == ids for context in engine.contexts) == 1
    finally:
        engine.close()


def test_memory_stays_within_prefix_cache_mb():
    per_context_mb = kv_bytes_per_token(MODEL.path) * N_CTX / 2**20
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
        assert grown_mb <= budget_mb, f"USS grew {grown_mb:.1f} MB with a {budget_mb} MB budget"
    finally:
        engine.close()


def test_a_reloaded_model_starts_with_an_empty_cache(off):
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Name a tree."}]
    engine = make_engine(PrefixCache())
    run(engine, messages)
    engine.close()
    engine = make_engine(PrefixCache())
    try:
        text, outcome = run(engine, messages)
        assert outcome.cached_tokens == 0 and text == run(off, messages)[0]
    finally:
        engine.close()


@pytest.mark.parametrize("n_batch", [32, 7])
def test_settling_between_turns_makes_the_reply_reusable_exactly(n_batch):
    # The state after each turn (logits and KV cache) is the full evaluation's, byte for byte.
    engine = make_engine(PrefixCache(slots=1), n_batch=n_batch)
    plain = make_engine(PrefixCache(enabled=False), n_batch=n_batch)
    try:
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Describe a forest in detail."}]
        for turn in range(3):
            text, outcome = run(engine, messages, max_tokens=40)
            assert text == run(plain, messages, max_tokens=40)[0]
            assert computed_state(last_used(engine)) == computed_state(last_used(plain))
            context = engine.contexts[0]
            before = len(context.tokens)
            assert context.exact_tokens < before  # the reply was generated one token at a time
            assert engine.settle() > 0
            assert context.exact_tokens == len(context.tokens) == before  # all of it, evaluated again in a batch
            messages += [{"role": "assistant", "content": text}, {"role": "user", "content": f"Go on ({turn})."}]
            _, following = run(engine, messages, max_tokens=1)
            assert_exact_cut(following, before, n_batch)  # the whole previous turn, reply included
            run(plain, messages, max_tokens=1)
            assert computed_state(last_used(engine)) == computed_state(last_used(plain))
            engine.settle()
    finally:
        engine.close()
        plain.close()


def test_reuse_computes_the_state_of_a_full_evaluation_bit_for_bit(on, off):
    # Over a conversation with edits and a repeated prompt, without settling (the reply is evaluated again).
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Name three birds."}]
    for question in ("Which one is the largest?", "Edited: which one sings best?", None):
        text, outcome = run(on, messages)
        assert text == run(off, messages)[0]
        assert computed_state(last_used(on)) == computed_state(last_used(off))
        if question is None:
            break
        if question.startswith("Edited"):
            messages = messages[:-2]  # the last question and answer are replaced
        messages += [{"role": "assistant", "content": text}, {"role": "user", "content": question}]


def test_a_reply_cut_inside_a_character_is_settled_without_its_partial_bytes():
    # llama.cpp's tokenizer aborts the whole process on text that is not UTF-8 (a C++ exception through ctypes)
    engine = make_engine(PrefixCache(slots=1), n_batch=32)
    try:
        with pytest.raises(ValueError):
            engine._tokenizer.tokenize("😀".encode()[:2], at_start=False, insert_space=False)
        run(engine, [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Smile."}], max_tokens=8)
        emoji = engine._tokenizer.tokenize(" 😀😀".encode(), at_start=False, insert_space=False)
        pieces = [engine._tokenizer.piece(t) for t in emoji]
        cut = next(k for k in range(1, len(emoji)) if not _is_utf8(b"".join(pieces[:k])))
        context = engine.contexts[0]
        whole = list(context.tokens)
        context.tokens = whole + emoji[:cut]  # as if the reply had stopped inside a character
        assert engine.settle() > 0
        assert context.tokens == whole[: len(context.tokens)] and context.exact_tokens == len(context.tokens) >= len(whole) - 4
    finally:
        engine.close()


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
