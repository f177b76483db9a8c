"""The prefix planner's rules on a toy tokenizer: exact cuts only, and which context a prompt goes to."""

from __future__ import annotations

import re

import pytest

from models.prefix_cache import (
    MAX_CUT_TRIES,
    CachedContext,
    Cut,
    choose_context,
    common_prefix,
    ends_alone,
    evaluates_as,
    plan_cut,
    token_offsets,
)

SPECIALS = ("<|im_start|>", "<|im_end|>")


class ToyTokenizer:
    """Specials are parsed first; the rest splits like byte-level BPE's pre-tokenizer (a run of
    whitespace is one token, so "\\n" + "\\n" tokenizes differently from "\\n\\n")."""

    def __init__(self):
        self.ids: dict[bytes, int] = {s.encode(): i for i, s in enumerate(SPECIALS)}
        self.calls = 0

    def _id(self, piece: bytes) -> int:
        return self.ids.setdefault(piece, len(self.ids))

    def tokenize(self, text: bytes, *, at_start: bool, insert_space: bool) -> list[int]:
        self.calls += 1
        out = []
        for part in re.split(b"(" + b"|".join(re.escape(s.encode()) for s in SPECIALS) + b")", text):
            if part.decode() in SPECIALS:
                out.append(self._id(part))
            else:
                out.extend(self._id(p) for p in re.findall(rb" ?\w+|\s+|[^\w\s]+", part))
        return out

    def is_special(self, token: int) -> bool:
        return token < len(SPECIALS)

    def piece(self, token: int) -> bytes:
        return next(k for k, v in self.ids.items() if v == token)


def chat(*turns: str) -> bytes:
    text = "".join(f"<|im_start|>{role}\n{content}<|im_end|>\n" for role, content in zip(("system", "user", "assistant") * 9, turns))
    return (text + "<|im_start|>assistant\n").encode()


def test_offsets_follow_the_text_byte_for_byte():
    tok = ToyTokenizer()
    prompt = chat("Be brief.", "Hi there")
    ids = tok.tokenize(prompt, at_start=True, insert_space=True)
    offsets = token_offsets(prompt, ids, tok)
    assert offsets[-1] == len(prompt)
    assert b"".join(prompt[a:b] for a, b in zip(offsets, offsets[1:])) == prompt
    assert all(prompt[offsets[i]:offsets[i + 1]] == tok.piece(t) for i, t in enumerate(ids))


def held(tokens: list[int], prompt_tokens: int, exact_tokens: int | None = None) -> CachedContext:
    exact = prompt_tokens if exact_tokens is None else exact_tokens
    return CachedContext(0, tokens=tokens, prompt_tokens=prompt_tokens, exact_tokens=exact, scope="k")


def two_turns(tok) -> tuple[list[int], list[int], bytes, list[int]]:
    """(turn 1's prompt ids, its reply's ids, turn 2's prompt, its ids): turn 2 resends the reply."""
    prompt1 = tok.tokenize(chat("Be brief.", "Hi there"), at_start=True, insert_space=True)
    reply = tok.tokenize(b"Hello! How can I help?", at_start=False, insert_space=False)
    turn2 = chat("Be brief.", "Hi there", "Hello! How can I help?", "Tell me more")
    return prompt1, reply, turn2, tok.tokenize(turn2, at_start=True, insert_space=True)


def rest_tokenizes_the_same(tok, prompt: bytes, full: list[int], cut: Cut) -> bool:
    return tok.tokenize(prompt[cut.offset:], at_start=False, insert_space=tok.is_special(full[cut.keep - 1])) == full[cut.keep:]


@pytest.mark.parametrize("n_batch", [2, 3, 4, 5, 8])
def test_a_next_turn_keeps_the_previous_prompt_but_not_the_reply_generated_one_token_at_a_time(n_batch):
    tok = ToyTokenizer()
    prompt1, reply, turn2, full = two_turns(tok)
    cached = held(prompt1 + reply, len(prompt1))  # the end-of-turn token is not stored
    assert common_prefix(cached.tokens, full) == len(cached.tokens)  # the reply is shared, yet not kept
    cut = plan_cut(cached, full, turn2, tok, n_batch)
    assert len(prompt1) - n_batch < cut.keep <= len(prompt1)
    # the rest ends in a batch of one token exactly when a full evaluation's does
    assert ends_alone(len(full) - cut.keep, n_batch) == ends_alone(len(full), n_batch)
    assert rest_tokenizes_the_same(tok, turn2, full, cut)


def test_a_settled_reply_is_kept_too():
    tok = ToyTokenizer()
    prompt1, reply, turn2, full = two_turns(tok)
    for n_batch in (2, 3, 4):
        cut = plan_cut(held(prompt1 + reply, len(prompt1), len(prompt1 + reply)), full, turn2, tok, n_batch)
        assert len(prompt1 + reply) - n_batch < cut.keep <= len(prompt1 + reply)
        assert ends_alone(len(full) - cut.keep, n_batch) == ends_alone(len(full), n_batch)


def test_with_batches_of_one_token_the_reply_is_kept():
    # a full evaluation then evaluates every token alone, as the reply was generated
    tok = ToyTokenizer()
    prompt1, reply, turn2, full = two_turns(tok)
    cut = plan_cut(held(prompt1 + reply, len(prompt1), len(prompt1 + reply)), full, turn2, tok, 1)
    assert cut.keep == len(prompt1 + reply) and turn2[cut.offset:].startswith(b"<|im_end|>")


def test_without_exactness_the_reply_is_kept_too():
    tok = ToyTokenizer()
    prompt1, reply, turn2, full = two_turns(tok)
    cut = plan_cut(held(prompt1 + reply, len(prompt1), 0), full, turn2, tok, None)
    assert cut.keep == len(prompt1 + reply) and turn2[cut.offset:].startswith(b"<|im_end|>")


@pytest.mark.parametrize("n_batch", range(2, 9))
def test_the_rest_ends_alone_exactly_when_a_full_evaluation_does(n_batch):
    tok = ToyTokenizer()
    for words in range(1, 12):  # prompts of many lengths, some leaving a remainder of 1
        prompt = chat("Be brief.", "word " * words)
        full = tok.tokenize(prompt, at_start=True, insert_space=True)
        cut = plan_cut(held(full, len(full)), full, prompt, tok, n_batch)
        assert cut.keep > 0 and ends_alone(len(full) - cut.keep, n_batch) == ends_alone(len(full), n_batch)
        assert rest_tokenizes_the_same(tok, prompt, full, cut)


def test_a_token_that_the_new_text_tokenizes_differently_is_evaluated_again():
    tok = ToyTokenizer()
    # cached: "... assistant\n" then nothing; the new prompt has "\n\n" there, one token
    cached = tok.tokenize(b"<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", at_start=True, insert_space=True)
    prompt = b"<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n\nSure<|im_end|>\n"
    full = tok.tokenize(prompt, at_start=True, insert_space=True)
    assert common_prefix(cached, full) == len(cached) - 1
    cut = plan_cut(held(cached, len(cached)), full, prompt, tok, n_batch=1)
    assert cut == Cut(len(cached) - 1, prompt.index(b"\n\nSure"))
    assert tok.tokenize(prompt[cut.offset:], at_start=False, insert_space=True) == full[cut.keep:]


class DisagreeingTokenizer(ToyTokenizer):
    """Tokenizes any text that is not at the start differently, so no cut can be proven exact."""

    def tokenize(self, text: bytes, *, at_start: bool, insert_space: bool) -> list[int]:
        return super().tokenize(text, at_start=at_start, insert_space=insert_space) + ([] if at_start else [99])


def test_a_cut_that_does_not_tokenize_the_same_is_never_used():
    tok = DisagreeingTokenizer()
    prompt = chat("Be brief.", "Hi there")
    full = tok.tokenize(prompt, at_start=True, insert_space=True)
    tok.calls = 0
    assert plan_cut(held(full, len(full)), full, prompt, tok, n_batch=1) == Cut(0, 0)
    assert tok.calls <= MAX_CUT_TRIES + 1  # bounded work: a few tokenizations of the rest, then a full evaluation


def test_the_same_prompt_again_evaluates_at_least_its_last_token():
    tok = ToyTokenizer()
    prompt = chat("Be brief.", "Hi there")
    full = tok.tokenize(prompt, at_start=True, insert_space=True)
    reply = tok.tokenize(b" Hello", at_start=False, insert_space=False)
    assert plan_cut(held(full + reply, len(full)), full, prompt, tok, n_batch=1) == Cut(len(full) - 1, len(prompt) - 1)
    # the last "\n": its logits pick the first new token. With batches of 4 it is evaluated alone only
    # if a full evaluation evaluates it alone; otherwise with the token before it.
    keep = plan_cut(held(full + reply, len(full)), full, prompt, tok, n_batch=4).keep
    assert keep == (len(full) - 1 if len(full) % 4 == 1 else len(full) - 2)


def test_nothing_shared_or_a_one_token_prompt_is_a_full_evaluation():
    tok = ToyTokenizer()
    assert plan_cut(held([], 0), [5, 6], b"a b", tok, n_batch=1) == Cut(0, 0)
    assert plan_cut(held([5], 1), [5], b"a", tok, n_batch=1) == Cut(0, 0)


def test_the_longest_shared_prefix_wins_within_a_scope():
    a = CachedContext(0, tokens=[1, 2, 3, 4], prompt_tokens=3, scope="key-a", last_used=1)
    b = CachedContext(1, tokens=[1, 2, 9], prompt_tokens=2, scope="key-b", last_used=2)
    assert choose_context([a, b], [1, 2, 3, 4, 5], "key-a", can_open=False) == (a, 4)
    # another key never reads key-a's context: with no room, the least recently used is taken over, from scratch
    assert choose_context([a, b], [1, 2, 3, 4, 5], "key-c", can_open=False) == (a, 0)
    # sharing on (scope None): any context may be read
    assert choose_context([a, b], [1, 2, 9, 7], None, can_open=False) == (b, 3)


def test_another_conversation_takes_a_free_context_instead_of_cutting_one_back():
    a = CachedContext(0, tokens=[1, 2, 3, 4, 5, 6], prompt_tokens=5, scope="k", last_used=1)
    empty = CachedContext(1)
    # shares the system prompt [1, 2, 3] only: cutting `a` back would lose its conversation
    assert choose_context([a, empty], [1, 2, 3, 8, 9], "k", can_open=False) == (empty, 0)
    assert choose_context([a], [1, 2, 3, 8, 9], "k", can_open=True) == (None, 0)
    # with no room left it is cut back after all
    assert choose_context([a], [1, 2, 3, 8, 9], "k", can_open=False) == (a, 3)
    # the same prompt again (a retry, or choice 2 of n) cuts back only the reply: it stays
    assert choose_context([a, empty], [1, 2, 3, 4, 5], "k", can_open=True) == (a, 5)


def test_text_that_is_not_utf8_never_reaches_the_tokenizer():
    # llama.cpp's tokenizer aborts the process on it: a reply cut inside a character ends that way
    tok = ToyTokenizer()
    tok.calls = 0
    assert not evaluates_as(tok, "\u00e9".encode()[:1], [5], 0)
    assert tok.calls == 0
