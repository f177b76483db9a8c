"""The generation benchmark's systems and rows: what is measured of each, and how it compares with raw GPT4All."""

from __future__ import annotations

from dataclasses import dataclass

from bench.common import percentile
from bench.generation_requests import ChatStreamer, Sample
from bench.servers import ServerProcess

NAME = "generation"
OURS = "server"
LLAMA_CPP = "llama-cpp-python server"
GOAL = 0.95  # decode rate through the server / raw GPT4All's


@dataclass
class System:
    label: str
    kind: str  # "raw", "ours", "llama.cpp"
    threads: int
    streamer: ChatStreamer | None = None
    server: ServerProcess | None = None


def summary_row(system: System, clients: int, samples: list[Sample], *, wall: float | None = None,
             cpu_s: float | None = None, client_cpu_s: float | None = None) -> dict:
    tokens = sum(s.completion_tokens for s in samples)
    decode_tokens = sum(max(0, s.completion_tokens - 1) for s in samples)
    decode_time = sum(s.decode_time for s in samples)
    ttfts = [s.ttft * 1000 for s in samples if s.ttft is not None]
    if cpu_s is None and samples and all(s.cpu_s is not None for s in samples):
        cpu_s = sum(s.cpu_s for s in samples)
    if client_cpu_s is None and samples and all(s.client_cpu_s is not None for s in samples):
        client_cpu_s = sum(s.client_cpu_s for s in samples)
    row = {
        "benchmark": NAME,
        "system": system.label,
        "threads": system.threads,
        "clients": clients,
        "requests": len(samples),
        "completion_tokens": tokens,
        "min_tokens": min((s.completion_tokens for s in samples), default=0),
        "decode_tok_s": decode_tokens / decode_time if decode_time > 0 else None,
        "throughput_tok_s": tokens / (wall if wall is not None else sum(s.wall for s in samples)) if tokens else None,
        "ttft_p50_ms": percentile(ttfts, 50),
        "ttft_p95_ms": percentile(ttfts, 95),
        "cpu_ms_per_token": cpu_s * 1000 / tokens if cpu_s is not None and tokens else None,
        "client_cpu_ms_per_token": client_cpu_s * 1000 / tokens if client_cpu_s is not None and tokens else None,
        "exact_token_counts": all(s.exact_count for s in samples),
    }
    per_request = [(s.completion_tokens - 1) / s.decode_time for s in samples if s.decode_time > 0]
    if per_request:
        row["decode_tok_s_p50_per_request"] = percentile(per_request, 50)
        row["decode_tok_s_min_per_request"] = min(per_request)
        row["decode_tok_s_max_per_request"] = max(per_request)
    server_ttft = [s.server_ttft_ms for s in samples if s.server_ttft_ms is not None]
    if server_ttft:
        row["server_side_ttft_p50_ms"] = percentile(server_ttft, 50)
    return row


def paired_ratio(raw_samples: list[Sample], samples: list[Sample]) -> float | None:
    """Median over (round, prompt) pairs of this system's decode rate / raw's, run back to back."""
    raw_rate = {s.pair: (s.completion_tokens - 1) / s.decode_time for s in raw_samples if s.decode_time > 0}
    ratios = [
        ((s.completion_tokens - 1) / s.decode_time) / raw_rate[s.pair]
        for s in samples
        if s.decode_time > 0 and s.pair in raw_rate and raw_rate[s.pair] > 0
    ]
    return percentile(ratios, 50) if ratios else None


def same_output(raw_samples: list[Sample], other: list[Sample]) -> tuple[bool, str]:
    """Greedy decoding: every request for a prompt should produce raw's tokens and text."""
    reference = {s.prompt_index: s for s in raw_samples}
    for s in other:
        ref = reference.get(s.prompt_index)
        if ref is None:
            continue
        if s.completion_tokens != ref.completion_tokens or s.text != ref.text:
            return False, (
                f"prompt {s.prompt_index}: {s.system} gave {s.completion_tokens} tokens {s.text[:60]!r}..., "
                f"raw gave {ref.completion_tokens} tokens {ref.text[:60]!r}..."
            )
    return True, ""


COLUMNS = [
    ("system", "system"),
    ("threads", "threads"),
    ("clients", "clients"),
    ("requests", "requests"),
    ("completion_tokens", "tokens"),
    ("decode_tok_s", "decode tok/s"),
    ("decode_ratio", "decode ratio", 3),
    ("paired_decode_ratio", "paired ratio", 3),
    ("throughput_tok_s", "throughput tok/s"),
    ("throughput_ratio", "throughput ratio", 3),
    ("ttft_p50_ms", "TTFT p50 ms"),
    ("ttft_p95_ms", "TTFT p95 ms"),
    ("cpu_ms_per_token", "CPU ms/tok", 2),
]
