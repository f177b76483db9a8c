"""The embedding benchmark's labels, rows and goal verdicts (bench/embeddings.py measures, this reports).

A configuration is (system, dtype, batching, clients, inputs per call). Every row's throughput is
compared with raw float32 `encode` in batches (the baseline) and with raw `encode` in batches in
its own dtype, both measured in the same run.
"""

from __future__ import annotations

import argparse
import os

from bench.common import median, percentile, ratio
from bench.embedding_load import MODEL, Measurement

NAME = "embeddings"
GOAL_ON_VS_OFF = 2.5  # float32, batching on / off, at the most clients
GOAL_VS_RAW = 0.75  # float32 server / raw float32 batched
GOAL_BF16_VS_RAW_FP32 = 1.5  # bfloat16 server / raw float32 batched (on a CPU with native bfloat16)
GOAL_BF16_VS_RAW_BF16 = 0.85  # bfloat16 server / raw bfloat16 batched
RAW = "raw encode"
OURS = "server"
INFINITY = "infinity"
FP32, BF16 = "float32", "bfloat16"

COLUMNS = [
    ("system", "system"),
    ("dtype", "dtype"),
    ("batching", "batching"),
    ("clients", "clients"),
    ("batch", "inputs/call"),
    ("inputs", "inputs"),
    ("inputs_per_s", "inputs/s"),
    ("ratio_vs_raw_batched", "vs raw fp32 batched", 2),
    ("ratio_vs_raw_same_dtype", "vs raw batched, same dtype", 2),
    ("p50_ms", "p50 ms"),
    ("p95_ms", "p95 ms"),
    ("cpu_ms_per_input", "model-side CPU ms/input"),
    ("client_cpu_ms_per_input", "client CPU ms/input"),
    ("errors", "errors"),
]


def label_of(config: tuple) -> str:
    system, dtype, mode, clients, batch = config
    if system == RAW:
        return f"{system} {dtype}, batch {batch}"
    if system == INFINITY:
        return f"{system}, {clients} clients"
    return f"{system} {dtype}, batching {mode}, {clients} clients"


def row_of(config: tuple, measurements: list[Measurement], args: argparse.Namespace) -> dict:
    system, dtype, mode, clients, batch = config
    inputs = sum(m.inputs for m in measurements)
    latencies = [x * 1000 for m in measurements for x in m.latencies]
    server_cpu = [m.server_cpu for m in measurements if m.server_cpu is not None]
    return {
        "benchmark": NAME,
        "system": system,
        "dtype": dtype,
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


def _find(rows: list[dict], **match) -> dict | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in match.items())), None)


def _verdict(what: str, value: float | None, goal: float) -> list[str]:
    return [] if value is None else [f"{what}: {value:.2f} ({'meets' if value >= goal else 'misses'} the goal {goal})"]


def ratio_notes(rows: list[dict], args: argparse.Namespace) -> list[str]:
    """Fill in each row's ratios; return the verdicts against the goals at the most clients."""
    raw = {dtype: _find(rows, system=RAW, dtype=dtype, batch=args.embed_raw_batch) for dtype in (FP32, BF16)}
    for row in rows:
        row["ratio_vs_raw_batched"] = ratio(row["inputs_per_s"], raw[FP32]["inputs_per_s"])
        same = raw.get(row["dtype"])
        row["ratio_vs_raw_same_dtype"] = ratio(row["inputs_per_s"], same["inputs_per_s"]) if same else None
    most = max(args.embed_client_counts)
    on = _find(rows, system=OURS, dtype=FP32, batching="on", clients=most)
    off = _find(rows, system=OURS, dtype=FP32, batching="off", clients=most)
    notes = []
    if on is not None and off is not None:
        on["ratio_on_vs_off"] = ratio(on["inputs_per_s"], off["inputs_per_s"])
        notes += _verdict(f"float32, batching on/off at {most} clients", on["ratio_on_vs_off"], GOAL_ON_VS_OFF)
    if on is not None:
        notes += _verdict(f"float32 server/raw float32 batched encode at {most} clients", on["ratio_vs_raw_batched"],
                          GOAL_VS_RAW)
    bf16 = _find(rows, system=OURS, dtype=BF16, batching="on", clients=most)
    if bf16 is not None:
        notes += _verdict(f"bfloat16 server/raw float32 batched encode at {most} clients", bf16["ratio_vs_raw_batched"],
                          GOAL_BF16_VS_RAW_FP32)
        notes += _verdict(f"bfloat16 server/raw bfloat16 batched encode at {most} clients",
                          bf16["ratio_vs_raw_same_dtype"], GOAL_BF16_VS_RAW_BF16)
    peer = _find(rows, system=INFINITY, clients=most)
    for ours in (r for r in (on, bf16) if r is not None and peer is not None):
        ours["ratio_vs_infinity"] = ratio(ours["inputs_per_s"], peer["inputs_per_s"])
        if ours["ratio_vs_infinity"] is not None:
            notes.append(f"{ours['dtype']} server/infinity at {most} clients: {ours['ratio_vs_infinity']:.2f} "
                         f"({'above' if ours['ratio_vs_infinity'] > 1 else 'NOT above'} infinity)")
    if any(r["errors"] for r in rows):
        notes.append("some requests failed; see first_error in the result file")
    return notes
