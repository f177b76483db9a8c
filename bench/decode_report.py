"""The decode benchmark's rows, tables and verdicts (bench/decode.py measures, this reports)."""

from __future__ import annotations

import argparse
import os

from bench import decode_masks
from bench.common import format_table, median, ratio, times_x

NAME = "decode"
N_CTX, N_BATCH = 2048, 128  # the decode benchmark's window and prompt batch (bench/decode_memory.py too)
GOALS = {"decode": 0.95, "structured output": 0.9}  # ratio against the row's baseline, at least
RAW = "raw GPT4All (its prompt call)"
OURS = "our loop, unconstrained"
SAME_TOKENS = "our loop, unconstrained, as many tokens"
# (case, system, samples' name, baseline samples' name, the check that must hold of its output)
ROWS = (
    ("decode", RAW, "raw", "raw", None),
    ("decode", OURS, "ours", "raw", ("same token ids as raw, every run", "ours")),
    ("structured output", "our loop, json_schema (person)", "json", "json plain", ("valid JSON, every property", "json")),
    ("structured output", SAME_TOKENS, "json plain", "json plain", None),
    ("tool call (generic, required)", "our loop, constrained", "tool", "tool plain", ("parsed into a call", "tool")),
    ("tool call (generic, required)", SAME_TOKENS, "tool plain", "tool plain", None),
    ("logprobs", "our loop, top_logprobs 5", "logprobs", "ours", ("same token ids as off", "logprobs")),
)


def rows_of(samples: dict, checks: dict[str, bool], model_id: str, args: argparse.Namespace) -> list[dict]:
    """One row per ROWS entry: the median decode rate, its ratio to its baseline's, the goal and the check."""
    rows = []
    for case, system, name, base, check in ROWS:
        rate = _rate(samples[name])
        base_rate = _rate(samples[base])
        row = {"benchmark": NAME, "case": case, "system": system, "tokens": len(samples[name][0].ids), "tok_s": rate,
               "baseline": next(label for _, label, named, *_ in ROWS if named == base),
               "ratio": ratio(rate, base_rate), "runs": len(samples[name])}
        if check is not None:
            row["check"], row["check_passed"] = check[0], checks[check[1]]
        if name != base and case in GOALS:
            row["goal"] = GOALS[case]
            row["meets_goal"] = row["ratio"] is not None and row["ratio"] >= GOALS[case]
        row.update(model=model_id, threads=args.threads, n_batch=N_BATCH, n_ctx=N_CTX, cpus=os.cpu_count())
        rows.append(row)
    return rows


def _rate(samples: list) -> float | None:
    rates = [s.tok_s for s in samples if s.tok_s is not None]
    return median(rates) if rates else None


def memory_rows(memory: dict[str, dict]) -> list[dict]:
    labels = {"ours": "our loop: one model, a llama.cpp context per conversation",
              "gpt4all": "GPT4All: an instance per conversation (before)"}
    before = memory.get("gpt4all", {}).get("per_context_anon_mb")
    return [{**found, "system": labels[system], "per_context_over_kv": ratio(found["per_context_anon_mb"], found["kv_mb"]),
             "vs_gpt4all": ratio(found["per_context_anon_mb"], before)} for system, found in memory.items()]


def print_report(rows: list[dict], setup: dict, mask_rows: list[dict], compiles: dict, memory: dict, notes: list[str],
                 args: argparse.Namespace) -> None:
    print()
    print(f"Decode phase, in process, {args.threads} threads, greedy: tokens/s = (tokens - 1) / (last - first token), "
          f"median of {args.runs} runs; ratio against the baseline measured in the same runs")
    shown = [{**r, "check": f"{r['check']}: {'yes' if r['check_passed'] else 'NO'}" if "check" in r else "-"} for r in rows]
    print(format_table(shown, [("case", "case"), ("system", "system"), ("tokens", "tokens", 0), ("tok_s", "decode tok/s", 1),
                               ("baseline", "against"), ("ratio", "ratio", 3), ("goal", ">= goal", 2), ("check", "check")]))
    print()
    print(f"Schema setup: a new schema {setup['new_ms']:.2f} ms (the API's check, compile, matcher) against "
          f"{setup['cached_ms']:.2f} ms cached ({times_x(ratio(setup['new_ms'], setup['cached_ms']))}); "
          f"the vocabulary, once per model: {setup['vocabulary_s']:.2f} s")
    print()
    print("Token mask alone (bench/decode_masks.py), against our loop's unconstrained step")
    decode_masks.print_mask_costs(mask_rows, compiles)
    if memory:
        print()
        print(f"Memory at N_CTX {next(iter(memory.values()))['n_ctx']}, each system in a fresh process, MB: anonymous "
              "(heap, KV caches, buffers; not the weights' file mapping), USS, RSS; per context: what each of contexts 2-4 "
              "added (on anonymous memory: USS moves with whoever else maps the weights)")
        print(format_table(memory_rows(memory), [
            ("system", "system"), ("one_anon_mb", "anon 1 ctx", 0), ("many_anon_mb", "anon 4 ctx", 0),
            ("one_uss_mb", "USS 1 ctx", 0), ("many_uss_mb", "USS 4 ctx", 0), ("one_rss_mb", "RSS 1 ctx", 0),
            ("many_rss_mb", "RSS 4 ctx", 0), ("per_context_anon_mb", "per ctx", 1), ("kv_mb", "KV cache", 1),
            ("per_context_over_kv", "per ctx / KV", 2), ("vs_gpt4all", "vs GPT4All", 2)]))
    print()
    for line in verdicts(rows, memory):
        print(line)
    for note in notes:
        print(f"note: {note}")


def verdicts(rows: list[dict], memory: dict) -> list[str]:
    lines = []
    for row in rows:
        if row["system"] in (RAW, SAME_TOKENS):
            continue
        goal = row.get("goal")
        verdict = "" if goal is None else f" ({'meets' if row.get('meets_goal') else 'misses'} the goal >= {goal:g})"
        check = f"; {row['check']}: {'yes' if row['check_passed'] else 'NO'}" if "check" in row else ""
        lines.append(f"{row['case']}: {row['system']} / {row['baseline']} = {times_x(row['ratio'])}{verdict}{check}")
    ours = memory.get("ours")
    if ours and ours.get("per_context_anon_mb") is not None:
        before = memory.get("gpt4all", {}).get("per_context_anon_mb")
        lines.append(f"memory: each further context adds {ours['per_context_anon_mb']:.1f} MB, "
                     f"{times_x(ratio(ours['per_context_anon_mb'], ours['kv_mb']))} its {ours['kv_mb']:.1f} MB KV cache"
                     + (f"; a GPT4All instance added {before:.1f} MB ({times_x(ratio(ours['per_context_anon_mb'], before))})" if before else ""))
    return lines
