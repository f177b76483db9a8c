"""StopFilter: stop sequences caught across token boundaries, never emitted, held text flushed."""

from __future__ import annotations

import pytest

from scheduler.stop_filter import StopFilter


def run(stops, pieces):
    """Feed pieces until a stop; return (emitted pieces, stopped, flushed tail)."""
    stop_filter = StopFilter(stops)
    emitted = []
    for piece in pieces:
        text, stopped = stop_filter.feed(piece)
        emitted.append(text)
        if stopped:
            return emitted, True, stop_filter.flush()
    return emitted, False, stop_filter.flush()


def test_no_stops_passes_everything_through_at_once():
    stop_filter = StopFilter(())
    assert stop_filter.feed("Hello") == ("Hello", False)
    assert stop_filter.feed(" world") == (" world", False)
    assert stop_filter.flush() == ""


def test_empty_stop_strings_are_ignored():
    stop_filter = StopFilter(["", "END"])
    assert stop_filter.stops == ("END",)


def test_stop_inside_one_piece_cuts_before_it():
    emitted, stopped, tail = run(["END"], ["abc", "xyENDzz", "never"])
    assert stopped
    assert "".join(emitted) == "abcxy"
    assert tail == ""


def test_stop_split_across_three_pieces_is_caught_and_never_emitted():
    emitted, stopped, tail = run(["STOP"], ["Hello S", "T", "OP and more"])
    assert stopped
    assert "".join(emitted) == "Hello "
    # the partial "S" and "ST" were held back, never handed out
    assert emitted == ["Hello ", "", ""]
    assert tail == ""


def test_held_prefix_is_released_when_it_turns_out_not_to_be_a_stop():
    stop_filter = StopFilter(["STOP"])
    assert stop_filter.feed("go S") == ("go ", False)
    assert stop_filter.feed("T") == ("", False)
    assert stop_filter.feed("ay") == ("STay", False)
    assert stop_filter.flush() == ""


def test_flush_returns_held_text_at_the_end_of_generation():
    emitted, stopped, tail = run(["\n\n"], ["line one", "\n"])
    assert not stopped
    assert emitted == ["line one", ""]
    assert tail == "\n"
    assert "".join(emitted) + tail == "line one\n"
    stop_filter = StopFilter(["\n\n"])
    stop_filter.feed("x\n")
    assert stop_filter.flush() == "\n"
    assert stop_filter.flush() == ""  # flushing empties the buffer


def test_multiple_stops_the_earliest_in_the_text_wins():
    emitted, stopped, _ = run(["world", "lo w"], ["Hello", " world"])
    assert stopped
    assert "".join(emitted) == "Hel"


@pytest.mark.parametrize("text, expected", [("a, b. c", "a"), ("a; b. c, d", "a; b"), ("no stop here", None)])
def test_multiple_stops_either_one_stops(text, expected):
    emitted, stopped, tail = run([".", ","], [text])
    assert stopped is (expected is not None)
    assert "".join(emitted) + tail == (expected if expected is not None else text)


@pytest.mark.parametrize(
    "pieces",
    [
        ["The answer is 4", "2.\nUser:", " what"],
        ["The answer is 42.\nUs", "er", ":"],
        ["The answer is 42.", "\n", "U", "s", "e", "r", ":", " x"],
        list("The answer is 42.\nUser: more"),
    ],
)
def test_stop_caught_however_the_text_is_split(pieces):
    emitted, stopped, tail = run(["User:", "Assistant:"], pieces)
    assert stopped
    assert "".join(emitted) + tail == "The answer is 42.\n"
    assert all("User" not in piece for piece in emitted)


def test_overlapping_prefixes_hold_only_what_could_still_match():
    stop_filter = StopFilter(["aab"])
    assert stop_filter.feed("xa") == ("x", False)  # "a" could start "aab"
    assert stop_filter.feed("a") == ("", False)  # "aa" could too
    assert stop_filter.feed("a") == ("a", False)  # "aaa": only the last "aa" can
    assert stop_filter.feed("b") == ("", True)  # "aab" reached: nothing of it is emitted


def test_longest_pending_prefix_over_several_stops_is_held():
    stop_filter = StopFilter(["<|im_end|>", "<end>"])
    assert stop_filter.feed("ok <|im") == ("ok ", False)
    assert stop_filter.feed("_end") == ("", False)
    assert stop_filter.feed("|>") == ("", True)


def test_unicode_stop_split_across_pieces():
    emitted, stopped, _ = run(["»»"], ["naïve «x» »", "» tail"])
    assert stopped
    assert "".join(emitted) == "naïve «x» "
