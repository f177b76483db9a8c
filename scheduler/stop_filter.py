"""Stop sequences over a stream of text pieces, caught even when split across tokens.

Text that could still become the start of a stop sequence is held back until the next piece
decides it; the stop sequence itself is never emitted.
"""

from __future__ import annotations


class StopFilter:
    def __init__(self, stops: tuple[str, ...] | list[str]):
        self.stops = tuple(s for s in stops if s)
        self._held = ""

    def feed(self, piece: str) -> tuple[str, bool]:
        """Return (text safe to emit now, whether a stop sequence was reached)."""
        if not self.stops:
            return piece, False
        text = self._held + piece
        hits = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if hits:
            self._held = ""
            return text[: min(hits)], True
        keep = self._longest_stop_prefix_suffix(text)
        self._held = text[len(text) - keep :]
        return text[: len(text) - keep], False

    def flush(self) -> str:
        """The held-back text, once generation ended without reaching a stop sequence."""
        held, self._held = self._held, ""
        return held

    def _longest_stop_prefix_suffix(self, text: str) -> int:
        longest = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:k]):
                    longest = k
                    break
        return longest


class LogprobsAlongside:
    """A StopFilter that releases each token's logprobs with the text the token wrote.

    A token's entry goes out once any of its text has (or, for a token inside a UTF-8 character that
    wrote nothing yet, once the text after it has); an entry whose text a stop sequence cut off never
    does. So the entries sent are those of the tokens whose text the client sees.
    """

    def __init__(self, stops: tuple[str, ...] | list[str]):
        self._filter = StopFilter(stops)
        self._pending: list[tuple[int, object]] = []  # (where the token's text starts, its entry)
        self._seen = 0  # characters fed
        self._sent = 0  # characters released

    def feed(self, piece: str, entry: object | None = None) -> tuple[str, list, bool]:
        """(text safe to emit now, the entries going with it, whether a stop sequence was reached)."""
        if entry is not None:
            self._pending.append((self._seen, entry))
        self._seen += len(piece)
        text, stopped = self._filter.feed(piece)
        self._sent += len(text)
        released = self._release(everything=False)
        if stopped:
            self._pending.clear()
        return text, released, stopped

    def flush(self) -> tuple[str, list]:
        """The held-back text and every entry left, once generation ended without a stop sequence."""
        text = self._filter.flush()
        self._sent += len(text)
        return text, self._release(everything=True)

    def _release(self, *, everything: bool) -> list:
        cut = len(self._pending) if everything else next(
            (i for i, (start, _) in enumerate(self._pending) if start >= self._sent), len(self._pending))
        released, self._pending = [entry for _, entry in self._pending[:cut]], self._pending[cut:]
        return released
