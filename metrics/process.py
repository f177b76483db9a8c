"""Process statistics from psutil: CPU percent, resident memory, threads, uptime.

`cpu_percent` is measured between two samples, so back-to-back calls (a JSON poll and a
Prometheus scrape in the same second) would measure a few milliseconds and read as noise;
samples are therefore cached for `min_interval_s`. As in `top`, 100 means one full core.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import psutil


@dataclass(frozen=True)
class ProcessSample:
    pid: int
    cpu_percent: float
    rss_bytes: int
    threads: int
    uptime_s: float
    cpu_count: int

    def as_dict(self) -> dict:
        return asdict(self)


class ProcessStats:
    def __init__(self, min_interval_s: float = 1.0):
        self._process = psutil.Process()
        self._min_interval_s = min_interval_s
        self._process.cpu_percent(interval=None)  # first call starts the measurement and returns 0.0
        self._last: ProcessSample | None = None
        self._last_at = 0.0

    def sample(self) -> ProcessSample:
        now = time.monotonic()
        if self._last is not None and now - self._last_at < self._min_interval_s:
            return self._last
        process = self._process
        with process.oneshot():
            self._last = ProcessSample(
                pid=process.pid,
                cpu_percent=round(process.cpu_percent(interval=None), 1),
                rss_bytes=process.memory_info().rss,
                threads=process.num_threads(),
                uptime_s=round(max(0.0, time.time() - process.create_time()), 1),
                cpu_count=psutil.cpu_count() or 1,
            )
        self._last_at = now
        return self._last
