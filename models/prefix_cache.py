"""Which cached context a prompt runs in, what it reuses, and in which batches the rest is evaluated.

A context (one llama.cpp context: its own KV cache) remembers the token ids it holds. A new prompt's
ids share a longest common prefix with each context's; what is kept of it must be exact.

**The same arithmetic.** llama.cpp computes a token evaluated alone (a batch of one: each token of a
reply as it is generated) with other arithmetic than a token evaluated in a batch of two or more.
Which batch, and how large, does not matter otherwise. Measured by saving the whole state (KV cache
and logits) of this llama.cpp build after 224-, 359- and 622-token prompts evaluated in 100 random
splits (1 and 2 threads; batches of 2 to 40 tokens), and whole at `n_batch` 2 to 512: every
evaluation without a batch of one token gives the same bytes as a full evaluation, and each of the
8 with one differs. So:
- only tokens evaluated in a batch of two or more are kept (`CachedContext.exact_tokens`: a prompt,
  or a reply evaluated again while the model is idle, `settle`);
- a full evaluation splits a prompt of L tokens into batches of `n_batch` from position 0 (as
  GPT4All does), so its last token is alone exactly when L leaves a remainder of 1. After a cut, the
  rest is split by `batches` so that its last token is alone exactly then, and no other token is.
With `n_batch` 1 every token is evaluated alone, replies included: everything is kept.

**Which context** (`plan`), in this order:
1. **A conversation's next turn continues its context.** A prompt that extends what a context's last
   prompt was (it shares at least those tokens) runs there, whatever else is true.
2. **The longest shared prefix is the source** among the contexts this key may read. Reusing it
   never costs another conversation its context: the prompt runs in a free context, a newly opened
   one, or the one to give up, and the shared prefix is copied there (llama.cpp's per-sequence
   state, no evaluation) unless it is shorter than `MIN_COPY` tokens, when evaluating it costs
   less than the copy. A context is cut back in place only when it is itself the one to give up.
3. **The one to give up, when all are taken,** is the least recently used, within fair shares: a
   key holding at least its share of the contexts (all contexts over the keys holding one, this key
   included, rounded up) gives up its own least recently used one; otherwise a key holding more
   than its share gives one up. So a key with many short conversations cannot take every context
   from a key with one long one.

Before this rule, the context sharing the longest prefix was cut back whenever none was free, even
for the chat template's first 9 tokens: once every context was taken, each new conversation
overwrote the same context and none was reused again (the least recently used rule was never reached).

Nothing here touches llama.cpp: the planner takes token ids, so the rules are unit-tested on lists.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

MIN_COPY = 16  # shorter shared prefixes are evaluated again rather than copied (see `plan`)


@dataclass
class CachedContext:
    """What one context's KV cache holds, and whose it is."""

    index: int
    tokens: list[int] = field(default_factory=list)
    prompt_tokens: int = 0  # how many of `tokens` the last prompt had (the rest: its reply)
    exact_tokens: int = 0  # how many leading `tokens` a full evaluation computes bit for bit (see the module's rules)
    scope: str | None = None  # who may reuse it (an API key's hash); None: empty
    last_used: float = 0.0


@dataclass(frozen=True)
class Plan:
    target: int | None  # the context to run in; None: open a new one
    source: int | None  # the context whose first `keep` tokens are reused (copied unless it is the target)
    keep: int  # tokens reused; 0: evaluate everything


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def ends_alone(evaluated: int, n_batch: int) -> bool:
    """Whether a full evaluation of `evaluated` tokens in batches of `n_batch` ends with a batch of one token."""
    return n_batch > 1 and evaluated % n_batch == 1


def batches(count: int, n_batch: int, last_alone: bool) -> list[int] | None:
    """Batch sizes for `count` tokens: at most `n_batch` each, none of one token but the last exactly
    when `last_alone`; None when impossible. For a whole prompt (`last_alone` = ends_alone(count)),
    these are GPT4All's batches: `n_batch` tokens from the start, and the remainder."""
    if n_batch == 1 or count == 0:
        return [1] * count
    body = count - 1 if last_alone else count
    if body == 1 or (n_batch == 2 and body % 2):
        return None
    sizes = [n_batch] * (body // n_batch)
    rest = body % n_batch
    if rest == 1:  # n_batch >= 3 here: lend the rest one token of the batch before it
        sizes[-1] -= 1
        rest = 2
    if rest:
        sizes.append(rest)
    return sizes + [1] if last_alone else sizes


def usable(context: CachedContext, full: Sequence[int], n_batch: int, exact: bool, prefix: int | None = None) -> int:
    """The most of `context`'s tokens that `full` can keep (0: none): shared, and exact with `exact`.
    `prefix`: their common prefix, when the caller has it already."""
    prefix = common_prefix(context.tokens, full) if prefix is None else prefix
    limit = min(prefix, len(full) - 1)  # the last prompt token gives the logits
    if not exact:
        return max(limit, 0)
    limit = min(limit, context.exact_tokens)
    last_alone = ends_alone(len(full), n_batch)
    for keep in range(limit, max(limit - 4, 0), -1):
        if batches(len(full) - keep, n_batch, last_alone) is not None:
            return keep
    return 0


def plan(
    contexts: Sequence[CachedContext],
    full: Sequence[int],
    scope: str | None,
    *,
    can_open: bool,
    n_batch: int,
    exact: bool = True,
    share: bool = False,
) -> Plan:
    """Where `full` runs and what it reuses (see the module's rules). `share`: any key may read any context."""
    readable = [c for c in contexts if c.scope is not None and (share or c.scope == scope)]
    prefixes = {c.index: common_prefix(c.tokens, full) for c in readable}
    shared = {c.index: usable(c, full, n_batch, exact, prefixes[c.index]) for c in readable}
    following = [c for c in readable if c.prompt_tokens and prefixes[c.index] >= c.prompt_tokens]
    if following:
        best = max(following, key=lambda c: (shared[c.index], c.last_used))
        return Plan(best.index, best.index, shared[best.index])
    source = max(readable, key=lambda c: (shared[c.index], c.last_used), default=None)
    keep = shared[source.index] if source is not None else 0
    free = [c for c in contexts if c.scope is None]
    if free:
        target: int | None = free[0].index
    elif can_open:
        target = None
    else:
        target = give_up(contexts, None if share else scope).index
    if source is None or keep == 0 or (keep < MIN_COPY and source.index != target):
        return Plan(target, None, 0)
    return Plan(target, source.index, keep)


def give_up(contexts: Sequence[CachedContext], scope: str | None) -> CachedContext:
    """The context to take over when all are taken: least recently used, within fair shares per key."""
    if scope is None:
        return min(contexts, key=lambda c: c.last_used)
    holdings = Counter(c.scope for c in contexts)
    keys = len(set(holdings) | {scope})
    share = math.ceil(len(contexts) / keys)
    if holdings[scope] >= share:
        pool = [c for c in contexts if c.scope == scope]
    else:
        pool = [c for c in contexts if holdings[c.scope] > share] or list(contexts)
    return min(pool, key=lambda c: c.last_used)
