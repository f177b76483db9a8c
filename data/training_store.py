"""The training-dataset store: JSONL files under one root folder, written so nothing is lost.

Each dataset `<name>` is the file `<root>/<name>.jsonl`, one JSON object per line:
`{"id", "prompt", "response", "meta", "created_at"[, "updated_at"][, "embedding_dtype", "embedding"]}`
(data/record_format.py).

Names: `^[A-Za-z0-9._-]{1,64}$`, never `.` or `..`, so no name can leave the root (and a
symlink that would is refused too). Anything else is InvalidRequest(param="dataset"). Names keep
their case, but a name that differs only in case from an existing dataset is refused
(InvalidRequest, code "dataset_name_conflict"; a read or delete of it is NotFound): on a
case-insensitive filesystem (macOS's default) `Foo.jsonl` and `foo.jsonl` are one file, and one
file under two names would be written under two locks. Refusing, rather than folding names to
lower case, keeps every existing file name and URL as it is and behaves the same on every OS.

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

Durability (data/jsonl_files.py): an ingest returns once its records are fsync'd, appended, or
the file rewritten and renamed over the old one. Corrupt lines are reported, skipped by readers
and kept verbatim by rewrites; after a torn last line, a newline comes first.

Concurrency: one asyncio lock per dataset (keyed by the lower-cased name, so names that are one
file on macOS share it) serializes all file work on it (done in a thread with
asyncio.to_thread); a lock is dropped when nobody holds or awaits it, so lookups of missing
datasets leave nothing behind. The store assumes it is the only process writing its root: the
server makes sure of it with `claim_folder`, an OS lock (flock) on `<root>/.lock` held for the
process's lifetime (data/folder_lock.py), so a second server on the same folder exits at start.

Reads stream (`jsonl_files.scan`): memory stays bounded by one line plus one page, and counts are
cached per dataset by the file's stamp, so a listing re-reads only changed files.

Speed: an ingest does not re-read the file. The store keeps each dataset's ids and size in
memory after reading it once, and reads it whole again only to replace records (an upsert of a
stored id, which rewrites the file anyway) or when the file changed behind its back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from data import jsonl_files, record_format
from errors import InvalidRequest, NotFound, ServerError

_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_SUFFIX = ".jsonl"


def validate_dataset_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in (".", ".."):
        raise InvalidRequest(
            "dataset names are 1-64 characters of letters, digits, '.', '_' and '-' (not '.' or '..')",
            param="dataset",
        )
    return name


def _case_twin(path: Path) -> str | None:
    """The dataset whose file name differs from `path`'s only in case, when `path`'s own name is
    not in the folder (on macOS, `path` may then still open: the twin's file)."""
    twin = None
    try:
        with os.scandir(path.parent) as entries:
            for entry in entries:
                if entry.name == path.name:
                    return None
                if twin is None and entry.name.lower() == path.name.lower():
                    twin = entry.name[: -len(_SUFFIX)]
    except (FileNotFoundError, NotADirectoryError):
        return None
    return twin


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
        stamp = jsonl_files.stamp_of(path)
        snap = jsonl_files.load(path) or jsonl_files.Snapshot()
        return cls(stamp, {r["id"] for r in snap.valid}, len(snap.valid), snap.torn_tail)


def _ingest_sync(path: Path, records: list[dict], upsert: bool, index: _Index | None) -> tuple[dict, _Index]:
    """Store `records`; the file is read whole only to index it once, or to replace stored records."""
    if index is None or index.stamp != jsonl_files.stamp_of(path):
        index = _Index.of(path)
    snap: jsonl_files.Snapshot | None = None  # the whole file, read only when an upsert meets a stored id
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
                snap = jsonl_files.load(path) or jsonl_files.Snapshot()
                on_disk = {r["id"]: i for i, r in enumerate(snap.records) if r is not None}
            stored = added[added_at[key]] if in_request else replaced.get(on_disk[key], snap.records[on_disk[key]])
            if record_format.same(stored, record):
                counts["skipped"] += 1
                continue
            if in_request:
                added[added_at[key]] = record_format.updated(stored, record)
            else:
                replaced[on_disk[key]] = record_format.updated(stored, record)
            counts["updated"] += 1
        else:
            added_at[key] = len(added)
            added.append(record)
            counts["inserted"] += 1
    if replaced:
        lines = [jsonl_files.dumps(replaced[i]) if i in replaced else raw for i, raw in enumerate(snap.lines)]
        jsonl_files.replace_file(path, b"".join(line + b"\n" for line in lines + [jsonl_files.dumps(r) for r in added]))
    elif added:
        prefix = b"\n" if index.torn_tail else b""  # keep a torn line apart from the new ones
        jsonl_files.append(path, prefix + b"".join(jsonl_files.dumps(r) + b"\n" for r in added))
    if replaced or added:  # every line now ends with a newline
        index.ids.update(added_at)
        index.size += len(added)
        index.torn_tail = False
        index.stamp = jsonl_files.stamp_of(path)
    return {**counts, "size": index.size}, index


def _summary(name: str, path: Path, known: jsonl_files.Stats | None) -> tuple[dict, jsonl_files.Stats] | None:
    scanned = jsonl_files.scan(path, 0, 0, known)  # counts only: from `known` if the file is unchanged
    if scanned is None:
        return None  # deleted meanwhile
    _, stats, stat = scanned
    return {
        "name": name,
        "examples": stats.examples,
        "bytes": stat.st_size,
        "updated_at": datetime.fromtimestamp(stat.st_mtime, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "has_embeddings": stats.has_embeddings,
        "corrupt_lines": len(stats.corrupt),  # a count here; read() gives the line numbers
    }, stats


@dataclass
class _LockEntry:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0  # holding or waiting


class TrainingStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self._locks: dict[str, _LockEntry] = {}  # by lower-cased name; only while someone holds or awaits one
        self._indexes: dict[str, _Index] = {}  # per dataset, so that an ingest need not re-read the file
        self._stats: dict[str, jsonl_files.Stats] = {}  # per dataset, so that listings and reads need not recount

    def path_for(self, dataset: str) -> Path:
        """The file of `dataset`, after checking the name and that the path stays in the root."""
        name = validate_dataset_name(dataset)
        path = self.root / f"{name}{_SUFFIX}"
        if path.resolve().parent != self.root.resolve():
            raise InvalidRequest("dataset path leaves the training data folder", param="dataset")
        return path

    @contextlib.asynccontextmanager
    async def _locked(self, name: str):
        """The dataset's lock, shared by names differing only in case; dropped once nobody uses it."""
        key = name.lower()
        entry = self._locks.get(key)
        if entry is None:
            entry = self._locks[key] = _LockEntry()
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._locks[key]

    async def ingest(self, dataset: str, examples: list[dict], upsert: bool = False,
                     embeddings: list[list[float]] | None = None, embedding_dtype: str = "float32") -> dict:
        """Store `examples` (with `embeddings` made in `embedding_dtype`); returns {inserted, updated, skipped, size}
        once they are on disk."""
        path = self.path_for(dataset)
        records = record_format.prepare(examples, embeddings, embedding_dtype)
        async with self._locked(dataset):
            twin = await asyncio.to_thread(_case_twin, path)
            if twin is not None:
                raise InvalidRequest(
                    f"dataset {dataset!r} differs only in case from the existing dataset {twin!r}; "
                    "names differing only in case are refused (one file on case-insensitive filesystems)",
                    param="dataset", code="dataset_name_conflict",
                )
            try:
                await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
                stats = self._stats.pop(dataset, None)
                stamp_before = await asyncio.to_thread(jsonl_files.stamp_of, path) if stats is not None else None
                result, index = await asyncio.to_thread(
                    _ingest_sync, path, records, upsert, self._indexes.get(dataset))
                self._indexes[dataset] = index
                if stats is not None and stats.stamp == stamp_before and not result["updated"] and index.stamp:
                    # Only appended to the file the counts describe: count the new records, not the file.
                    stats.stamp = index.stamp
                    stats.examples += result["inserted"]
                    stats.has_embeddings = stats.has_embeddings or (embeddings is not None and result["inserted"] > 0)
                    self._stats[dataset] = stats
                return result
            except OSError as exc:
                self._indexes.pop(dataset, None)  # the file may be half-changed: read it again next time
                raise ServerError(f"cannot write dataset {dataset!r}: {exc.strerror or exc}") from None

    async def list_datasets(self) -> list[dict]:
        """Every dataset: name, examples, bytes, updated_at, has_embeddings, corrupt_lines (count)."""
        if not self.root.is_dir():
            return []
        names = sorted(p.name[: -len(_SUFFIX)] for p in self.root.glob(f"*{_SUFFIX}") if p.is_file())
        for gone in set(self._stats) - set(names):
            self._stats.pop(gone, None)
        summaries = []
        for name in names:
            try:
                path = self.path_for(name)
            except InvalidRequest:
                continue  # a file someone else put there (bad name, symlink out): not ours
            async with self._locked(name):
                found = await asyncio.to_thread(_summary, name, path, self._stats.get(name))
                if found is None:
                    self._stats.pop(name, None)
                    continue
                summary, self._stats[name] = found
            summaries.append(summary)
        return summaries

    async def read(self, dataset: str, offset: int = 0, limit: int = 100) -> dict:
        """A page of valid records, the total, and the line numbers of corrupt lines."""
        path = self.path_for(dataset)
        async with self._locked(dataset):
            await self._refuse_case_twin(dataset, path)
            scanned = await asyncio.to_thread(jsonl_files.scan, path, offset, limit, self._stats.get(dataset))
            if scanned is None:
                self._stats.pop(dataset, None)
                raise NotFound(f"dataset {dataset!r} does not exist", param="dataset")
            page, stats, _ = scanned
            self._stats[dataset] = stats
        return {"data": page, "total": stats.examples, "offset": offset,
                "limit": limit, "corrupt_lines": list(stats.corrupt)}

    async def _refuse_case_twin(self, dataset: str, path: Path) -> None:
        """NotFound if `dataset` is only another dataset's name in another case (never its file)."""
        twin = await asyncio.to_thread(_case_twin, path)
        if twin is not None:
            raise NotFound(f"dataset {dataset!r} does not exist (there is {twin!r}: names differing only "
                           "in case are one file on case-insensitive filesystems)", param="dataset")

    async def delete(self, dataset: str) -> None:
        path = self.path_for(dataset)
        async with self._locked(dataset):
            await self._refuse_case_twin(dataset, path)
            self._indexes.pop(dataset, None)
            self._stats.pop(dataset, None)
            try:
                await asyncio.to_thread(path.unlink)
            except FileNotFoundError:
                raise NotFound(f"dataset {dataset!r} does not exist", param="dataset") from None
            await asyncio.to_thread(jsonl_files.remove_stale_temps, path)
            await asyncio.to_thread(jsonl_files.fsync_dir, self.root)
