"""Every metric of the server, named `llm_server_*`, on one CollectorRegistry per app.

`Metrics` owns the registry (never prometheus-client's global one, so two apps in one process
never share counts) and the small recording functions the rest of the server calls:

    observe_request(endpoint, method, status, seconds)   HTTP middleware (api/observability.py)
    observe_generation(job)                              GenerationScheduler.listeners
    observe_embedding_batch(size, seconds)               EmbeddingService.batch_listeners
    observe_embedding_wait(seconds)                      EmbeddingService.queue_listeners
    observe_training_ingest(counts)                      the training ingest route

server.py subscribes them, once, where the app is wired. Live values (queue depth, jobs running,
429s and cancellations counted by the schedulers themselves, model states) are read when
collected, from the `stats()` functions given as `live` (`QueueStats`, or None while a scheduler
has nothing to report); process stats from psutil. Counters and histograms feed the Prometheus
text; `RecentWindow`s feed the JSON percentiles.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator, Mapping, NamedTuple

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from metrics.process import ProcessStats
from metrics.window import RecentWindow
from scheduler.stats import QueueStats

PREFIX = "llm_server"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
TOKENS_PER_S_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
UNMATCHED = "unmatched"  # endpoint label of requests that matched no route (404s): never the raw path


def _name(short: str) -> str:
    return f"{PREFIX}_{short}"


class JobRow(NamedTuple):
    """One finished generation job in the recent window (times in seconds; None: it never got there)."""

    model: str
    queue_s: float | None
    ttft_s: float | None
    generation_s: float | None
    tokens_per_s: float | None
    completion_tokens: int


class BatchRow(NamedTuple):
    size: int
    seconds: float


LiveStats = Callable[[], QueueStats | None]


class Metrics:
    def __init__(self, *, live: Mapping[str, LiveStats] | None = None, window_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic):
        self.started_at = time.time()
        self.window_s = window_s
        self.registry = CollectorRegistry(auto_describe=True)
        self.process = ProcessStats()
        self.live = dict(live or {})  # scheduler name ("generation", "embedding") -> its stats()
        r = self.registry

        # HTTP
        self.requests = Counter(_name("requests"), "HTTP requests answered, by route template, method and status.",
                                ["endpoint", "method", "status"], registry=r)
        self.request_seconds = Histogram(_name("request_duration_seconds"), "Time to the response head (streams: to the first byte).",
                                         ["endpoint", "method"], buckets=LATENCY_BUCKETS, registry=r)
        # Generation
        self.prompt_tokens = Counter(_name("prompt_tokens"), "Prompt tokens, cached part included (as usage counts them), by model.",
                                     ["model"], registry=r)
        self.cached_prompt_tokens = Counter(_name("prompt_tokens_cached"), "Prompt tokens reused from a cached context, not evaluated, by model.",
                                            ["model"], registry=r)
        self.completion_tokens = Counter(_name("completion_tokens"), "Tokens generated, by model.", ["model"], registry=r)
        self.generations = Counter(_name("generations"), "Generation jobs run, by model, origin (api/ui) and outcome.",
                                   ["model", "origin", "outcome"], registry=r)
        self.queue_seconds = Histogram(_name("generation_queue_seconds"), "Time a generation job waited before it started.",
                                       ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.ttft_seconds = Histogram(_name("generation_time_to_first_token_seconds"), "From submission to the first token.",
                                      ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.generation_seconds = Histogram(_name("generation_seconds"), "Time a generation job ran (prompt and tokens).",
                                            ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.tokens_per_second = Histogram(_name("generation_tokens_per_second"), "Completion tokens per second of generation.",
                                           ["model"], buckets=TOKENS_PER_S_BUCKETS, registry=r)
        # Embeddings (the batch-size histogram's _sum is the number of inputs embedded)
        self.embedding_batch_size = Histogram(_name("embedding_batch_size"), "Inputs per embedding batch.",
                                              buckets=BATCH_SIZE_BUCKETS, registry=r)
        self.embedding_batch_seconds = Histogram(_name("embedding_batch_seconds"), "Time of one embedding batch (encode).",
                                                 buckets=LATENCY_BUCKETS, registry=r)
        self.embedding_queue_seconds = Histogram(_name("embedding_queue_seconds"), "Time a request waited for its first batch.",
                                                 buckets=LATENCY_BUCKETS, registry=r)
        # Training data
        self.training_ingests = Counter(_name("training_ingests"), "Training ingest requests stored.", registry=r)
        self.training_examples = Counter(_name("training_examples"), "Examples ingested, by result (inserted/updated/skipped).",
                                         ["result"], registry=r)
        for result in ("inserted", "updated", "skipped"):
            self.training_examples.labels(result)  # listed at 0 before the first ingest
        r.register(_LiveCollector(self))

        # Recent windows for the JSON percentiles and rates
        self.recent_jobs = RecentWindow(window_s, clock=clock)  # JobRow
        self.recent_batches = RecentWindow(window_s, clock=clock)  # BatchRow
        self.recent_embedding_waits = RecentWindow(window_s, clock=clock)  # (seconds,)

    def live_stats(self) -> dict[str, QueueStats]:
        """Each scheduler's queue now, for those that have one (the embedding batcher exists once loaded)."""
        return {name: stats for name, read in self.live.items() if (stats := read()) is not None}

    # ---- recording ---------------------------------------------------------------------------

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float | None) -> None:
        self.requests.labels(endpoint, method, str(status)).inc()
        if seconds is not None:
            self.request_seconds.labels(endpoint, method).observe(seconds)

    def observe_generation(self, job: Any) -> None:
        """A GenerationJob that ran, finished or not (scheduler listener)."""
        outcome = job.outcome
        if job.error is not None:
            result = "error"
        elif job.cancel_reason is not None:
            result = "cancelled"
        else:
            result = outcome.finish_reason if outcome is not None else "unknown"
        self.generations.labels(job.model, job.origin, result).inc()
        rate = None
        if outcome is not None:
            self.prompt_tokens.labels(job.model).inc(outcome.prompt_tokens)
            self.cached_prompt_tokens.labels(job.model).inc(outcome.cached_tokens)
            self.completion_tokens.labels(job.model).inc(outcome.completion_tokens)
            if job.generation_time and outcome.completion_tokens:
                rate = outcome.completion_tokens / job.generation_time
                self.tokens_per_second.labels(job.model).observe(rate)
        for histogram, seconds in ((self.queue_seconds, job.queue_time), (self.ttft_seconds, job.time_to_first_token),
                                   (self.generation_seconds, job.generation_time)):
            if seconds is not None:
                histogram.labels(job.model).observe(seconds)
        tokens = outcome.completion_tokens if outcome is not None else 0
        self.recent_jobs.add(JobRow(job.model, job.queue_time, job.time_to_first_token, job.generation_time, rate, tokens))

    def observe_embedding_batch(self, size: int, seconds: float) -> None:
        self.embedding_batch_size.observe(size)
        self.embedding_batch_seconds.observe(seconds)
        self.recent_batches.add(BatchRow(size, seconds))

    def observe_embedding_wait(self, seconds: float) -> None:
        self.embedding_queue_seconds.observe(seconds)
        self.recent_embedding_waits.add((seconds,))

    def observe_training_ingest(self, counts: Mapping[str, int]) -> None:
        """Counts as returned by TrainingStore.ingest: {inserted, updated, skipped, ...}."""
        self.training_ingests.inc()
        for result in ("inserted", "updated", "skipped"):
            self.training_examples.labels(result).inc(int(counts.get(result, 0)))


class _LiveCollector(Collector):
    """Values owned by other objects, read at collection time: queues, models, the process."""

    def __init__(self, metrics: Metrics):
        self._metrics = metrics

    def describe(self) -> list:
        return []  # values appear and disappear with the schedulers; nothing to pre-describe

    def collect(self) -> Iterator:
        m = self._metrics
        depth = GaugeMetricFamily(_name("queue_depth"), "Jobs (generation) or inputs (embedding) waiting now.", labels=["scheduler"])
        limit = GaugeMetricFamily(_name("queue_max"), "Most jobs or inputs allowed to wait; past it, 429.", labels=["scheduler"])
        running = GaugeMetricFamily(_name("jobs_running"), "Jobs (generation) or batches (embedding) running now.", labels=["scheduler"])
        rejected = CounterMetricFamily(_name("queue_rejected"), "Submissions refused with 429 because the queue was full.", labels=["scheduler"])
        cancelled = CounterMetricFamily(_name("jobs_cancelled"), "Jobs cancelled (client gone, shutdown) before or while running.", labels=["scheduler"])
        models = GaugeMetricFamily(_name("model_loaded"), "1 for each chat model worker, by state.", labels=["model", "state"])
        dtypes = GaugeMetricFamily(_name("embedding_dtype"), "1 for the number format the embedding model computes in.",
                                   labels=["dtype"])
        for name, stats in m.live_stats().items():
            depth.add_metric([name], stats.queue_depth)
            limit.add_metric([name], stats.max_queue)
            running.add_metric([name], stats.running)
            rejected.add_metric([name], stats.rejected)
            cancelled.add_metric([name], stats.cancelled)
            for model, state in stats.models.items():
                models.add_metric([model, state], 1)
            if stats.dtype is not None:
                dtypes.add_metric([stats.dtype], 1)
        yield from (depth, limit, running, rejected, cancelled, models, dtypes)

        p = m.process.sample()
        yield GaugeMetricFamily(_name("process_cpu_percent"), "CPU use of the server process (100 = one core).", value=p.cpu_percent)
        yield GaugeMetricFamily(_name("process_resident_memory_bytes"), "Resident memory of the server process.", value=p.rss_bytes)
        yield GaugeMetricFamily(_name("process_threads"), "Threads of the server process.", value=p.threads)
        yield GaugeMetricFamily(_name("process_uptime_seconds"), "Seconds since the server process started.", value=p.uptime_s)
        yield GaugeMetricFamily(_name("start_time_seconds"), "Unix time the app was created.", value=m.started_at)
