"""The multi-turn benchmark's rows, verdicts and labels (bench/multiturn.py measures, this reports)."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

from bench.common import median, ratio
from bench.generation_requests import Sample

NAME = "multiturn"
REUSE_ON = "server, reuse on"
REUSE_OFF = "server, reuse off"
REUSE_NOT_EXACT = "server, reuse on, PREFIX_CACHE_EXACT=false"
REUSING = (REUSE_ON, REUSE_NOT_EXACT)
LLAMA_CPP = "llama-cpp-python server (--cache True)"
GOAL_OFF_OVER_ON = 5.0  # reuse-off TTFT / reuse-on TTFT at turn 8
GOAL_PEER_OVER_OURS = 1.0  # llama-cpp-python's TTFT / ours at turn 8 (strictly above)
GOAL_TURN = 8


@dataclass
class Turn:
    """One measured request: `system`'s reply to conversation `conversation`'s turn `turn` (from 0)."""

    system: str
    conversations: int  # the scenario
    run: int
    conversation: int
    turn: int
    sample: Sample


def ms_of(sample: Sample) -> float | None:
    return None if sample.ttft is None else sample.ttft * 1000


def rows_of(args: argparse.Namespace, turns: list[Turn], labels: list[str], model_id: str, notes: list[str]) -> list[dict]:
    n = args.mt_turns
    rows = []
    for conversations in args.scenarios:
        texts = {(t.system, t.run, t.conversation, t.turn): t.sample.text for t in turns if t.conversations == conversations}
        for label in labels:
            mine = [t for t in turns if t.conversations == conversations and t.system == label]
            if not mine:
                continue
            row: dict = {"benchmark": NAME, "system": label, "conversations": conversations, "turns": n, "runs": args.runs,
                         "requests": len(mine)}
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
                differing = sorted(
                    (t.turn, t.run, t.conversation) for t in mine
                    if texts.get((REUSE_OFF, t.run, t.conversation, t.turn)) != t.sample.text
                )
                row["same_replies_as_reuse_off"] = not differing
                row["replies_differ_from_turn"] = differing[0][0] + 1 if differing else None
                if differing:
                    turn, run_no, conv = differing[0]
                    notes.append(
                        f"{label}, {conversations} conversation(s): {len(differing)} of {len(mine)} replies differ from reuse off "
                        f"(after one differs, its conversation's later prompts differ too); the earliest at turn {turn + 1} "
                        f"(run {run_no + 1}, conversation {conv + 1}): {texts[(label, run_no, conv, turn)][:60]!r} "
                        f"vs {texts.get((REUSE_OFF, run_no, conv, turn), '')[:60]!r}"
                    )
            if label in REUSING:
                zero = [k + 1 for k in range(1, n) if not row[f"cached_tokens_t{k + 1}"]]
                row["cached_from_turn2"] = not zero
            row.update(model=model_id, max_tokens=args.mt_max_tokens, n_batch=args.n_batch, n_ctx=args.n_ctx,
                       threads=args.threads, cpus=os.cpu_count())
            rows.append(row)
        on = next((r for r in rows if r["system"] == REUSE_ON and r["conversations"] == conversations), None)
        for row in rows:
            if row["conversations"] == conversations and on is not None:
                row["last_vs_reuse_on"] = ratio(row[f"ttft_t{n}_ms"], on[f"ttft_t{n}_ms"])
    return rows


def verdicts(args: argparse.Namespace, rows: list[dict]) -> list[str]:
    n = args.mt_turns
    lines = []
    partial = "" if n == GOAL_TURN else f" (the goals are about turn {GOAL_TURN}; this run has {n} turns: indicative only)"

    def find(system: str, conversations: int) -> dict | None:
        return next((r for r in rows if r["system"] == system and r["conversations"] == conversations), None)

    for conversations in args.scenarios:
        scenario = "1 conversation" if conversations == 1 else f"{conversations} conversations round-robin"
        on, off, peer = find(REUSE_ON, conversations), find(REUSE_OFF, conversations), find(LLAMA_CPP, conversations)
        if on is None:
            continue
        lines.append(f"{scenario}: reuse on, turn {n} TTFT / turn 1 TTFT = {times_x(on['last_over_first'])}")
        loose = find(REUSE_NOT_EXACT, conversations)
        if loose is not None:
            lines.append(f"{scenario}: reuse on with PREFIX_CACHE_EXACT=false, turn {n} / turn 1 = {times_x(loose['last_over_first'])}, "
                         f"turn {n} against exact reuse = {times_x(loose.get('last_vs_reuse_on'))}; same replies as reuse off: "
                         f"{'yes' if loose.get('same_replies_as_reuse_off') else 'no'}")
        if off is not None and off.get("last_vs_reuse_on") is not None:
            value = off["last_vs_reuse_on"]
            verdict = "meets" if value >= GOAL_OFF_OVER_ON else "misses"
            lines.append(f"{scenario}: reuse off / reuse on at turn {n} = {times_x(value)} ({verdict} the goal >= {GOAL_OFF_OVER_ON:g}x){partial}")
        if peer is not None and peer.get("last_vs_reuse_on") is not None:
            value = peer["last_vs_reuse_on"]
            verdict = "meets" if value > GOAL_PEER_OVER_OURS else "misses"
            lines.append(f"{scenario}: llama-cpp-python / ours at turn {n} = {times_x(value)} ({verdict} the goal > {GOAL_PEER_OVER_OURS:g}){partial}")
        cached = ", ".join(f"t{k + 1} {count_or_dash(on.get(f'cached_tokens_t{k + 1}'))}" for k in range(n))
        lines.append(f"{scenario}: cached_tokens with reuse on (least over conversations and runs): {cached}; "
                     f"> 0 from turn 2 on: {'yes' if on.get('cached_from_turn2') else 'NO'}")
        if "same_replies_as_reuse_off" in on:
            same = "yes" if on["same_replies_as_reuse_off"] else f"NO (from turn {on['replies_differ_from_turn']}; reported, not a failure)"
            lines.append(f"{scenario}: replies with reuse on equal those with reuse off (greedy): {same}")
    return lines


def times_x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def count_or_dash(value: int | None) -> str:
    return "-" if value is None else str(value)
