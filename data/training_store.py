"""The training-dataset store: JSONL files under one root folder, written so nothing is lost.

Each dataset `<name>` is the file `<root>/<name>.jsonl`, one JSON object per line:
`{"id", "prompt", "response", "meta", "created_at"[, "updated_at"][, "embedding"]}`.

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

Durability: appends are whole lines in one write to an O_APPEND file, fsync'd before `ingest`
returns (and the folder too when the file is new). If an ingest replaces records, the whole
file is rewritten into a temporary file in the same folder, fsync'd, renamed over the old one
with os.replace (atomic) and the folder is fsync'd. A crash therefore leaves at most a torn
last line. Corrupt lines (not a JSON object with string id/prompt/response) are reported by
1-based line number, skipped by readers, and kept verbatim by rewrites; before appending to a
file whose last line is torn, a newline is written first so the new records stay intact.

Concurrency: one asyncio lock per dataset (keyed by the lower-cased name, so names that are one
file on macOS share it) serializes all file work on it (done in a thread with
asyncio.to_thread); a lock is dropped when nobody holds or awaits it, so lookups of missing
datasets leave nothing behind. The store assumes it is the only process writing its root: the
server makes sure of it with `claim_folder`, an OS lock (flock) on `<root>/.lock` held for the
process's lifetime, so a second server on the same folder exits at start (FolderInUse).

Reads stream: a page is read line by line and parsing stops at its end once the dataset's counts
(valid records, corrupt line numbers, whether any record has an embedding) are known for the
file as it is; counts are cached per dataset by the file's stamp (inode, size, mtime_ns), so a
listing re-reads only changed files (an append by the store itself updates the counts instead),
and memory stays bounded by one line plus one page whatever the file's size.

Speed: an ingest does not re-read the file. The store keeps each dataset's ids and size in
memory after reading it once, and reads it whole again only to replace records (an upsert of a
stored id, which rewrites the file anyway) or when the file changed behind its back.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
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
_TEMP_HEX = 12  # hex digits of a rewrite's temporary file: `.<name>.jsonl.<hex>.tmp`
LOCK_FILE = ".lock"  # in the root; never a dataset (not *.jsonl) nor a temp file (not *.tmp)


class FolderInUse(Exception):
    """Another process holds the training data folder (or it cannot be opened to be locked)."""


_claimed: dict[Path, int] = {}  # folder -> fd of its lock file, held open for the process's lifetime


def claim_folder(root: Path) -> None:
    """Hold an exclusive, non-blocking OS lock on `root` for the rest of this process's life.

    Two processes appending to one folder would lose appends and duplicate ids (each keeps its own
    index of ids), so the second one must not start. The lock (flock on `<root>/.lock`, which holds
    the owner's pid) goes away with the process, however it ends, even by SIGKILL; the fd is not
    inherited by exec'd children. Idempotent within one process. Raises FolderInUse."""
    root = Path(root)
    key = root.resolve()
    if key in _claimed:
        return
    shown = str(root) if str(root) == str(key) else f"{root} ({key})"
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise FolderInUse(f"cannot lock TRAINING_DATA_DIR {shown}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        if not isinstance(exc, BlockingIOError):
            raise FolderInUse(f"cannot lock TRAINING_DATA_DIR {shown}: {exc.strerror or exc}") from None
        raise FolderInUse(
            f"TRAINING_DATA_DIR {shown} is in use by another server process"
            f"{f' (pid {holder})' if holder.isdigit() else ''}; two processes writing one folder lose "
            "examples. Stop the other one, or give this server its own TRAINING_DATA_DIR."
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _claimed[key] = fd


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


def _record(raw: bytes) -> tuple[dict | None, bool]:
    """A line's record (None if blank or corrupt) and whether it is corrupt (blank lines are not)."""
    if not raw.strip():
        return None, False
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None, True
    if isinstance(record, dict) and all(isinstance(record.get(k), str) for k in ("id", "prompt", "response")):
        return record, False
    return None, True


def _parse(data: bytes) -> _Snapshot:
    snap = _Snapshot(torn_tail=bool(data) and not data.endswith(b"\n"))
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for number, raw in enumerate(lines, start=1):
        snap.lines.append(raw)
        record, corrupt = _record(raw)
        if corrupt:
            snap.corrupt.append(number)
        snap.records.append(record)
    return snap


@dataclass
class _Stats:
    """A dataset's counts for one version of its file (`stamp`), so that reads need not recount."""

    stamp: tuple[int, int, int]
    examples: int = 0  # valid records
    corrupt: list[int] = field(default_factory=list)  # 1-based line numbers
    has_embeddings: bool = False


def _scan(path: Path, offset: int, limit: int, known: "_Stats | None") -> tuple[list[dict], _Stats, os.stat_result] | None:
    """Valid records [offset, offset + limit) of `path`, read line by line, with the file's counts.

    Without counts for the file as it is (`known`, compared by stamp) the whole file is parsed to
    count, one line at a time; with them, parsing stops at the page's end, and lines before the
    offset are only parsed if some line is corrupt (else every non-blank line is a record).
    None if there is no file."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return None
    with handle:
        stat = os.fstat(handle.fileno())
        stamp = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if known is not None and known.stamp != stamp:
            known = None
        skip_parsing = known is not None and not known.corrupt
        counted, page, end = _Stats(stamp), [], offset + limit
        for number, raw in enumerate(handle, start=1):
            if known is not None and counted.examples >= end:
                break
            if raw.endswith(b"\n"):
                raw = raw[:-1]
            if skip_parsing and counted.examples < offset:
                counted.examples += bool(raw.strip())
                continue
            record, corrupt = _record(raw)
            if corrupt:
                counted.corrupt.append(number)
            elif record is not None:
                if offset <= counted.examples < end:
                    page.append(record)
                counted.examples += 1
                counted.has_embeddings = counted.has_embeddings or "embedding" in record
    return page, known or counted, stat


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
    # Only this dataset's, by their exact pattern: `.a.jsonl.*.tmp` would also match a temp file of
    # the dataset `a.jsonl.x` (`.a.jsonl.x.jsonl.<hex>.tmp`), maybe mid-rewrite under its own lock.
    own = re.compile(re.escape(f".{path.name}.") + f"[0-9a-f]{{{_TEMP_HEX}}}" + re.escape(".tmp"))
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        if own.fullmatch(stale.name):
            stale.unlink(missing_ok=True)


def _replace(path: Path, payload: bytes) -> None:
    _remove_stale_temps(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(_TEMP_HEX // 2)}.tmp")  # not *.jsonl: never listed
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


def _summary(name: str, path: Path, known: _Stats | None) -> tuple[dict, _Stats] | None:
    scanned = _scan(path, 0, 0, known)  # counts only: from `known` if the file is unchanged
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
        self._stats: dict[str, _Stats] = {}  # per dataset, so that listings and reads need not recount

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
                     embeddings: list[list[float]] | None = None) -> dict:
        """Store `examples`; returns {inserted, updated, skipped, size} once they are on disk."""
        path = self.path_for(dataset)
        records = _prepare(examples, embeddings)
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
                stamp_before = await asyncio.to_thread(_stamp, path) if stats is not None else None
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
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise InvalidRequest("offset must be an integer >= 0", param="offset")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= _MAX_READ_LIMIT:
            raise InvalidRequest(f"limit must be an integer from 1 to {_MAX_READ_LIMIT}", param="limit")
        async with self._locked(dataset):
            await self._refuse_case_twin(dataset, path)
            scanned = await asyncio.to_thread(_scan, path, offset, limit, self._stats.get(dataset))
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
            await asyncio.to_thread(_remove_stale_temps, path)
            await asyncio.to_thread(_fsync_dir, self.root)
