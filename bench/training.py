"""Training-data benchmark: one small ingest into datasets of growing size, against a raw append.

    python bench/training.py [--quick] [--ingest-sizes 1000,20000] [--read-mb 1000]

The store (`data/training_store.py`, as the server runs it) ingests one example with an
embedding into a dataset that already holds N such examples, `--runs` times (default 20). "Raw"
is what an ingest cannot avoid: appending the same JSON line to a file with O_APPEND and an
fsync. The ratio shows what the store adds: checking the id against the dataset and counting
it. It should not grow with the dataset (the store keeps each dataset's ids in memory).

Then memory: the peak RSS growth of a fresh process whose store reads page 1 (100 records) of a
dataset of `--read-mb` MB (default 1000, quick 50) of such examples, generated in a temp folder.
The store streams the file, so the peak should stay a few MB whatever the size. (Linux: VmHWM,
reset before the read; elsewhere ru_maxrss.) The first read counts the whole file; the second
finds the counts cached for the unchanged file and stops after the page.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # `python bench/training.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson

from bench.common import benchmark_main, format_table, median, publish, ratio
from data.training_store import TrainingStore

NAME = "training"
EMBEDDING = [0.01] * 384  # all-MiniLM-L6-v2's dimensions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(NAME)
    group.add_argument("--ingest-sizes", default=None, help="dataset sizes to ingest into (default 1000,20000; quick 200,2000)")
    group.add_argument("--read-mb", type=float, default=None,
                       help="size of the dataset whose page 1 is read for the peak RSS (default 1000; quick 50; 0 skips)")


def example(i: int) -> dict:
    return {"prompt": f"question {i} about something", "response": "an answer " * 20}


async def _fill(store: TrainingStore, dataset: str, count: int) -> None:
    for start in range(0, count, 1000):
        batch = [example(i) for i in range(start, min(count, start + 1000))]
        await store.ingest(dataset, batch, embeddings=[EMBEDDING] * len(batch))


async def _store_ms(store: TrainingStore, dataset: str, base: int, runs: int) -> list[float]:
    times = []
    for i in range(runs):
        started = time.perf_counter()
        await store.ingest(dataset, [example(base + i)], embeddings=[EMBEDDING])
        times.append((time.perf_counter() - started) * 1000)
    return times


def _raw_ms(path: Path, runs: int) -> list[float]:
    line = orjson.dumps({"id": "x", **example(0), "embedding": EMBEDDING}) + b"\n"
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        times.append((time.perf_counter() - started) * 1000)
    return times


# Run in a fresh process, so that its peak RSS is the read's and not this benchmark's.
_READ_PAGE_ONE = r"""
import asyncio, json, re, resource, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from data.training_store import TrainingStore

def status_kb(field):
    return int(re.search(field + r":\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))

def peak_since(before):
    if before is not None:
        return (status_kb("VmHWM") - before) * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # a lifetime peak: an upper bound

store = TrainingStore(Path(sys.argv[2]))
try:
    Path("/proc/self/clear_refs").write_text("5")  # Linux: peak RSS := current RSS
    before = status_kb("VmRSS")
except OSError:
    before = None
result = {}
for run in ("first", "again"):
    started = time.perf_counter()
    page = asyncio.run(store.read("read-big"))
    result[run + "_s"] = time.perf_counter() - started
result.update(total=page["total"], returned=len(page["data"]), peak_growth_bytes=max(0, peak_since(before)),
              method="VmHWM" if before is not None else "ru_maxrss")
print(json.dumps(result))
"""


def _write_dataset(path: Path, megabytes: float) -> int:
    """`megabytes` of records like the ingest ones (with an embedding); returns how many."""
    rest = orjson.dumps({**example(0), "meta": {}, "created_at": "2026-01-01T00:00:00.000Z", "embedding": EMBEDDING})
    count, limit = 0, int(megabytes * 1e6)
    with path.open("wb") as f:
        while f.tell() < limit:
            f.write(b"".join(b'{"id":"r%d",' % (count + i) + rest[1:] + b"\n" for i in range(1000)))
            count += 1000
    return count


def _read_peak(folder: Path, megabytes: float) -> dict:
    path = folder / "read-big.jsonl"
    count = _write_dataset(path, megabytes)
    done = subprocess.run([sys.executable, "-c", _READ_PAGE_ONE, str(Path(__file__).resolve().parent.parent), str(folder)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"reading page 1 failed:\n{done.stderr[-3000:]}")
    measured = json.loads(done.stdout)
    assert measured["total"] == count and measured["returned"] == 100, measured
    size_mb = path.stat().st_size / 1e6
    path.unlink()
    return {"dataset_mb": size_mb, "examples": count,
            "peak_rss_growth_mb": measured["peak_growth_bytes"] / 1e6, "first_read_s": measured["first_s"],
            "cached_read_ms": measured["again_s"] * 1000, "method": measured["method"]}


def run(args: argparse.Namespace) -> list[dict]:
    runs = args.runs or (5 if args.quick else 20)
    sizes = [int(n) for n in (args.ingest_sizes or ("200,2000" if args.quick else "1000,20000")).split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-training-") as folder:
        store = TrainingStore(Path(folder))
        for size in sizes:
            dataset = f"size-{size}"
            asyncio.run(_fill(store, dataset, size))
            megabytes = (Path(folder) / f"{dataset}.jsonl").stat().st_size / 1e6
            store_ms = median(asyncio.run(_store_ms(store, dataset, size, runs)))
            raw_ms = median(_raw_ms(Path(folder) / f"raw-{size}.jsonl", runs))
            rows.append({"benchmark": NAME, "examples": size, "megabytes": megabytes, "raw_append_ms": raw_ms,
                         "ingest_ms": store_ms, "ratio_vs_raw": ratio(store_ms, raw_ms), "runs": runs})
        read_mb = args.read_mb if args.read_mb is not None else (50 if args.quick else 1000)
        read = _read_peak(Path(folder), read_mb) if read_mb > 0 else None
    print(f"Training ingest: one example with an embedding, median of {runs}; raw = append one line + fsync")
    print(format_table(rows, [("examples", "dataset examples"), ("megabytes", "MB"), ("raw_append_ms", "raw append ms", 2),
                              ("ingest_ms", "ingest ms", 2), ("ratio_vs_raw", "ingest / raw", 2)]))
    if read is not None:
        print(f"Reading page 1 (100 examples) of a {read['dataset_mb']:.0f} MB dataset ({read['examples']} examples): "
              f"peak RSS +{read['peak_rss_growth_mb']:.1f} MB ({read['method']}); first read (counts the file) "
              f"{read['first_read_s']:.2f} s, again (counts cached) {read['cached_read_ms']:.1f} ms")
    return publish(NAME, rows, args, {"read_page_one": read} if read is not None else None)


def main(argv: list[str] | argparse.Namespace | None = None) -> list[dict]:
    return benchmark_main(argv, __doc__, add_arguments, run)


if __name__ == "__main__":
    main()
