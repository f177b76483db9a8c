"""Gradio's own routes under /chat: only what the page uses reaches Gradio, and no model name
reaches a caller without a valid key.

The chat UI (fake backend) is mounted on a real Sanic server with the server's error handler, so a
blocked route gets the same OpenAI-style 404 as any unknown path of the server.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from sanic import Sanic

from api import errors as api_errors
from gradio_ui.chat_app import mount_chat_ui
from gradio_ui.stream_reopen import patched_bundle
from tests.fakes_ui import FakeChatBackend
from tests.helpers.browser import serve_in_thread

MODEL_NAMES = ("fake-chat-1", "fake-chat-2")

# Requests the page makes (see PAGE_ROUTES in gradio_ui/chat_app.py), and two harmless variants.
NEEDED = [
    ("GET", "/chat/"),
    ("HEAD", "/chat/"),
    ("GET", "/chat/config"),
    ("GET", "/chat/theme.css"),
    ("GET", "/chat/static/fonts/SourceSansPro/SourceSansPro-Regular.woff2"),
]

# Gradio routes that the page does not use: each answers 404 before it reaches Gradio.
BLOCKED = [
    ("POST", "/chat/gradio_api/upload"),
    ("POST", "/chat/upload"),
    ("GET", "/chat/gradio_api/upload_progress?upload_id=x"),
    ("GET", "/chat/gradio_api/file=/etc/passwd"),
    ("GET", "/chat/gradio_api/file=https://example.com/x.png"),
    ("GET", "/chat/file=https://example.com/x.png"),
    ("GET", "/chat/file=/etc/passwd"),
    ("GET", "/chat/gradio_api/proxy=https://example.com/"),
    ("POST", "/chat/gradio_api/call/respond"),
    ("POST", "/chat/gradio_api/call/v2/respond"),
    ("GET", "/chat/gradio_api/call/respond/abc"),
    ("POST", "/chat/gradio_api/run/predict"),
    ("POST", "/chat/gradio_api/run/respond"),
    ("POST", "/chat/gradio_api/api/respond"),
    ("GET", "/chat/gradio_api/info"),
    ("GET", "/chat/gradio_api/openapi.json"),
    ("GET", "/chat/gradio_api/heartbeat/abc"),
    ("GET", "/chat/gradio_api/startup-events"),
    ("POST", "/chat/gradio_api/stream/abc"),
    ("POST", "/chat/gradio_api/vibe-edit"),
    ("POST", "/chat/gradio_api/process_recording"),
    ("GET", "/chat/gradio_api/deep_link"),
    ("GET", "/chat/monitoring"),
    ("GET", "/chat/manifest.json"),
    ("GET", "/chat/favicon.ico"),
    ("GET", "/chat/login_check"),
    ("GET", "/chat/static/..%2F..%2Froutes.py"),
    ("GET", "/chat/assets/..%2F..%2F..%2Froutes.py"),
    ("POST", "/chat/"),
    ("OPTIONS", "/chat/"),
    ("DELETE", "/chat/gradio_api/queue/join"),
    ("GET", "/chat/gradio_api/queue/join"),
]


@pytest.fixture(scope="module")
def chat(tmp_path_factory):
    backend = FakeChatBackend()
    app = Sanic("chat_routes_test")
    app.config.TOUCHUP = False  # touch-up rewrites shared classes once per process; a second app trips on it
    api_errors.install(app)
    mount_chat_ui(app, backend)
    with serve_in_thread(app) as base_url:
        with httpx.Client(base_url=base_url, timeout=60) as client:
            yield client, backend


def page_config(client: httpx.Client) -> dict:
    return client.get("/chat/config").json()


def queue_call(client: httpx.Client, fn_index: int, data: list) -> dict:
    """One event through /queue/join + /queue/data, as the page does; its process_completed message."""
    session = uuid.uuid4().hex[:12]
    joined = client.post("/chat/gradio_api/queue/join", json={
        "data": data, "fn_index": fn_index, "session_hash": session, "event_data": None, "trigger_id": None})
    assert joined.status_code == 200, joined.text
    event_id = joined.json()["event_id"]
    with client.stream("GET", "/chat/gradio_api/queue/data", params={"session_hash": session}) as stream:
        assert stream.status_code == 200
        for line in stream.iter_lines():
            if line.startswith("data:"):
                message = json.loads(line[5:])
                if message.get("event_id") == event_id and message.get("msg") == "process_completed":
                    return message
    raise AssertionError("the queue stream ended without a result")


def test_the_page_loads_the_patched_client_bundle(chat):
    """gradio_ui/stream_reopen.py: the page's own script URL answers the patched bundle, with the
    page's security headers."""
    client, _ = chat
    name, body = patched_bundle()
    assert f'"./assets/{name}"' in client.get("/chat/").text
    for method in ("GET", "HEAD"):
        response = client.request(method, f"/chat/assets/{name}")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/javascript")
        assert response.headers["x-frame-options"] == "DENY" and response.headers["cache-control"] == "no-cache"
    assert client.get(f"/chat/assets/{name}").content == body


def test_the_routes_the_page_needs_reach_gradio(chat):
    client, _ = chat
    for method, path in NEEDED:
        response = client.request(method, path)
        assert response.status_code == 200, (method, path, response.status_code, response.text[:300])
    page = client.get("/chat/").text
    assets = re.findall(r'"\./(assets/[\w.-]+\.(?:js|css))"', page)  # relative to /chat/
    assert assets, page[:2000]
    for asset in assets:
        assert client.get("/chat/" + asset).status_code == 200, asset
    # The page opens /gradio_api/heartbeat/<session> only with a gr.State, an unload or a stream event;
    # PAGE_ROUTES must allow it if one is ever added.
    assert page_config(client)["connect_heartbeat"] is False


def test_every_other_gradio_route_answers_404_before_gradio(chat):
    client, _ = chat
    for method, path in BLOCKED:
        files = {"files": ("../../evil.txt", b"")} if method == "POST" and "upload" in path else None
        response = client.request(method, path, files=files)
        where = (method, path, response.status_code, response.text[:300])
        assert response.status_code == 404, where
        if method != "HEAD":
            body = response.json()
            assert body["error"]["code"] == "not_found", where


def test_the_queue_and_cancel_reach_gradio(chat):
    client, _ = chat
    config = page_config(client)
    respond = next(d["id"] for d in config["dependencies"] if d.get("api_name") == "respond")
    chat_in = [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    message = queue_call(client, respond, [chat_in, "sk-wrong", None, "", 0.7, 3])
    assert message["success"], message
    assert "Invalid API key" in json.dumps(message, ensure_ascii=False)
    cancel = client.post("/chat/gradio_api/cancel", json={"session_hash": "nobody", "fn_index": respond, "event_id": "none"})
    assert cancel.status_code == 200, cancel.text


def test_no_model_name_without_a_valid_key(chat):
    client, backend = chat
    page, config = client.get("/chat/").text, client.get("/chat/config").text
    for name in MODEL_NAMES:
        assert name not in page and name not in config, name

    # Every event the page can run with what a caller without a key has (the page's own inputs, and
    # a wrong key) answers without a model name: first of all the page's load event.
    deps = page_config(client)["dependencies"]
    components = {c["id"]: c for c in page_config(client)["components"]}
    key_id = next(c["id"] for c in components.values() if c.get("props", {}).get("elem_id") == "api-key")
    model_id = next(c["id"] for c in components.values() if c.get("props", {}).get("elem_id") == "model")
    listing = [d for d in deps if model_id in d["outputs"]]
    assert any(any(t[1] == "load" for t in d["targets"]) for d in listing), listing
    for dep in listing:
        for key in ("", "sk-wrong", None):
            data = [key if i == key_id else None for i in dep["inputs"]]
            answer = json.dumps(queue_call(client, dep["id"], data))
            for name in MODEL_NAMES:
                assert name not in answer, (dep["targets"], key, answer)

    # With the key, the same events do list them (the check above looked in the right place).
    with_key = [json.dumps(queue_call(client, d["id"], [backend.key if i == key_id else None for i in d["inputs"]]))
                for d in listing if key_id in d["inputs"]]
    assert with_key and all(all(name in answer for name in MODEL_NAMES) for answer in with_key), with_key


TEMP_DIR_PROBE = """
import json, sys
from pathlib import Path
from server import create_app
from settings import Settings
state = Path(sys.argv[1])
app = create_app(Settings(training_data_dir=state / "training", models_dir=state / "models"), name="temp_dir_probe")
import gradio.route_utils, gradio.utils
print(json.dumps([gradio.route_utils.DEFAULT_TEMP_DIR, gradio.utils.get_upload_folder()]))
"""


def test_gradio_keeps_its_files_in_the_servers_state_folder_not_in_tmp_gradio(tmp_path):
    """`create_app` gives Gradio `<TRAINING_DATA_DIR>/../gradio` (owner-only) before Gradio is imported."""
    env = {k: v for k, v in os.environ.items() if k != "GRADIO_TEMP_DIR"}
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", TEMP_DIR_PROBE, str(tmp_path)], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    at_import, uploads = json.loads(done.stdout.strip().splitlines()[-1])
    private = (tmp_path / "gradio").resolve()
    assert Path(at_import) == private and Path(uploads) == private, (at_import, uploads)
    assert private.is_dir() and private.stat().st_mode & 0o777 == 0o700
