"""Training-data benchmark: one small ingest into datasets of growing size, against a raw append.

    python bench/training.py [--quick] [--ingest-sizes 1000,20000]

The store (`data/training_store.py`, as the server runs it) ingests one example with an
embedding into a dataset that already holds N such examples, `--runs` times (default 20). "Raw"
is what an ingest cannot avoid: appending the same JSON line to a file with O_APPEND and an
fsync. The ratio shows what the store adds: checking the id against the dataset and counting
it. It should not grow with the dataset (the store keeps each dataset's ids in memory).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # `python bench/training.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson

from bench.common import benchmark_main, format_table, median, print_json_rows, ratio, save_results
from data.training_store import TrainingStore

NAME = "training"
EMBEDDING = [0.01] * 384  # all-MiniLM-L6-v2's dimensions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(NAME)
    group.add_argument("--ingest-sizes", default=None, help="dataset sizes to ingest into (default 1000,20000; quick 200,2000)")


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
    print(f"Training ingest: one example with an embedding, median of {runs}; raw = append one line + fsync")
    print(format_table(rows, [("examples", "dataset examples"), ("megabytes", "MB"), ("raw_append_ms", "raw append ms", 2),
                              ("ingest_ms", "ingest ms", 2), ("ratio_vs_raw", "ingest / raw", 2)]))
    save_results(NAME, rows, args)
    if args.json:
        print_json_rows(rows)
    return rows


def main(argv: list[str] | argparse.Namespace | None = None) -> list[dict]:
    return benchmark_main(argv, __doc__, add_arguments, run)


if __name__ == "__main__":
    main()
