"""The multi-turn benchmark's warm-server scenario (issue 17), reported from made-up turns: which systems
it runs, the turn-8 / turn-1 ratio, and whether each turn kept the previous turn's prompt."""

from __future__ import annotations

import argparse

import pytest

from bench.generation_requests import Sample
from bench.multiturn_conversations import PERSONAS, SYSTEM_PROMPT, system_prompt
from bench.multiturn_report import (
    REUSE_NOT_EXACT,
    REUSE_OFF,
    REUSE_ON,
    WARM,
    Turn,
    rows_of,
    scenarios_of,
    verdicts,
)


def options(**changes) -> argparse.Namespace:
    values = dict(mt_scenarios="single,round-robin,warm", mt_conversations=4, mt_turns=3, mt_max_tokens=24, runs=1,
                  n_batch=32, n_ctx=2048, threads=2)
    return argparse.Namespace(**{**values, **changes})


def turn(system: str, conversation: int, k: int, ttft_s: float, prompt: int, cached: int) -> Turn:
    sample = Sample(system, conversation, started=0.0, first=ttft_s, prompt_tokens=prompt, cached_tokens=cached, text="ok")
    return Turn(system, WARM, 0, conversation, k, sample)


def warm_turns(cached_at_turn_3: int) -> list[Turn]:
    """Two conversations, three turns: prompts of 600, 650, 700 tokens; reuse off evaluates everything."""
    turns = []
    for conversation in range(2):
        for k, (prompt, cached, on_s) in enumerate([(600, 0, 4.0), (650, 640, 0.2), (700, cached_at_turn_3, 0.2)]):
            turns.append(turn(REUSE_ON, conversation, k, on_s, prompt, cached))
            turns.append(turn(REUSE_OFF, conversation, k, 4.0 + k, prompt, 0))
    return turns


def test_the_warm_scenario_is_the_slots_conversations_without_the_inexact_server():
    scenarios = scenarios_of(options(mt_scenarios="warm"))
    assert [(s.name, s.conversations) for s in scenarios] == [(WARM, 4)]
    assert REUSE_NOT_EXACT not in scenarios[0].systems and REUSE_OFF in scenarios[0].systems
    assert [s.name for s in scenarios_of(options(mt_conversations=1))] == ["single", WARM]
    with pytest.raises(SystemExit, match="unknown scenario"):
        scenarios_of(options(mt_scenarios="warm,cold"))


def test_a_warm_row_reports_its_ratios_and_that_every_turn_kept_the_previous_prompt():
    args = options(mt_scenarios="warm")
    rows = rows_of(args, warm_turns(cached_at_turn_3=690), [REUSE_ON, REUSE_OFF], "m", [])
    on, off = rows
    assert on["scenario_title"] == "4 new, warm server (round 2)"
    assert on["last_over_first"] == pytest.approx(0.2 / 4.0)
    assert off["last_vs_reuse_on"] == pytest.approx(6.0 / 0.2)
    assert (on["cached_tokens_t2"], on["cached_tokens_t3"]) == (640, 690)
    assert on["turns_losing_previous_prompt"] == 0 and on["cached_from_turn2"]
    lines = verdicts(args, rows)
    assert on["last_over_full_first"] == pytest.approx(0.2 / 4.0)
    assert any("turn 3 TTFT / turn 1 TTFT = 0.05x; / a turn 1 evaluated in full (reuse off's) = 0.05x (meets the goal <= 0.1)"
               in line for line in lines), lines
    assert any("kept the previous turn's prompt: yes" in line for line in lines), lines


def test_a_turn_that_reused_only_the_template_is_counted_as_losing_its_conversation():
    args = options(mt_scenarios="warm")
    rows = rows_of(args, warm_turns(cached_at_turn_3=3), [REUSE_ON, REUSE_OFF], "m", [])
    assert rows[0]["turns_losing_previous_prompt"] == 2
    assert any("previous turn's prompt: NO (2 turns did not)" in line for line in verdicts(args, rows))


def test_each_warm_conversation_has_its_own_system_prompt_of_the_usual_length():
    prompts = [system_prompt(k) for k in range(len(PERSONAS))]
    assert len({p.split()[0] for p in prompts}) == len(prompts)  # no two share even their first word
    assert all(0.95 * len(SYSTEM_PROMPT) < len(p) < 1.1 * len(SYSTEM_PROMPT) for p in prompts)


def test_a_cheap_first_turn_from_a_shared_system_prompt_is_judged_against_a_full_first_turn():
    args = options(mt_scenarios="round-robin")
    turns = [Turn(t.system, "round-robin", t.run, t.conversation, t.turn, t.sample) for t in warm_turns(690)]
    for t in turns:
        if t.system == REUSE_ON and t.turn == 0 and t.conversation == 1:
            t.sample.first = 0.2  # conversation 2 copied conversation 1's system prompt: its turn 1 is cheap
    on = rows_of(args, turns, [REUSE_ON, REUSE_OFF], "m", [])[0]
    assert on["last_over_first"] == pytest.approx(0.2 / 2.1)  # the median of 4.0 and 0.2
    assert on["last_over_full_first"] == pytest.approx(0.2 / 4.0)
    assert any("(meets the goal <= 0.1)" in line for line in verdicts(args, rows_of(args, turns, [REUSE_ON, REUSE_OFF], "m", [])))
