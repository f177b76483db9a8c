"""The stored responses' SQLite file: scoping, expiry on read, the size bound, running rows across
restarts and replicas, cancels, and a locked, full or corrupt file (503s and a start-up error)."""

from __future__ import annotations

import sqlite3

import pytest

from data.response_store import RESTARTED, STOPPED, ResponseStore, StoreCorrupt, check_database
from errors import StorageUnavailable

KEY, OTHER_KEY = "a" * 32, "b" * 32


class Clock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def body(id: str, status: str = "completed", text: str = "hi") -> dict:
    return {"id": id, "object": "response", "status": status, "output": [{"type": "message", "text": text}]}


async def make(tmp_path, clock=None, **kw) -> ResponseStore:
    options = {"ttl_s": 3600.0, "max_bytes": 10**6, **kw}
    store = ResponseStore(tmp_path / "responses.sqlite3", clock=clock or Clock(), **options)
    await store.open()
    return store


async def add(store: ResponseStore, id: str, *, scope: str = KEY, status: str = "completed", background: bool = False,
              text: str = "hi") -> None:
    await store.insert(id=id, scope=scope, status=status, background=background, body=body(id, status, text),
                       history=[{"id": "msg_0"}], input_items=[{"id": "msg_1"}])


async def test_a_stored_response_reads_back_with_its_items_for_its_own_key_only(tmp_path):
    store = await make(tmp_path)
    await add(store, "resp_1")
    stored = await store.get("resp_1", KEY)
    assert stored.body == body("resp_1") and stored.history == [{"id": "msg_0"}] and stored.input_items == [{"id": "msg_1"}]
    assert await store.get("resp_1", OTHER_KEY) is None
    assert not await store.delete("resp_1", OTHER_KEY)  # another key cannot delete it either
    assert await store.delete("resp_1", KEY)
    assert await store.get("resp_1", KEY) is None and not await store.delete("resp_1", KEY)
    await store.close()


async def test_expiry_holds_on_read_before_any_sweep_and_the_sweep_deletes(tmp_path):
    clock = Clock()
    store = await make(tmp_path, clock, ttl_s=100.0)
    await add(store, "resp_old")
    clock.now += 60
    await add(store, "resp_new")
    clock.now += 41  # resp_old is 101 s old
    assert await store.get("resp_old", KEY) is None and not await store.delete("resp_old", KEY)
    assert await store.get("resp_new", KEY) is not None
    before = await store.total_bytes()
    assert await store.sweep() == 1
    assert 0 < await store.total_bytes() == before // 2  # the two rows were the same size
    await store.close()


async def test_the_size_bound_evicts_the_oldest_first(tmp_path):
    clock = Clock()
    store = await make(tmp_path, clock, max_bytes=10**6)
    for n in range(3):
        await add(store, f"resp_{n}", text="x" * 1000)
        clock.now += 1
    one = await store.total_bytes() // 3
    store.max_bytes = 3 * one + one // 2  # room for three and a half
    await add(store, "resp_3", text="x" * 1000)
    assert await store.get("resp_0", KEY) is None  # the oldest went
    assert all([await store.get(f"resp_{n}", KEY) for n in (1, 2, 3)])
    assert await store.total_bytes() == 3 * one
    await store.close()


async def test_a_restart_fails_what_this_replica_left_running_and_not_another_replicas(tmp_path):
    clock = Clock()
    first = await make(tmp_path, clock, replica="replica-1")
    await add(first, "resp_mine", status="in_progress", background=True)
    other = await make(tmp_path, clock, replica="replica-2")
    await add(other, "resp_theirs", status="queued", background=True)
    await first.close()
    again = await make(tmp_path, clock, replica="replica-1")  # the restart
    mine = await again.get("resp_mine", KEY)
    assert mine.status == "failed" and mine.body["status"] == "failed"
    assert mine.body["error"] == {"code": "server_error", "message": RESTARTED}
    assert (await again.get("resp_theirs", KEY)).status == "queued"  # replica 2 is still running it
    await again.close()
    await other.close()


async def test_a_running_row_whose_heartbeat_stopped_reads_failed(tmp_path):
    clock = Clock()
    store = await make(tmp_path, clock, stale_after_s=30)
    await add(store, "resp_1", status="in_progress", background=True)
    clock.now += 25
    assert await store.heartbeat(["resp_1"]) == set()
    clock.now += 25  # 50 s after the start, 25 after the heartbeat
    assert (await store.get("resp_1", KEY)).status == "in_progress"
    clock.now += 10
    stale = await store.get("resp_1", KEY)
    assert stale.status == "failed" and stale.body["error"]["message"] == STOPPED
    await store.close()


async def test_a_cancel_reaches_the_runner_through_its_heartbeat_and_its_last_write_keeps_it(tmp_path):
    store = await make(tmp_path)
    await add(store, "resp_bg", status="in_progress", background=True)
    await add(store, "resp_fg", status="in_progress")
    assert (await store.cancel("resp_bg", OTHER_KEY)) is None
    assert (await store.cancel("resp_fg", KEY)).status == "in_progress"  # only background rows
    assert (await store.cancel("resp_bg", KEY)).status == "cancelled"
    assert await store.heartbeat(["resp_bg", "resp_fg"]) == {"resp_bg"}
    assert await store.update("resp_bg", body("resp_bg", "completed", "partial")) == "cancelled"
    stored = await store.get("resp_bg", KEY)
    assert stored.status == "cancelled" and stored.body["output"][0]["text"] == "partial"
    assert await store.update("resp_fg", body("resp_fg", "completed")) == "completed"
    assert await store.update("resp_gone", body("resp_gone")) is None
    await store.close()


async def test_a_locked_file_is_a_503_that_says_so(tmp_path):
    store = await make(tmp_path, busy_timeout_s=0.05)
    holder = sqlite3.connect(tmp_path / "responses.sqlite3", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StorageUnavailable) as info:
            await add(store, "resp_1")
        assert info.value.status == 503 and "locked" in info.value.message
        assert str(tmp_path) in info.value.detail and str(tmp_path) not in info.value.message  # the path: log only
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    await add(store, "resp_1")  # and it works again once the lock is gone
    await store.close()


class TinyStore(ResponseStore):
    """A database that can grow by a few pages only: SQLite's own "database or disk is full"."""

    def _connect(self) -> sqlite3.Connection:
        connection = super()._connect()
        pages = connection.execute("PRAGMA page_count").fetchone()[0]
        connection.execute(f"PRAGMA max_page_count = {pages + 2}")
        return connection


async def test_a_full_file_is_a_503_that_says_so(tmp_path):
    store = TinyStore(tmp_path / "responses.sqlite3", ttl_s=3600, max_bytes=10**9, clock=Clock())
    await store.open()
    with pytest.raises(StorageUnavailable) as info:
        for n in range(20):
            await add(store, f"resp_{n}", text="x" * 8000)
    assert "full" in info.value.message
    assert await store.get("resp_0", KEY) is not None  # what fitted is still there, and the file still answers
    await store.close()


async def test_a_corrupt_file_is_a_start_up_error_naming_it_and_a_503_at_run_time(tmp_path):
    path = tmp_path / "responses.sqlite3"
    path.write_bytes(b"this is not a database" * 500)
    with pytest.raises(StoreCorrupt) as info:
        check_database(path)
    assert str(path) in str(info.value) and "move it aside" in str(info.value)
    store = ResponseStore(path, ttl_s=3600, max_bytes=10**6)
    with pytest.raises(StorageUnavailable) as unavailable:
        await store.get("resp_1", KEY)
    assert "corrupt" in unavailable.value.message
    await store.close()


def test_a_healthy_or_missing_file_passes_the_start_up_check(tmp_path):
    check_database(tmp_path / "new" / "responses.sqlite3")  # made
    check_database(tmp_path / "new" / "responses.sqlite3")  # and checked
