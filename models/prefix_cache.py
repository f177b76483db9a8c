"""Which cached context a prompt continues, and from which token: exact or not at all.

A context (one GPT4All instance) remembers the token ids its KV cache holds. A new prompt is
tokenized with llama.cpp's own tokenizer (`models/llama_tokenizer.py`); its longest common prefix
with a context's ids is what could be kept. Two rules make a kept prefix exact:

- **The same ids.** GPT4All takes text, not ids: it tokenizes the text after the kept part on its
  own. So a cut at token `keep` is used only if the text from there tokenizes, on its own and with
  GPT4All's rules (no BOS, a leading space only after a special token), into exactly the ids the
  whole prompt has from there.
- **The same arithmetic.** llama.cpp computes a token evaluated alone (a batch of one: each token
  of a reply as it is generated) with other arithmetic than a token evaluated in a batch of two or
  more. Which batch, and how large, does not matter otherwise. Measured by saving the whole state
  (KV cache and logits) of this llama.cpp build after 224-, 359- and 622-token prompts evaluated
  in 100 random splits (1 and 2 threads; batches of 2 to 40 tokens), and whole at `n_batch` 2 to
  512: every evaluation without a batch of one token gives the same bytes as a full evaluation,
  and each of the 8 with one differs. So:
  - only tokens evaluated in a batch of two or more (`CachedContext.exact_tokens`: a prompt, or a
    reply evaluated again by `GPT4AllEngine.settle`) are kept;
  - a full evaluation splits a prompt into batches of `n_batch` from position 0, so its last
    token is alone exactly when the length leaves a remainder of 1. The cut is chosen so that the
    rest ends in a batch of one token exactly then.
  With `n_batch` 1 every token is evaluated alone, replies included: everything is kept.

Before this rule was measured, the cut kept only whole batches of `n_batch` of an earlier prompt:
also exact (18 of 18 greedy replies over 3 conversations, against 15 of 18 with the first rule
only), but each turn evaluated up to `n_batch - 1` tokens more, and the reply only in whole batches.

Nothing here touches GPT4All: the planner takes any object with `tokenize` and `is_special`, so
the rules are unit-tested on a toy tokenizer.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Protocol, Sequence

MAX_CUT_TRIES = 8  # cuts tried, from the longest prefix down; each try tokenizes the rest once


class Tokenizer(Protocol):
    def tokenize(self, text: bytes, *, at_start: bool, insert_space: bool) -> list[int]: ...

    def is_special(self, token: int) -> bool: ...

    def piece(self, token: int) -> bytes: ...


@dataclass
class CachedContext:
    """What one context's KV cache holds, as GPT4All left it after the last call."""

    index: int
    tokens: list[int] = field(default_factory=list)
    prompt_tokens: int = 0  # how many of `tokens` the last prompt had (the rest: its reply)
    exact_tokens: int = 0  # how many leading `tokens` a full evaluation computes bit for bit (see the module's rules)
    scope: str | None = None  # who may reuse it (an API key's hash); None: empty
    last_used: float = 0.0


@dataclass(frozen=True)
class Cut:
    keep: int  # tokens reused from the cache; 0: evaluate everything from scratch
    offset: int  # byte offset in the prompt where the text to evaluate starts


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def token_offsets(prompt: bytes, ids: Sequence[int], tokenizer: Tokenizer) -> list[int] | None:
    """Byte offset in `prompt` where each token starts (plus the end), or None if they cannot be aligned.

    Byte-level BPE pieces concatenate to the text itself. Two differences are allowed: a space the
    tokenizer inserts (SentencePiece's prefix space) and whitespace it strips beside a special token.
    """
    offsets, pos = [], 0
    for token in ids:
        piece = tokenizer.piece(token)
        if not piece and tokenizer.is_special(token):  # e.g. BOS, which has no text
            offsets.append(pos)
            continue
        while True:
            if prompt.startswith(piece, pos):
                offsets.append(pos)
                pos += len(piece)
                break
            if piece[:1] == b" " and prompt.startswith(piece[1:], pos):  # an inserted prefix space
                offsets.append(pos)
                pos += len(piece) - 1
                break
            if pos < len(prompt) and prompt[pos : pos + 1].isspace():  # whitespace stripped beside a special token
                pos += 1
                continue
            return None
    offsets.append(len(prompt))
    return offsets


def plan_cut(
    context: CachedContext, full: Sequence[int], prompt: bytes, tokenizer: Tokenizer, n_batch: int | None
) -> Cut:
    """The longest reuse of what `context` holds for `prompt` (tokenized as `full`).

    `n_batch` None drops the second rule (PREFIX_CACHE_EXACT=false): the same ids, not the same arithmetic.
    """
    # At least the last prompt token is evaluated again: its logits pick the first new token.
    limit = min(common_prefix(context.tokens, full), len(full) - 1)
    if n_batch is not None:
        limit = min(limit, context.exact_tokens)
    if limit < 1:
        return Cut(0, 0)
    offsets = token_offsets(prompt, full, tokenizer)
    if offsets is None:
        return Cut(0, 0)
    for keep in _cuts(limit, len(full), n_batch):
        offset = offsets[keep]
        if offset >= len(prompt) or not _starts_a_character(prompt, offset):
            continue
        if evaluates_as(tokenizer, prompt[offset:], full, keep):
            return Cut(keep, offset)
    return Cut(0, 0)


def _cuts(limit: int, length: int, n_batch: int | None) -> list[int]:
    """The cuts worth trying for a `length`-token prompt, longest first (at most MAX_CUT_TRIES)."""
    if n_batch is None or n_batch == 1:
        candidates = range(limit, 0, -1)
    elif length % n_batch == 1:  # a full evaluation ends in a batch of one: so must the rest after the cut
        candidates = range(limit // n_batch * n_batch, 0, -n_batch)
    else:  # ... and otherwise must not
        candidates = (keep for keep in range(limit, 0, -1) if not ends_alone(length - keep, n_batch))
    return list(itertools.islice(candidates, MAX_CUT_TRIES))


def ends_alone(evaluated: int, n_batch: int) -> bool:
    """Whether evaluating `evaluated` tokens in batches of `n_batch` ends with a batch of one token."""
    return n_batch > 1 and evaluated % n_batch == 1


def evaluates_as(tokenizer: Tokenizer, text: bytes, ids: Sequence[int], start: int) -> bool:
    """Whether GPT4All, given `text` with `start` tokens of `ids` kept, evaluates exactly `ids[start:]`.

    Its rules: a BOS and a leading space at the very start; after a kept special token, a leading
    space; otherwise the text alone. Never for text that is not UTF-8 (a reply cut inside a
    character): llama.cpp's tokenizer aborts the process on it."""
    try:
        text.decode("utf-8")
    except UnicodeDecodeError:
        return False
    at_start = start == 0
    insert_space = at_start or tokenizer.is_special(ids[start - 1])
    return tokenizer.tokenize(text, at_start=at_start, insert_space=insert_space) == list(ids[start:])


def _starts_a_character(text: bytes, offset: int) -> bool:
    return offset == 0 or (text[offset] & 0xC0) != 0x80  # not a UTF-8 continuation byte


def choose_context(
    contexts: Sequence[CachedContext], full: Sequence[int], scope: str | None, *, can_open: bool
) -> tuple[CachedContext | None, int]:
    """The context to run in and the tokens it shares with `full` (an upper bound; `plan_cut` decides).

    - The context sharing the longest prefix wins, among those `scope` may read (scope None: any).
    - A context is cut back into its last prompt (another branch, or another conversation that
      shares a system prompt) only when no free context is left: a free one is taken instead, so
      conversations that take turns each keep their own.
    - None means: open a new context (`can_open`); otherwise the least recently used is reused.
    """
    best, best_shared = None, 0
    for context in contexts:
        if context.scope is not None and scope is not None and context.scope != scope:
            continue
        shared = common_prefix(context.tokens, full)
        if shared > best_shared:
            best, best_shared = context, shared
    free = [c for c in contexts if c.scope is None]
    if best is not None and (best_shared >= best.prompt_tokens or not (free or can_open)):
        return best, best_shared
    if free:
        return free[0], 0
    if can_open:
        return None, 0
    if best is not None:
        return best, best_shared
    return min(contexts, key=lambda c: c.last_used), 0
