"""Start `tests/helpers/fake_server.py` in a subprocess, like `conftest.start_server` does `server.py`."""

from __future__ import annotations

import json
from pathlib import Path

import psutil

from tests.conftest import ROOT, RunningServer, start_server
from tests.helpers.fake_server import write_fake_gguf

FAKE_SERVER = ROOT / "tests" / "helpers" / "fake_server.py"


def start_fake_server(tmp_path: Path, scripts: list | None = None, **env: str) -> RunningServer:
    if "MODELS_DIR" not in env:
        env["MODELS_DIR"] = str(write_fake_gguf(tmp_path / "fake-models").parent)
    return start_server(tmp_path, script=FAKE_SERVER, FAKE_SCRIPTS=json.dumps(scripts or []), **env)


def rss_mb(server: RunningServer) -> float:
    return psutil.Process(server.process.pid).memory_info().rss / 2**20
