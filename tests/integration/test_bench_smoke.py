"""The benchmarks still run: each one, shrunk to seconds, prints its table and ratios and saves rows.

Speed is not asserted here (benchmarks measure it, tests don't). What is asserted: every system
produced tokens or vectors, the ratios against the raw engine are computed, the server reproduced
raw GPT4All's greedy output and raw encode's vectors, and the results file holds the same rows.
The peers (llama-cpp-python, infinity) are skipped: they are installed by `make bench`, not here.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def _bench(tmp_path, *args: str) -> tuple[str, list[dict]]:
    done = subprocess.run(
        [sys.executable, *args, "--results-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1, files
    return done.stdout, json.loads(files[0].read_text())["rows"]


def test_generation_benchmark_prints_ratios_against_raw_gpt4all(tmp_path):
    out, rows = _bench(tmp_path, "bench/generation.py", "--quick", "--runs", "1", "--prompts", "1", "--warmup", "0",
                       "--max-tokens", "12", "--concurrency", "2", "--skip-llama-cpp")
    assert [(r["system"], r["clients"]) for r in rows] == [("raw gpt4all", 1), ("server", 1), ("server", 2)]
    assert rows[0]["decode_ratio"] == 1.0
    for row in rows:
        assert row["completion_tokens"] > 0 and row["decode_tok_s"] > 0 and row["exact_token_counts"], row
        assert row["decode_ratio"] > 0 and row["throughput_ratio"] > 0, row
    assert all(row["same_output_as_raw"] for row in rows[1:]), rows
    assert "| raw gpt4all" in out and "decode ratio" in out
    assert "server: decode ratio" in out  # the verdict against the goal is printed


def test_embedding_benchmark_prints_ratios_against_raw_encode(tmp_path):
    out, rows = _bench(tmp_path, "bench/embeddings.py", "--quick", "--embed-seconds", "0.5", "--embed-clients", "1,4",
                       "--embed-raw-batch", "8", "--skip-infinity")
    labels = [(r["system"], r["dtype"], r["batching"], r["clients"], r["batch"]) for r in rows]
    assert labels == [
        ("raw encode", "float32", "-", None, 1), ("raw encode", "float32", "-", None, 8),
        ("raw encode", "bfloat16", "-", None, 1), ("raw encode", "bfloat16", "-", None, 8),
        ("server", "float32", "on", 1, 1), ("server", "float32", "on", 4, 1),
        ("server", "bfloat16", "on", 1, 1), ("server", "bfloat16", "on", 4, 1),
        ("server", "float32", "off", 1, 1), ("server", "float32", "off", 4, 1),
    ]
    for row in rows:
        assert row["inputs"] > 0 and row["errors"] == 0, row
        assert row["ratio_vs_raw_batched"] > 0 and row["ratio_vs_raw_same_dtype"] > 0, row
    assert "float32, batching on/off at 4 clients" in out
    assert "bfloat16 server/raw float32 batched encode at 4 clients" in out
    assert "bfloat16 server/raw bfloat16 batched encode at 4 clients" in out
    assert "server bfloat16, batching on: vectors differ from raw encode (bfloat16) by at most" in out
    differences = [float(line.rsplit(" ", 1)[1]) for line in out.splitlines() if "vectors differ" in line]
    assert len(differences) == 3 and max(differences) < 1e-4, out  # each server against raw encode in its dtype


def test_embedding_accuracy_benchmark_compares_bfloat16_with_float32(tmp_path):
    out, rows = _bench(tmp_path, "bench/embedding_accuracy.py", "--accuracy-step", "256", "--accuracy-variants", "bfloat16")
    assert [(r["variant"], r["texts"]) for r in rows] == [("float32", 8), ("bfloat16", 8)]
    assert rows[0]["min_cosine"] > 0.99999 and rows[0]["top10_vs_fp32_index_mean"] == 1.0  # fp32 against itself
    assert 0.999 <= rows[1]["min_cosine"] < 1 and rows[1]["texts_per_s"] > 0 and rows[1]["speed_vs_fp32"] > 0
    assert "bfloat16: min cosine" in out and "meets the goal 0.999" in out


def test_training_benchmark_shows_ingest_time_independent_of_dataset_size(tmp_path):
    out, rows = _bench(tmp_path, "bench/training.py", "--quick", "--runs", "3")
    assert [r["examples"] for r in rows] == [200, 2000]
    for row in rows:
        assert row["raw_append_ms"] > 0 and row["ingest_ms"] > 0 and row["ratio_vs_raw"] > 0, row
    assert "| dataset examples" in out

