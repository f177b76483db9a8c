"""Cluster benchmark: 8 concurrent chat clients through nginx, with 1 and with 2 replicas (deploy/cluster.py).

    python bench/cluster.py [--quick] [--cluster-clients 8] [--cluster-requests 4] [--cluster-max-tokens 32]

Each client has its own session (`X-Session-ID`) and sends its requests one after another
(streamed, greedy, `--cluster-max-tokens` tokens). Figures: aggregate completion tokens/s over
the whole run's wall time, p50/p95 time to first token, and each replica's CPU seconds per
completion token (from its process), so that a reader can project to more cores. Three setups:
one replica with as many threads as cores (the single-process default), one replica with one
thread, and two replicas with one thread each (on 2 cores, two replicas of 2 threads would spin
against each other).
Skipped with a note when nginx is not installed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # `python bench/cluster.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bench.common import benchmark_main, format_table, load_average, percentile, process_cpu_seconds, publish
from bench.servers import free_port
from deploy import cluster as deploy

NAME = "cluster"
KEY = "sk-bench-cluster"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(NAME)
    group.add_argument("--cluster-clients", type=int, default=8, help="concurrent clients (default 8)")
    group.add_argument("--cluster-requests", type=int, default=0, help="requests per client (default 4; quick 1)")
    group.add_argument("--cluster-max-tokens", type=int, default=32, help="tokens per reply (default 32)")


async def _client(url: str, session: int, requests: int, max_tokens: int, ttfts: list[float]) -> int:
    tokens = 0
    headers = {"Authorization": f"Bearer {KEY}", "X-Session-ID": f"client-{session}"}
    async with httpx.AsyncClient(timeout=900) as client:
        for turn in range(requests):
            body = {"messages": [{"role": "user", "content": f"Client {session}, question {turn}: describe a city."}],
                    "max_tokens": max_tokens, "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
            sent, first = time.perf_counter(), None
            async with client.stream("POST", url + "/v1/chat/completions", json=body, headers=headers) as response:
                response.raise_for_status()
                async for line in response.aiter_lines():
                    if first is None and '"content":"' in line and '"content":""' not in line:
                        first = time.perf_counter()
                    if '"usage":{' in line:
                        tokens += int(line.split('"completion_tokens":')[1].split(",")[0])
            if first is not None:
                ttfts.append((first - sent) * 1000)
    return tokens


def _measure(replicas: int, threads: int, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as folder:  # logs, pid files, a throw-away data folder
        return _measure_in(Path(folder), replicas, threads, args)


def _measure_in(run_dir: Path, replicas: int, threads: int, args: argparse.Namespace) -> dict:
    cluster = deploy.start(replicas, free_port(), run_dir=run_dir, replica_ports=[free_port() for _ in range(replicas)],
                           env={"API_KEYS": KEY, "N_THREADS": str(threads), "TRAINING_DATA_DIR": str(run_dir / "training")})
    try:
        pids = [process.pid for process in cluster.processes]
        cpu_before = [process_cpu_seconds(pid) or 0.0 for pid in pids]
        ttfts: list[float] = []
        started = time.perf_counter()

        async def everyone() -> list[int]:
            return await asyncio.gather(*(_client(cluster.url, c, args.cluster_requests, args.cluster_max_tokens, ttfts)
                                          for c in range(args.cluster_clients)))

        tokens = sum(asyncio.run(everyone()))
        wall = time.perf_counter() - started
        cpu = [(process_cpu_seconds(pid) or 0.0) - before for pid, before in zip(pids, cpu_before)]
    finally:
        cluster.stop()
    return {"benchmark": NAME, "replicas": replicas, "threads_per_replica": threads, "clients": args.cluster_clients, "completion_tokens": tokens,
            "aggregate_tok_s": tokens / wall, "ttft_p50_ms": percentile(ttfts, 50), "ttft_p95_ms": percentile(ttfts, 95),
            "cpu_s_per_replica": [round(c, 1) for c in cpu], "cpu_ms_per_token": 1000 * sum(cpu) / tokens if tokens else None,
            "wall_s": wall, "cpus": os.cpu_count()}


def run(args: argparse.Namespace) -> list[dict]:
    args.cluster_requests = args.cluster_requests or (1 if args.quick else 4)
    if deploy.nginx_binary_or_none() is None:
        print(f"{NAME}: skipped, nginx is not installed (`make cluster` installs it)")
        return []
    cores = os.cpu_count() or 1
    rows = [_measure(replicas, threads, args) for replicas, threads in ((1, cores), (1, 1), (2, 1))]
    print(f"\nCluster through nginx: {args.cluster_clients} clients x {args.cluster_requests} requests, "
          f"{args.cluster_max_tokens} tokens each, {cores} cores (load average {load_average()})")
    print(format_table(rows, [("replicas", "replicas"), ("threads_per_replica", "threads each"), ("aggregate_tok_s", "tokens/s"), ("ttft_p50_ms", "TTFT p50 ms"),
                              ("ttft_p95_ms", "TTFT p95 ms"), ("cpu_ms_per_token", "CPU ms/token", 1),
                              ("cpu_s_per_replica", "CPU s per replica")]))
    return publish(NAME, rows, args)


def main(argv: list[str] | argparse.Namespace | None = None) -> list[dict]:
    return benchmark_main(argv, __doc__, add_arguments, run)


if __name__ == "__main__":
    main()
