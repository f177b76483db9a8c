"""Generation benchmark: raw GPT4All against the server, in one run on one machine.

    python -m bench.generation [--quick] [--runs N] [--max-tokens N] [--prompts N] [--concurrency N]

Systems measured (each on the same `.gguf`, the same threads, n_batch and context window):
- raw GPT4All: loaded in this process and driven through `models/gpt4all_native.py`, the very
  call the server's engine makes, greedy, with the prompt rendered from the chat template;
- the server: `python server.py` in a subprocess, `/v1/chat/completions` with `stream: true`,
  `temperature: 0`, the same messages and `max_tokens`, `stream_options.include_usage` for the
  exact token count; once with one client, once with `--concurrency` clients at a time;
- llama-cpp-python's OpenAI server (`python -m llama_cpp.server`), the same requests, if it is
  installed in its own venv (`bench/peers.py`; `make bench` installs it).

Figures (per system):
- decode tok/s: (completion tokens - 1) / (last token time - first token time), over requests;
- throughput tok/s: completion tokens / wall time (prompt evaluation and queueing included);
- TTFT: request sent (or, raw, `llmodel_prompt` called) to the first non-empty text piece;
- CPU ms/tok: CPU the system's process used per token (the client's share is
  `client_cpu_ms_per_token` in the JSON rows); it shows spin-waiting when llama.cpp's threads
  outnumber the free cores.
Ratios are against raw GPT4All in the same run; the goal is decode ratio >= 0.95. The paired
ratio is the median over (round, prompt) slots of server/raw rates run back to back.
`--server-threads 2,1` also runs servers with other N_THREADS (e.g. leaving a core to the event
loop); `--server-env KEY=VALUE` passes a setting under test to the server.

Bias control: a warm-up, then each (round, prompt) pair runs every system once, in a rotating
order; nothing else generates meanwhile. After each request a server gets until it is quiet (ours
evaluates the reply again when idle, for its prefix cache): that CPU counts in its CPU ms/tok, and it
never runs while another system is measured. Greedy: raw and server must produce the same tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python bench/generation.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import peers
from bench.common import (
    ROOT,
    benchmark_main,
    busy_machine_warning,
    engine_threads,
    format_table,
    load_average,
    process_cpu_seconds,
    ratio,
    publish,
)
from bench.generation_report import COLUMNS, GOAL, LLAMA_CPP, NAME, OURS, System, paired_ratio, same_output, summary_row
from bench.servers import start_our_server
from bench.generation_requests import (
    PROMPTS,
    RAW,
    SYSTEM_MESSAGE,
    ChatStreamer,
    RawGPT4All,
    Sample,
)



def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(NAME)
    group.add_argument("--max-tokens", type=int, default=None, help="tokens to generate per request (default 128; quick 48)")
    group.add_argument("--prompts", type=int, default=None, help=f"prompts from the fixed set of {len(PROMPTS)} (default 4; quick 2)")
    group.add_argument("--warmup", type=int, default=None, help="unmeasured requests per system first (default 2; quick 1)")
    group.add_argument("--concurrency", type=int, default=4, help="clients at once in the concurrent phase (0 skips it)")
    group.add_argument(
        "--concurrent-runs", type=int, default=None,
        help="rounds of the concurrent phase; each client sends every prompt once per round (default 2; quick 1)",
    )
    group.add_argument(
        "--server-threads", default="",
        help="comma-separated N_THREADS values to run the server with (default: the raw engine's threads); "
        "e.g. `2,1` also shows the server leaving a core to its event loop",
    )
    group.add_argument(
        "--server-env", action="append", default=[], metavar="KEY=VALUE",
        help="extra environment for the server subprocess (repeatable), e.g. a setting under test",
    )
    group.add_argument("--n-ctx", type=int, default=int(os.environ.get("N_CTX", 2048)), help="context window (default N_CTX or 2048)")
    group.add_argument("--n-batch", type=int, default=int(os.environ.get("N_BATCH", 32)), help="prompt batch (default N_BATCH or 32, the server's)")
    group.add_argument("--model", default=os.environ.get("MODEL_NAME", ""), help="`.gguf` in MODELS_DIR (default: the server's default model)")
    group.add_argument("--models-dir", type=Path, default=Path(os.environ.get("MODELS_DIR", ROOT / "models")))
    group.add_argument("--client", choices=("httpx", "openai"), default="httpx", help="HTTP client for the servers (httpx: least client overhead)")
    group.add_argument("--skip-llama-cpp", action="store_true", help="do not measure llama-cpp-python's server even if installed")


def _settle(args: argparse.Namespace) -> None:
    quick = args.quick
    args.runs = args.runs or (1 if quick else 5)
    args.max_tokens = args.max_tokens or (48 if quick else 128)
    args.prompts = min(len(PROMPTS), args.prompts or (2 if quick else 4))
    args.warmup = args.warmup if args.warmup is not None else (1 if quick else 2)
    args.concurrent_runs = args.concurrent_runs or (1 if quick else 2)
    args.threads = engine_threads(args)
    wanted = [int(t) for t in str(args.server_threads).split(",") if t.strip()]
    args.server_thread_counts = list(dict.fromkeys(wanted or [args.threads]))
    bad = [item for item in args.server_env if "=" not in item]
    if bad:
        raise SystemExit(f"--server-env wants KEY=VALUE, not {bad[0]!r}")
    args.server_env_vars = dict(item.split("=", 1) for item in args.server_env)


# ---- servers ---------------------------------------------------------------------------------


# ---- the run ---------------------------------------------------------------------------------


async def _one(system: System, raw: RawGPT4All, rendered: list[str], index: int, max_tokens: int) -> Sample:
    if system.kind == "raw":
        cpu = time.process_time()
        sample = raw.generate(index, rendered[index], max_tokens)  # blocks the loop: nothing else runs
        sample.cpu_s = time.process_time() - cpu
        return sample
    server_cpu, cpu = process_cpu_seconds(system.server.process.pid), time.process_time()
    sample = await system.streamer.run(index)
    sample.client_cpu_s = time.process_time() - cpu
    await system.server.quiet()  # its work after the reply (ours: the prefix cache's) counts, and ends before the next system
    after = process_cpu_seconds(system.server.process.pid)
    if server_cpu is not None and after is not None:
        sample.cpu_s = after - server_cpu
    return sample


async def _measure(args: argparse.Namespace, raw: RawGPT4All, rendered: list[str], systems: list[System]) -> list[Sample]:
    print(f"warm-up: {args.warmup} request(s) per system", flush=True)
    for i in range(args.warmup):
        for system in systems:
            await _one(system, raw, rendered, i % args.prompts, args.max_tokens)

    samples: list[Sample] = []
    pair = 0
    for round_no in range(args.runs):
        for index in range(args.prompts):
            shift = pair % len(systems)
            for system in systems[shift:] + systems[:shift]:
                sample = await _one(system, raw, rendered, index, args.max_tokens)
                sample.system, sample.pair = system.label, pair
                samples.append(sample)
            pair += 1
        print(f"round {round_no + 1}/{args.runs} done (load average {load_average()})", flush=True)
    return samples


async def _measure_concurrent(args: argparse.Namespace, system: System) -> tuple[list[Sample], float, float | None, float]:
    async def client(k: int) -> list[Sample]:
        out = []
        for _ in range(args.concurrent_runs):
            for j in range(args.prompts):
                sample = await system.streamer.run((j + k) % args.prompts)
                sample.system = system.label
                out.append(sample)
        return out

    pid = system.server.process.pid
    server_cpu, cpu = process_cpu_seconds(pid), time.process_time()
    started = time.perf_counter()
    results = await asyncio.gather(*(client(k) for k in range(args.concurrency)))
    wall = time.perf_counter() - started
    client_cpu = time.process_time() - cpu
    after = process_cpu_seconds(pid)
    used = after - server_cpu if server_cpu is not None and after is not None else None
    return [s for per_client in results for s in per_client], wall, used, client_cpu


def run(args: argparse.Namespace) -> list[dict]:
    _settle(args)
    os.environ.setdefault("GPT4ALL_NO_UPDATE_CHECK", "1")
    from models.registry import ModelRegistry

    registry = ModelRegistry(args.models_dir, args.model)
    model = registry.default()
    chat_format = registry.chat_format(model)
    rendered = [chat_format.render([{"role": "system", "content": SYSTEM_MESSAGE}, {"role": "user", "content": p}]) for p in PROMPTS]
    print(
        f"generation benchmark: {model.id}, threads={args.threads} (server: {args.server_thread_counts}), n_batch={args.n_batch}, "
        f"n_ctx={args.n_ctx}, max_tokens={args.max_tokens}, prompts={args.prompts}, runs={args.runs}, "
        f"concurrency={args.concurrency}, client={args.client}, cpus={os.cpu_count()}, load average={load_average()}",
        flush=True,
    )
    notes: list[str] = []
    warning = busy_machine_warning()
    if warning:
        print(f"warning: {warning}", flush=True)
        notes.append(warning)

    systems = [System(RAW, "raw", args.threads)]
    raw: RawGPT4All | None = None
    try:
        for threads in args.server_thread_counts:
            label = OURS if threads == args.threads else f"{OURS} ({threads} threads)"
            server = start_our_server(
                {
                    "N_THREADS": str(threads),
                    "N_BATCH": str(args.n_batch),
                    "N_CTX": str(args.n_ctx),
                    "MODELS_DIR": str(Path(args.models_dir).resolve()),
                    "MODEL_NAME": model.id,
                    "MAX_QUEUE": str(max(32, args.concurrency * 2)),
                    **args.server_env_vars,
                }
            )
            systems.append(System(label, "ours", threads, server=server))
        if not args.skip_llama_cpp:
            llama = peers.start_or_skip(peers.LLAMA_CPP, notes, lambda: peers.start_llama_cpp(
                model.path, threads=args.threads, n_batch=args.n_batch, n_ctx=args.n_ctx))
            if llama is not None:
                systems.append(System(LLAMA_CPP, "llama.cpp", args.threads, server=llama))
        raw = RawGPT4All(model.path, n_threads=args.threads, n_ctx=args.n_ctx, n_batch=args.n_batch)
        rows = asyncio.run(_run(args, raw, rendered, model.id, systems, notes))
    finally:
        for system in systems:
            if system.server is not None:
                system.server.stop()
        if raw is not None:
            raw.close()

    print()
    print(f"Generation ({model.id}, n_batch {args.n_batch}, max_tokens {args.max_tokens}, greedy; "
          f"ratios against raw GPT4All in the same run; goal: server decode ratio >= {GOAL})")
    print(format_table(rows, COLUMNS))
    for note in notes:
        print(f"note: {note}")
    return publish(NAME, rows, args, {"model": model.id, "notes": notes})


async def _run(args, raw: RawGPT4All, rendered: list[str], model_id: str, systems: list[System], notes: list[str]) -> list[dict]:
    for system in systems:
        if system.server is not None:
            model = model_id if system.kind == "ours" else None
            system.streamer = ChatStreamer(system.server, system.label, model, args.max_tokens, args.client, {})
            await system.streamer.__aenter__()
    concurrent: dict[str, tuple] = {}
    try:
        samples = await _measure(args, raw, rendered, systems)
        if args.concurrency > 0:
            for system in systems[1:]:
                print(f"concurrent phase: {system.label}, {args.concurrency} clients", flush=True)
                concurrent[system.label] = await _measure_concurrent(args, system)
    finally:
        for system in systems:
            if system.streamer is not None:
                await system.streamer.__aexit__(None, None, None)

    by_label = {system.label: [s for s in samples if s.system == system.label] for system in systems}
    raw_samples = by_label[RAW]
    base = summary_row(systems[0], 1, raw_samples)
    rows = [base]
    for system in systems[1:]:
        row = summary_row(system, 1, by_label[system.label])
        row["paired_decode_ratio"] = paired_ratio(raw_samples, by_label[system.label])
        rows.append(row)
        if system.label in concurrent:
            c_samples, wall, cpu_s, client_cpu_s = concurrent[system.label]
            rows.append(summary_row(system, args.concurrency, c_samples, wall=wall, cpu_s=cpu_s, client_cpu_s=client_cpu_s))
        same, why = same_output(raw_samples, by_label[system.label] + (concurrent.get(system.label) or ([],))[0])
        for r in rows:
            if r["system"] == system.label:
                r["same_output_as_raw"] = same
        if not same:
            notes.append(f"{system.label} did not reproduce raw GPT4All's greedy output ({why})")
    for row in rows:
        row["decode_ratio"] = ratio(row["decode_tok_s"], base["decode_tok_s"])
        row["throughput_ratio"] = ratio(row["throughput_tok_s"], base["throughput_tok_s"])
        row.update(model=model_id, max_tokens=args.max_tokens, n_batch=args.n_batch, n_ctx=args.n_ctx, cpus=os.cpu_count())

    for row in rows[1:]:
        if row["system"].startswith(OURS) and row["clients"] == 1 and row["decode_ratio"] is not None:
            verdict = "meets" if row["decode_ratio"] >= GOAL else "misses"
            paired = row.get("paired_decode_ratio")
            notes.append(
                f"{row['system']}: decode ratio {row['decode_ratio']:.3f} (paired median "
                f"{paired:.3f}) {verdict} the goal {GOAL}" if paired is not None else
                f"{row['system']}: decode ratio {row['decode_ratio']:.3f} {verdict} the goal {GOAL}"
            )
    if any(r["min_tokens"] < args.max_tokens for r in rows):
        notes.append("some requests ended (end of text) before max_tokens; rates use the tokens actually generated")
    notes.append(f"load average at the end: {load_average()} on {os.cpu_count()} cpus")
    return rows


def main(argv: list[str] | argparse.Namespace | None = None) -> list[dict]:
    return benchmark_main(argv, __doc__, add_arguments, run)


if __name__ == "__main__":
    main()
