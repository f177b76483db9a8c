"""`/v1/training/*` over real HTTP: counts, embeddings, listing, paging, delete, names, limits,
concurrent ingests, corrupt lines, the README examples, and a server killed with SIGKILL mid-ingest.

Expected values come from the request itself (ids are the SHA-256 of the prompt, computed here)
and from the files on disk, which the tests read directly.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest

from tests.conftest import API_KEY, start_server
from tests.helpers import readme_examples
from tests.helpers.readme_examples import README_KEY

RECORD_KEYS = ["id", "prompt", "response", "meta", "created_at"]  # in stored order


def fresh(prefix: str = "ds") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def key_of(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:32]


def ingest(client: httpx.Client, dataset: str, examples: list[dict], **options) -> httpx.Response:
    return client.post("/v1/training/ingest", json={"dataset": dataset, "examples": examples, **options})


def ok(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def error_of(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


def file_records(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def read_all(client: httpx.Client, dataset: str) -> dict:
    """Every page of `dataset`, joined into one."""
    whole = ok(client.get(f"/v1/training/datasets/{dataset}", params={"limit": 1000}))
    while len(whole["data"]) < whole["total"]:
        page = ok(client.get(f"/v1/training/datasets/{dataset}", params={"offset": len(whole["data"]), "limit": 1000}))
        assert page["data"], "a page came back empty before the total was reached"
        whole["data"] += page["data"]
    return whole


def listed(client: httpx.Client, dataset: str) -> dict | None:
    found = [d for d in ok(client.get("/v1/training/datasets"))["data"] if d["name"] == dataset]
    return found[0] if found else None


# ---- ingest semantics ---------------------------------------------------------------------------


def test_insert_reinsert_and_upsert_counts(http, live_server):
    dataset = fresh()
    examples = [
        {"prompt": "How do I reset my password?", "response": "Settings > Account.", "meta": {"lang": "en"}},
        {"prompt": "What is your refund policy?", "response": "30 days."},
        {"id": "own-key", "prompt": "Where are you?", "response": "Online."},
    ]
    first = ok(ingest(http, dataset, examples))
    assert first == {"object": "training.ingest", "dataset": dataset, "inserted": 3, "updated": 0, "skipped": 0, "size": 3}
    path = live_server.data_dir / f"{dataset}.jsonl"
    stored = file_records(path)
    assert [r["id"] for r in stored] == [key_of(examples[0]["prompt"]), key_of(examples[1]["prompt"]), "own-key"]
    assert all(set(r) == set(RECORD_KEYS) for r in stored)
    assert stored[0]["meta"] == {"lang": "en"} and stored[1]["meta"] == {}
    before = path.read_bytes()

    # Without upsert, a known key is never overwritten, even with new content.
    changed = [dict(e, response="CHANGED") for e in examples]
    assert ok(ingest(http, dataset, changed)) == {
        "object": "training.ingest", "dataset": dataset, "inserted": 0, "updated": 0, "skipped": 3, "size": 3}
    assert path.read_bytes() == before

    # With upsert: one changed (updated), one identical (skipped), one new (inserted).
    upsert = [dict(examples[0], response="Settings > Security."), examples[1], {"prompt": "New?", "response": "Yes."}]
    result = ok(ingest(http, dataset, upsert, upsert=True))
    assert (result["inserted"], result["updated"], result["skipped"], result["size"]) == (1, 1, 1, 4)
    after = {r["id"]: r for r in file_records(path)}
    first_id = key_of(examples[0]["prompt"])
    assert after[first_id]["response"] == "Settings > Security."
    assert after[first_id]["created_at"] == stored[0]["created_at"] and "updated_at" in after[first_id]
    assert after[key_of("New?")]["response"] == "Yes." and len(after) == 4
    assert [r["id"] for r in read_all(http, dataset)["data"]] == [first_id, key_of(examples[1]["prompt"]), "own-key", key_of("New?")]


def test_store_embeddings_matches_the_embeddings_endpoint(http, live_server):
    dataset = fresh("emb")
    examples = [{"prompt": "How do I reset my password?", "response": "Go to Settings > Account > Reset Password."},
                {"prompt": "What is your refund policy?", "response": "We offer a 30-day money-back guarantee."}]
    assert ok(ingest(http, dataset, examples, store_embeddings=True))["inserted"] == 2
    records = read_all(http, dataset)["data"]
    for example, record in zip(examples, records):
        stored = np.array(record["embedding"], dtype=np.float32)
        assert stored.shape == (384,)
        text = example["prompt"] + "\n" + example["response"]
        body = ok(http.post("/v1/embeddings", json={"input": text}))
        np.testing.assert_allclose(stored, np.array(body["data"][0]["embedding"], dtype=np.float32), rtol=0, atol=1e-5)
    on_disk = file_records(live_server.data_dir / f"{dataset}.jsonl")
    assert all(len(r["embedding"]) == 384 and list(r) == [*RECORD_KEYS, "embedding_dtype", "embedding"] for r in on_disk)
    running = http.get("/metrics").json()["schedulers"]["embedding"]["dtype"]  # the dtype the vectors were made in
    assert {r["embedding_dtype"] for r in on_disk} == {running}
    assert listed(http, dataset)["has_embeddings"] is True


def test_listing_describes_every_dataset(http, live_server):
    plain, with_vectors = fresh("plain"), fresh("vectors")
    ok(ingest(http, plain, [{"prompt": f"p{i}", "response": "r"} for i in range(3)]))
    ok(ingest(http, with_vectors, [{"prompt": "p", "response": "r"}], store_embeddings=True))
    for name, count, has_embeddings in ((plain, 3, False), (with_vectors, 1, True)):
        info = listed(http, name)
        assert set(info) == {"name", "examples", "bytes", "updated_at", "has_embeddings", "corrupt_lines"}
        assert info["examples"] == count and info["has_embeddings"] is has_embeddings and info["corrupt_lines"] == 0
        assert info["bytes"] == (live_server.data_dir / f"{name}.jsonl").stat().st_size
        assert datetime.fromisoformat(info["updated_at"].replace("Z", "+00:00")).tzinfo is not None


def test_read_back_in_pages(http):
    dataset = fresh("paged")
    ok(ingest(http, dataset, [{"prompt": f"prompt {i:02d}", "response": f"r{i}"} for i in range(25)]))
    whole = ok(http.get(f"/v1/training/datasets/{dataset}"))
    assert whole["total"] == 25 and whole["offset"] == 0 and whole["limit"] == 100 and whole["corrupt_lines"] == []
    assert [r["prompt"] for r in whole["data"]] == [f"prompt {i:02d}" for i in range(25)]
    pages = [ok(http.get(f"/v1/training/datasets/{dataset}", params={"offset": o, "limit": 10})) for o in (0, 10, 20, 30)]
    assert [len(p["data"]) for p in pages] == [10, 10, 5, 0]
    assert [r for p in pages for r in p["data"]] == whole["data"]
    assert all(p["total"] == 25 and p["dataset"] == dataset for p in pages)
    for params, param in (({"limit": 0}, "limit"), ({"limit": 1001}, "limit"), ({"limit": "ten"}, "limit"),
                          ({"offset": -1}, "offset"), ({"offset": "x"}, "offset")):
        assert error_of(http.get(f"/v1/training/datasets/{dataset}", params=params), 400)["param"] == param


def test_delete_then_404(http, live_server):
    dataset = fresh("gone")
    ok(ingest(http, dataset, [{"prompt": "p", "response": "r"}]))
    deleted = ok(http.delete(f"/v1/training/datasets/{dataset}"))
    assert deleted["deleted"] is True and deleted["dataset"] == dataset
    assert not (live_server.data_dir / f"{dataset}.jsonl").exists()
    assert error_of(http.get(f"/v1/training/datasets/{dataset}"), 404)["code"] == "not_found"
    assert error_of(http.delete(f"/v1/training/datasets/{dataset}"), 404)["code"] == "not_found"
    assert listed(http, dataset) is None



def test_a_name_differing_only_in_case_is_400(http, live_server):
    dataset = fresh("Case")
    ok(ingest(http, dataset, [{"prompt": "p", "response": "r"}]))
    error = error_of(ingest(http, dataset.lower(), [{"prompt": "q", "response": "r"}]), 400)
    assert error["param"] == "dataset" and error["code"] == "dataset_name_conflict" and dataset in error["message"]
    assert error_of(http.get(f"/v1/training/datasets/{dataset.lower()}"), 404)["code"] == "not_found"
    assert not (live_server.data_dir / f"{dataset.lower()}.jsonl").exists()
    assert ok(http.get(f"/v1/training/datasets/{dataset}"))["total"] == 1


def test_a_second_server_on_the_same_training_data_dir_exits_at_start(tmp_path, live_server, http):
    try:
        second = start_server(tmp_path, TRAINING_DATA_DIR=str(live_server.data_dir))
    except RuntimeError as exc:  # start_server's report of a process that exited before it was healthy
        message = str(exc)
    else:
        second.stop()
        pytest.fail("a second server started on the TRAINING_DATA_DIR of a running one")
    assert "server.py exited with 1" in message and str(live_server.data_dir) in message
    assert "in use by another server" in message
    dataset = fresh()  # the first one is unaffected
    assert ok(ingest(http, dataset, [{"prompt": "p", "response": "r"}]))["inserted"] == 1


# ---- names that could leave TRAINING_DATA_DIR ------------------------------------------------------


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its contents, except the server logs (they grow)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.startswith("server-")}


@pytest.fixture()
def bait(live_server):
    """A dataset-shaped file just outside TRAINING_DATA_DIR: `../x` would name it."""
    live_server.data_dir.mkdir(parents=True, exist_ok=True)
    path = live_server.data_dir.parent / "x.jsonl"
    path.write_bytes(b'{"id": "secret", "prompt": "outside", "response": "must not be read"}\n')
    yield path
    path.unlink(missing_ok=True)


BAD_NAMES = ["../x", "/etc/passwd", "a/b", "..", ".", "a" * 65, "", "..\\x", "x/../../y", " x", "x\x00y", "~/x", "x.jsonl/"]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_bad_dataset_names_are_400_and_write_nothing(http, live_server, bait, name):
    outside = tree(live_server.data_dir.parent)
    error = error_of(ingest(http, name, [{"prompt": "escape", "response": "attempt"}]), 400)
    assert error["param"] == "dataset"
    assert tree(live_server.data_dir.parent) == outside
    assert not Path("/etc/passwd.jsonl").exists() and not Path("/x.jsonl").exists()


def test_longest_name_is_fine_and_stays_inside(http, live_server):
    name = "a" * 60 + uuid.uuid4().hex[:4]
    assert len(name) == 64
    ok(ingest(http, name, [{"prompt": "p", "response": "r"}]))
    assert (live_server.data_dir / f"{name}.jsonl").is_file()
    ok(http.delete(f"/v1/training/datasets/{name}"))


@pytest.mark.parametrize("encoded", ["..%2Fx", "%2E%2E%2Fx", "..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "a%2Fb", "%2E%2E", "..%5Cx"])
def test_url_encoded_traversal_on_read_and_delete(http, live_server, bait, encoded):
    outside = tree(live_server.data_dir.parent)
    for method in ("GET", "DELETE"):
        response = http.request(method, f"/v1/training/datasets/{encoded}")
        assert error_of(response, 400)["param"] == "dataset", (method, encoded)
        assert "must not be read" not in response.text
    assert tree(live_server.data_dir.parent) == outside and bait.exists()


def test_raw_dot_dot_path_is_not_a_dataset(live_server, bait):
    # httpx would normalise `..` away; http.client sends the path as given.
    host, port = live_server.base_url.removeprefix("http://").split(":")
    for method in ("GET", "DELETE"):
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        connection.request(method, "/v1/training/datasets/..", headers=live_server.headers())
        response = connection.getresponse()
        body = response.read().decode()
        connection.close()
        assert response.status in (400, 404) and "must not be read" not in body, (method, response.status, body)
    assert bait.exists()


# ---- bad bodies and limits ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "examples, param",
    [
        ([{"response": "r"}], "examples.0.prompt"),
        ([{"prompt": "p"}], "examples.0.response"),
        ([{"prompt": "p", "response": "r"}, {"prompt": 1, "response": "r"}], "examples.1.prompt"),
        ([{"prompt": "p", "response": ["r"]}], "examples.0.response"),
        ([{"prompt": "p", "response": None}], "examples.0.response"),
        ([{"prompt": "p", "response": "r", "meta": "not an object"}], "examples.0.meta"),
        ([{"prompt": "p", "response": "r", "id": 7}], "examples.0.id"),
        ([{"prompt": "", "response": "r"}], "examples.0.prompt"),
        ([], "examples"),
        ("not a list", "examples"),
        (["not an object"], "examples.0"),
    ],
)
def test_bad_examples_are_400_and_write_nothing(http, live_server, examples, param):
    dataset = fresh("bad")
    error = error_of(ingest(http, dataset, examples), 400)
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert not (live_server.data_dir / f"{dataset}.jsonl").exists()


def test_bad_bodies_are_400(http):
    assert error_of(http.post("/v1/training/ingest", json={"examples": [{"prompt": "p", "response": "r"}]}), 400)["param"] == "dataset"
    assert error_of(http.post("/v1/training/ingest", json={"dataset": 5, "examples": [{"prompt": "p", "response": "r"}]}), 400)["param"] == "dataset"
    json_type = {"Content-Type": "application/json"}  # without it, 415 (test_bad_input)
    assert error_of(http.post("/v1/training/ingest", content=b"{not json", headers=json_type), 400)
    assert error_of(http.post("/v1/training/ingest", content=b"", headers=json_type), 400)
    assert error_of(http.post("/v1/training/ingest", json=[1, 2]), 400)


def test_more_than_max_ingest_examples_is_400(http, live_server):
    dataset = fresh("many")
    error = error_of(ingest(http, dataset, [{"prompt": f"p{i}", "response": "r"} for i in range(1001)]), 400)
    assert error["param"] == "examples" and "1000" in error["message"]  # MAX_INGEST_EXAMPLES
    assert not (live_server.data_dir / f"{dataset}.jsonl").exists()
    assert ok(ingest(http, dataset, [{"prompt": f"p{i}", "response": "r"} for i in range(1000)]))["size"] == 1000


def test_body_over_max_body_bytes_is_413(http, live_server):
    dataset = fresh("huge")
    body = orjson.dumps({"dataset": dataset, "examples": [{"prompt": "p" * (4 * 1024 * 1024), "response": "r"}]})
    assert len(body) > 4 * 1024 * 1024  # MAX_BODY_BYTES
    error = error_of(http.post("/v1/training/ingest", content=body, headers={"Content-Type": "application/json"}), 413)
    assert error["code"] == "payload_too_large"
    assert not (live_server.data_dir / f"{dataset}.jsonl").exists()


# ---- concurrency --------------------------------------------------------------------------------


def test_concurrent_ingests_over_http_lose_nothing(live_server, http):
    dataset, clients, per_client = fresh("busy"), 16, 10
    start = threading.Barrier(clients)

    def client(c: int, upsert: bool) -> dict:
        examples = [{"id": f"c{c}-e{j}", "prompt": f"client {c} example {j}",
                     "response": f"v2 {c}/{j}" if upsert else f"v1 {c}/{j}"} for j in range(per_client)]
        if upsert:
            examples = examples[: per_client // 2]  # rewrite half of what this client stored
        with httpx.Client(base_url=live_server.base_url, headers=live_server.headers(), timeout=120) as own:
            start.wait()
            return ok(ingest(own, dataset, examples, upsert=upsert))

    with ThreadPoolExecutor(clients) as pool:
        appended = list(pool.map(lambda c: client(c, False), range(clients)))
    assert all(r["inserted"] == per_client and r["skipped"] == r["updated"] == 0 for r in appended)
    # Each ingest ran alone under the dataset's lock: the sizes it saw are 10, 20, ... 160.
    assert sorted(r["size"] for r in appended) == [per_client * (i + 1) for i in range(clients)]

    with ThreadPoolExecutor(clients) as pool:  # concurrent atomic rewrites
        upserted = list(pool.map(lambda c: client(c, True), range(clients)))
    assert all(r["updated"] == per_client // 2 and r["size"] == clients * per_client for r in upserted)

    records = file_records(live_server.data_dir / f"{dataset}.jsonl")  # every line parses
    by_id = {r["id"]: r for r in records}
    assert len(records) == len(by_id) == clients * per_client
    for c in range(clients):
        for j in range(per_client):
            assert by_id[f"c{c}-e{j}"]["response"] == (f"v2 {c}/{j}" if j < per_client // 2 else f"v1 {c}/{j}")
    assert listed(http, dataset)["examples"] == clients * per_client


# ---- damage already on disk -----------------------------------------------------------------------


def test_corrupt_lines_are_reported_and_listing_survives(http, live_server):
    dataset = fresh("corrupt")
    ok(ingest(http, dataset, [{"prompt": "a", "response": "r"}, {"prompt": "b", "response": "r"}]))
    path = live_server.data_dir / f"{dataset}.jsonl"
    with path.open("ab") as f:
        f.write(b"this line is not json\n")
        f.write(b'{"id": 3, "prompt": "ids must be strings", "response": "r"}\n')
        f.write(b'{"id": "torn", "prompt": "cut off mid-wri')  # a torn last line, no newline
    info = listed(http, dataset)
    assert info["examples"] == 2 and info["corrupt_lines"] == 3
    page = read_all(http, dataset)
    assert page["total"] == 2 and page["corrupt_lines"] == [3, 4, 5]

    # New records stay intact after the torn line, and rewrites keep the damaged lines verbatim.
    assert ok(ingest(http, dataset, [{"prompt": "c", "response": "r"}]))["size"] == 3
    assert ok(ingest(http, dataset, [{"prompt": "a", "response": "changed"}], upsert=True))["updated"] == 1
    lines = path.read_bytes().split(b"\n")
    assert lines[2] == b"this line is not json" and lines[4] == b'{"id": "torn", "prompt": "cut off mid-wri'
    page = read_all(http, dataset)
    assert [r["prompt"] for r in page["data"]] == ["a", "b", "c"] and page["data"][0]["response"] == "changed"
    assert page["corrupt_lines"] == [3, 4, 5] and listed(http, dataset)["corrupt_lines"] == 3


# ---- the README's examples --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def readme_server(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("readme"), API_KEYS=f"{API_KEY},{README_KEY}")
    yield server
    server.stop()


def run_readme_example(example: readme_examples.CurlExample, base_url: str) -> dict:
    return json.loads(readme_examples.run_readme_example(example, base_url, timeout=120))


def test_readme_training_examples_work_as_written(readme_server):
    """The project README's training examples, run as written: ingest (twice), list, read back, delete."""
    (ingest_example,) = readme_examples.readme_curl_examples("/v1/training/ingest")
    (list_example,) = readme_examples.readme_curl_examples("/v1/training/datasets", method="GET")
    sent = ingest_example.body
    dataset, examples = sent["dataset"], sent["examples"]
    n = len(examples)
    first = run_readme_example(ingest_example, readme_server.base_url)
    assert first == {"object": "training.ingest", "dataset": dataset, "inserted": n, "updated": 0, "skipped": 0, "size": n}
    again = run_readme_example(ingest_example, readme_server.base_url)  # identical examples: skipped, not duplicated
    assert (again["inserted"], again["updated"], again["skipped"], again["size"]) == (0, 0, n, n)
    listing = run_readme_example(list_example, readme_server.base_url)
    (info,) = [d for d in listing["data"] if d["name"] == dataset]
    embedded = bool(sent.get("store_embeddings"))
    assert info["examples"] == n and info["has_embeddings"] is embedded and info["corrupt_lines"] == 0
    records = file_records(readme_server.data_dir / f"{dataset}.jsonl")
    assert [(r["prompt"], r["response"], r["meta"]) for r in records] == [
        (e["prompt"], e["response"], e.get("meta") or {}) for e in examples]
    assert all(len(r["embedding"]) == 384 for r in records) if embedded else all("embedding" not in r for r in records)

    # Reading back and deleting, where the README shows them for the dataset it ingested.
    for example in readme_examples.readme_curl_examples("/v1/training/datasets/{name}", method="GET"):
        if example.path.rsplit("/", 1)[1] == dataset:
            page = run_readme_example(example, readme_server.base_url)
            offset = int(example.query.get("offset", ["0"])[0])
            shown = examples[offset: offset + int(example.query.get("limit", ["100"])[0])]
            assert page["object"] == "list" and page["dataset"] == dataset and page["total"] == n
            assert [(r["prompt"], r["response"]) for r in page["data"]] == [(e["prompt"], e["response"]) for e in shown]
    for example in readme_examples.readme_curl_examples("/v1/training/datasets/{name}", method="DELETE"):
        if example.path.rsplit("/", 1)[1] == dataset:
            deleted = run_readme_example(example, readme_server.base_url)
            assert deleted == {"object": "training.dataset.deleted", "dataset": dataset, "deleted": True}
            listing = run_readme_example(list_example, readme_server.base_url)
            assert dataset not in [d["name"] for d in listing["data"]]
            assert not (readme_server.data_dir / f"{dataset}.jsonl").exists()


# ---- kill -9 in the middle of ingesting -------------------------------------------------------------


def batch_of(b: int) -> tuple[list[dict], bool]:
    """Batch b: 20 new examples; every third batch is an upsert that also rewrites 3 of batch b-1."""
    examples = [{"id": f"b{b}-e{j}", "prompt": f"prompt {b}/{j}", "response": f"v1 {b}/{j} " + "r" * 300,
                 "meta": {"batch": b}} for j in range(20)]
    upsert = b % 3 == 2
    if upsert:
        examples += [{"id": f"b{b - 1}-e{j}", "prompt": f"prompt {b - 1}/{j}", "response": f"v2 from batch {b}",
                      "meta": {"batch": b - 1}} for j in range(3)]
    return examples, upsert


def test_kill_9_mid_ingest_keeps_every_acknowledged_example(tmp_path):
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    server = start_server(tmp_path / "first")
    dataset = "crash"
    acked: dict[str, str] = {}  # id -> the response of the latest acknowledged version
    in_flight: dict[str, str] = {}  # the batch being sent when the server died (may or may not be on disk)
    stop = threading.Event()
    failures: list[str] = []

    def ingest_forever() -> None:
        with httpx.Client(base_url=server.base_url, headers=server.headers(), timeout=30) as client:
            b = 0
            while not stop.is_set():
                examples, upsert = batch_of(b)
                in_flight.clear()
                in_flight.update({e["id"]: e["response"] for e in examples})
                try:
                    response = ingest(client, dataset, examples, upsert=upsert)
                except httpx.HTTPError:
                    return  # the server is gone
                if response.status_code != 200:
                    failures.append(response.text)
                    return
                acked.update(in_flight)
                b += 1

    try:
        worker = threading.Thread(target=ingest_forever, daemon=True)
        worker.start()
        deadline = time.monotonic() + 120
        while len(acked) < 20 * 15 and time.monotonic() < deadline and worker.is_alive():
            time.sleep(0.02)
        assert not failures and len(acked) >= 20 * 15, failures or "the ingest loop made too little progress"
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(30)
        stop.set()
        worker.join(30)
        assert not worker.is_alive() and server.process.returncode == -signal.SIGKILL
    finally:
        server.stop()

    path = server.data_dir / f"{dataset}.jsonl"
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    torn = lines.pop()  # b"" when the file ends with a newline; otherwise a write cut short by the kill
    on_disk = [orjson.loads(line) for line in lines]  # every complete line parses
    by_id = {r["id"]: r for r in on_disk}
    assert len(by_id) == len(on_disk)  # one record per id
    for key, response in acked.items():
        assert key in by_id, key
        assert by_id[key]["response"] in (response, in_flight.get(key)), key

    restarted = start_server(tmp_path / "second", TRAINING_DATA_DIR=str(server.data_dir))
    try:
        with httpx.Client(base_url=restarted.base_url, headers=restarted.headers(), timeout=60) as client:
            page = read_all(client, dataset)
            assert page["total"] == len(on_disk)
            assert page["corrupt_lines"] == ([len(lines) + 1] if torn else [])  # a torn tail is reported
            assert [d["name"] for d in ok(client.get("/v1/training/datasets"))["data"]] == [dataset]  # no .tmp leftovers listed
            after = ok(ingest(client, dataset, [{"id": "after", "prompt": "after the crash", "response": "r"}]))
            assert after["inserted"] == 1 and after["size"] == len(on_disk) + 1
            assert ok(ingest(client, dataset, [{"id": "after", "prompt": "after", "response": "r2"}], upsert=True))["updated"] == 1
        assert not [p.name for p in server.data_dir.iterdir() if p.name.endswith(".tmp")]
    finally:
        restarted.stop()
