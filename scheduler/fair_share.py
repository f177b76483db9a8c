"""How one embedding batch's slots are shared among waiting requests: water-filling in arrival order.

Every request gets an equal share of the slots; a request that needs less takes only what it
needs and the rest is split again among the others; earlier requests get the odd slots. So a
2000-input request progresses in every batch, and a single input behind it rides in the next one.
"""

from __future__ import annotations


def water_fill(waiting: list[int], slots: int) -> list[int]:
    """How many inputs each request (by its number still waiting, in arrival order) puts in the batch."""
    shares = [0] * len(waiting)
    hungry = [i for i, n in enumerate(waiting) if n > 0]
    while slots > 0 and hungry:
        share = max(1, slots // len(hungry))
        still_hungry = []
        for i in hungry:
            give = min(share, waiting[i] - shares[i], slots)
            shares[i] += give
            slots -= give
            if shares[i] < waiting[i]:
                still_hungry.append(i)
            if slots == 0:
                break
        hungry = still_hungry
    return shares
