"""Shared fixtures: a real server in a subprocess (real models, real HTTP), and clients for it.

`live_server` starts `python server.py` once per test session on a free loopback port with a
known key and a temporary data folder, and waits for `/health`. `start_server(**env)` starts
another one with other settings (for tests of limits, auth modes, shutdown).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bench.servers import free_port  # one definition for benchmarks and tests

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "sk-test-key"
ARTIFACTS = ROOT / "tests" / "artifacts"


@dataclass
class RunningServer:
    process: subprocess.Popen
    base_url: str
    api_key: str
    data_dir: Path
    log_path: Path

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.api_key}"}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_server(tmp_path: Path, wait_healthy: bool = True, script: Path = ROOT / "server.py", **env: str) -> RunningServer:
    """Run `script` (the real server, or a test variant of it) and wait until it is healthy."""
    port = free_port()
    data_dir = Path(env.pop("TRAINING_DATA_DIR", tmp_path / "training"))
    full_env = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "API_KEYS": API_KEY,
        "REQUIRE_API_KEY": "true",
        "TRAINING_DATA_DIR": str(data_dir),
        "PYTHONUNBUFFERED": "1",
        **env,
    }
    log_path = tmp_path / f"server-{port}.log"
    log_file = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, str(script)], cwd=ROOT, env=full_env, stdout=log_file, stderr=subprocess.STDOUT
    )
    server = RunningServer(process, f"http://127.0.0.1:{port}", full_env["API_KEYS"].split(",")[0], data_dir, log_path)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.log()}")
        try:
            response = httpx.get(server.base_url + "/health", timeout=2)
            if response.status_code == 200 or (not wait_healthy and response.status_code == 503):
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"server did not become healthy:\n{server.log()}")


@pytest.fixture(scope="session")
def live_server(tmp_path_factory) -> RunningServer:
    server = start_server(tmp_path_factory.mktemp("live"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def openai_client(live_server):
    import openai

    return openai.OpenAI(base_url=live_server.base_url + "/v1", api_key=live_server.api_key, max_retries=0, timeout=120)


@pytest.fixture()
def http(live_server):
    with httpx.Client(base_url=live_server.base_url, headers=live_server.headers(), timeout=120) as client:
        yield client


@pytest.fixture(scope="session")
def default_model(live_server) -> str:
    return httpx.get(live_server.base_url + "/").json()["default_model"]
