"""The embedding benchmark's labels, rows and goal verdicts (bench/embeddings.py measures, this reports)."""

from __future__ import annotations

import argparse
import os

from bench.common import median, percentile, ratio
from bench.embedding_load import MODEL, Measurement

NAME = "embeddings"
GOAL_ON_VS_OFF = 2.5
GOAL_VS_RAW = 0.75
RAW = "raw encode"
OURS = "server"
INFINITY = "infinity"

COLUMNS = [
    ("system", "system"),
    ("batching", "batching"),
    ("clients", "clients"),
    ("batch", "inputs/call"),
    ("inputs", "inputs"),
    ("inputs_per_s", "inputs/s"),
    ("ratio_vs_raw_batched", "vs raw batched"),
    ("p50_ms", "p50 ms"),
    ("p95_ms", "p95 ms"),
    ("cpu_ms_per_input", "model-side CPU ms/input"),
    ("client_cpu_ms_per_input", "client CPU ms/input"),
    ("errors", "errors"),
]


def label_of(config: tuple) -> str:
    system, mode, clients, batch = config
    if system == RAW:
        return f"{system}, batch {batch}"
    return f"{system}, {clients} clients" if system == INFINITY else f"{system}, batching {mode}, {clients} clients"


def row_of(config: tuple, measurements: list[Measurement], args: argparse.Namespace) -> dict:
    system, mode, clients, batch = config
    inputs = sum(m.inputs for m in measurements)
    latencies = [x * 1000 for m in measurements for x in m.latencies]
    server_cpu = [m.server_cpu for m in measurements if m.server_cpu is not None]
    return {
        "benchmark": NAME,
        "system": system,
        "batching": mode,
        "clients": clients if system != RAW else None,
        "batch": batch,
        "inputs": inputs,
        "inputs_per_s": median(m.throughput for m in measurements),
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "latency_of": "encode call" if system == RAW else "request",
        # CPU per input of whoever runs the model: this process for raw encode, the server otherwise.
        "cpu_ms_per_input": (1000 * (sum(server_cpu) if system != RAW else sum(m.client_cpu for m in measurements))
                             / inputs if inputs and (server_cpu or system == RAW) else None),
        "client_cpu_ms_per_input": 1000 * sum(m.client_cpu for m in measurements) / inputs if inputs and system != RAW else None,
        "errors": sum(len(m.errors) for m in measurements),
        "first_error": next((e for m in measurements for e in m.errors), None),
        "rounds": len(measurements),
        "seconds_per_round": args.embed_seconds,
        "threads": args.embed_threads,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
        "client": args.embed_client if system != RAW else None,
        "model": MODEL,
    }


def ratio_notes(rows: list[dict], args: argparse.Namespace) -> list[str]:
    raw_batched = next(r for r in rows if r["system"] == RAW and r["batch"] == args.embed_raw_batch)
    for row in rows:
        row["ratio_vs_raw_batched"] = ratio(row["inputs_per_s"], raw_batched["inputs_per_s"])
    most = max(args.embed_client_counts)
    on = next(r for r in rows if r["system"] == OURS and r["batching"] == "on" and r["clients"] == most)
    off = next(r for r in rows if r["system"] == OURS and r["batching"] == "off" and r["clients"] == most)
    notes = []
    for what, value, goal in ((f"batching on/off at {most} clients", ratio(on["inputs_per_s"], off["inputs_per_s"]), GOAL_ON_VS_OFF),
                              (f"batching on/raw batched encode at {most} clients", on["ratio_vs_raw_batched"], GOAL_VS_RAW)):
        if value is not None:
            notes.append(f"{what}: {value:.2f} ({'meets' if value >= goal else 'misses'} the goal {goal})")
    on["ratio_on_vs_off"] = ratio(on["inputs_per_s"], off["inputs_per_s"])
    peer = next((r for r in rows if r["system"] == INFINITY and r["clients"] == most), None)
    if peer is not None:
        on["ratio_vs_infinity"] = ratio(on["inputs_per_s"], peer["inputs_per_s"])
        if on["ratio_vs_infinity"] is not None:
            verdict = "above" if on["ratio_vs_infinity"] > 1 else "NOT above"
            notes.append(f"batching on/infinity at {most} clients: {on['ratio_vs_infinity']:.2f} "
                         f"({verdict} infinity, as the goal asks)")
    if any(r["errors"] for r in rows):
        notes.append("some requests failed; see first_error in the result file")
    return notes
