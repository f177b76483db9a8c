"""Servers in subprocesses, for the benchmarks (and the tests' free port): start, wait until ready, stop."""

from __future__ import annotations

import asyncio
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

from bench.common import ROOT, process_cpu_seconds

BENCH_API_KEY = "sk-bench-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServerProcess:
    """A server started by a benchmark or a test on loopback; `stop()` ends it (and only it)."""

    name: str
    process: subprocess.Popen
    base_url: str
    api_key: str
    log_path: Path
    data_dir: Path | None = None  # our server's TRAINING_DATA_DIR
    _workdir: tempfile.TemporaryDirectory | None = field(default=None, repr=False)

    def headers(self, key: str | None = None) -> dict[str, str]:
        """The key as a bearer token; none for a server started without a key (it generates its own)."""
        key = key or self.api_key
        return {"Authorization": f"Bearer {key}"} if key else {}

    async def quiet(self, window: float = 0.4, most_cpu_s: float = 0.02, limit: float = 30.0) -> None:
        """Return once the server has used less than `most_cpu_s` of CPU for `window` seconds.

        A server may work between requests (ours evaluates the last reply again 0.25 s after it
        went idle, for its prefix cache): a benchmark waits for that before it measures the next
        system, so that no system's figures pay for another's background work."""
        deadline = time.monotonic() + limit
        before = process_cpu_seconds(self.process.pid)
        while before is not None and time.monotonic() < deadline:
            await asyncio.sleep(window)
            after = process_cpu_seconds(self.process.pid)
            if after is None or after - before < most_cpu_s:
                return
            before = after

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

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
    ready_statuses: tuple[int, ...] = (200,),
    cwd: Path = ROOT,
    workdir: tempfile.TemporaryDirectory | None = None,
    log_dir: Path | None = None,
) -> ServerProcess:
    """Start `command` (which must listen on 127.0.0.1:`port`) and wait until GET `ready_path` answers
    one of `ready_statuses`.

    The log goes to `log_dir` (kept), else into `workdir`, which (with anything else the caller put
    there) is deleted when the server stops.
    """
    workdir = workdir or (None if log_dir else tempfile.TemporaryDirectory(prefix=f"bench-{name.replace(' ', '_')}-"))
    log_path = log_dir / f"server-{port}.log" if log_dir else Path(workdir.name) / "server.log"
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
            if httpx.get(server.base_url + ready_path, headers=server.headers(), timeout=2).status_code in ready_statuses:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    tail = server.log_tail()
    server.stop()
    raise RuntimeError(f"{name} was not ready after {ready_timeout_s:g}s:\n{tail}")


def start_our_server(
    env: dict[str, str] | None = None,
    *,
    api_key: str = BENCH_API_KEY,
    script: Path = ROOT / "server.py",
    data_dir: Path | None = None,
    log_dir: Path | None = None,
    accept_unhealthy: bool = False,
) -> ServerProcess:
    """`python server.py` (or a test variant of it) on a free loopback port, with a key and a data folder.

    The key is the first of API_KEYS (`api_key` unless `env` sets them); the data folder is a
    throw-away one unless given. `accept_unhealthy` returns as soon as /health answers, even 503.
    """
    port = free_port()
    workdir = None if data_dir and log_dir else tempfile.TemporaryDirectory(prefix="bench-server-")
    full_env = {
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "API_KEYS": api_key,
        "REQUIRE_API_KEY": "true",
        "RELOAD": "false",
        "TRAINING_DATA_DIR": str(data_dir or Path(workdir.name) / "training"),
        **(env or {}),
    }
    server = start_process(
        script.name, [sys.executable, str(script)], port=port, ready_path="/health", env=full_env,
        api_key=full_env["API_KEYS"].split(",")[0], ready_statuses=(200, 503) if accept_unhealthy else (200,),
        workdir=workdir, log_dir=log_dir,
    )
    server.data_dir = Path(full_env["TRAINING_DATA_DIR"])
    return server
