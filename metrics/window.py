"""A recent window of observations, for the percentiles and rates that `/metrics` reports as JSON.

Prometheus histograms (see `registry.py`) count everything since start-up, with fixed buckets;
an operator looking at a queue wants "what is it like now": p50/p95 over the last few minutes.
`RecentWindow` keeps timestamped rows for `seconds` (and at most `max_rows`), dropping older ones.
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Callable, Iterable, Sequence


class RecentWindow:
    def __init__(self, seconds: float = 300.0, max_rows: int = 5000, clock: Callable[[], float] = time.monotonic):
        self.seconds = seconds
        self._rows: deque[tuple[float, tuple]] = deque(maxlen=max_rows)
        self._clock = clock

    def add(self, row: tuple) -> None:
        """One observation: a tuple, or a NamedTuple whose fields the readers use by name."""
        self._rows.append((self._clock(), row))

    def rows(self, within: float | None = None) -> list[tuple]:
        """Rows newer than `within` seconds (the whole window by default), oldest first."""
        now = self._clock()
        while self._rows and self._rows[0][0] < now - self.seconds:
            self._rows.popleft()
        since = now - (self.seconds if within is None else within)
        return [row for at, row in self._rows if at >= since]

    def column(self, index: int, within: float | None = None) -> list[float]:
        return [row[index] for row in self.rows(within) if row[index] is not None]


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation between closest ranks; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: Iterable[float], digits: int = 4) -> dict[str, float | int | None]:
    """`{"count", "p50", "p95", "max"}` of the values, rounded for JSON."""
    values = list(values)

    def rounded(x: float | None) -> float | None:
        return None if x is None else round(x, digits)

    return {
        "count": len(values),
        "p50": rounded(percentile(values, 50)),
        "p95": rounded(percentile(values, 95)),
        "max": rounded(max(values) if values else None),
    }
