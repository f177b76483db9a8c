"""One server process per training data folder: an OS lock held for the process's lifetime."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

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
