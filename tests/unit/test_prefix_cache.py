"""The prefix planner's rules on token lists: exact cuts only, and which context a prompt goes to."""

from __future__ import annotations

import itertools

import pytest

from models.prefix_cache import MIN_COPY, CachedContext, Plan, batches, ends_alone, give_up, plan, usable

SYSTEM = list(range(1000, 1100))  # a 100-token system prompt


def held(index: int, tokens: list[int], prompt_tokens: int | None = None, *, exact: int | None = None,
         scope: str | None = "k", used: float = 0.0) -> CachedContext:
    prompt = len(tokens) if prompt_tokens is None else prompt_tokens
    return CachedContext(index, tokens=list(tokens), prompt_tokens=prompt, exact_tokens=prompt if exact is None else exact,
                         scope=scope, last_used=used)


def chat(tag: int, turns: int, system: list[int] = SYSTEM) -> list[int]:
    """A conversation's prompt after `turns` turns: its system prompt, then 20 tokens per turn."""
    return system + [tag * 10_000 + i for i in range(20 * turns)]


# ---- batches: the same arithmetic as a full evaluation -------------------------------------------


@pytest.mark.parametrize("n_batch", [2, 3, 8, 32, 128])
def test_a_whole_prompt_is_split_as_gpt4all_splits_it(n_batch):
    for length in range(1, 300):
        sizes = batches(length, n_batch, ends_alone(length, n_batch))
        expected = [n_batch] * (length // n_batch) + ([length % n_batch] if length % n_batch else [])
        assert sizes == expected


@pytest.mark.parametrize("n_batch", [2, 3, 8, 32])
def test_a_rest_never_has_a_batch_of_one_but_its_last_token_exactly_when_asked(n_batch):
    for count, last_alone in itertools.product(range(0, 200), (False, True)):
        sizes = batches(count, n_batch, last_alone)
        if sizes is None:
            body = count - 1 if last_alone else count
            assert body == 1 or (n_batch == 2 and body % 2)
            continue
        assert sum(sizes) == count and all(size <= n_batch for size in sizes)
        assert all(size >= 2 for size in sizes[:-1])
        if count:
            assert (sizes[-1] == 1) == last_alone


def test_with_batches_of_one_token_everything_is_alone():
    assert batches(5, 1, False) == [1] * 5


# ---- usable: what a prompt can keep of a context ------------------------------------------------


@pytest.mark.parametrize("n_batch", [8, 32, 128])
def test_a_next_turn_keeps_the_previous_prompt_but_not_the_reply_generated_one_token_at_a_time(n_batch):
    turn1 = chat(1, 1)
    context = held(0, turn1 + [7] * 15, len(turn1))  # the reply: generated alone, so not exact
    turn2 = turn1 + [7] * 15 + chat(1, 2)[len(turn1):]
    keep = usable(context, turn2, n_batch, exact=True)
    assert len(turn1) - 2 <= keep <= len(turn1)
    assert batches(len(turn2) - keep, n_batch, ends_alone(len(turn2), n_batch)) is not None


def test_a_settled_reply_is_kept_too():
    turn1 = chat(1, 1)
    context = held(0, turn1 + [7] * 15, len(turn1), exact=len(turn1) + 15)
    turn2 = turn1 + [7] * 15 + [8] * 30
    assert usable(context, turn2, 32, exact=True) == len(turn1) + 15


def test_without_exactness_everything_shared_is_kept():
    turn1 = chat(1, 1)
    context = held(0, turn1 + [7] * 15, len(turn1))
    assert usable(context, turn1 + [7] * 15 + [8] * 30, 32, exact=False) == len(turn1) + 15


def test_the_same_prompt_again_evaluates_at_least_its_last_token():
    prompt = chat(1, 2)
    for n_batch in (8, 32):
        keep = usable(held(0, prompt), prompt, n_batch, exact=True)
        assert 0 < keep < len(prompt)


def test_nothing_shared_or_a_one_token_prompt_keeps_nothing():
    assert usable(held(0, chat(1, 1)), chat(2, 1, system=[5]), 32, exact=True) == 0
    assert usable(held(0, [1, 2, 3]), [1], 32, exact=True) == 0


# ---- plan: which context --------------------------------------------------------------------------


def test_a_next_turn_continues_its_own_context():
    contexts = [held(0, chat(1, 2), used=1), held(1, chat(2, 5), used=2)]
    chosen = plan(contexts, chat(1, 3), "k", can_open=True, n_batch=32)
    assert chosen.target == chosen.source == 0 and chosen.keep >= len(chat(1, 2)) - 2


def test_another_conversation_takes_a_free_context_and_copies_the_shared_prefix():
    contexts = [held(0, chat(1, 3), used=1), CachedContext(1)]
    chosen = plan(contexts, chat(2, 1), "k", can_open=False, n_batch=32)
    assert chosen == Plan(1, 0, chosen.keep) and len(SYSTEM) - 2 <= chosen.keep <= len(SYSTEM)


def test_it_opens_a_new_context_before_taking_one_over():
    chosen = plan([held(0, chat(1, 3))], chat(2, 1), "k", can_open=True, n_batch=32)
    assert chosen.target is None and chosen.source == 0


def test_a_prefix_too_short_to_be_worth_a_copy_is_evaluated_again():
    contexts = [held(0, chat(1, 3, system=[1] * (MIN_COPY - 4))), CachedContext(1)]
    assert plan(contexts, chat(2, 1, system=[1] * (MIN_COPY - 4)), "k", can_open=False, n_batch=32) == Plan(1, None, 0)


def test_with_every_context_taken_distinct_conversations_take_the_least_recently_used():
    """Issue 17: the context sharing only the template's first tokens was cut back for every new conversation."""
    template = [1, 2, 3, 4, 5, 6, 7, 8, 9]
    contexts = [held(i, chat(i, 3, system=template + [100 + i] * 900), used=10 - i) for i in range(4)]
    new = chat(9, 1, system=template + [200] * 900)
    chosen = plan(contexts, new, "k", can_open=False, n_batch=32)
    assert chosen == Plan(3, None, 0)  # the least recently used; 9 shared tokens are not worth keeping


def test_with_every_context_taken_a_shared_system_prompt_is_copied_into_the_least_recently_used():
    contexts = [held(0, chat(1, 4), used=4), held(1, chat(2, 4, system=[3] * 100), used=1),
                held(2, chat(3, 4), used=3), held(3, chat(4, 4), used=2)]
    chosen = plan(contexts, chat(5, 1), "k", can_open=False, n_batch=32)
    assert chosen.target == 1 and chosen.source in (0, 2, 3) and chosen.keep >= len(SYSTEM) - 2


def test_the_least_recently_used_context_is_cut_back_in_place_when_it_shares_the_prefix():
    contexts = [held(i, chat(i + 1, 4), used=5 - i) for i in range(4)]
    chosen = plan(contexts, chat(9, 1), "k", can_open=False, n_batch=32)
    assert chosen.target == 3 and chosen.keep >= len(SYSTEM) - 2


def test_an_edited_middle_turn_branches_into_another_context():
    conversation = chat(1, 5)
    contexts = [held(0, conversation, used=5), CachedContext(1)]
    edited = conversation[: len(SYSTEM) + 40] + [42] * 20
    chosen = plan(contexts, edited, "k", can_open=False, n_batch=32)
    assert chosen.target == 1 and chosen.source == 0 and chosen.keep >= len(SYSTEM) + 38


def test_a_context_is_never_read_by_another_key_but_may_be_taken_over():
    contexts = [held(0, chat(1, 3), scope="a", used=1)]
    chosen = plan(contexts, chat(1, 4), "b", can_open=False, n_batch=32)
    assert chosen == Plan(0, None, 0)
    assert plan(contexts, chat(1, 4), "b", can_open=False, n_batch=32, share=True).source == 0


def test_a_key_holding_its_share_gives_up_its_own_context():
    contexts = [held(0, chat(1, 9), scope="long", used=1)] + [held(i, chat(i, 1), scope="many", used=1 + i) for i in (1, 2, 3)]
    assert give_up(contexts, "many").index == 1  # its own least recently used, not the older "long" one
    assert give_up(contexts, "long").index == 1  # "many" holds more than its share of 2


def test_a_new_key_takes_from_the_key_over_its_share():
    contexts = [held(0, chat(1, 9), scope="a", used=1), held(1, chat(2, 1), scope="b", used=2),
                held(2, chat(3, 1), scope="b", used=3), held(3, chat(4, 1), scope="b", used=4)]
    assert give_up(contexts, "c").index == 1
    assert give_up(contexts, None).index == 0  # shared scope: plain least recently used
