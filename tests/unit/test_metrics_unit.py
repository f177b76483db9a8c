"""The metrics module on fakes: what each observation adds, the JSON snapshot and live stats.
No server, no model."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from api.observability import wants_prometheus
from metrics import Metrics, build_snapshot
from metrics.window import RecentWindow, percentile
from models.interfaces import GenerationOutcome
from scheduler.stats import QueueStats


def job(model="m.gguf", *, prompt=5, completion=10, reason="stop", error=None, cancel=None, origin="api", cached=0):
    outcome = None if error else GenerationOutcome(prompt, completion, reason, cached_tokens=cached)
    return SimpleNamespace(model=model, origin=origin, outcome=outcome, error=error, cancel_reason=cancel,
                           queue_time=0.5, time_to_first_token=0.75, generation_time=2.0)


GENERATION = QueueStats(queue_depth=2, max_queue=8, running=1, rejected=3, cancelled=4, models={"m.gguf": "ready"})


def test_generation_observations_add_exact_tokens_and_outcomes():
    m = Metrics(live={"generation": lambda: GENERATION})
    for done in (job(), job(reason="length", cached=4), job(error=RuntimeError("x")), job(cancel="client", completion=2)):
        m.observe_generation(done)
    snap = build_snapshot(m, default_model="m.gguf")
    counts = {"prompt": 15, "prompt_cached": 4, "prompt_evaluated": 11, "cache_hit_ratio": 0.2667, "completion": 22}
    assert snap["tokens"] == {**counts, "by_model": {"m.gguf": counts}}
    prometheus = generate_latest(m.registry).decode()
    assert 'llm_server_prompt_tokens_cached_total{model="m.gguf"} 4.0' in prometheus
    model = snap["models"]["m.gguf"]
    assert model["state"] == "ready" and model["generations"] == 4
    assert model["by_outcome"] == {"stop": 1, "length": 1, "error": 1, "cancelled": 1}
    generation = snap["schedulers"]["generation"]
    live = {key: generation[key] for key in ("queue_depth", "max_queue", "running", "rejected", "cancelled", "completed")}
    assert live == {"queue_depth": 2, "max_queue": 8, "running": 1, "rejected": 3, "cancelled": 4, "completed": 4}
    assert generation["queue_wait_s"]["count"] == 4 and generation["queue_wait_s"]["p50"] == 0.5
    assert generation["tokens_per_s"] == {"count": 3, "p50": 5.0, "p95": 5.0, "max": 5.0}  # 10, 10 and 2 tokens in 2 s


def test_requests_are_counted_by_template_and_status():
    m = Metrics()
    for status in (200, 200, 401):
        m.observe_request("/v1/models", "GET", status, 0.01)
    m.observe_request("unmatched", "GET", 404, None)
    requests = build_snapshot(m)["requests"]
    assert requests["total"] == 4 and requests["by_status"] == {"200": 2, "401": 1, "404": 1}
    assert requests["by_endpoint"]["GET /v1/models"]["by_status"] == {"200": 2, "401": 1}
    assert requests["by_endpoint"]["GET /v1/models"]["mean_latency_s"] == 0.01


def test_embedding_batches_and_the_live_queue_once_the_model_has_loaded():
    loaded: list[QueueStats] = []
    m = Metrics(live={"embedding": lambda: loaded[0] if loaded else None})
    assert build_snapshot(m)["schedulers"] == {}  # no batcher yet: no embedding entry
    loaded.append(QueueStats(queue_depth=5, max_queue=64, running=1, rejected=0, cancelled=0))
    for size in (1, 3, 3, 64):
        m.observe_embedding_batch(size, 0.1)
    m.observe_embedding_wait(0.25)
    embedding = build_snapshot(m)["schedulers"]["embedding"]
    assert embedding["queue_depth"] == 5 and embedding["running"] == 1
    assert embedding["batches"] == 4 and embedding["inputs"] == 71
    histogram = embedding["batch_size"]["histogram"]  # each bucket's own count, not cumulative
    assert (histogram["1"], histogram["2"], histogram["4"], histogram["64"], histogram["128"]) == (1, 0, 2, 1, 0)
    assert embedding["queue_wait_s"]["p50"] == 0.25


def test_training_ingest_counts_and_prometheus_names():
    m = Metrics()
    m.observe_training_ingest({"inserted": 2, "updated": 1, "skipped": 0, "size": 3})
    assert build_snapshot(m)["training"] == {"ingests": 1, "examples": {"inserted": 2, "updated": 1, "skipped": 0}}
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(m.registry).decode())}
    assert all(name.startswith("llm_server_") for name in families)
    assert {"llm_server_training_examples", "llm_server_process_cpu_percent", "llm_server_requests"} <= set(families)


def test_two_apps_do_not_share_counts():
    first, second = Metrics(), Metrics()
    first.observe_request("/", "GET", 200, 0.001)
    assert build_snapshot(second)["requests"]["total"] == 0


def test_recent_window_forgets_old_rows_and_percentiles_interpolate():
    now = [0.0]
    window = RecentWindow(seconds=10, clock=lambda: now[0])
    window.add((1.0,))
    now[0] = 5
    window.add((3.0,))
    assert window.column(0) == [1.0, 3.0] and window.column(0, within=1) == [3.0]
    now[0] = 12
    assert window.column(0) == [3.0]
    assert percentile([1, 2, 3, 4], 50) == 2.5 and percentile([], 95) is None


def test_metrics_format_negotiation():
    def wants(accept: str = "", fmt: str | None = None) -> bool:
        request = SimpleNamespace(args={"format": fmt} if fmt else {}, headers={"accept": accept} if accept else {})
        return wants_prometheus(request)

    assert wants(fmt="prometheus") and wants("text/plain") and wants("application/openmetrics-text; version=1.0.0")
    assert wants("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")  # Prometheus
    assert not wants() and not wants("*/*") and not wants("application/json")
    assert not wants("application/json, text/plain, */*")  # axios and friends ask for JSON first
    assert not wants("text/plain", fmt="json")
