"""Water-filling an embedding batch's slots among waiting requests."""

from scheduler.fair_share import water_fill


def test_small_requests_take_what_they_need_and_the_rest_is_split_again():
    assert water_fill([1, 2000, 3], 64) == [1, 60, 3]
    assert water_fill([2000, 2000], 64) == [32, 32]


def test_earlier_requests_get_the_odd_slots_and_nothing_is_over_given():
    assert water_fill([10, 10, 10], 4) == [2, 1, 1]
    assert water_fill([0, 5], 8) == [0, 5]
    assert water_fill([], 8) == [] and water_fill([3], 0) == [0]
    shares = water_fill([7, 1, 30, 2], 16)
    assert sum(shares) == 16 and all(s <= w for s, w in zip(shares, [7, 1, 30, 2]))
