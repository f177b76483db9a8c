"""Embedding accuracy: each bfloat16 variant's vectors against float32's, on the fixed 2,048 texts.

    python -m bench.embedding_accuracy [--quick] [--accuracy-variants bfloat16,full,autocast] [--accuracy-step N]

The texts are bench/embedding_texts.py's (short, odd, paragraphs, long ones cut at 256 tokens,
eight other languages). Variants of all-MiniLM-L6-v2, each measured against float32 in the same run:
- `bfloat16`: what the server runs with EMBEDDING_DTYPE=bfloat16 (models/embedding_precision.py:
  Linear layers in bfloat16, LayerNorms, residual stream and pooling in float32);
- `full`: `model.to(torch.bfloat16)`, everything in bfloat16 (the issue's first measurement);
- `autocast`: the float32 model under `torch.autocast("cpu", dtype=torch.bfloat16)`.

Figures: the cosine of each text's vector to its float32 vector (min, 1st percentile, mean, and
the min per kind of text); for 100 queries (every 20th text), how many of float32's 10 nearest
neighbours (among all 2,048, the query left out) the variant finds, with its query against the
float32 index ("query vs fp32 index": a bfloat16 server in front of an index built in float32)
and with everything in the variant ("all in variant"); and the time to embed the whole set in
batches of 32, against float32's. Where the CPU has no native bfloat16 the times measure torch's
emulation, not what a native CPU does.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python bench/embedding_accuracy.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from bench import embedding_texts
from bench.common import benchmark_main, format_table, load_average, publish, ratio
from bench.embedding_raw import RawEncoder, VARIANTS, cpu_summary

NAME = "embedding_accuracy"
GOAL_MIN_COSINE = 0.999
TOP_K = 10
COLUMNS = [
    ("variant", "variant"),
    ("texts", "texts"),
    ("min_cosine", "min cosine", 5),
    ("p01_cosine", "1st pct", 5),
    ("mean_cosine", "mean cosine", 6),
    ("worst_kind", "worst kind"),
    ("top10_vs_fp32_index", "top-10 overlap, query vs fp32 index (mean / min)"),
    ("top10_all_variant", "top-10 overlap, all in variant (mean / min)"),
    ("texts_per_s", "texts/s"),
    ("speed_vs_fp32", "vs fp32", 2),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(NAME)
    group.add_argument("--accuracy-variants", default="bfloat16",
                       help=f"comma-separated, from {', '.join(VARIANTS[1:])} (float32 always runs; default: the "
                       "server's bfloat16 only, since each variant takes minutes where bfloat16 is emulated)")
    group.add_argument("--accuracy-step", type=int, default=None,
                       help="use every Nth text (default 1: all 2,048; quick: 8); queries stay every 20th of those")


def _neighbours(queries: np.ndarray, index: np.ndarray, query_rows: list[int]) -> np.ndarray:
    """The TOP_K nearest rows of `index` to each query (fewer in a set that small), the query's own left out."""
    scores = queries @ index.T
    scores[np.arange(len(query_rows)), query_rows] = -np.inf  # a text is not its own neighbour
    return np.argsort(-scores, axis=1)[:, : min(TOP_K, len(index) - 1)]


def _overlap(got: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    shares = [len(set(g) & set(w)) / len(w) for g, w in zip(got.tolist(), want.tolist())]
    return float(np.mean(shares)), float(np.min(shares))


def compare(name: str, reference: np.ndarray, vectors: np.ndarray, kinds: list[str], queries: list[int]) -> dict:
    """Cosines to float32 and top-10 overlaps of one variant's vectors."""
    ref = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    got = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cosines = np.sum(ref.astype(np.float64) * got, axis=1)
    by_kind = {k: float(min(c for c, kk in zip(cosines, kinds) if kk == k)) for k in dict.fromkeys(kinds)}
    want = _neighbours(ref[queries], ref, queries)
    mixed = _overlap(_neighbours(got[queries], ref, queries), want)
    alone = _overlap(_neighbours(got[queries], got, queries), want)
    return {
        "benchmark": NAME, "variant": name, "texts": len(cosines),
        "min_cosine": float(cosines.min()), "p01_cosine": float(np.percentile(cosines, 1)),
        "mean_cosine": float(cosines.mean()), "worst_kind": kinds[int(cosines.argmin())], "min_cosine_by_kind": by_kind,
        "top10_vs_fp32_index": f"{mixed[0]:.3f} / {mixed[1]:.1f}", "top10_all_variant": f"{alone[0]:.3f} / {alone[1]:.1f}",
        "top10_vs_fp32_index_mean": mixed[0], "top10_vs_fp32_index_min": mixed[1],
        "top10_all_variant_mean": alone[0], "top10_all_variant_min": alone[1],
    }


def run(args: argparse.Namespace) -> list[dict]:
    step = args.accuracy_step or (8 if args.quick else 1)
    items = embedding_texts.fixed_set()[::step]
    texts, kinds = [t for _, t in items], [k for k, _ in items]
    queries = list(range(0, len(texts), embedding_texts.QUERY_STEP))[:100]
    threads = args.threads or int(os.environ.get("EMBEDDING_THREADS", "0") or 0) or (os.cpu_count() or 1)
    variants = ["float32"] + [v.strip() for v in args.accuracy_variants.split(",") if v.strip() and v.strip() != "float32"]
    print(f"embedding accuracy: {len(texts)} texts (set {embedding_texts.fingerprint()[:12]}), {len(queries)} queries, "
          f"variants {variants}, torch threads={threads}, {cpu_summary()}, load avg={load_average()}", flush=True)
    rows, reference, fp32_speed = [], None, None
    for name in variants:
        encoder = RawEncoder(threads, name)
        encoder.encode(texts[:32])  # warm-up
        started = time.perf_counter()
        vectors = encoder.encode(texts, batch=32)
        speed = len(texts) / (time.perf_counter() - started)
        if reference is None:
            reference, fp32_speed = vectors, speed
        row = compare(name, reference, vectors, kinds, queries)
        row.update(texts_per_s=speed, speed_vs_fp32=ratio(speed, fp32_speed), threads=threads)
        rows.append(row)
        print(f"{name}: min cosine {row['min_cosine']:.5f}, {speed:.1f} texts/s", flush=True)
    notes = [f"{r['variant']}: min cosine {r['min_cosine']:.5f} "
             f"({'meets' if r['min_cosine'] >= GOAL_MIN_COSINE else 'misses'} the goal {GOAL_MIN_COSINE}); by kind: "
             + ", ".join(f"{k} {v:.5f}" for k, v in r["min_cosine_by_kind"].items()) for r in rows[1:]]
    print()
    print(f"Embedding accuracy against float32 ({len(texts)} texts, top-{TOP_K} of {len(queries)} queries)")
    print(format_table(rows, COLUMNS))
    for note in notes:
        print(f"note: {note}")
    return publish(NAME, rows, args, {"texts_fingerprint": embedding_texts.fingerprint(), "notes": notes})


def main(argv: list[str] | argparse.Namespace | None = None) -> list[dict]:
    return benchmark_main(argv, __doc__, add_arguments, run)


if __name__ == "__main__":
    main()
