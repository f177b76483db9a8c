"""Stored responses of `/v1/responses`: one SQLite file (WAL), shared by every replica on this machine.

A row is one response: its id, the API key's hash (`scope`: a key never sees another key's rows),
its status, the Response object as JSON (`body`), this request's input items, and `history`, the
items of the `previous_response_id` chain before them, so that a continuation needs one row only.

Bounds: a row older than `ttl_s` is gone for every read at once (the sweep deletes it later), and
after each insert the oldest rows go until all rows together fit `max_bytes` (a running total kept
by triggers, so the check costs no scan). Running responses (queued or in_progress) report a
heartbeat; one whose heartbeat stopped (its server died) reads as failed, and a server starting
marks the rows its own previous run left running as failed: that run is gone.

Every call runs on the store's own thread (one connection, never the event loop). SQLite's
"locked" (past `busy_timeout_s`), "full" and "corrupt" become `StorageUnavailable` (503).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

import orjson

from errors import StorageUnavailable

log = logging.getLogger("server.responses.store")

T = TypeVar("T")
RUNNING = ("queued", "in_progress")
SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    scope TEXT NOT NULL,
    created_at REAL NOT NULL,
    status TEXT NOT NULL,
    background INTEGER NOT NULL,
    replica TEXT NOT NULL,
    heartbeat_at REAL NOT NULL,
    error TEXT,
    history TEXT NOT NULL,
    input_items TEXT NOT NULL,
    body TEXT NOT NULL,
    size INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS responses_by_age ON responses (created_at);
CREATE TABLE IF NOT EXISTS totals (id INTEGER PRIMARY KEY CHECK (id = 1), bytes INTEGER NOT NULL);
INSERT OR IGNORE INTO totals VALUES (1, 0);
CREATE TRIGGER IF NOT EXISTS responses_added AFTER INSERT ON responses
    BEGIN UPDATE totals SET bytes = bytes + NEW.size WHERE id = 1; END;
CREATE TRIGGER IF NOT EXISTS responses_removed AFTER DELETE ON responses
    BEGIN UPDATE totals SET bytes = bytes - OLD.size WHERE id = 1; END;
CREATE TRIGGER IF NOT EXISTS responses_resized AFTER UPDATE OF size ON responses
    BEGIN UPDATE totals SET bytes = bytes - OLD.size + NEW.size WHERE id = 1; END;
"""
COLUMNS = "id, scope, created_at, status, background, heartbeat_at, error, history, input_items, body"
RESTARTED = "the server restarted while this response was being generated; it was not finished"
STOPPED = "the server generating this response stopped reporting progress (it crashed or was stopped); it was not finished"


class StoreCorrupt(Exception):
    """The database file fails SQLite's own check: a start-up error that names the file."""


@dataclass(frozen=True)
class StoredResponse:
    id: str
    scope: str
    created_at: float
    status: str
    background: bool
    body: dict[str, Any]  # the Response object; `status` and `error` already overlaid with the row's own
    history: list[dict[str, Any]]  # the chain's items before this response's input
    input_items: list[dict[str, Any]]


def check_database(path: Path) -> None:
    """Open `path` (creating it if missing) and run `PRAGMA quick_check`; raise StoreCorrupt naming it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(path, timeout=5.0) as connection:
            result = connection.execute("PRAGMA quick_check").fetchone()[0]
        connection.close()
    except sqlite3.DatabaseError as exc:
        raise StoreCorrupt(f"RESPONSES_DB {path} cannot be used: {exc}; move it aside (a new one is made) "
                           "or restore a backup") from None
    except OSError as exc:
        raise StoreCorrupt(f"RESPONSES_DB {path} cannot be opened: {exc}") from None
    if result != "ok":
        raise StoreCorrupt(f"RESPONSES_DB {path} is corrupt (SQLite's quick_check: {result}); move it aside "
                           "(a new one is made) or restore a backup")


def storage_error(exc: sqlite3.Error, path: Path) -> StorageUnavailable:
    """SQLite's error as a 503 whose message says what is wrong; the file's path goes to the log only."""
    text = str(exc).lower()
    if "locked" in text or "busy" in text:
        message = "the stored-responses database is locked by another process; retry later"
    elif "full" in text:
        message = "the stored-responses database is full (disk space or size limit); nothing more can be stored"
    elif "malformed" in text or (isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError)):
        message = "the stored-responses database is corrupt; the server's operator must replace it"
    else:
        message = "the stored-responses database cannot be used now"
    return StorageUnavailable(message, detail=f"RESPONSES_DB {path}: {exc}")


class ResponseStore:
    def __init__(self, path: Path, *, ttl_s: float, max_bytes: int, replica: str = "", busy_timeout_s: float = 5.0,
                 stale_after_s: float = 30.0, clock: Callable[[], float] = time.time):
        self.path = Path(path)
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self.replica = replica
        self.busy_timeout_s = busy_timeout_s
        self.stale_after_s = stale_after_s
        self.clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="response-store")
        self._connection: sqlite3.Connection | None = None

    # ---- the thread's side ---------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
        connection.execute("PRAGMA journal_mode = WAL")  # readers never wait for a writer, across processes
        connection.execute("PRAGMA synchronous = NORMAL")  # WAL stays consistent; a power cut may lose the last commits
        connection.executescript(SCHEMA)
        return connection

    def _db(self) -> sqlite3.Connection:
        if self._connection is None:
            self._connection = self._connect()
        return self._connection

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            result = fn(db)
            db.execute("COMMIT")  # may fail too (disk full, busy): then roll back, so the next BEGIN works
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return result

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        def call() -> T:
            try:
                return fn(*args)
            except sqlite3.Error as exc:
                if self._connection is not None and not isinstance(exc, sqlite3.OperationalError):
                    self._close_connection()  # a corrupt file: open afresh next time (it may have been replaced)
                raise storage_error(exc, self.path) from exc

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def _close_connection(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    # ---- the event loop's side -----------------------------------------------------------------

    async def open(self) -> int:
        """Create the schema, fail what this replica's previous run left running, sweep; rows marked failed."""
        return await self._run(self._open)

    def _open(self) -> int:
        def fail_leftovers(db: sqlite3.Connection) -> int:
            return db.execute(f"UPDATE responses SET status = 'failed', error = ? WHERE replica = ? "
                              f"AND status IN {RUNNING}", (RESTARTED, self.replica)).rowcount

        failed = self._write(fail_leftovers)
        self._sweep()
        return failed

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._close_connection)
        self._executor.shutdown(wait=False)

    async def insert(self, *, id: str, scope: str, status: str, background: bool, body: dict,
                     history: list[dict], input_items: list[dict]) -> None:
        texts = [orjson.dumps(value).decode() for value in (history, input_items, body)]
        await self._run(self._insert, (id, scope, status, background, texts))

    def _insert(self, row: tuple) -> None:
        id, scope, status, background, (history, input_items, body) = row
        size = len(history) + len(input_items) + len(body)
        now = self.clock()

        def insert(db: sqlite3.Connection) -> None:
            db.execute("INSERT INTO responses (id, scope, created_at, status, background, replica, heartbeat_at, "
                       "history, input_items, body, size) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (id, scope, now, status, int(background), self.replica, now, history, input_items, body, size))
            self._evict_oldest(db)

        self._write(insert)

    def _evict_oldest(self, db: sqlite3.Connection) -> None:
        """Oldest rows out until all rows fit `max_bytes` (usually none, or one)."""
        while db.execute("SELECT bytes FROM totals WHERE id = 1").fetchone()[0] > self.max_bytes:
            if db.execute("DELETE FROM responses WHERE rowid = (SELECT rowid FROM responses "
                          "ORDER BY created_at, rowid LIMIT 1)").rowcount == 0:
                break

    async def get(self, id: str, scope: str) -> StoredResponse | None:
        """The live row `id` of `scope`, or None (unknown, another key's, deleted or expired)."""
        return await self._run(self._get, id, scope)

    def _get(self, id: str, scope: str) -> StoredResponse | None:
        row = self._db().execute(f"SELECT {COLUMNS} FROM responses WHERE id = ? AND scope = ? AND created_at > ?",
                                 (id, scope, self.clock() - self.ttl_s)).fetchone()
        return None if row is None else self._stored(row)

    def _stored(self, row: tuple) -> StoredResponse:
        id, scope, created_at, status, background, heartbeat_at, error, history, input_items, body = row
        body = orjson.loads(body)
        if status in RUNNING and heartbeat_at < self.clock() - self.stale_after_s:
            status, error = "failed", STOPPED  # its server is gone; the next start of that replica writes it down
        body["status"] = status
        if error is not None:
            body["error"] = {"code": "server_error", "message": error}
        return StoredResponse(id, scope, created_at, status, bool(background), body, orjson.loads(history),
                              orjson.loads(input_items))

    async def update(self, id: str, body: dict) -> str | None:
        """Write `body` (its `status` with it) over a running row; a row cancelled meanwhile keeps "cancelled".

        Returns the status the row now has, or None if it is gone (deleted, expired, evicted)."""
        text = orjson.dumps(body).decode()
        return await self._run(self._update, id, body["status"], text)

    def _update(self, id: str, status: str, body: str) -> str | None:
        def update(db: sqlite3.Connection) -> str | None:
            row = db.execute("SELECT status FROM responses WHERE id = ?", (id,)).fetchone()
            if row is None:
                return None
            kept = row[0] if row[0] not in RUNNING else status  # cancelled, or failed by a restart: final
            db.execute("UPDATE responses SET status = ?, body = ?, heartbeat_at = ?, "
                       "size = length(history) + length(input_items) + ? WHERE id = ?",
                       (kept, body, self.clock(), len(body), id))
            return kept

        return self._write(update)

    async def delete(self, id: str, scope: str) -> bool:
        return await self._run(self._delete, id, scope)

    def _delete(self, id: str, scope: str) -> bool:
        return self._write(lambda db: db.execute("DELETE FROM responses WHERE id = ? AND scope = ? AND created_at > ?",
                                                 (id, scope, self.clock() - self.ttl_s)).rowcount > 0)

    async def cancel(self, id: str, scope: str) -> StoredResponse | None:
        """Mark a running background row cancelled (its runner stops at its next heartbeat); the row after."""
        return await self._run(self._cancel, id, scope)

    def _cancel(self, id: str, scope: str) -> StoredResponse | None:
        self._write(lambda db: db.execute(
            f"UPDATE responses SET status = 'cancelled' WHERE id = ? AND scope = ? AND background = 1 "
            f"AND status IN {RUNNING} AND heartbeat_at >= ?", (id, scope, self.clock() - self.stale_after_s)))
        return self._get(id, scope)

    async def heartbeat(self, ids: list[str]) -> set[str]:
        """Note that `ids` are still running here; return those of them cancelled meanwhile."""
        return await self._run(self._heartbeat, list(ids))

    def _heartbeat(self, ids: list[str]) -> set[str]:
        marks = ",".join("?" * len(ids))

        def beat(db: sqlite3.Connection) -> set[str]:
            db.execute(f"UPDATE responses SET heartbeat_at = ? WHERE id IN ({marks}) AND status IN {RUNNING}",
                       (self.clock(), *ids))
            return {row[0] for row in db.execute(
                f"SELECT id FROM responses WHERE id IN ({marks}) AND status = 'cancelled'", ids)}

        return self._write(beat) if ids else set()

    async def sweep(self) -> int:
        """Delete expired rows; how many."""
        return await self._run(self._sweep)

    def _sweep(self) -> int:
        return self._write(lambda db: db.execute("DELETE FROM responses WHERE created_at <= ?",
                                                 (self.clock() - self.ttl_s,)).rowcount)

    async def total_bytes(self) -> int:
        return await self._run(lambda: self._db().execute("SELECT bytes FROM totals WHERE id = 1").fetchone()[0])
