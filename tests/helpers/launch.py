"""Start `tests/helpers/fake_server.py` in a subprocess, like `conftest.start_server` does `server.py`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from tests.conftest import API_KEY, ROOT, RunningServer, free_port
from tests.helpers.fake_server import write_fake_gguf

FAKE_SERVER = ROOT / "tests" / "helpers" / "fake_server.py"


def start_fake_server(tmp_path: Path, scripts: list | None = None, **env: str) -> RunningServer:
    port = free_port()
    data_dir = Path(env.pop("TRAINING_DATA_DIR", tmp_path / "training"))
    if "MODELS_DIR" not in env:
        env["MODELS_DIR"] = str(write_fake_gguf(tmp_path / "fake-models").parent)
    full_env = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "API_KEYS": API_KEY,
        "REQUIRE_API_KEY": "true",
        "TRAINING_DATA_DIR": str(data_dir),
        "PYTHONUNBUFFERED": "1",
        "FAKE_SCRIPTS": json.dumps(scripts or []),
        **env,
    }
    log_path = tmp_path / f"fake-server-{port}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, str(FAKE_SERVER)], cwd=ROOT, env=full_env, stdout=log_file, stderr=subprocess.STDOUT
        )
    server = RunningServer(process, f"http://127.0.0.1:{port}", API_KEY, data_dir, log_path)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"fake server exited with {process.returncode}:\n{server.log()}")
        try:
            if httpx.get(server.base_url + "/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"fake server did not become healthy:\n{server.log()}")


def rss_mb(server: RunningServer) -> float:
    return psutil.Process(server.process.pid).memory_info().rss / 2**20
