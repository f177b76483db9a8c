"""Shared fixtures: a real server in a subprocess (real models, real HTTP), and clients for it.

`live_server` starts `python server.py` once per test session on a free loopback port with a
known key and a temporary data folder, and waits for `/health`. `start_server(**env)` starts
another one with other settings (for tests of limits, auth modes, shutdown).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from bench.servers import ServerProcess as RunningServer  # one launcher for benchmarks and tests
from bench.servers import start_our_server

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "sk-test-key"
ARTIFACTS = ROOT / "tests" / "artifacts"


def start_server(tmp_path: Path, wait_healthy: bool = True, script: Path = ROOT / "server.py", **env: str) -> RunningServer:
    """Run `script` (the real server, or a test variant of it) and wait until it is healthy (or, not
    `wait_healthy`, until /health answers at all); its log stays in `tmp_path`."""
    data_dir = Path(env.pop("TRAINING_DATA_DIR", tmp_path / "training"))
    # The suite compares vectors with raw float32 sentence-transformers to 1e-5, on any CPU; bfloat16
    # (what `auto` picks on AVX512-BF16 or AMX) is checked on its own (test_embedding_engine.py, tests/routes).
    env.setdefault("EMBEDDING_DTYPE", "float32")
    return start_our_server(env, api_key=API_KEY, script=script, data_dir=data_dir, log_dir=tmp_path,
                            accept_unhealthy=not wait_healthy)


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
