"""Multi-turn chat benchmark: time to first token per turn when each turn resends the conversation.

    python bench/multiturn.py [--quick] [--runs N] [--mt-turns N] [--mt-conversations N] [--mt-max-tokens N]
                              [--mt-scenarios single,round-robin,warm]

Every turn sends the whole conversation so far: a system prompt of about 600 tokens, then each
earlier question with the reply the server actually gave, then the next question. Streamed
`/v1/chat/completions`, greedy (`temperature: 0`), `--mt-max-tokens` (default 24) per reply, so a
turn is mostly prompt evaluation. Three scenarios, each on freshly started servers
(`PREFIX_CACHE_SLOTS` 4, the default):
- `single`: one conversation of `--mt-turns` turns (default 8);
- `round-robin`: `--mt-conversations` conversations (default 4) taking turns (conversation 1
  turn 1, conversation 2 turn 1, ..., conversation 1 turn 2, ...): the same system prompt,
  different questions. Conversation 1 asks the questions of the single-conversation scenario;
- `warm`: a server that has already served other users (issue 17). Round 1, not measured: 4
  conversations, each with its own system prompt (they share only the chat template's first
  tokens), 2 turns each round-robin, which takes every context. Round 2, measured, on the same
  server: 4 new conversations, again each with its own system prompt, `--mt-turns` turns
  round-robin. Each must take over a context that round 1 left, and then keep it.

Systems, all in the same run, on the same `.gguf`, threads, n_batch and context window:
- the server with its prefix cache (`PREFIX_CACHE=true`): a turn evaluates only what follows the
  part of the prompt its cached context already holds (`usage.prompt_tokens_details.cached_tokens`
  says how many prompt tokens were reused; it must be > 0 from turn 2 on);
- the server without it (`PREFIX_CACHE=false`): every turn evaluates the whole prompt;
- the server with `PREFIX_CACHE_EXACT=false` (not in `warm`): it also keeps the earlier reply and
  partial batches (llama.cpp's trade: faster turns, greedy replies that may differ from a full
  evaluation's);
- llama-cpp-python's OpenAI server with its prompt cache on (`--cache True`), if installed in its
  venv (`bench/peers.py`; `make bench` installs it), else skipped with a note.

Figures: TTFT per turn (request sent to the first non-empty text piece; the median over the
conversations and `--runs`), `cached_tokens` per turn, and the ratios the prefix cache's goals are
about: last turn / turn 1 with reuse on, the goal (<= 0.1 at turn 8: a turn's cost should not grow
with the history) judged against a turn 1 evaluated in full (reuse off's turn 1: in `round-robin`,
the turn 1 of conversations 2..N reuses the shared system prompt, so its own median is cheap too),
reuse off / reuse on at the last turn (goal >= 5x at turn 8), llama-cpp-python / ours at the last
turn (goal > 1), and whether every turn from turn 2 on kept at least the previous turn's prompt. Greedy decoding makes the replies comparable: whether reuse on gave the same replies
as reuse off is reported (not asserted).

After each reply the benchmark waits until that server is quiet: ours evaluates the last reply
again once idle for 0.25 s, so that the next turn keeps it exactly (see the README), as it does
while a user reads the reply. Waiting for it means it never slows the next system measured. (A
conversation whose turns come back to back, with no idle moment at all, evaluates the earlier reply
again in its next turn instead.)

Bias control: the systems take each step (one conversation's turn) in an order that rotates from
step to step, so drift in machine load hits them alike; only one request runs at a time. There is
no warm-up request: it would take one of the server's cached contexts and change which
conversations keep theirs, so in the cold scenarios turn 1 is each fresh server's first prompt
(in `round-robin`, turn 1 of conversations 2..N opens another llama.cpp context and copies the
shared system prompt into it from conversation 1's, as a user's first turn does); `warm` is the
case without free contexts.
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
from typing import Callable

if __package__ in (None, ""):  # `python bench/multiturn.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import peers
from bench.common import ROOT, benchmark_main, busy_machine_warning, engine_threads, load_average, publish
from bench.generation_requests import ChatStreamer, Sample
from bench.multiturn_conversations import SYSTEM_PROMPT, question, system_prompt
from bench.multiturn_report import (
    GOAL_TURN,
    LLAMA_CPP,
    NAME,
    REUSE_NOT_EXACT,
    REUSE_OFF,
    REUSE_ON,
    SCENARIO_NAMES,
    SLOTS,
    WARM,
    WARM_ROUND1_TURNS,
    Scenario,
    Turn,
    print_report,
    rows_of,
    scenarios_of,
)
from bench.servers import ServerProcess, start_our_server


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(NAME)
    group.add_argument("--mt-turns", type=int, default=None, help="turns per conversation (default 8; quick 3)")
    group.add_argument("--mt-conversations", type=int, default=4,
                       help="conversations taking turns in the round-robin scenario (default 4; 1 or 0 skips it)")
    group.add_argument("--mt-max-tokens", type=int, default=24, help="tokens per reply (default 24)")
    group.add_argument("--mt-scenarios", default=",".join(SCENARIO_NAMES),
                       help=f"comma-separated subset of: {', '.join(SCENARIO_NAMES)} (default all)")
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
    args.scenarios = [s.name for s in scenarios_of(args)]  # validated here; names, so the options stay JSON


# ---- the run ---------------------------------------------------------------------------------


@dataclass
class Target:
    label: str
    kind: str  # "on", "off", "llama.cpp" (what the streamer expects)
    server: ServerProcess
    streamer: ChatStreamer | None = None
    histories: list[list[dict]] = field(default_factory=list)


OURS = ((REUSE_ON, "true", "true"), (REUSE_OFF, "false", "true"), (REUSE_NOT_EXACT, "true", "false"))


def _start(args: argparse.Namespace, model, notes: list[str], scenario: Scenario) -> list[Target]:
    targets: list[Target] = []
    try:
        for label, enabled, exact in OURS:
            if label not in scenario.systems:
                continue
            server = start_our_server({
                "N_THREADS": str(args.threads),
                "N_BATCH": str(args.n_batch),
                "N_CTX": str(args.n_ctx),
                "MODELS_DIR": str(Path(args.models_dir).resolve()),
                "MODEL_NAME": model.id,
                "PREFIX_CACHE": enabled,
                "PREFIX_CACHE_EXACT": exact,
                "PREFIX_CACHE_SLOTS": str(SLOTS),
            })
            targets.append(Target(label, "on" if enabled == "true" else "off", server))
        if LLAMA_CPP in scenario.systems and not args.mt_skip_llama_cpp:
            llama = peers.start_or_skip(peers.LLAMA_CPP, notes, lambda: peers.start_llama_cpp(
                model.path, threads=args.threads, n_batch=args.n_batch, n_ctx=args.n_ctx, cache=True))
            if llama is not None:
                targets.append(Target(LLAMA_CPP, "llama.cpp", llama))
    except BaseException:
        for target in targets:
            target.server.stop()
        raise
    return targets


Record = Callable[[Target, int, int, Sample], None]


async def _round(targets: list[Target], prompts: list[str], turns: int, topics: int, record: Record | None) -> None:
    """Conversation k (system prompt `prompts[k]`, questions on topic `topics + k`) takes `turns` turns round-robin."""
    for target in targets:
        target.histories = [[{"role": "system", "content": prompt}] for prompt in prompts]
    step = 0
    for turn in range(turns):
        for conversation in range(len(prompts)):
            shift = step % len(targets)
            for target in targets[shift:] + targets[:shift]:
                messages = target.histories[conversation] + [{"role": "user", "content": question(topics + conversation, turn)}]
                sample = await target.streamer.run_messages(messages, conversation)
                target.histories[conversation] = messages + [{"role": "assistant", "content": sample.text}]
                if record is not None:
                    record(target, conversation, turn, sample)
                await target.server.quiet()
            step += 1


async def _scenario(args: argparse.Namespace, targets: list[Target], model_id: str, scenario: Scenario, run_no: int) -> list[Turn]:
    for target in targets:
        target.streamer = ChatStreamer(target.server, target.label, model_id if target.kind != "llama.cpp" else None,
                                       args.mt_max_tokens, "httpx", {})
        await target.streamer.__aenter__()
    turns: list[Turn] = []

    def record(target: Target, conversation: int, turn: int, sample: Sample) -> None:
        turns.append(Turn(target.label, scenario.name, run_no, conversation, turn, sample))

    try:
        if scenario.name == WARM:
            # round 1, not measured: every context taken by a conversation of its own (other topics, other prompts)
            await _round(targets, [system_prompt(k) for k in range(SLOTS)], WARM_ROUND1_TURNS, SLOTS, None)
            prompts = [system_prompt(SLOTS + k) for k in range(scenario.conversations)]
        else:
            prompts = [SYSTEM_PROMPT] * scenario.conversations
        await _round(targets, prompts, args.mt_turns, 0, record)
    finally:
        for target in targets:
            await target.streamer.__aexit__(None, None, None)
    return turns


def _stop_servers_on_sigterm():
    """SIGTERM ends the run through the `finally`s that stop its servers (by default they would outlive it)."""

    def handler(signum, _frame):
        print(f"{NAME}: terminated (signal {signum}); stopping its servers", file=sys.stderr, flush=True)
        raise SystemExit(128 + signum)

    return signal.signal(signal.SIGTERM, handler)


def _measure(args: argparse.Namespace, model, notes: list[str], turns: list[Turn], labels: list[str]) -> None:
    for scenario in scenarios_of(args):
        for run_no in range(args.runs):
            targets = _start(args, model, notes if not labels else [], scenario)  # a skipped peer is noted once
            try:
                labels += [t.label for t in targets if t.label not in labels]
                turns += asyncio.run(_scenario(args, targets, model.id, scenario, run_no))
            finally:
                for target in targets:
                    target.server.stop()
            print(f"{scenario.title}, run {run_no + 1}/{args.runs} done (load average {load_average()})", flush=True)


def run(args: argparse.Namespace) -> list[dict]:
    _settle(args)
    os.environ.setdefault("GPT4ALL_NO_UPDATE_CHECK", "1")
    from models.registry import ModelRegistry

    model = ModelRegistry(args.models_dir, args.model).default()
    print(
        f"multiturn benchmark: {model.id}, threads={args.threads}, n_batch={args.n_batch}, n_ctx={args.n_ctx}, "
        f"turns={args.mt_turns}, scenarios={args.scenarios}, max_tokens={args.mt_max_tokens}, runs={args.runs}, "
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

    rows = rows_of(args, turns, labels, model.id, notes)
    first = next((t.sample.prompt_tokens for t in turns if t.system == REUSE_OFF and t.turn == 0 and t.sample.prompt_tokens), None)
    notes.insert(0, f"system prompt: {len(SYSTEM_PROMPT)} characters; turn 1's whole prompt (system prompt, first question "
                    f"and chat template) is {first} tokens (the server's usage.prompt_tokens)")
    for label in labels:
        if not any(t.sample.prompt_tokens for t in turns if t.system == label):
            notes.append(f"{label} sent no usage in its streams: its prompt tokens and reused tokens are not known")
    if WARM in args.scenarios:
        notes.append(f"warm server: round 1 ({SLOTS} conversations x {WARM_ROUND1_TURNS} turns, each its own system prompt) "
                     f"is not measured; {REUSE_NOT_EXACT} is not run there")
    if any(r["empty_replies"] for r in rows):
        notes.append("some replies were empty (no text piece, so no TTFT for those turns)")
    notes.append(f"load average at the end: {load_average()} on {os.cpu_count()} cpus")
    print_report(args, rows, notes, model.id)
    return publish(NAME, rows, args, {"model": model.id, "notes": notes,
                                      "questions": [[question(c, k) for k in range(args.mt_turns)]
                                                    for c in range(max(s.conversations for s in scenarios_of(args)))]})


def main(argv: list[str] | argparse.Namespace | None = None) -> list[dict]:
    return benchmark_main(argv, __doc__, add_arguments, run)


if __name__ == "__main__":
    main()
