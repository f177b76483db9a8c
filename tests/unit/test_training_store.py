"""The training-dataset store: counts, ids, concurrency, names, corrupt lines and kill -9."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from data.record_format import example_id
from data.training_store import TrainingStore
from errors import InvalidRequest, NotFound

ROOT = Path(__file__).resolve().parents[2]
HELPER = ROOT / "tests" / "helpers" / "ingest_loop.py"


def ex(prompt: str, response: str = "answer", **extra) -> dict:
    return {"prompt": prompt, "response": response, **extra}


def lines_of(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


@pytest.mark.asyncio
async def test_insert_then_append_mode_skips_known_ids(tmp_path):
    store = TrainingStore(tmp_path)
    first = await store.ingest("faq", [ex("a"), ex("b", meta={"lang": "en"})])
    assert first == {"inserted": 2, "updated": 0, "skipped": 0, "size": 2}
    again = await store.ingest("faq", [ex("a", "changed"), ex("c"), ex("c", "dup in request")])
    assert again == {"inserted": 1, "updated": 0, "skipped": 2, "size": 3}
    records = lines_of(tmp_path / "faq.jsonl")
    assert [r["prompt"] for r in records] == ["a", "b", "c"]
    assert records[0]["response"] == "answer" and records[2]["response"] == "answer"  # nothing overwritten
    assert records[1]["meta"] == {"lang": "en"} and records[0]["meta"] == {}
    assert set(records[0]) == {"id", "prompt", "response", "meta", "created_at"}
    assert records[0]["created_at"].endswith("Z")


@pytest.mark.asyncio
async def test_upsert_counts_and_stable_ids(tmp_path):
    store = TrainingStore(tmp_path)
    await store.ingest("d", [ex("p1"), ex("p2"), ex("p3", id="custom-3")])
    result = await store.ingest(
        "d",
        [ex("p1", "new answer"), ex("p2"), ex("p4"), ex("p4", "p4 second"), ex("other prompt", id="custom-3")],
        upsert=True,
    )
    # p1 changed -> updated; p2 identical -> skipped; p4 new -> inserted, then replaced in the
    # same request -> updated; custom-3 keyed by its id -> updated.
    assert result == {"inserted": 1, "updated": 3, "skipped": 1, "size": 4}
    records = {r["id"]: r for r in lines_of(tmp_path / "d.jsonl")}
    assert records[example_id("p1")]["response"] == "new answer"
    assert records[example_id("p1")]["created_at"] <= records[example_id("p1")]["updated_at"]
    assert records[example_id("p4")]["response"] == "p4 second"
    assert records["custom-3"]["prompt"] == "other prompt"
    assert example_id("p1") == example_id("p1") != example_id("p2") and len(example_id("p1")) == 32
    order = [r["id"] for r in lines_of(tmp_path / "d.jsonl")]
    assert order == [example_id("p1"), example_id("p2"), "custom-3", example_id("p4")]  # rewritten in place
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.asyncio
async def test_ingest_reads_the_file_once_unless_it_changes_or_an_upsert_replaces(tmp_path, monkeypatch):
    from data import jsonl_files

    reads = []
    real_load = jsonl_files.load
    monkeypatch.setattr(jsonl_files, "load", lambda path: reads.append(path) or real_load(path))
    store = TrainingStore(tmp_path)
    await store.ingest("faq", [ex("a")])
    for prompt in ("b", "c", "a"):
        await store.ingest("faq", [ex(prompt)])
    assert len(reads) == 1  # indexed once (no file yet); appends and skips need no reading

    with (tmp_path / "faq.jsonl").open("ab") as f:  # changed behind the store's back
        f.write(orjson.dumps({"id": example_id("z"), "prompt": "z", "response": "r"}) + b"\n")
    assert await store.ingest("faq", [ex("z"), ex("d")]) == {"inserted": 1, "updated": 0, "skipped": 1, "size": 5}
    assert len(reads) == 2

    assert await store.ingest("faq", [ex("a", "new answer")], upsert=True) == \
        {"inserted": 0, "updated": 1, "skipped": 0, "size": 5}
    assert len(reads) == 3  # the stored record is needed to replace it
    assert [r["response"] for r in lines_of(tmp_path / "faq.jsonl")][0] == "new answer"
    await store.delete("faq")
    assert await store.ingest("faq", [ex("a")]) == {"inserted": 1, "updated": 0, "skipped": 0, "size": 1}


@pytest.mark.asyncio
async def test_embeddings_are_stored_and_listed(tmp_path):
    store = TrainingStore(tmp_path)
    assert await store.list_datasets() == []
    await store.ingest("plain", [ex("x")])
    await store.ingest("vectors", [ex("x"), ex("y")], embeddings=[[0.5, -0.25], [1.0, 0.0]])
    again = await store.ingest("vectors", [ex("x")], upsert=True, embeddings=[[9.0, 9.0]])
    assert again["skipped"] == 1  # same content, already embedded: nothing to change
    added = await store.ingest("plain", [ex("x")], upsert=True, embeddings=[[0.1, 0.2]])
    assert added["updated"] == 1  # same content but it had no embedding yet
    listing = {d["name"]: d for d in await store.list_datasets()}
    assert set(listing) == {"plain", "vectors"}
    assert listing["vectors"]["has_embeddings"] and listing["vectors"]["examples"] == 2
    assert listing["vectors"]["bytes"] == (tmp_path / "vectors.jsonl").stat().st_size
    assert listing["vectors"]["updated_at"].endswith("Z") and listing["vectors"]["corrupt_lines"] == 0
    page = await store.read("vectors", offset=1, limit=5)
    assert page["total"] == 2 and [r["embedding"] for r in page["data"]] == [[1.0, 0.0]]


@pytest.mark.asyncio
async def test_each_embedding_says_its_dtype_and_older_records_without_one_still_read(tmp_path):
    store = TrainingStore(tmp_path)
    old = {"id": "old", "prompt": "o", "response": "r", "meta": {}, "created_at": "2026-01-01T00:00:00.000Z",
           "embedding": [0.5, 0.5]}  # written before embedding_dtype existed: float32
    (tmp_path / "mixed.jsonl").write_bytes(orjson.dumps(old) + b"\n")
    await store.ingest("mixed", [ex("new")], embeddings=[[0.25, 0.75]], embedding_dtype="bfloat16")
    await store.ingest("mixed", [ex("text only")])
    records = (await store.read("mixed"))["data"]
    assert [r.get("embedding_dtype") for r in records] == [None, "bfloat16", None]
    assert list(records[1])[-2:] == ["embedding_dtype", "embedding"] and records[0]["embedding"] == [0.5, 0.5]
    updated = await store.ingest("mixed", [ex("new", "changed")], upsert=True, embeddings=[[1.0, 0.0]])
    assert updated["updated"] == 1
    replaced = lines_of(tmp_path / "mixed.jsonl")[1]
    assert replaced["embedding_dtype"] == "float32"  # the default, as before
    assert list(replaced)[-3:] == ["updated_at", "embedding_dtype", "embedding"]


@pytest.mark.asyncio
async def test_concurrent_ingests_to_one_dataset_lose_nothing(tmp_path):
    store = TrainingStore(tmp_path)

    async def client(c: int) -> dict:
        await asyncio.sleep(random.random() / 100)
        return await store.ingest("shared", [ex(f"c{c}-e{i}") for i in range(25)], upsert=c % 4 == 0)

    results = await asyncio.gather(*(client(c) for c in range(20)))
    assert sum(r["inserted"] for r in results) == 500
    assert sorted(r["size"] for r in results)[-1] == 500
    records = lines_of(tmp_path / "shared.jsonl")
    assert len(records) == 500 and len({r["id"] for r in records}) == 500


@pytest.mark.asyncio
@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "", "a/b", "..", ".", "a" * 65, "a b", "x\x00", "ü", None])
async def test_names_that_could_leave_the_root_are_rejected(tmp_path, name):
    store = TrainingStore(tmp_path / "root")
    for call in (store.ingest(name, [ex("a")]), store.read(name), store.delete(name)):
        with pytest.raises(InvalidRequest) as caught:
            await call
        assert caught.value.param == "dataset"
    assert not (tmp_path / "root").exists() and not (tmp_path / "x.jsonl").exists()


@pytest.mark.asyncio
async def test_longest_and_dotted_names_stay_inside(tmp_path):
    store = TrainingStore(tmp_path)
    for name in ["a" * 64, "...", "v1.2_final-x"]:
        await store.ingest(name, [ex("a")])
        assert (tmp_path / f"{name}.jsonl").is_file()


@pytest.mark.asyncio
async def test_corrupt_lines_are_reported_and_kept_by_rewrites(tmp_path):
    store = TrainingStore(tmp_path)
    await store.ingest("d", [ex("a"), ex("b")])
    path = tmp_path / "d.jsonl"
    with path.open("ab") as handle:
        handle.write(b'not json at all\n{"id": "x", "prompt": "p", "respo')  # garbage + a torn last line
    page = await store.read("d")
    assert page["corrupt_lines"] == [3, 4] and page["total"] == 2
    assert (await store.list_datasets())[0]["corrupt_lines"] == 2

    appended = await store.ingest("d", [ex("c")])  # must not glue "c" onto the torn line
    assert appended["inserted"] == 1 and appended["size"] == 3
    assert (await store.read("d"))["corrupt_lines"] == [3, 4]

    rewritten = await store.ingest("d", [ex("a", "new")], upsert=True)
    assert rewritten == {"inserted": 0, "updated": 1, "skipped": 0, "size": 3}
    raw = path.read_bytes().splitlines()
    assert raw[2] == b"not json at all" and raw[3] == b'{"id": "x", "prompt": "p", "respo'
    page = await store.read("d")
    assert page["corrupt_lines"] == [3, 4] and [r["prompt"] for r in page["data"]] == ["a", "b", "c"]


@pytest.mark.asyncio
async def test_read_paging_and_delete(tmp_path):
    store = TrainingStore(tmp_path)
    await store.ingest("d", [ex(f"p{i}") for i in range(7)])
    page = await store.read("d", offset=5, limit=5)
    assert [r["prompt"] for r in page["data"]] == ["p5", "p6"] and page["total"] == 7
    await store.delete("d")
    assert await store.list_datasets() == []
    with pytest.raises(NotFound):
        await store.delete("d")
    with pytest.raises(NotFound):
        await store.read("d")


def run_and_kill(root: Path, dataset: str, min_acks: int, seed: int) -> list[int]:
    """Start the ingest loop, SIGKILL it after `min_acks` acks plus a random moment; return acks."""
    process = subprocess.Popen([sys.executable, str(HELPER), str(root), dataset],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    acks: list[int] = []
    deadline = time.monotonic() + 60
    try:
        while len(acks) < min_acks:
            line = process.stdout.readline()
            if not line or time.monotonic() > deadline:
                raise AssertionError(f"ingest loop stopped early: {process.stderr.read().decode()[-2000:]}")
            acks.append(int(line))
        time.sleep(random.Random(seed).random() * 0.05)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        remaining, _ = process.communicate(timeout=10)
    assert process.returncode == -signal.SIGKILL
    return acks + [int(line) for line in remaining.split()]  # printed before the kill: acknowledged too


@pytest.mark.asyncio
@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_kill_9_mid_ingest_keeps_every_acknowledged_example(tmp_path, seed):
    sys.path.insert(0, str(HELPER.parent))
    from ingest_loop import PER_BATCH

    acks = run_and_kill(tmp_path, "crash", min_acks=10 + 5 * seed, seed=seed)
    path = tmp_path / "crash.jsonl"
    raw = path.read_bytes().split(b"\n")
    if raw[-1] == b"":
        raw.pop()
    for line in raw[:-1]:
        orjson.loads(line)  # every line but possibly the last parses
    store = TrainingStore(tmp_path)
    page = await store.read("crash", limit=1000)
    assert page["corrupt_lines"] in ([], [len(raw)])  # at most a torn last line, and it is reported
    records = page["data"]
    while len(records) < page["total"]:  # a fast machine acknowledges more than one page before the kill
        records += (await store.read("crash", offset=len(records), limit=1000))["data"]
    ids = {r["id"] for r in records}
    assert {f"b{b}-e{j}" for b in acks for j in range(PER_BATCH)} <= ids
    assert len(ids) == page["total"]  # still one record per id
    assert [d["name"] for d in await store.list_datasets()] == ["crash"]  # a leftover .tmp is not a dataset
    after = await store.ingest("crash", [ex("after the crash")])
    assert after["inserted"] == 1 and (await store.read("crash", limit=1000))["corrupt_lines"] == page["corrupt_lines"]
    rewrite = await store.ingest("crash", [ex("after the crash", "updated")], upsert=True)
    assert rewrite["updated"] == 1 and rewrite["size"] == page["total"] + 1
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # a crash's leftovers are cleared


# ---- the store when it is not alone (issue 11, section 5) ------------------------------------------


@pytest.mark.asyncio
async def test_a_name_differing_only_in_case_from_a_dataset_is_refused(tmp_path):
    # On a case-insensitive filesystem (macOS's default) Foo.jsonl and foo.jsonl are one file: the
    # store refuses to create `foo` while `Foo` exists, so one file never has two names (and two locks).
    store = TrainingStore(tmp_path)
    await store.ingest("Foo", [ex("a")])
    for call in (store.ingest("foo", [ex("b")]), store.ingest("FOO", [ex("a", "x")], upsert=True)):
        with pytest.raises(InvalidRequest) as caught:
            await call
        assert caught.value.param == "dataset" and caught.value.code == "dataset_name_conflict"
        assert "'Foo'" in caught.value.message
    for call in (store.read("foo"), store.delete("foo")):
        with pytest.raises(NotFound) as caught:
            await call
        assert "'Foo'" in caught.value.message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Foo.jsonl"]
    assert [r["prompt"] for r in lines_of(tmp_path / "Foo.jsonl")] == ["a"]
    assert (await store.ingest("Foo", [ex("b")]))["size"] == 2  # the dataset itself is unaffected
    await store.delete("Foo")
    assert (await store.ingest("foo", [ex("c")]))["inserted"] == 1  # free again once Foo is gone


@pytest.mark.asyncio
async def test_names_differing_only_in_case_share_one_lock(tmp_path):
    store = TrainingStore(tmp_path)
    entered = []

    async def hold(name: str) -> None:
        async with store._locked(name):
            entered.append(name)
            await asyncio.sleep(0.2)

    first = asyncio.create_task(hold("Foo"))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(hold("foo"))
    await asyncio.sleep(0.05)
    assert entered == ["Foo"]  # foo waits for Foo's lock: on macOS they are one file
    await asyncio.gather(first, second)
    assert entered == ["Foo", "foo"] and store._locks == {}


@pytest.mark.asyncio
async def test_404_lookups_do_not_grow_the_lock_map(tmp_path):
    store = TrainingStore(tmp_path)
    await store.ingest("real", [ex("a")])
    before = len(store._locks)
    for i in range(300):
        with pytest.raises(NotFound):
            await store.read(f"missing-{i}")
        with pytest.raises(NotFound):
            await store.delete(f"gone-{i}")
    await store.list_datasets()
    assert len(store._locks) == before == 0  # idle locks are dropped


@pytest.mark.asyncio
async def test_only_the_datasets_own_temp_files_are_removed(tmp_path):
    store = TrainingStore(tmp_path)
    await store.ingest("a", [ex("x")])
    await store.ingest("a.jsonl.x", [ex("y")])
    others = [tmp_path / ".a.jsonl.x.jsonl.0123456789ab.tmp",  # a rewrite of dataset `a.jsonl.x` in flight
              tmp_path / ".a.jsonl.notes.tmp"]  # not a temp file of ours at all
    for other in others:
        other.write_bytes(b"someone else's\n")
    own = tmp_path / ".a.jsonl.ba9876543210.tmp"  # a crash's leftover of `a`
    own.write_bytes(b"stale\n")
    assert (await store.ingest("a", [ex("x", "new")], upsert=True))["updated"] == 1  # rewrites: clears stale temps
    assert not own.exists()
    own.write_bytes(b"stale\n")
    await store.delete("a")
    assert not own.exists()
    assert all(other.exists() for other in others)


class _CountingOrjson:
    def __init__(self):
        self.loads_calls = 0

    def loads(self, data):
        self.loads_calls += 1
        return orjson.loads(data)

    def __getattr__(self, name):
        return getattr(orjson, name)


@pytest.mark.asyncio
async def test_listing_and_reading_do_not_reparse_unchanged_files(tmp_path, monkeypatch):
    from data import jsonl_files

    store = TrainingStore(tmp_path)
    await store.ingest("d", [ex(f"p{i}") for i in range(500)], embeddings=[[0.5]] * 500)
    counting = _CountingOrjson()
    monkeypatch.setattr(jsonl_files, "orjson", counting)
    first = await store.list_datasets()
    assert first[0]["examples"] == 500 and first[0]["has_embeddings"]
    parsed = counting.loads_calls
    assert await store.list_datasets() == first
    assert counting.loads_calls == parsed  # unchanged file (same stamp): counts come from the cache

    page = await store.read("d", offset=10, limit=5)
    assert [r["prompt"] for r in page["data"]] == [f"p{i}" for i in range(10, 15)] and page["total"] == 500
    assert counting.loads_calls - parsed <= 15  # parses up to the page's end, not the whole file

    assert (await store.ingest("d", [ex("new 1"), ex("p1"), ex("new 2")]))["inserted"] == 2  # appended by the store
    parsed = counting.loads_calls
    listing = (await store.list_datasets())[0]
    assert listing["examples"] == 502 and listing["bytes"] == (tmp_path / "d.jsonl").stat().st_size
    assert counting.loads_calls == parsed  # its own append updates the counts: no recount
    await store.ingest("d", [ex("p0", "changed")], upsert=True)  # a rewrite: counted again
    assert (await store.list_datasets())[0]["examples"] == 502 and counting.loads_calls > parsed
    for _ in range(2):
        await store.ingest("d", [ex(f"extra {_}")])
    assert (await store.read("d", offset=503, limit=5))["data"][0]["prompt"] == "extra 1"

    with (tmp_path / "d.jsonl").open("ab") as f:  # changed behind the store's back: counted again
        f.write(b"garbage\n" + orjson.dumps({"id": "z", "prompt": "z", "response": "r"}) + b"\n")
    listing = (await store.list_datasets())[0]
    assert listing["examples"] == 505 and listing["corrupt_lines"] == 1
    page = await store.read("d", offset=503, limit=5)
    assert [r["id"] for r in page["data"]][1:] == ["z"] and page["total"] == 505 and page["corrupt_lines"] == [505]


# In a fresh process: VmHWM (peak RSS of this process, reset first) and not ru_maxrss, which on
# Linux starts at the forking parent's peak (here pytest's).
READ_PAGE_ONE = r"""
import asyncio, re, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from data.training_store import TrainingStore

def kb(field):
    return int(re.search(field + r":\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))

store = TrainingStore(Path(sys.argv[2]))
Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
before = kb("VmRSS")
page = asyncio.run(store.read("big"))
print(page["total"], len(page["data"]), max(0, kb("VmHWM") - before) * 1024)
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="measures peak RSS with Linux's /proc")
def test_reading_page_one_of_a_big_dataset_keeps_memory_far_below_its_size(tmp_path):
    record = {"prompt": "question about something", "response": "an answer " * 20, "meta": {},
              "created_at": "2026-01-01T00:00:00.000Z", "embedding": [0.0123456789] * 384}
    count = 0
    with (tmp_path / "big.jsonl").open("wb") as f:
        while f.tell() < 50 * 2**20:
            f.write(b"".join(orjson.dumps({"id": f"r{count + i}", **record}) + b"\n" for i in range(500)))
            count += 500
    size = (tmp_path / "big.jsonl").stat().st_size
    done = subprocess.run([sys.executable, "-c", READ_PAGE_ONE, str(ROOT), str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    total, returned, growth = map(int, done.stdout.split())
    assert total == count and returned == 100
    assert growth < size / 5, f"reading page 1 of a {size / 2**20:.0f} MB dataset grew RSS by {growth / 2**20:.0f} MB"


HOLD_FOLDER = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
from data.folder_lock import claim_folder
claim_folder(sys.argv[2])
print("held", flush=True)
time.sleep(600)
"""


def test_a_claimed_folder_is_refused_to_another_process_until_it_dies(tmp_path):
    from data.folder_lock import FolderInUse, claim_folder

    holder = subprocess.Popen([sys.executable, "-c", HOLD_FOLDER, str(ROOT), str(tmp_path)], stdout=subprocess.PIPE, cwd=ROOT)
    try:
        assert holder.stdout.readline() == b"held\n"
        with pytest.raises(FolderInUse) as caught:
            claim_folder(tmp_path)
        assert str(tmp_path) in str(caught.value) and f"pid {holder.pid}" in str(caught.value)
    finally:
        holder.kill()  # SIGKILL: the OS drops the lock with the process
        holder.wait(30)
    claim_folder(tmp_path)  # free now; held by this test process from here on (tmp_path is its own)
    claim_folder(tmp_path)  # idempotent within a process
    assert [p.name for p in tmp_path.iterdir()] == [".lock"]
