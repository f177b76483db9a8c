"""Multi-turn chat benchmark: time to first token per turn when each turn resends the conversation.

    python bench/multiturn.py [--quick] [--runs N] [--mt-turns N] [--mt-conversations N] [--mt-max-tokens N]

Every turn sends the whole conversation so far: a fixed system prompt of about 600 tokens, then
each earlier question with the reply the server actually gave, then the next question. Streamed
`/v1/chat/completions`, greedy (`temperature: 0`), `--mt-max-tokens` (default 24) per reply, so a
turn is mostly prompt evaluation. Two scenarios, each on freshly started servers:
- one conversation of `--mt-turns` turns (default 8);
- `--mt-conversations` conversations (default 4) taking turns round-robin (conversation 1 turn 1,
  conversation 2 turn 1, ..., conversation 1 turn 2, ...): the same system prompt, different
  questions. Conversation 1 asks the questions of the single-conversation scenario.

Systems, all in the same run, on the same `.gguf`, threads, n_batch and context window:
- the server with its prefix cache (`PREFIX_CACHE=true`): a turn evaluates only what follows the
  part of the prompt its cached context already holds (`usage.prompt_tokens_details.cached_tokens`
  says how many prompt tokens were reused; it must be > 0 from turn 2 on);
- the server without it (`PREFIX_CACHE=false`): every turn evaluates the whole prompt;
- the server with `PREFIX_CACHE_EXACT=false`: it also keeps the earlier reply and partial batches
  (llama.cpp's trade: faster turns, greedy replies that may differ from a full evaluation's);
- llama-cpp-python's OpenAI server with its prompt cache on (`--cache True`), if installed in its
  venv (`bench/peers.py`; `make bench` installs it), else skipped with a note.

Figures: TTFT per turn (request sent to the first non-empty text piece; the median over the
conversations and `--runs`), and the ratios the prefix cache's goals are about: last turn / turn 1
with reuse on (the cost of a turn should not grow with the history), reuse off / reuse on at the
last turn (goal >= 5x at turn 8), llama-cpp-python / ours at the last turn (goal > 1). Greedy
decoding makes the replies comparable: whether reuse on gave the same replies as reuse off is
reported (not asserted).

Bias control: the systems take each step (one conversation's turn) in an order that rotates from
step to step, so drift in machine load hits them alike; only one request runs at a time. There is
no warm-up request: it would take one of the server's cached contexts (PREFIX_CACHE_SLOTS, 4) and
change which conversations keep theirs, so turn 1 is each fresh server's first prompt. In the
second scenario, turn 1 of conversations 2..4 also includes the server opening another context
(loading one more GPT4All instance), which a user's first turn pays too.
`--n-ctx`, `--n-batch`, `--model` and `--models-dir` are the generation benchmark's when it runs
in the same `bench/run_all.py` call; otherwise N_CTX, N_BATCH, MODEL_NAME, MODELS_DIR or defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # `python bench/multiturn.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import peers
from bench.common import (
    ROOT,
    ServerProcess,
    benchmark_main,
    busy_machine_warning,
    engine_threads,
    format_table,
    load_average,
    median,
    print_json_rows,
    ratio,
    save_results,
    start_our_server,
)
from bench.generation_requests import ChatStreamer, Sample

NAME = "multiturn"
REUSE_ON = "server, reuse on"
REUSE_OFF = "server, reuse off"
REUSE_NOT_EXACT = "server, reuse on, PREFIX_CACHE_EXACT=false"
REUSING = (REUSE_ON, REUSE_NOT_EXACT)
LLAMA_CPP = "llama-cpp-python server (--cache True)"
GOAL_OFF_OVER_ON = 5.0  # reuse-off TTFT / reuse-on TTFT at turn 8
GOAL_PEER_OVER_OURS = 1.0  # llama-cpp-python's TTFT / ours at turn 8 (strictly above)
GOAL_TURN = 8

# A deterministic system prompt of about 600 tokens (the turn-1 usage.prompt_tokens is printed).
SYSTEM_PROMPT = " ".join([
    "You are Pip, the customer assistant of Harbor Cycles, a bicycle shop by the old harbor that sells,",
    "rents and repairs bicycles. Answer in short, friendly sentences, and follow these rules.",
    "Rule 1: Greet the customer only once, at the start of the conversation, never again later.",
    "Rule 2: The shop opens at nine in the morning and closes at six in the evening from Monday to Saturday;",
    "on Sunday it opens at ten and closes at four. It is closed on public holidays.",
    "Rule 3: City bicycles rent for twelve euros a day, electric bicycles for thirty euros a day, and",
    "children's bicycles for eight euros a day. A week costs five times the daily price.",
    "Rule 4: Every rental includes a helmet, a lock and a small repair kit with a pump and two tyre levers.",
    "Rule 5: A rental needs an identity document and a deposit of fifty euros, returned with the bicycle.",
    "Rule 6: A standard service costs forty euros and takes two working days; it covers brakes, gears,",
    "chain cleaning, tyre pressure and a safety check. A full overhaul costs one hundred and ten euros.",
    "Rule 7: A flat tyre is repaired while the customer waits, usually in twenty minutes, for ten euros.",
    "Rule 8: New bicycles carry a two-year warranty on the frame and one year on every other part.",
    "Rule 9: Recommend a city bicycle for short trips, a touring bicycle for long journeys with luggage,",
    "and an electric bicycle for hills or for customers who want to arrive without sweating.",
    "Rule 10: Never promise a delivery date for parts; say that the workshop will call when they arrive.",
    "Rule 11: For safety questions, remind the customer to check brakes, lights and tyres before riding,",
    "to wear a helmet, and to use a bell when passing people on shared paths.",
    "Rule 12: The shop offers guided tours along the coast every Saturday at ten; a tour lasts three",
    "hours, covers twenty-five kilometres, and costs twenty euros including the bicycle.",
    "Rule 13: Payment is accepted in cash or by card; the shop does not accept cheques.",
    "Rule 14: Students and seniors get ten percent off services, but not off rentals or tours.",
    "Rule 15: If a customer is unhappy, apologise, offer to have the workshop look at the bicycle again",
    "free of charge, and give the phone number of the manager, Marta, which is 555 0142.",
    "Rule 16: Do not discuss other shops, prices you are not sure about, or anything unrelated to",
    "bicycles; politely bring the conversation back to cycling.",
    "Rule 17: Locks should go through the frame and a wheel, around a fixed object; suggest a",
    "second lock for electric bicycles, which thieves like most.",
    "Rule 18: Keep every answer under three sentences unless the customer asks for more detail.",
])

# Conversation k asks TOPICS[k] through these, in order (cycling on after the last one).
TOPICS = ["renting an electric bicycle", "a service for my old road bicycle", "the Saturday coast tour",
          "buying a bicycle for my daughter", "riding to work in winter", "locking a bicycle in town"]
QUESTIONS = [
    "Hello! I would like to ask about {t}. Where do I start?",
    "What does {t} cost, roughly?",
    "How long does {t} usually take?",
    "What should I bring or prepare for {t}?",
    "Is there anything about {t} that people often get wrong?",
    "Can you give me one safety tip related to {t}?",
    "Are there any discounts for {t}?",
    "Thanks. Could you sum up what you told me about {t} in one sentence?",
]


def question(conversation: int, turn: int) -> str:
    return QUESTIONS[turn % len(QUESTIONS)].format(t=TOPICS[conversation % len(TOPICS)])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(NAME)
    group.add_argument("--mt-turns", type=int, default=None, help="turns per conversation (default 8; quick 3)")
    group.add_argument("--mt-conversations", type=int, default=4,
                       help="conversations taking turns in the second scenario (default 4; 1 or 0 skips it)")
    group.add_argument("--mt-max-tokens", type=int, default=24, help="tokens per reply (default 24)")
    group.add_argument("--mt-skip-llama-cpp", action="store_true", help="do not measure llama-cpp-python's server even if installed")


def _settle(args: argparse.Namespace) -> None:
    args.runs = args.runs or (1 if args.quick else 2)
    args.mt_turns = args.mt_turns or (3 if args.quick else GOAL_TURN)
    args.threads = engine_threads(args)
    # shared with the generation benchmark when it is in the same run (its options), else the environment
    args.n_ctx = getattr(args, "n_ctx", None) or int(os.environ.get("N_CTX", 2048))
    args.n_batch = getattr(args, "n_batch", None) or int(os.environ.get("N_BATCH", 32))
    args.model = getattr(args, "model", None) or os.environ.get("MODEL_NAME", "")
    args.models_dir = Path(getattr(args, "models_dir", None) or os.environ.get("MODELS_DIR", ROOT / "models"))
    scenarios = [1] + ([args.mt_conversations] if args.mt_conversations > 1 else [])
    args.scenarios = scenarios


# ---- the run ---------------------------------------------------------------------------------


@dataclass
class Target:
    label: str
    kind: str  # "on", "off", "llama.cpp" (what the streamer expects)
    server: ServerProcess
    streamer: ChatStreamer | None = None
    histories: list[list[dict]] = field(default_factory=list)


@dataclass
class Turn:
    """One measured request: `system`'s reply to conversation `conversation`'s turn `turn` (from 0)."""

    system: str
    conversations: int  # the scenario
    run: int
    conversation: int
    turn: int
    sample: Sample


def _start(args: argparse.Namespace, model, notes: list[str]) -> list[Target]:
    targets: list[Target] = []
    try:
        for label, kind, enabled, exact in ((REUSE_ON, "on", "true", "true"), (REUSE_OFF, "off", "false", "true"),
                                            (REUSE_NOT_EXACT, "on", "true", "false")):
            server = start_our_server({
                "N_THREADS": str(args.threads),
                "N_BATCH": str(args.n_batch),
                "N_CTX": str(args.n_ctx),
                "MODELS_DIR": str(Path(args.models_dir).resolve()),
                "MODEL_NAME": model.id,
                "PREFIX_CACHE": enabled,
                "PREFIX_CACHE_EXACT": exact,
            })
            targets.append(Target(label, kind, server))
        if not args.mt_skip_llama_cpp:
            llama = peers.start_or_skip(peers.LLAMA_CPP, notes, lambda: peers.start_llama_cpp(
                model.path, threads=args.threads, n_batch=args.n_batch, n_ctx=args.n_ctx, cache=True))
            if llama is not None:
                targets.append(Target(LLAMA_CPP, "llama.cpp", llama))
    except BaseException:
        for target in targets:
            target.server.stop()
        raise
    return targets


async def _scenario(args: argparse.Namespace, targets: list[Target], model_id: str, conversations: int, run_no: int) -> list[Turn]:
    for target in targets:
        target.streamer = ChatStreamer(target.server, target.label, model_id if target.kind != "llama.cpp" else None,
                                       args.mt_max_tokens, "httpx", {})
        await target.streamer.__aenter__()
        target.histories = [[{"role": "system", "content": SYSTEM_PROMPT}] for _ in range(conversations)]
    turns: list[Turn] = []
    try:
        step = 0
        for turn in range(args.mt_turns):
            for conversation in range(conversations):
                shift = step % len(targets)
                for target in targets[shift:] + targets[:shift]:
                    messages = target.histories[conversation] + [{"role": "user", "content": question(conversation, turn)}]
                    sample = await target.streamer.run_messages(messages, conversation)
                    target.histories[conversation] = messages + [{"role": "assistant", "content": sample.text}]
                    turns.append(Turn(target.label, conversations, run_no, conversation, turn, sample))
                step += 1
    finally:
        for target in targets:
            await target.streamer.__aexit__(None, None, None)
    return turns


def _ms(sample: Sample) -> float | None:
    return None if sample.ttft is None else sample.ttft * 1000


def _rows(args: argparse.Namespace, turns: list[Turn], labels: list[str], model_id: str, notes: list[str]) -> list[dict]:
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
                ttfts = [_ms(s) for s in at if _ms(s) is not None]
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


def _verdicts(args: argparse.Namespace, rows: list[dict]) -> list[str]:
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
        lines.append(f"{scenario}: reuse on, turn {n} TTFT / turn 1 TTFT = {_x(on['last_over_first'])}")
        loose = find(REUSE_NOT_EXACT, conversations)
        if loose is not None:
            lines.append(f"{scenario}: reuse on with PREFIX_CACHE_EXACT=false, turn {n} / turn 1 = {_x(loose['last_over_first'])}, "
                         f"turn {n} against exact reuse = {_x(loose.get('last_vs_reuse_on'))}; same replies as reuse off: "
                         f"{'yes' if loose.get('same_replies_as_reuse_off') else 'no'}")
        if off is not None and off.get("last_vs_reuse_on") is not None:
            value = off["last_vs_reuse_on"]
            verdict = "meets" if value >= GOAL_OFF_OVER_ON else "misses"
            lines.append(f"{scenario}: reuse off / reuse on at turn {n} = {_x(value)} ({verdict} the goal >= {GOAL_OFF_OVER_ON:g}x){partial}")
        if peer is not None and peer.get("last_vs_reuse_on") is not None:
            value = peer["last_vs_reuse_on"]
            verdict = "meets" if value > GOAL_PEER_OVER_OURS else "misses"
            lines.append(f"{scenario}: llama-cpp-python / ours at turn {n} = {_x(value)} ({verdict} the goal > {GOAL_PEER_OVER_OURS:g}){partial}")
        cached = ", ".join(f"t{k + 1} {_int(on.get(f'cached_tokens_t{k + 1}'))}" for k in range(n))
        lines.append(f"{scenario}: cached_tokens with reuse on (least over conversations and runs): {cached}; "
                     f"> 0 from turn 2 on: {'yes' if on.get('cached_from_turn2') else 'NO'}")
        if "same_replies_as_reuse_off" in on:
            same = "yes" if on["same_replies_as_reuse_off"] else f"NO (from turn {on['replies_differ_from_turn']}; reported, not a failure)"
            lines.append(f"{scenario}: replies with reuse on equal those with reuse off (greedy): {same}")
    return lines


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _int(value: int | None) -> str:
    return "-" if value is None else str(value)


def _stop_servers_on_sigterm():
    """SIGTERM ends the run through the `finally`s that stop its servers (by default they would outlive it)."""

    def handler(signum, _frame):
        print(f"{NAME}: terminated (signal {signum}); stopping its servers", file=sys.stderr, flush=True)
        raise SystemExit(128 + signum)

    return signal.signal(signal.SIGTERM, handler)


def _measure(args: argparse.Namespace, model, notes: list[str], turns: list[Turn], labels: list[str]) -> None:
    for conversations in args.scenarios:
        for run_no in range(args.runs):
            targets = _start(args, model, notes if not labels else [])  # a skipped peer is noted once
            try:
                labels[:] = labels or [t.label for t in targets]
                turns += asyncio.run(_scenario(args, targets, model.id, conversations, run_no))
            finally:
                for target in targets:
                    target.server.stop()
            print(f"{conversations} conversation(s), run {run_no + 1}/{args.runs} done (load average {load_average()})", flush=True)


def run(args: argparse.Namespace) -> list[dict]:
    _settle(args)
    os.environ.setdefault("GPT4ALL_NO_UPDATE_CHECK", "1")
    from models.registry import ModelRegistry

    model = ModelRegistry(args.models_dir, args.model).default()
    print(
        f"multiturn benchmark: {model.id}, threads={args.threads}, n_batch={args.n_batch}, n_ctx={args.n_ctx}, "
        f"turns={args.mt_turns}, conversations={args.scenarios}, max_tokens={args.mt_max_tokens}, runs={args.runs}, "
        f"cpus={os.cpu_count()}, load average={load_average()}",
        flush=True,
    )
    notes: list[str] = []
    warning = busy_machine_warning()
    if warning:
        print(f"warning: {warning}", flush=True)
        notes.append(warning)

    turns: list[Turn] = []
    labels: list[str] = []
    previous = _stop_servers_on_sigterm()
    try:
        _measure(args, model, notes, turns, labels)
    finally:
        signal.signal(signal.SIGTERM, previous)

    rows = _rows(args, turns, labels, model.id, notes)
    first = next((t.sample.prompt_tokens for t in turns if t.system == REUSE_OFF and t.turn == 0 and t.sample.prompt_tokens), None)
    notes.insert(0, f"system prompt: {len(SYSTEM_PROMPT)} characters; turn 1's whole prompt (system prompt, first question "
                    f"and chat template) is {first} tokens (the server's usage.prompt_tokens)")
    for label in labels:
        if not any(t.sample.prompt_tokens for t in turns if t.system == label):
            notes.append(f"{label} sent no usage in its streams: its prompt tokens and reused tokens are not known")
    if len(args.scenarios) > 1:
        notes.append(f"with reuse on, turn 1 of conversations 2..{max(args.scenarios)} includes the server opening another "
                     "context (one more GPT4All instance), as a new conversation's first turn does")
    if any(r["empty_replies"] for r in rows):
        notes.append("some replies were empty (no text piece, so no TTFT for those turns)")
    notes.append(f"load average at the end: {load_average()} on {os.cpu_count()} cpus")

    n = args.mt_turns
    print()
    print(f"Multi-turn chat ({model.id}, n_batch {args.n_batch}, {args.mt_max_tokens} tokens per reply, greedy): "
          f"TTFT ms per turn, median over conversations and {args.runs} run(s)")
    columns = [("system", "system"), ("conversations", "convs")]
    columns += [(f"ttft_t{k + 1}_ms", f"t{k + 1}", 0) for k in range(n)]
    columns += [("last_over_first", f"t{n}/t1", 2), ("last_vs_reuse_on", f"t{n} / reuse on t{n}", 2),
                ("same_replies_as_reuse_off", "same replies as off")]
    print(format_table(rows, columns))
    print()
    print("Prompt tokens reused / prompt tokens per turn (cached_tokens: the least over conversations and runs)")
    token_rows = [
        {"system": r["system"], "conversations": r["conversations"],
         **{f"t{k + 1}": f"{_int(r.get(f'cached_tokens_t{k + 1}'))}/{_int(r.get(f'prompt_tokens_t{k + 1}'))}" for k in range(n)}}
        for r in rows
    ]
    print(format_table(token_rows, [("system", "system"), ("conversations", "convs")] + [(f"t{k + 1}", f"t{k + 1}") for k in range(n)]))
    print()
    for line in _verdicts(args, rows):
        print(line)
    for note in notes:
        print(f"note: {note}")
    path = save_results(NAME, rows, args, {"model": model.id, "notes": notes,
                                           "questions": [[question(c, k) for k in range(n)] for c in range(max(args.scenarios))]})
    if path is not None:
        print(f"rows written to {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    if args.json:
        print_json_rows(rows)
    return rows


def main(argv: list[str] | argparse.Namespace | None = None) -> list[dict]:
    return benchmark_main(argv, __doc__, add_arguments, run)


if __name__ == "__main__":
    main()
