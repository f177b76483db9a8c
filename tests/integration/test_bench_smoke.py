"""The benchmarks still run: each one, shrunk to seconds, prints its table and ratios and saves rows.

Speed is not asserted here (benchmarks measure it, tests don't). What is asserted: every system
produced tokens or vectors, the ratios against the raw engine are computed, the server reproduced
raw GPT4All's greedy output and raw encode's vectors, the prefix cache reused the conversation from a
chat's second turn on, and the results file holds the same rows.
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
                       "--skip-infinity")
    labels = [(r["system"], r["batching"], r["clients"], r["batch"]) for r in rows]
    assert labels == [
        ("raw encode", "-", None, 1), ("raw encode", "-", None, 32),
        ("server", "on", 1, 1), ("server", "on", 4, 1), ("server", "off", 1, 1), ("server", "off", 4, 1),
    ]
    for row in rows:
        assert row["inputs"] > 0 and row["errors"] == 0, row
        assert row["ratio_vs_raw_batched"] > 0, row
    assert "batching on/off at 4 clients" in out
    assert "vectors differ from raw encode by at most" in out
    differences = [float(line.rsplit(" ", 1)[1]) for line in out.splitlines() if "vectors differ" in line]
    assert differences and max(differences) < 1e-4, out


def test_training_benchmark_shows_ingest_time_independent_of_dataset_size(tmp_path):
    out, rows = _bench(tmp_path, "bench/training.py", "--quick", "--runs", "3")
    assert [r["examples"] for r in rows] == [200, 2000]
    for row in rows:
        assert row["raw_append_ms"] > 0 and row["ingest_ms"] > 0 and row["ratio_vs_raw"] > 0, row
    assert "| dataset examples" in out


def test_multiturn_benchmark_reuses_the_conversation_with_the_prefix_cache(tmp_path):
    out, rows = _bench(tmp_path, "bench/multiturn.py", "--quick", "--mt-turns", "2", "--mt-conversations", "2",
                       "--mt-skip-llama-cpp")
    assert [(r["system"], r["conversations"]) for r in rows] == [
        ("server, reuse on", 1), ("server, reuse off", 1), ("server, reuse on", 2), ("server, reuse off", 2),
    ]
    for row in rows:
        assert row["ttft_t1_ms"] > 0 and row["ttft_t2_ms"] > 0 and row["completion_tokens"] > 0, row
        assert row["prompt_tokens_t1"] > 500 and row["prompt_tokens_t2"] > row["prompt_tokens_t1"], row
        assert row["last_over_first"] > 0 and row["last_vs_reuse_on"] > 0, row
    for row in rows[::2]:  # reuse on: turn 2 continues turn 1's context (reported, whatever the timing)
        assert row["cached_tokens_t1"] == 0 and row["cached_tokens_t2"] > row["prompt_tokens_t1"] // 2, row
        assert row["cached_from_turn2"] and "same_replies_as_reuse_off" in row, row
    for row in rows[1::2]:  # reuse off
        assert row["cached_tokens_t2"] == 0, row
    assert "reuse off / reuse on at turn 2" in out and "| server, reuse on" in out
