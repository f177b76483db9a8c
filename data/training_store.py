"""The training-dataset store: JSONL files under one root folder, written so nothing is lost.

Each dataset `<name>` is the file `<root>/<name>.jsonl`, one JSON object per line:
`{"id", "prompt", "response", "meta", "created_at"[, "updated_at"][, "embedding"]}`.

Names: `^[A-Za-z0-9._-]{1,64}$`, never `.` or `..`, so no name can leave the root (and a
symlink that would is refused too). Anything else is InvalidRequest(param="dataset").

Ids: an example's `id` if given, else the first 32 hex digits (128 bits) of the SHA-256 of its
UTF-8 prompt. The id is the upsert key, and a dataset never holds two records with one id.

Ingest semantics, as if the examples were ingested one at a time, in order:
* new id -> appended (`inserted`);
* known id, `upsert=false` -> left alone (`skipped`): append mode never overwrites, so a client
  retrying a request whose answer it lost does not duplicate data;
* known id, `upsert=true` -> replaced in place (`updated`, keeps `created_at`, sets
  `updated_at`), unless prompt, response and meta are equal and the stored record already has
  an embedding whenever the new one brings one: then nothing changes (`skipped`).
`size` is the number of valid records afterwards.

Durability: appends are whole lines in one write to an O_APPEND file, fsync'd before `ingest`
returns (and the folder too when the file is new). If an ingest replaces records, the whole
file is rewritten into a temporary file in the same folder, fsync'd, renamed over the old one
with os.replace (atomic) and the folder is fsync'd. A crash therefore leaves at most a torn
last line. Corrupt lines (not a JSON object with string id/prompt/response) are reported by
1-based line number, skipped by readers, and kept verbatim by rewrites; before appending to a
file whose last line is torn, a newline is written first so the new records stay intact.

Concurrency: one asyncio lock per dataset serializes all file work on it (done in a thread
with asyncio.to_thread). The store assumes it is the only process writing its root.

Speed: an ingest does not re-read the file. The store keeps each dataset's ids and size in
memory after reading it once, and reads it whole again only to replace records (an upsert of a
stored id, which rewrites the file anyway) or when the file changed behind its back.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import orjson

from errors import InvalidRequest, NotFound, ServerError

_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_SUFFIX = ".jsonl"
_MAX_ID_CHARS = 256
_MAX_READ_LIMIT = 1000


def validate_dataset_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in (".", ".."):
        raise InvalidRequest(
            "dataset names are 1-64 characters of letters, digits, '.', '_' and '-' (not '.' or '..')",
            param="dataset",
        )
    return name


def example_id(prompt: str) -> str:
    """The id of an example that brings none: SHA-256 of the UTF-8 prompt, 32 hex digits."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:32]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class _Snapshot:
    """A dataset file as read: raw lines (verbatim, no newline) and what parsed."""

    lines: list[bytes] = field(default_factory=list)
    records: list[dict | None] = field(default_factory=list)  # None: blank or corrupt line
    corrupt: list[int] = field(default_factory=list)  # 1-based line numbers
    torn_tail: bool = False  # the file does not end with a newline

    @property
    def valid(self) -> list[dict]:
        return [r for r in self.records if r is not None]


def _parse(data: bytes) -> _Snapshot:
    snap = _Snapshot(torn_tail=bool(data) and not data.endswith(b"\n"))
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for number, raw in enumerate(lines, start=1):
        snap.lines.append(raw)
        record = None
        if raw.strip():
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError:
                record = None
            if not (isinstance(record, dict)
                    and all(isinstance(record.get(k), str) for k in ("id", "prompt", "response"))):
                record = None
                snap.corrupt.append(number)
        snap.records.append(record)
    return snap


def _load(path: Path) -> _Snapshot | None:
    try:
        return _parse(path.read_bytes())
    except FileNotFoundError:
        return None


def _write_all(fd: int, payload: bytes) -> None:
    view = memoryview(payload)
    while view:  # one write in practice; the loop only guards against a short write
        view = view[os.write(fd, view):]
    os.fsync(fd)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _append(path: Path, payload: bytes) -> None:
    created = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        _write_all(fd, payload)
    finally:
        os.close(fd)
    if created:
        _fsync_dir(path.parent)


def _remove_stale_temps(path: Path) -> None:
    # Left by a crash mid-rewrite. Safe to remove: we hold the dataset's lock and are the only writer.
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)


def _replace(path: Path, payload: bytes) -> None:
    _remove_stale_temps(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")  # not *.jsonl: never listed
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        try:
            _write_all(fd, payload)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _dumps(record: dict) -> bytes:
    return orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY)


def _same(stored: dict, new: dict) -> bool:
    return (all(stored.get(k) == new[k] for k in ("prompt", "response", "meta"))
            and ("embedding" not in new or "embedding" in stored))


def _updated(stored: dict, new: dict) -> dict:
    record = dict(new, created_at=stored.get("created_at", new["created_at"]), updated_at=new["created_at"])
    if "embedding" in record:  # keep the documented key order: embedding last
        record["embedding"] = record.pop("embedding")
    return record


def _prepare(examples: list, embeddings: list | None) -> list[dict]:
    if not isinstance(examples, list):
        raise InvalidRequest("examples must be a list", param="examples")
    if embeddings is not None and len(embeddings) != len(examples):
        raise InvalidRequest(f"{len(embeddings)} embeddings for {len(examples)} examples", param="embeddings")
    now, records = _now(), []
    for i, example in enumerate(examples):
        where = f"examples[{i}]"
        if not isinstance(example, dict):
            raise InvalidRequest("each example must be an object", param=where)
        for key in ("prompt", "response"):
            if not isinstance(example.get(key), str):
                raise InvalidRequest(f"{key} must be a string", param=f"{where}.{key}")
        meta = example.get("meta")
        if meta is not None and not isinstance(meta, dict):
            raise InvalidRequest("meta must be an object", param=f"{where}.meta")
        given = example.get("id")
        if given is not None and not (isinstance(given, str) and 0 < len(given) <= _MAX_ID_CHARS):
            raise InvalidRequest(f"id must be a string of 1-{_MAX_ID_CHARS} characters", param=f"{where}.id")
        record = {"id": given or example_id(example["prompt"]), "prompt": example["prompt"],
                  "response": example["response"], "meta": meta or {}, "created_at": now}
        if embeddings is not None:
            try:
                record["embedding"] = [float(x) for x in embeddings[i]]
            except (TypeError, ValueError):
                raise InvalidRequest("an embedding must be a list of numbers", param=f"embeddings[{i}]") from None
        records.append(record)
    return records


@dataclass
class _Index:
    """What an ingest needs to know of a dataset without reading it again: its ids and valid count.

    Kept per dataset between ingests and checked against the file's (inode, size, mtime); any
    other change to the file makes the next ingest read it whole again."""

    stamp: tuple[int, int, int] | None  # of the file it describes; None: no file
    ids: set[str] = field(default_factory=set)
    size: int = 0  # valid records
    torn_tail: bool = False

    @classmethod
    def of(cls, path: Path) -> "_Index":
        stamp = _stamp(path)
        snap = _load(path) or _Snapshot()
        return cls(stamp, {r["id"] for r in snap.valid}, len(snap.valid), snap.torn_tail)


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def _ingest_sync(path: Path, records: list[dict], upsert: bool, index: _Index | None) -> tuple[dict, _Index]:
    """Store `records`; the file is read whole only to index it once, or to replace stored records."""
    if index is None or index.stamp != _stamp(path):
        index = _Index.of(path)
    snap: _Snapshot | None = None  # the whole file, read only when an upsert meets a stored id
    on_disk: dict[str, int] = {}
    replaced: dict[int, dict] = {}
    added: list[dict] = []
    added_at: dict[str, int] = {}
    counts = {"inserted": 0, "updated": 0, "skipped": 0}
    for record in records:
        key = record["id"]
        if key in added_at or key in index.ids:
            if not upsert:
                counts["skipped"] += 1
                continue
            in_request = key in added_at
            if not in_request and snap is None:
                snap = _load(path) or _Snapshot()
                on_disk = {r["id"]: i for i, r in enumerate(snap.records) if r is not None}
            stored = added[added_at[key]] if in_request else replaced.get(on_disk[key], snap.records[on_disk[key]])
            if _same(stored, record):
                counts["skipped"] += 1
                continue
            if in_request:
                added[added_at[key]] = _updated(stored, record)
            else:
                replaced[on_disk[key]] = _updated(stored, record)
            counts["updated"] += 1
        else:
            added_at[key] = len(added)
            added.append(record)
            counts["inserted"] += 1
    if replaced:
        lines = [_dumps(replaced[i]) if i in replaced else raw for i, raw in enumerate(snap.lines)]
        _replace(path, b"".join(line + b"\n" for line in lines + [_dumps(r) for r in added]))
    elif added:
        prefix = b"\n" if index.torn_tail else b""  # keep a torn line apart from the new ones
        _append(path, prefix + b"".join(_dumps(r) + b"\n" for r in added))
    if replaced or added:  # every line now ends with a newline
        index.ids.update(added_at)
        index.size += len(added)
        index.torn_tail = False
        index.stamp = _stamp(path)
    return {**counts, "size": index.size}, index


def _summary(name: str, path: Path) -> dict | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None  # deleted meanwhile
    snap = _load(path) or _Snapshot()
    valid = snap.valid
    return {
        "name": name,
        "examples": len(valid),
        "bytes": stat.st_size,
        "updated_at": datetime.fromtimestamp(stat.st_mtime, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "has_embeddings": any("embedding" in r for r in valid),
        "corrupt_lines": len(snap.corrupt),  # a count here; read() gives the line numbers
    }


class TrainingStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self._locks: dict[str, asyncio.Lock] = {}
        self._indexes: dict[str, _Index] = {}  # per dataset, so that an ingest need not re-read the file

    @classmethod
    def from_settings(cls, settings) -> "TrainingStore":
        return cls(settings.training_data_dir)

    def path_for(self, dataset: str) -> Path:
        """The file of `dataset`, after checking the name and that the path stays in the root."""
        name = validate_dataset_name(dataset)
        path = self.root / f"{name}{_SUFFIX}"
        if path.resolve().parent != self.root.resolve():
            raise InvalidRequest("dataset path leaves the training data folder", param="dataset")
        return path

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    async def ingest(self, dataset: str, examples: list[dict], upsert: bool = False,
                     embeddings: list[list[float]] | None = None) -> dict:
        """Store `examples`; returns {inserted, updated, skipped, size} once they are on disk."""
        path = self.path_for(dataset)
        records = _prepare(examples, embeddings)
        async with self._lock(dataset):
            try:
                await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
                result, self._indexes[dataset] = await asyncio.to_thread(
                    _ingest_sync, path, records, upsert, self._indexes.get(dataset))
                return result
            except OSError as exc:
                self._indexes.pop(dataset, None)  # the file may be half-changed: read it again next time
                raise ServerError(f"cannot write dataset {dataset!r}: {exc.strerror or exc}") from None

    async def list_datasets(self) -> list[dict]:
        """Every dataset: name, examples, bytes, updated_at, has_embeddings, corrupt_lines (count)."""
        if not self.root.is_dir():
            return []
        names = sorted(p.name[: -len(_SUFFIX)] for p in self.root.glob(f"*{_SUFFIX}") if p.is_file())
        summaries = []
        for name in names:
            try:
                path = self.path_for(name)
            except InvalidRequest:
                continue  # a file someone else put there (bad name, symlink out): not ours
            async with self._lock(name):
                summary = await asyncio.to_thread(_summary, name, path)
            if summary is not None:
                summaries.append(summary)
        return summaries

    async def read(self, dataset: str, offset: int = 0, limit: int = 100) -> dict:
        """A page of valid records, the total, and the line numbers of corrupt lines."""
        path = self.path_for(dataset)
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise InvalidRequest("offset must be an integer >= 0", param="offset")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= _MAX_READ_LIMIT:
            raise InvalidRequest(f"limit must be an integer from 1 to {_MAX_READ_LIMIT}", param="limit")
        async with self._lock(dataset):
            snap = await asyncio.to_thread(_load, path)
        if snap is None:
            raise NotFound(f"dataset {dataset!r} does not exist", param="dataset")
        valid = snap.valid
        return {"data": valid[offset : offset + limit], "total": len(valid), "offset": offset,
                "limit": limit, "corrupt_lines": snap.corrupt}

    async def delete(self, dataset: str) -> None:
        path = self.path_for(dataset)
        async with self._lock(dataset):
            self._indexes.pop(dataset, None)
            try:
                await asyncio.to_thread(path.unlink)
            except FileNotFoundError:
                raise NotFound(f"dataset {dataset!r} does not exist", param="dataset") from None
            await asyncio.to_thread(_remove_stale_temps, path)
            await asyncio.to_thread(_fsync_dir, self.root)
