"""Servers in subprocesses, for the benchmarks (and the tests' free port): start, wait until ready, stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import httpx

from bench.common import ROOT

BENCH_API_KEY = "sk-bench-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServerProcess:
    """A server started by a benchmark on loopback; `stop()` ends it (and only it)."""

    name: str
    process: subprocess.Popen
    base_url: str
    api_key: str
    log_path: Path
    _workdir: tempfile.TemporaryDirectory | None = field(default=None, repr=False)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 30) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None
        return self.process.returncode

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_process(
    name: str,
    command: Sequence[str],
    *,
    port: int,
    ready_path: str,
    env: dict[str, str] | None = None,
    api_key: str = BENCH_API_KEY,
    ready_timeout_s: float = 180,
    cwd: Path = ROOT,
    workdir: tempfile.TemporaryDirectory | None = None,
) -> ServerProcess:
    """Start `command` (which must listen on 127.0.0.1:`port`) and wait until GET `ready_path` is 200.

    The log (and anything else the caller put in `workdir`) is deleted when the server stops.
    """
    workdir = workdir or tempfile.TemporaryDirectory(prefix=f"bench-{name.replace(' ', '_')}-")
    log_path = Path(workdir.name) / "server.log"
    log_file = log_path.open("wb")
    process = subprocess.Popen(
        list(command),
        cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    log_file.close()
    server = ServerProcess(name, process, f"http://127.0.0.1:{port}", api_key, log_path, workdir)
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = server.log_tail()
            server.stop()
            raise RuntimeError(f"{name} exited with {process.returncode} before it was ready:\n{tail}")
        try:
            if httpx.get(server.base_url + ready_path, headers=server.headers(), timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    tail = server.log_tail()
    server.stop()
    raise RuntimeError(f"{name} was not ready after {ready_timeout_s:g}s:\n{tail}")


def start_our_server(env: dict[str, str] | None = None, *, api_key: str = BENCH_API_KEY) -> ServerProcess:
    """`python server.py` on a free loopback port, with a key and a throw-away data folder."""
    port = free_port()
    workdir = tempfile.TemporaryDirectory(prefix="bench-server-")
    data_dir = str(Path(workdir.name) / "training")
    full_env = {
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "API_KEYS": api_key,
        "REQUIRE_API_KEY": "true",
        "RELOAD": "false",
        "TRAINING_DATA_DIR": data_dir,
        **(env or {}),
    }
    return start_process(
        "server.py", [sys.executable, str(ROOT / "server.py")], port=port, ready_path="/health", env=full_env, api_key=api_key,
        workdir=workdir,
    )
