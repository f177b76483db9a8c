"""Dataset files on disk: read them line by line, and write them so that nothing acknowledged is lost.

Reading: a file is JSONL; a line is a record when it is a JSON object with string `id`, `prompt`
and `response`; other non-blank lines are corrupt, reported by 1-based number and kept. `scan`
reads one page without holding the file in memory, with the file's counts (`Stats`, tied to the
file's stamp so that an unchanged file is not recounted).

Writing: `append` is whole lines in one write to an O_APPEND file, fsync'd (and the folder too
when the file is new); `replace_file` writes a temporary file in the same folder, fsyncs it,
renames it over the old one (atomic) and fsyncs the folder. A crash leaves at most a torn last line.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import orjson

TEMP_HEX = 12  # hex digits of a rewrite's temporary file: `.<name>.jsonl.<hex>.tmp`


@dataclass
class Snapshot:
    """A dataset file as read: raw lines (verbatim, no newline) and what parsed."""

    lines: list[bytes] = field(default_factory=list)
    records: list[dict | None] = field(default_factory=list)  # None: blank or corrupt line
    corrupt: list[int] = field(default_factory=list)  # 1-based line numbers
    torn_tail: bool = False  # the file does not end with a newline

    @property
    def valid(self) -> list[dict]:
        return [r for r in self.records if r is not None]


def parse_record(raw: bytes) -> tuple[dict | None, bool]:
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


def parse(data: bytes) -> Snapshot:
    snap = Snapshot(torn_tail=bool(data) and not data.endswith(b"\n"))
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for number, raw in enumerate(lines, start=1):
        snap.lines.append(raw)
        record, corrupt = parse_record(raw)
        if corrupt:
            snap.corrupt.append(number)
        snap.records.append(record)
    return snap


@dataclass
class Stats:
    """A dataset's counts for one version of its file (`stamp`), so that reads need not recount."""

    stamp: tuple[int, int, int]
    examples: int = 0  # valid records
    corrupt: list[int] = field(default_factory=list)  # 1-based line numbers
    has_embeddings: bool = False


def scan(path: Path, offset: int, limit: int, known: "Stats | None") -> tuple[list[dict], Stats, os.stat_result] | None:
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
        counted, page, end = Stats(stamp), [], offset + limit
        for number, raw in enumerate(handle, start=1):
            if known is not None and counted.examples >= end:
                break
            if raw.endswith(b"\n"):
                raw = raw[:-1]
            if skip_parsing and counted.examples < offset:
                counted.examples += bool(raw.strip())
                continue
            record, corrupt = parse_record(raw)
            if corrupt:
                counted.corrupt.append(number)
            elif record is not None:
                if offset <= counted.examples < end:
                    page.append(record)
                counted.examples += 1
                counted.has_embeddings = counted.has_embeddings or "embedding" in record
    return page, known or counted, stat


def load(path: Path) -> Snapshot | None:
    try:
        return parse(path.read_bytes())
    except FileNotFoundError:
        return None


def write_all(fd: int, payload: bytes) -> None:
    view = memoryview(payload)
    while view:  # one write in practice; the loop only guards against a short write
        view = view[os.write(fd, view):]
    os.fsync(fd)


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def append(path: Path, payload: bytes) -> None:
    created = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        write_all(fd, payload)
    finally:
        os.close(fd)
    if created:
        fsync_dir(path.parent)


def remove_stale_temps(path: Path) -> None:
    # Left by a crash mid-rewrite. Safe to remove: we hold the dataset's lock and are the only writer.
    # Only this dataset's, by their exact pattern: `.a.jsonl.*.tmp` would also match a temp file of
    # the dataset `a.jsonl.x` (`.a.jsonl.x.jsonl.<hex>.tmp`), maybe mid-rewrite under its own lock.
    own = re.compile(re.escape(f".{path.name}.") + f"[0-9a-f]{{{TEMP_HEX}}}" + re.escape(".tmp"))
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        if own.fullmatch(stale.name):
            stale.unlink(missing_ok=True)


def replace_file(path: Path, payload: bytes) -> None:
    remove_stale_temps(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(TEMP_HEX // 2)}.tmp")  # not *.jsonl: never listed
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        try:
            write_all(fd, payload)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def dumps(record: dict) -> bytes:
    return orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY)


def stamp_of(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns
