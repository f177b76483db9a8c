"""The JSON document of `GET /metrics`: totals read from the Prometheus registry, plus recent p50/p95.

Counters come from the same prometheus-client objects that the Prometheus text shows, so the two
formats never disagree; percentiles and per-second rates come from the recent windows
(`Metrics.window_s` seconds for percentiles, the last `RATE_WINDOW_S` seconds for rates).
Times are seconds, sizes bytes. The embedding batch-size histogram maps each bucket's upper
bound to the number of batches in that bucket alone (not cumulative, unlike Prometheus).
"""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import datetime, timezone
from typing import Any

from metrics.registry import Metrics
from scheduler.stats import QueueStats
from metrics.window import summary

RATE_WINDOW_S = 60.0


def _samples(metric: Any, suffix: str = "_total") -> list[tuple[dict[str, str], float]]:
    """(labels, value) of a counter's or histogram's samples whose name ends with `suffix`."""
    return [(s.labels, s.value) for family in metric.collect() for s in family.samples if s.name.endswith(suffix)]


def _count(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def build_snapshot(metrics: Metrics, *, default_model: str | None = None, version: str | None = None,
                   replica: str | None = None) -> dict[str, Any]:
    now = time.time()
    process = metrics.process.sample()
    live = metrics.live_stats()
    return {
        "object": "metrics",
        "version": version,
        "replica": replica,
        "server_time": datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "server_time_unix": round(now, 3),
        "uptime_s": round(now - metrics.started_at, 1),
        "default_model": default_model,
        "window_s": metrics.window_s,
        "requests": _requests(metrics),
        "tokens": _tokens(metrics),
        "models": _models(metrics, live.get("generation")),
        "process": process.as_dict(),
        "schedulers": {
            name: {**stats.counts(), **(_generation(metrics) if name == "generation" else _embedding(metrics, stats))}
            for name, stats in live.items()
        },
        "training": _training(metrics),
    }


def _requests(m: Metrics) -> dict[str, Any]:
    by_endpoint: dict[str, dict[str, Any]] = {}
    for labels, value in _samples(m.requests):
        key = f"{labels['method']} {labels['endpoint']}"
        entry = by_endpoint.setdefault(key, {"total": 0, "by_status": {}})
        entry["total"] += _count(value)
        entry["by_status"][labels["status"]] = _count(value)
    sums = {(l["method"], l["endpoint"]): v for l, v in _samples(m.request_seconds, "_sum")}
    counts = {(l["method"], l["endpoint"]): v for l, v in _samples(m.request_seconds, "_count")}
    for (method, endpoint), n in counts.items():
        if n and f"{method} {endpoint}" in by_endpoint:
            by_endpoint[f"{method} {endpoint}"]["mean_latency_s"] = round(sums[(method, endpoint)] / n, 4)
    by_status: dict[str, int] = defaultdict(int)
    for entry in by_endpoint.values():
        for status, n in entry["by_status"].items():
            by_status[status] += n
    return {"total": sum(e["total"] for e in by_endpoint.values()), "by_status": dict(by_status),
            "by_endpoint": dict(sorted(by_endpoint.items()))}


def _tokens(m: Metrics) -> dict[str, Any]:
    """Prompt tokens split into cached (reused) and evaluated; the hit ratio is cached / prompt."""
    by_model: dict[str, dict[str, Any]] = defaultdict(lambda: {"prompt": 0, "prompt_cached": 0, "completion": 0})
    for kind, counter in (("prompt", m.prompt_tokens), ("prompt_cached", m.cached_prompt_tokens), ("completion", m.completion_tokens)):
        for labels, value in _samples(counter):
            by_model[labels["model"]][kind] = _count(value)
    totals = {kind: sum(v[kind] for v in by_model.values()) for kind in ("prompt", "prompt_cached", "completion")}
    for entry in [*by_model.values(), totals]:
        entry["prompt_evaluated"] = entry["prompt"] - entry["prompt_cached"]
        entry["cache_hit_ratio"] = round(entry["prompt_cached"] / entry["prompt"], 4) if entry["prompt"] else 0.0
    return {**totals, "by_model": dict(by_model)}


def _models(m: Metrics, generation: QueueStats | None) -> dict[str, dict[str, Any]]:
    models: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"state": "unloaded", "generations": 0, "by_outcome": {}, "prompt_tokens": 0, "completion_tokens": 0}
    )
    for name, state in (generation.models if generation is not None else {}).items():
        models[name]["state"] = state
    for labels, value in _samples(m.generations):
        entry = models[labels["model"]]
        entry["generations"] += _count(value)
        entry["by_outcome"][labels["outcome"]] = entry["by_outcome"].get(labels["outcome"], 0) + _count(value)
    for model, tokens in _tokens(m)["by_model"].items():
        models[model].update(prompt_tokens=tokens["prompt"], completion_tokens=tokens["completion"])
    rows = m.recent_jobs.rows()
    for model, entry in models.items():
        entry["tokens_per_s"] = summary(r.tokens_per_s for r in rows if r.model == model and r.tokens_per_s is not None)
    return dict(models)


def _generation(m: Metrics) -> dict[str, Any]:
    rows = m.recent_jobs.rows()
    recent_tokens = sum(r.completion_tokens for r in m.recent_jobs.rows(RATE_WINDOW_S))

    def times(field: str) -> dict[str, Any]:
        return summary(value for r in rows if (value := getattr(r, field)) is not None)

    return {
        "completed": _count(sum(v for _, v in _samples(m.generations))),
        "queue_wait_s": times("queue_s"),
        "time_to_first_token_s": times("ttft_s"),
        "generation_s": times("generation_s"),
        "tokens_per_s": times("tokens_per_s"),
        "completion_tokens_per_s": round(recent_tokens / RATE_WINDOW_S, 3),
    }


def _embedding(m: Metrics, stats: QueueStats) -> dict[str, Any]:
    rows = m.recent_batches.rows()
    buckets, below = {}, 0.0  # Prometheus buckets are cumulative; the JSON gives each bucket's own count
    for labels, cumulative in _samples(m.embedding_batch_size, "_bucket"):
        bound = labels["le"] if labels["le"] == "+Inf" else str(int(float(labels["le"])))
        buckets[bound], below = _count(cumulative - below), cumulative
    inputs = sum(v for _, v in _samples(m.embedding_batch_size, "_sum"))
    batches = sum(v for _, v in _samples(m.embedding_batch_size, "_count"))
    return {
        "dtype": stats.dtype,  # what the model computes in; vectors are float32 either way
        "batches": _count(batches),
        "inputs": _count(inputs),
        "inputs_per_s": round(sum(r.size for r in m.recent_batches.rows(RATE_WINDOW_S)) / RATE_WINDOW_S, 3),
        "batch_size": {**summary(r.size for r in rows), "histogram": buckets},
        "batch_s": summary(r.seconds for r in rows),
        "queue_wait_s": summary(m.recent_embedding_waits.column(0)),
    }


def _training(m: Metrics) -> dict[str, Any]:
    examples = {labels["result"]: _count(v) for labels, v in _samples(m.training_examples)}
    ingests = sum(v for _, v in _samples(m.training_ingests))
    return {"ingests": _count(ingests), "examples": examples}
