"""Ingest batches into a dataset forever, printing each batch number once it is acknowledged.

Used by the kill -9 test: `python tests/helpers/ingest_loop.py ROOT DATASET`. Batch b holds
examples `b{b}-e{j}`; every third batch is an upsert that also rewrites two examples of the
previous batch, so the kill can land in an append or in an atomic rewrite.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from data.training_store import TrainingStore  # noqa: E402

PER_BATCH = 20


def batch_examples(batch: int) -> list[dict]:
    examples = [{"id": f"b{batch}-e{j}", "prompt": f"prompt {batch}/{j}", "response": "r" * 200, "meta": {"b": batch}}
                for j in range(PER_BATCH)]
    if batch % 3 == 2:
        examples += [{"id": f"b{batch - 1}-e{j}", "prompt": f"prompt {batch - 1}/{j}", "response": f"v2 of {batch}",
                      "meta": {"b": batch - 1}} for j in range(2)]
    return examples


async def main(root: Path, dataset: str) -> None:
    store = TrainingStore(root)
    batch = 0
    while True:
        await store.ingest(dataset, batch_examples(batch), upsert=batch % 3 == 2)
        print(batch, flush=True)
        batch += 1


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2]))
