"""The benchmarks still run: each one, shrunk to seconds, prints its table and ratios and saves rows.

Speed is not asserted here (benchmarks measure it, tests don't). What is asserted: every system
produced tokens or vectors, the ratios against the raw engine are computed, the server and the decode
loop reproduced raw GPT4All's greedy output and raw encode's vectors, constrained outputs parse, and
the results file holds the same rows. The peers (llama-cpp-python, infinity) are skipped: they are
installed by `make bench`, not here. The multi-turn benchmark is not here either (its 600-token
prompts take minutes on 2 cores); its report is unit-tested (tests/unit/test_bench_multiturn_report.py).
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



def test_decode_benchmark_prints_our_loop_against_raw_gpt4all_and_each_features_cost(tmp_path):
    out, rows = _bench(tmp_path, "bench/decode.py", "--quick", "--runs", "1", "--decode-tokens", "8")
    assert [(r["case"], r["system"]) for r in rows][:2] == [("decode", "raw GPT4All (its prompt call)"),
                                                            ("decode", "our loop, unconstrained")]
    assert {r["case"] for r in rows} == {"decode", "structured output", "tool call (generic, required)", "logprobs"}
    for row in rows:
        assert row["tokens"] > 0 and row["tok_s"] > 0 and row["ratio"] > 0, row
        assert row.get("check_passed", True), row  # the same greedy ids, valid JSON, a parsed call
    document = json.loads((tmp_path / "decode.json").read_text())
    assert document["schema_setup"]["new_ms"] > document["schema_setup"]["cached_ms"] > 0
    assert {r["case"] for r in document["mask_costs"]} >= {"json (person)"}
    ours, gpt4all = document["memory"]["ours"], document["memory"]["gpt4all"]
    assert ours["contexts"] == gpt4all["contexts"] == 4 and ours["kv_mb"] > 0
    assert 0 < ours["per_context_anon_mb"] < gpt4all["per_context_anon_mb"]
    assert "Schema setup: a new schema" in out and "per ctx / KV" in out
