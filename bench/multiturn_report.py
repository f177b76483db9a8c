"""The multi-turn benchmark's scenarios, rows, verdicts and tables (bench/multiturn.py measures, this reports)."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

from bench.common import format_table, median, ratio, times_x
from bench.generation_requests import Sample

NAME = "multiturn"
REUSE_ON = "server, reuse on"
REUSE_OFF = "server, reuse off"
REUSE_NOT_EXACT = "server, reuse on, PREFIX_CACHE_EXACT=false"
REUSING = (REUSE_ON, REUSE_NOT_EXACT)
LLAMA_CPP = "llama-cpp-python server (--cache True)"
GOAL_OFF_OVER_ON = 5.0  # reuse-off TTFT / reuse-on TTFT at turn 8
GOAL_PEER_OVER_OURS = 1.0  # llama-cpp-python's TTFT / ours at turn 8 (strictly above)
GOAL_LAST_OVER_FIRST = 0.1  # reuse-on TTFT at turn 8 / at turn 1
GOAL_TURN = 8
SLOTS = 4  # PREFIX_CACHE_SLOTS of every server (the default): the warm scenario's round 1 takes them all
WARM_ROUND1_TURNS = 2
CUT_SLACK = 3  # tokens an exact cut may give back (models/prefix_cache.py `usable`)

SINGLE, ROUND_ROBIN, WARM = "single", "round-robin", "warm"
SCENARIO_NAMES = (SINGLE, ROUND_ROBIN, WARM)


@dataclass(frozen=True)
class Scenario:
    name: str
    conversations: int  # measured conversations, taking turns round-robin
    title: str  # how the tables name it
    systems: tuple[str, ...]  # the systems it runs


def scenarios_of(args: argparse.Namespace) -> list[Scenario]:
    """The scenarios `--mt-scenarios` asks for (a round-robin of fewer than 2 conversations is left out)."""
    names = [n.strip() for n in str(args.mt_scenarios).split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIO_NAMES]
    if unknown:
        raise SystemExit(f"{NAME}: unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIO_NAMES)}")
    every = (REUSE_ON, REUSE_OFF, REUSE_NOT_EXACT, LLAMA_CPP)
    known = {
        SINGLE: Scenario(SINGLE, 1, "1 conversation", every),
        ROUND_ROBIN: Scenario(ROUND_ROBIN, args.mt_conversations, f"{args.mt_conversations} round-robin", every),
        WARM: Scenario(WARM, SLOTS, f"{SLOTS} new, warm server (round 2)", (REUSE_ON, REUSE_OFF, LLAMA_CPP)),
    }
    return [known[n] for n in SCENARIO_NAMES if n in names and not (n == ROUND_ROBIN and args.mt_conversations < 2)]


@dataclass
class Turn:
    """One measured request: `system`'s reply to conversation `conversation`'s turn `turn` (from 0)."""

    system: str
    scenario: str
    run: int
    conversation: int
    turn: int
    sample: Sample


def ms_of(sample: Sample) -> float | None:
    return None if sample.ttft is None else sample.ttft * 1000


def rows_of(args: argparse.Namespace, turns: list[Turn], labels: list[str], model_id: str, notes: list[str]) -> list[dict]:
    n = args.mt_turns
    rows = []
    for scenario in scenarios_of(args):
        texts = {(t.system, t.run, t.conversation, t.turn): t.sample.text for t in turns if t.scenario == scenario.name}
        for label in labels:
            mine = [t for t in turns if t.scenario == scenario.name and t.system == label]
            if not mine:
                continue
            row: dict = {"benchmark": NAME, "system": label, "scenario": scenario.name, "scenario_title": scenario.title,
                         "conversations": scenario.conversations, "turns": n, "runs": args.runs, "requests": len(mine)}
            for k in range(n):
                at = [t.sample for t in mine if t.turn == k]
                ttfts = [ms_of(s) for s in at if ms_of(s) is not None]
                row[f"ttft_t{k + 1}_ms"] = median(ttfts) if ttfts else None
                prompts = [s.prompt_tokens for s in at if s.prompt_tokens is not None]
                row[f"prompt_tokens_t{k + 1}"] = max(prompts) if prompts else None
                cached = [s.cached_tokens for s in at if s.cached_tokens is not None]
                # the least reuse among the conversations and runs: the figure that must be > 0 from turn 2
                row[f"cached_tokens_t{k + 1}"] = min(cached) if cached else None
            row["completion_tokens"] = sum(t.sample.completion_tokens for t in mine)
            row["empty_replies"] = sum(1 for t in mine if not t.sample.text)
            row["last_over_first"] = ratio(row[f"ttft_t{n}_ms"], row["ttft_t1_ms"])
            if label in REUSING and any(t.system == REUSE_OFF for t in turns):
                _compare_replies(row, label, scenario, mine, texts, notes)
            if label in REUSING:
                zero = [k + 1 for k in range(1, n) if not row[f"cached_tokens_t{k + 1}"]]
                row["cached_from_turn2"] = not zero
                row["turns_losing_previous_prompt"] = _losing_previous_prompt(mine)
            row.update(model=model_id, max_tokens=args.mt_max_tokens, n_batch=args.n_batch, n_ctx=args.n_ctx,
                       threads=args.threads, cpus=os.cpu_count())
            rows.append(row)
        on = next((r for r in rows if r["system"] == REUSE_ON and r["scenario"] == scenario.name), None)
        off = next((r for r in rows if r["system"] == REUSE_OFF and r["scenario"] == scenario.name), None)
        for row in rows:
            if row["scenario"] == scenario.name and on is not None:
                row["last_vs_reuse_on"] = ratio(row[f"ttft_t{n}_ms"], on[f"ttft_t{n}_ms"])
            if row["scenario"] == scenario.name and off is not None:
                # against a first turn evaluated in full: with a shared system prompt, turn 1 of conversations
                # 2..N reuses conversation 1's, so the row's own turn 1 is no longer the cost of a new conversation
                row["last_over_full_first"] = ratio(row[f"ttft_t{n}_ms"], off["ttft_t1_ms"])
    return rows


def _compare_replies(row: dict, label: str, scenario: Scenario, mine: list[Turn], texts: dict, notes: list[str]) -> None:
    differing = sorted((t.turn, t.run, t.conversation) for t in mine
                       if texts.get((REUSE_OFF, t.run, t.conversation, t.turn)) != t.sample.text)
    row["same_replies_as_reuse_off"] = not differing
    row["replies_differ_from_turn"] = differing[0][0] + 1 if differing else None
    if differing:
        turn, run_no, conv = differing[0]
        notes.append(
            f"{label}, {scenario.title}: {len(differing)} of {len(mine)} replies differ from reuse off "
            f"(after one differs, its conversation's later prompts differ too); the earliest at turn {turn + 1} "
            f"(run {run_no + 1}, conversation {conv + 1}): {texts[(label, run_no, conv, turn)][:60]!r} "
            f"vs {texts.get((REUSE_OFF, run_no, conv, turn), '')[:60]!r}"
        )


def _losing_previous_prompt(mine: list[Turn]) -> int:
    """Turns (from turn 2) whose cached_tokens fell short of the previous turn's prompt by more than an exact cut gives back."""
    previous = {(t.run, t.conversation, t.turn): t.sample for t in mine}
    losing = 0
    for t in mine:
        before = previous.get((t.run, t.conversation, t.turn - 1))
        if t.turn and before is not None and before.prompt_tokens is not None:
            losing += (t.sample.cached_tokens or 0) < before.prompt_tokens - CUT_SLACK
    return losing


def verdicts(args: argparse.Namespace, rows: list[dict]) -> list[str]:
    n = args.mt_turns
    lines = []
    partial = "" if n == GOAL_TURN else f" (the goals are about turn {GOAL_TURN}; this run has {n} turns: indicative only)"

    def find(system: str, scenario: str) -> dict | None:
        return next((r for r in rows if r["system"] == system and r["scenario"] == scenario), None)

    for scenario in scenarios_of(args):
        title = scenario.title
        on, off, peer = find(REUSE_ON, scenario.name), find(REUSE_OFF, scenario.name), find(LLAMA_CPP, scenario.name)
        if on is None:
            continue
        value = on.get("last_over_full_first", on["last_over_first"])
        verdict = "-" if value is None else "meets" if value <= GOAL_LAST_OVER_FIRST else "misses"
        lines.append(f"{title}: reuse on, turn {n} TTFT / turn 1 TTFT = {times_x(on['last_over_first'])}; / a turn 1 "
                     f"evaluated in full (reuse off's) = {times_x(on.get('last_over_full_first'))} "
                     f"({verdict} the goal <= {GOAL_LAST_OVER_FIRST:g}){partial}")
        loose = find(REUSE_NOT_EXACT, scenario.name)
        if loose is not None:
            lines.append(f"{title}: reuse on with PREFIX_CACHE_EXACT=false, turn {n} / turn 1 = {times_x(loose['last_over_first'])}, "
                         f"turn {n} against exact reuse = {times_x(loose.get('last_vs_reuse_on'))}; same replies as reuse off: "
                         f"{'yes' if loose.get('same_replies_as_reuse_off') else 'no'}")
        if off is not None and off.get("last_vs_reuse_on") is not None:
            value = off["last_vs_reuse_on"]
            verdict = "meets" if value >= GOAL_OFF_OVER_ON else "misses"
            lines.append(f"{title}: reuse off / reuse on at turn {n} = {times_x(value)} ({verdict} the goal >= {GOAL_OFF_OVER_ON:g}x){partial}")
        if peer is not None and peer.get("last_vs_reuse_on") is not None:
            value = peer["last_vs_reuse_on"]
            verdict = "meets" if value > GOAL_PEER_OVER_OURS else "misses"
            lines.append(f"{title}: llama-cpp-python / ours at turn {n} = {times_x(value)} ({verdict} the goal > {GOAL_PEER_OVER_OURS:g}){partial}")
        cached = ", ".join(f"t{k + 1} {count_or_dash(on.get(f'cached_tokens_t{k + 1}'))}" for k in range(n))
        losing = on.get("turns_losing_previous_prompt")
        lines.append(f"{title}: cached_tokens with reuse on (least over conversations and runs): {cached}; "
                     f"> 0 from turn 2 on: {'yes' if on.get('cached_from_turn2') else 'NO'}; every turn from turn 2 kept "
                     f"the previous turn's prompt: {'yes' if losing == 0 else f'NO ({losing} turns did not)'}")
        if "same_replies_as_reuse_off" in on:
            same = "yes" if on["same_replies_as_reuse_off"] else f"NO (from turn {on['replies_differ_from_turn']}; reported, not a failure)"
            lines.append(f"{title}: replies with reuse on equal those with reuse off (greedy): {same}")
    return lines


def print_report(args: argparse.Namespace, rows: list[dict], notes: list[str], model_id: str) -> None:
    n = args.mt_turns
    print()
    print(f"Multi-turn chat ({model_id}, n_batch {args.n_batch}, {args.mt_max_tokens} tokens per reply, greedy): "
          f"TTFT ms per turn, median over conversations and {args.runs} run(s)")
    columns = [("scenario_title", "scenario"), ("system", "system")]
    columns += [(f"ttft_t{k + 1}_ms", f"t{k + 1}", 0) for k in range(n)]
    columns += [("last_over_first", f"t{n}/t1", 2), ("last_over_full_first", f"t{n} / off t1", 2),
                ("last_vs_reuse_on", f"t{n} / reuse on t{n}", 2),
                ("same_replies_as_reuse_off", "same replies as off")]
    print(format_table(rows, columns))
    print()
    print("Prompt tokens reused / prompt tokens per turn (cached_tokens: the least over conversations and runs)")
    token_rows = [
        {"scenario_title": r["scenario_title"], "system": r["system"],
         **{f"t{k + 1}": f"{count_or_dash(r.get(f'cached_tokens_t{k + 1}'))}/{count_or_dash(r.get(f'prompt_tokens_t{k + 1}'))}"
            for k in range(n)}}
        for r in rows
    ]
    print(format_table(token_rows, [("scenario_title", "scenario"), ("system", "system")] + [(f"t{k + 1}", f"t{k + 1}") for k in range(n)]))
    print()
    for line in verdicts(args, rows):
        print(line)
    for note in notes:
        print(f"note: {note}")


def count_or_dash(value: int | None) -> str:
    return "-" if value is None else str(value)
